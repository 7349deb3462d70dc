//! The CoAP vocabulary the token, the link and the gateway share: option numbers, Content-Formats,
//! the Block1/Block2 value of RFC 7959 and the option encoding of RFC 7252 §3.1.
//!
//! - [`option`]: the option numbers, the profile's own two (MSC3079 section "CoAP") among them.
//! - [`block`]: [`BlockValue`](block::BlockValue) and the size exponent of a block size.
//! - [`codec`]: the option sequence on the wire (delta and length nibbles with their
//!   extensions, the payload marker) and `uint` option values, without allocation.
//!
//! The message around the options (UDP header, token, message id) is each side's own: the
//! token writes it with jeton-core's codec, the gateway with `coap-lite`, and jeton-link sees
//! messages without it.

pub mod block;
pub mod codec;
pub mod option;

/// Content-Format 0: `text/plain; charset=utf-8` (RFC 7252 §12.3), diagnostic payloads.
pub const CONTENT_FORMAT_TEXT: u16 = 0;

/// Content-Format 50: `application/json` (RFC 7252 §12.3).
pub const CONTENT_FORMAT_JSON: u16 = 50;

/// CoAP Content-Format 60: `application/cbor` (RFC 7049 / RFC 8949 registration).
pub const CONTENT_FORMAT_CBOR: u16 = 60;

/// Content-Format 64: `application/edhoc+cbor-seq` (RFC 9528 §10.9), EDHOC messages without a
/// connection identifier ahead of them (the gateway's answers).
pub const CONTENT_FORMAT_EDHOC: u16 = 64;

/// Content-Format 65: `application/cid-edhoc+cbor-seq` (RFC 9528 §10.9), EDHOC messages with a
/// connection identifier (or CBOR `true`) ahead of them (the token's requests).
pub const CONTENT_FORMAT_CID_EDHOC: u16 = 65;
