//! CoAP option numbers (RFC 7252 §12.2 registry and its extensions), each named once for the
//! token, the link and the gateway, and the critical/elective rule.
//!
//! The numbers of the protected link (OSCORE 9, EDHOC 21, Echo 252) belong to jeton-link,
//! which gives them their meaning.

/// Uri-Host: outside OSCORE's protection; the gateway serves one host.
pub const URI_HOST: u16 = 3;
/// ETag: identifies a representation, so blocks of different versions are not mixed.
pub const ETAG: u16 = 4;
/// Observe (RFC 7641): 0 registers, 1 deregisters; in a notification, its sequence number.
pub const OBSERVE: u16 = 6;
/// Uri-Port: outside OSCORE's protection.
pub const URI_PORT: u16 = 7;
/// Location-Path: where a created resource lives.
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path: one path segment.
pub const URI_PATH: u16 = 11;
/// Content-Format of the payload.
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age: seconds the response stays fresh.
pub const MAX_AGE: u16 = 14;
/// Uri-Query: one query parameter.
pub const URI_QUERY: u16 = 15;
/// Accept: the content format the client wants.
pub const ACCEPT: u16 = 17;
/// Location-Query: the query of a created resource.
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (RFC 7959): a block of the response.
pub const BLOCK2: u16 = 23;
/// Block1 (RFC 7959): a block of the request.
pub const BLOCK1: u16 = 27;
/// Size2: the total size of the response body.
pub const SIZE2: u16 = 28;
/// Proxy-Uri: asks a forward proxy to fetch a URI; the gateway is none.
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme: with Uri-Host and friends, the same as Proxy-Uri.
pub const PROXY_SCHEME: u16 = 39;
/// Size1: the total size of the request body; in a 4.13, the largest the server accepts.
pub const SIZE1: u16 = 60;
/// MSC3079: the Matrix access token, without the `Bearer ` prefix. A peer sends it once and
/// the gateway keeps it per peer ("sticky") until it changes. Its number is even: elective
/// (RFC 7252 §5.4.6).
pub const ACCESS_TOKEN: u16 = 256;
/// MSC3079: the version of the CBOR integer-key table as an unsigned integer: 1 = MSC3079 v1,
/// 2 = jeton v2 (see [`crate::TableVersion`]). Absent means version 1.
pub const CBOR_TABLE_VERSION: u16 = 257;
/// jeton: the largest response body in bytes the client can hold, as an unsigned integer, on a
/// `/sync` request (registration, long-poll): the gateway never sends a larger sync body and
/// splits what does not fit (PROFILE.md section 9). Even: elective, so a gateway that does not
/// know it ignores it.
pub const RESPONSE_CAPACITY: u16 = 258;

/// Whether an option is critical (odd number, RFC 7252 §5.4.1): a receiver that does not
/// know it must reject the message.
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_numbers_are_critical() {
        // RFC 7252 §5.4.6: bit 0 of the number is the Critical bit.
        assert!(is_critical(CBOR_TABLE_VERSION));
        assert!(is_critical(URI_PATH) && is_critical(BLOCK1) && is_critical(BLOCK2));
        assert!(!is_critical(ACCESS_TOKEN) && !is_critical(CONTENT_FORMAT));
        assert!(!is_critical(RESPONSE_CAPACITY));
    }
}
