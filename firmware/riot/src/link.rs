//! The protected link's pairing material on the token: the key file `jeton pair --token-out`
//! writes, provisioned through the shell (`pair <hex>`) and kept in the record store, from
//! which the token boots with EDHOC and OSCORE to its gateway (jeton-core's `link` feature).
//!
//! Only builds with the firmware's `link` feature run the link (native64 turns it on in
//! boards/native64/board.mk; on the Cortex-M boards it does not fit the flash budget yet).
//! Without it `pair` refuses, and the token speaks plain CoAP.

use jeton_core::store::{RecordId, Store};
use riot_wrappers::println;

use crate::store::RecordStore;

/// The record holding the key file, as `jeton pair --token-out` wrote it.
pub(crate) const KEY_FILE: RecordId = 0xF003;

/// The largest key file `pair` takes: `jeton pair` writes about 210 bytes plus the two names
/// (236 for `riot-native64` and `jeton-gateway`); a shell line (`LINE_CAPACITY`, 512 bytes)
/// carries at most 253 bytes in hex, so names of up to about 30 characters each fit.
pub(crate) const KEY_FILE_CAPACITY: usize = 256;

/// `pair <hex>`: checks and stores the key file; the token uses it from the next boot.
pub(crate) fn pair(store: &mut RecordStore<'_>, hex: Option<&str>) {
    let Some(hex) = hex else {
        match store.get(KEY_FILE, &mut [0u8; KEY_FILE_CAPACITY]) {
            Ok(Some(_)) => println!("pair: a key file is stored"),
            _ => println!("pair: no key file is stored"),
        }
        return;
    };
    let mut bytes = zeroize::Zeroizing::new([0u8; KEY_FILE_CAPACITY]);
    let len = match decode_hex(hex, &mut *bytes) {
        Some(len) => len,
        None => {
            println!("error pair needs the key file as hex, at most {KEY_FILE_CAPACITY} bytes");
            return;
        }
    };
    let file = bytes.get(..len).unwrap_or(&[]);
    if let Err(err) = check(file) {
        println!("error {err}");
        return;
    }
    match store.put(KEY_FILE, file) {
        Ok(()) => println!("paired: {len} bytes stored, the link starts at the next boot"),
        Err(err) => println!("error the key file could not be stored: {err}"),
    }
}

#[cfg(feature = "link")]
fn check(file: &[u8]) -> Result<(), &'static str> {
    match jeton_core::link::KeyFile::decode(file) {
        Ok(material) if material.peer.is_some() => Ok(()),
        Ok(_) => Err("the key file holds no gateway credential to pin"),
        Err(_) => Err("that is not a key file from jeton pair"),
    }
}

#[cfg(not(feature = "link"))]
fn check(_: &[u8]) -> Result<(), &'static str> {
    Err("this build has no protected link (the firmware's link feature)")
}

/// The stored key file, if there is a valid one.
#[cfg(feature = "link")]
pub(crate) fn stored(store: &mut RecordStore<'_>) -> Option<jeton_core::link::KeyFile> {
    let mut bytes = zeroize::Zeroizing::new([0u8; KEY_FILE_CAPACITY]);
    match store.get(KEY_FILE, &mut *bytes) {
        Ok(Some(len)) => match jeton_core::link::KeyFile::decode(bytes.get(..len)?) {
            Ok(material) => Some(material),
            Err(err) => {
                println!("link: the stored key file is unusable: {err}");
                None
            }
        },
        _ => None,
    }
}

/// Decodes `hex` into `out`; the length, or None if it is not hex or does not fit.
fn decode_hex(hex: &str, out: &mut [u8]) -> Option<usize> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) || digits.len() / 2 > out.len() {
        return None;
    }
    for (pair, byte) in digits.chunks_exact(2).zip(out.iter_mut()) {
        let high = char::from(*pair.first()?).to_digit(16)?;
        let low = char::from(*pair.get(1)?).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(digits.len() / 2)
}
