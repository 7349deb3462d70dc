//! What the engine makes of options: which numbers it manages itself, which it understands
//! in a response, and the freshness of Observe sequence numbers (RFC 7641).
//!
//! The option numbers and the Block1/Block2 value are jeton-proto's, shared with the link
//! and the gateway; they are re-exported here so that the engine's users name them in one
//! place.

pub use jeton_proto::coap::block::{BlockValue, MAX_BLOCK_NUM, MAX_SZX, szx_for_size};
pub use jeton_proto::coap::option::{
    ACCEPT, ACCESS_TOKEN, BLOCK1, BLOCK2, CBOR_TABLE_VERSION, CONTENT_FORMAT, ETAG, LOCATION_PATH,
    LOCATION_QUERY, MAX_AGE, OBSERVE, RESPONSE_CAPACITY, SIZE1, SIZE2, URI_PATH, URI_QUERY,
    is_critical,
};

/// Options whose number the engine manages itself; a request given to the engine must not
/// carry them.
pub const ENGINE_MANAGED: [u16; 4] = [OBSERVE, BLOCK2, BLOCK1, SIZE1];

/// Whether the engine understands an option that appears in a response. A response with an
/// unknown critical option is rejected, as RFC 7252 §5.4.1 requires.
pub const fn is_known_in_response(number: u16) -> bool {
    matches!(
        number,
        OBSERVE
            | ETAG
            | CONTENT_FORMAT
            | MAX_AGE
            | BLOCK2
            | BLOCK1
            | SIZE2
            | SIZE1
            | ACCESS_TOKEN
            | CBOR_TABLE_VERSION
            | LOCATION_PATH
            | LOCATION_QUERY
    )
}

/// Notifications older than this are superseded by any newer one, whatever their numbers
/// (RFC 7641 §3.4: 128 seconds).
pub const OBSERVE_FRESHNESS_MS: u64 = 128_000;

/// Whether a notification with sequence number `new`, received `elapsed_ms` after the
/// one numbered `last`, is newer than it (RFC 7641 §3.4). Sequence numbers are 24-bit
/// and wrap.
pub const fn observe_is_fresher(last: u32, new: u32, elapsed_ms: u64) -> bool {
    const HALF: u32 = 1 << 23;
    (last < new && new - last < HALF)
        || (last > new && last - new > HALF)
        || elapsed_ms > OBSERVE_FRESHNESS_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7641 §3.4: V1 < V2 within half the space, or wrapped, or 128 s passed.
    #[test]
    fn observe_freshness_follows_rfc7641() {
        assert!(observe_is_fresher(5, 6, 0));
        assert!(
            !observe_is_fresher(6, 5, 0),
            "a reordered older one is stale"
        );
        assert!(!observe_is_fresher(6, 6, 0), "a duplicate is stale");
        assert!(observe_is_fresher((1 << 24) - 1, 2, 0), "wrap-around");
        assert!(!observe_is_fresher(2, (1 << 24) - 1, 0));
        assert!(
            observe_is_fresher(6, 5, 128_001),
            "after 128 s anything is newer"
        );
    }
}
