//! jeton-proto: the compact CBOR-over-CoAP profile of the Matrix Client-Server API.
//!
//! The profile is a superset of [MSC3079] ("Low Bandwidth Client-Server API") version 1:
//!
//! - [`keys`]: the CBOR integer key tables (MSC3079 v1 keys 1-104, and the append-only jeton v2 table
//!   that adds the keys of the E2EE traffic).
//! - [`path`]: the CoAP short-path table (MSC3079 v1 enums `0`..`u`, and the jeton v2 `/v3/` paths) with
//!   percent-encoding that round-trips Matrix identifiers (`!room:server`, `$event`); [`path::endpoint`]
//!   names the enums a token sends requests to.
//! - [`binary`]: which JSON fields travel as CBOR byte strings under v2 (ciphertexts, keys, signatures,
//!   session ids), as a table of field paths.
//! - [`ids`]: event ids and room ids that are SHA-256 hashes, which v2 carries as their 32 bytes.
//! - [`values`]: the v2 table of well-known text values (algorithm names, event types, membership states)
//!   that travel as one-byte CBOR simple values.
//! - [`coap`]: the CoAP vocabulary: option numbers, Content-Formats, the Block1/Block2 value and the
//!   RFC 7252 option encoding, shared by the token, the link and the gateway.
//! - [`view`] and [`write`](mod@write): zero-copy, bounded readers and writers of the v2 CBOR a token exchanges
//!   (sync subset, send event, keys upload/claim/query, sendToDevice). No allocator needed.
//! - `transcode` (feature `json`): JSON <-> canonical CBOR for any Matrix JSON, used by the gateway and the CLI.
//! - `split` (feature `json`): a `/sync` response cut into parts that fit the client's Response-Capacity
//!   (option 258), as the gateway sends it.
//!
//! The profile is described for implementers in `PROFILE.md` next to this crate's sources.
//!
//! # Usage
//!
//! ```
//! use jeton_proto::{path, TableVersion};
//! let mut short = String::new();
//! path::compress(
//!     "/_matrix/client/r0/rooms/!room:server/send/m.room.message/txn1",
//!     TableVersion::V1,
//!     &mut short,
//! )
//! .unwrap();
//! assert_eq!(short, "/9/!room:server/m.room.message/txn1");
//! ```
//!
//! # Features
//!
//! - `alloc`: enables minicbor's `alloc` support (no API of its own yet).
//! - `json` (implies `alloc`): the `transcode` and `split` modules, JSON <-> CBOR with `serde_json`.
//!
//! Without features the crate needs neither `std` nor an allocator.
//!
//! [MSC3079]: https://github.com/matrix-org/matrix-spec-proposals/pull/3079
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod binary;
pub mod coap;
pub mod ids;
pub mod keys;
pub mod path;
#[cfg(feature = "json")]
pub mod split;
#[cfg(feature = "json")]
pub mod transcode;
pub mod values;
pub mod view;
pub mod write;

/// The CBOR table version a peer negotiated with CoAP option 257 ([`coap::option::CBOR_TABLE_VERSION`]).
///
/// Version 2 is a superset of version 1: every v1 key and path enum keeps its meaning under v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableVersion {
    /// MSC3079 version 1: integer keys 1-104, path enums `0`..`u`, binary data as base64 text.
    V1 = 1,
    /// jeton version 2: the v1 tables plus the E2EE keys and `/v3/` paths; binary fields as byte strings,
    /// well-known values as simple values.
    V2 = 2,
}

impl TableVersion {
    /// The version a CoAP option 257 value names, or `None` for a version this crate does not know.
    pub const fn from_option(value: u64) -> Option<Self> {
        match value {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// The value to put in CoAP option 257.
    pub const fn option_value(self) -> u64 {
        self as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_257_values_name_the_versions() {
        assert_eq!(TableVersion::from_option(1), Some(TableVersion::V1));
        assert_eq!(TableVersion::from_option(2), Some(TableVersion::V2));
        assert_eq!(TableVersion::from_option(0), None);
        assert_eq!(TableVersion::from_option(3), None);
        for v in [TableVersion::V1, TableVersion::V2] {
            assert_eq!(TableVersion::from_option(v.option_value()), Some(v));
        }
    }
}
