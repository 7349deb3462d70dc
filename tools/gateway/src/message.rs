//! CoAP message details the gateway needs on top of `coap-lite`: stricter parsing (RFC 7252
//! section 3 format errors coap-lite lets through), uint option values as coap-lite holds them,
//! the options the gateway knows and the response codes it emits. The option numbers and the
//! Block1/Block2 value are jeton-proto's (see [`crate::profile`]).

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use crate::profile::BlockValue;
use crate::profile::option::{
    ACCEPT, ACCESS_TOKEN, BLOCK1, BLOCK2, CBOR_TABLE_VERSION, CONTENT_FORMAT, ETAG, MAX_AGE,
    OBSERVE, SIZE1, SIZE2, URI_HOST, URI_PATH, URI_PORT, URI_QUERY,
};

/// Default EXCHANGE_LIFETIME (RFC 7252 section 4.8.2).
pub const EXCHANGE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(247);
/// Default NON_LIFETIME (RFC 7252 section 4.8.2).
pub const NON_LIFETIME: std::time::Duration = std::time::Duration::from_secs(145);
/// ACK_TIMEOUT (RFC 7252 section 4.8).
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// MAX_RETRANSMIT (RFC 7252 section 4.8).
pub const MAX_RETRANSMIT: u8 = 4;

/// A datagram that is not a well-formed CoAP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedError {
    /// Shorter than the 4-byte header or not version 1.
    Header,
    /// Token, option or payload-marker layout is broken.
    Layout,
}

impl core::fmt::Display for MalformedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Header => f.write_str("the datagram has no valid CoAP version 1 header"),
            Self::Layout => {
                f.write_str("the datagram's token, options or payload marker are malformed")
            }
        }
    }
}

impl std::error::Error for MalformedError {}

/// What can be learnt from a datagram too broken to parse: enough to send a Reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// Message type.
    pub confirmable: bool,
    /// Message id.
    pub message_id: u16,
}

/// The header of any datagram with at least 4 bytes and version 1.
pub fn raw_header(datagram: &[u8]) -> Option<RawHeader> {
    let [first, _, hi, lo, ..] = *datagram else {
        return None;
    };
    (first >> 6 == 1).then_some(RawHeader {
        confirmable: (first >> 4) & 0b11 == 0,
        message_id: u16::from_be_bytes([hi, lo]),
    })
}

/// Parses a datagram, rejecting what RFC 7252 calls a message format error.
pub fn parse(datagram: &[u8]) -> Result<Packet, MalformedError> {
    raw_header(datagram).ok_or(MalformedError::Header)?;
    let packet = Packet::from_bytes(datagram).map_err(|_| MalformedError::Layout)?;
    // A payload marker followed by nothing is a format error; coap-lite accepts it.
    if packet.payload.is_empty() && ends_with_bare_payload_marker(datagram) {
        return Err(MalformedError::Layout);
    }
    if packet.header.code == MessageClass::Empty
        && (!packet.get_token().is_empty() || datagram.len() > 4)
    {
        return Err(MalformedError::Layout);
    }
    Ok(packet)
}

/// Walks the option headers (already validated by coap-lite) to see whether the options end in
/// a payload marker with nothing after it.
fn ends_with_bare_payload_marker(datagram: &[u8]) -> bool {
    let tkl = usize::from(datagram.first().map_or(0, |b| b & 0x0f));
    let mut idx = 4 + tkl;
    while let Some(&byte) = datagram.get(idx) {
        if byte == 0xff {
            return idx + 1 == datagram.len();
        }
        idx += 1;
        let extra = |nibble: u8| match nibble {
            13 => 1,
            14 => 2,
            _ => 0,
        };
        let delta_extra = extra(byte >> 4);
        let length = match byte & 0x0f {
            13 => datagram
                .get(idx + delta_extra)
                .map_or(0, |b| usize::from(*b) + 13),
            14 => match (
                datagram.get(idx + delta_extra),
                datagram.get(idx + delta_extra + 1),
            ) {
                (Some(hi), Some(lo)) => usize::from(u16::from_be_bytes([*hi, *lo])) + 269,
                _ => 0,
            },
            n => usize::from(n),
        };
        idx += delta_extra + extra(byte & 0x0f) + length;
    }
    false
}

