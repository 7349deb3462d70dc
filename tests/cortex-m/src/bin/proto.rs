//! Size probe for jeton-proto without its `json` feature: the key and path tables and
//! the path codec, as a token uses them. (Typed views join when the crate has them.)
#![no_std]
#![no_main]

use core::fmt::Write as _;
use cortex_m_rt::entry;
use jeton_cortex_m::keep;
use jeton_proto::{TableVersion, keys, path};

#[entry]
fn main() -> ! {
    loop {
        let version = if keep(true) {
            TableVersion::V2
        } else {
            TableVersion::V1
        };
        let mut short: heapless::String<256> = heapless::String::new();
        let _ = path::compress(keep("/_matrix/client/v3/sync"), version, &mut short);
        let mut full: heapless::String<256> = heapless::String::new();
        let _ = path::expand(keep(short.as_str()), version, &mut full);
        let _ = path::expand_segments(
            keep(["9", "!r:s", "m.room.encrypted", "t"]),
            version,
            &mut full,
        );
        keep(keys::key_for_name(keep("ciphertext"), version));
        keep(keys::name_for_key(keep(87), version));
        let _ = write!(short, "{}", keep(1));
        keep(full);
    }
}
