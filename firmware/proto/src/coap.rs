//! CoAP option numbers and the Content-Format of the profile (MSC3079 section "CoAP").

/// Option 256 carries the Matrix access token, without the `Bearer ` prefix (MSC3079).
/// Critical, unsafe-to-forward, not part of the cache key; a peer sends it once and the gateway keeps it
/// per peer ("sticky") until it changes.
pub const OPTION_ACCESS_TOKEN: u16 = 256;

/// Option 257 carries the CBOR table version as an unsigned integer: 1 = MSC3079 v1, 2 = jeton v2
/// (see [`crate::TableVersion`]). Absent means version 1.
pub const OPTION_TABLE_VERSION: u16 = 257;

/// CoAP Content-Format 60: `application/cbor` (RFC 7049 / RFC 8949 registration).
pub const CONTENT_FORMAT_CBOR: u16 = 60;