/// A uint option value (RFC 7252 section 3.2), at most 8 bytes (the gateway reads any uint
/// option that wide; jeton-proto's codec stops at the 4 bytes of every option it names).
pub fn decode_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The shortest encoding of a uint option value.
pub fn encode_uint(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// The first value of an option as a uint.
pub fn uint_option(packet: &Packet, number: u16) -> Option<Result<u64, ()>> {
    packet
        .get_first_option(CoapOption::from(number))
        .map(|v| decode_uint(v).ok_or(()))
}

/// A Block1 or Block2 option value as coap-lite holds it.
pub fn block_option(block: BlockValue) -> Vec<u8> {
    encode_uint(u64::from(block.to_uint()))
}

/// Options the gateway understands; any other critical (odd) option gets 4.02.
pub fn is_known_option(number: u16) -> bool {
    matches!(
        number,
        URI_HOST
            | ETAG
            | OBSERVE
            | URI_PORT
            | URI_PATH
            | CONTENT_FORMAT
            | MAX_AGE
            | URI_QUERY
            | ACCEPT
            | BLOCK2
            | BLOCK1
            | SIZE2
            | SIZE1
            | ACCESS_TOKEN
            | CBOR_TABLE_VERSION
    )
}

/// Response codes as their byte value (class << 5 | detail).
pub mod code {
    /// 2.01 Created.
    pub const CREATED: u8 = 0x41;
    /// 2.02 Deleted.
    pub const DELETED: u8 = 0x42;
    /// 2.04 Changed.
    pub const CHANGED: u8 = 0x44;
    /// 2.05 Content.
    pub const CONTENT: u8 = 0x45;
    /// 2.31 Continue.
    pub const CONTINUE: u8 = 0x5f;
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: u8 = 0x80;
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: u8 = 0x81;
    /// 4.02 Bad Option.
    pub const BAD_OPTION: u8 = 0x82;
    /// 4.03 Forbidden.
    pub const FORBIDDEN: u8 = 0x83;
    /// 4.04 Not Found.
    pub const NOT_FOUND: u8 = 0x84;
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: u8 = 0x85;
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: u8 = 0x86;
    /// 4.08 Request Entity Incomplete.
    pub const REQUEST_ENTITY_INCOMPLETE: u8 = 0x88;
    /// 4.09 Conflict.
    pub const CONFLICT: u8 = 0x89;
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: u8 = 0x8d;
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: u8 = 0x8f;
    /// 4.29 Too Many Requests (RFC 8516).
    pub const TOO_MANY_REQUESTS: u8 = 0x9d;
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: u8 = 0xa0;
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: u8 = 0xa1;
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: u8 = 0xa2;
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: u8 = 0xa3;
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: u8 = 0xa4;
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: u8 = 0xa5;

    /// "c.dd" as CoAP writes it.
    pub fn dotted(code: u8) -> String {
        format!("{}.{:02}", code >> 5, code & 0x1f)
    }
}

/// A response or empty message ready to serialise.
pub fn build(kind: MessageType, code: u8, message_id: u16, token: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(kind);
    packet.header.code = MessageClass::from(code);
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    packet
}

/// A response to `request` made from the request alone: piggybacked on the ACK of a CON, a
/// NON (with a message id of its own) otherwise.
pub fn response_to(request: &Packet, code: u8) -> Packet {
    let mid = request.header.message_id;
    let (kind, mid) = match request.header.get_type() {
        MessageType::Confirmable => (MessageType::Acknowledgement, mid),
        _ => (MessageType::NonConfirmable, mid.wrapping_add(0x8000)),
    };
    build(kind, code, mid, request.get_token())
}

/// Serialises without coap-lite's 1280-byte cap: blockwise keeps what the gateway sends small.
pub fn to_datagram(packet: &Packet) -> Vec<u8> {
    packet.to_bytes_unlimited().unwrap_or_default()
}

/// An empty ACK or RST for `message_id`.
pub fn empty(kind: MessageType, message_id: u16) -> Vec<u8> {
    let [hi, lo] = message_id.to_be_bytes();
    let t = match kind {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    vec![0x40 | (t << 4), 0, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_format_errors() {
        assert_eq!(parse(&[0x40]).unwrap_err(), MalformedError::Header);
        // Version 2.
        assert_eq!(
            parse(&[0x80, 0x01, 0, 1]).unwrap_err(),
            MalformedError::Header
        );
        // Payload marker with no payload.
        assert!(parse(&[0x40, 0x01, 0, 1, 0xff]).is_err());
        // Token length 9.
        assert!(parse(&[0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        // Empty message carrying a token.
        assert!(parse(&[0x41, 0x00, 0, 1, 7]).is_err());
        // Option delta 15 outside the payload marker.
        assert!(parse(&[0x40, 0x01, 0, 1, 0xf1, 0]).is_err());
        // A well-formed GET /a.
        let p = parse(&[0x40, 0x01, 0, 1, 0xb1, b'a']).unwrap();
        assert_eq!(
            p.get_first_option(CoapOption::UriPath),
            Some(&b"a".to_vec())
        );
    }

    #[test]
    fn uint_encoding_is_minimal() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(60), vec![60]);
        assert_eq!(encode_uint(0x1234), vec![0x12, 0x34]);
        assert_eq!(decode_uint(&[0x12, 0x34]), Some(0x1234));
        assert_eq!(decode_uint(&[1; 9]), None);
    }
}
