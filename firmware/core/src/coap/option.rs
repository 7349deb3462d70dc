//! Option numbers the engine reads or writes, and the values with structure: the Block1
//! and Block2 value of RFC 7959 and the Observe sequence number of RFC 7641.
//!
//! The profile's own numbers (256, 257) are repeated here so that the engine can treat them
//! as known; jeton-proto owns their meaning.

use core::fmt;

/// Observe (RFC 7641): 0 registers, 1 deregisters; in a notification, its sequence number.
pub const OBSERVE: u16 = 6;
/// ETag: identifies a representation, so blocks of different versions are not mixed.
pub const ETAG: u16 = 4;
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
/// Block2 (RFC 7959): a block of the response.
pub const BLOCK2: u16 = 23;
/// Block1 (RFC 7959): a block of the request.
pub const BLOCK1: u16 = 27;
/// Size2: the total size of the response body.
pub const SIZE2: u16 = 28;
/// Size1: the total size of the request body.
pub const SIZE1: u16 = 60;
/// MSC3079: the Matrix access token.
pub const ACCESS_TOKEN: u16 = 256;
/// MSC3079: the version of the CBOR integer-key table.
pub const CBOR_TABLE_VERSION: u16 = 257;

/// Options whose number the engine manages itself; a request given to the engine must not
/// carry them.
pub const ENGINE_MANAGED: [u16; 4] = [OBSERVE, BLOCK2, BLOCK1, SIZE1];

/// Whether an option is critical (odd number, RFC 7252 §5.4.1): a receiver that does not
/// know it must reject the message.
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

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
            | 8 // Location-Path
            | 20 // Location-Query
    )
}

/// The value of a Block1 or Block2 option: block number, more flag and size exponent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlockValue {
    /// The block's index, counted in blocks of this value's size.
    pub num: u32,
    /// Whether more blocks follow.
    pub more: bool,
    /// The size exponent: blocks are `2^(szx + 4)` bytes, 16 to 1024.
    pub szx: u8,
}

/// The largest size exponent over UDP (1024-byte blocks); 7 is reserved for BERT over TCP.
pub const MAX_SZX: u8 = 6;

/// The largest block number a 3-byte option value holds.
pub const MAX_BLOCK_NUM: u32 = (1 << 20) - 1;

impl BlockValue {
    /// The block size in bytes.
    pub const fn size(self) -> usize {
        1 << (self.szx as usize + 4)
    }

    /// The byte offset of this block in the body.
    pub const fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// The option's integer value.
    pub const fn to_uint(self) -> u32 {
        (self.num << 4) | ((self.more as u32) << 3) | self.szx as u32
    }

    /// Reads an option value; `None` for a value above 3 bytes or the reserved size 7.
    pub fn from_option(value: &[u8]) -> Option<BlockValue> {
        if value.len() > 3 {
            return None;
        }
        let raw = super::message::decode_uint(value)?;
        let szx = (raw & 0b111) as u8;
        if szx > MAX_SZX {
            return None;
        }
        Some(BlockValue {
            num: raw >> 4,
            more: raw & 0b1000 != 0,
            szx,
        })
    }
}

impl fmt::Debug for BlockValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 7959's own notation: num/more/size.
        write!(f, "{}/{}/{}", self.num, u8::from(self.more), self.size())
    }
}

/// The size exponent for a block size in bytes, rounded down to a power of two and clamped
/// to 16..=1024.
pub const fn szx_for_size(size: usize) -> u8 {
    let mut szx = MAX_SZX;
    while szx > 0 && (1usize << (szx + 4)) > size {
        szx -= 1;
    }
    szx
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

    /// RFC 7959 §2.2: "2/0/128" is num 2, no more, SZX 3 -> (2 << 4) | 3 = 0x23.
    #[test]
    fn block_value_matches_rfc7959_notation() {
        let block = BlockValue::from_option(&[0x23]).unwrap();
        assert_eq!(
            block,
            BlockValue {
                num: 2,
                more: false,
                szx: 3
            }
        );
        assert_eq!(block.size(), 128);
        assert_eq!(block.offset(), 256);
        assert_eq!(format!("{block:?}"), "2/0/128");
        // An empty value is block 0/0/16.
        assert_eq!(BlockValue::from_option(&[]).unwrap().size(), 16);
        // 1/1/1024 -> (1 << 4) | 8 | 6 = 0x1E.
        let next = BlockValue {
            num: 1,
            more: true,
            szx: 6,
        };
        assert_eq!(next.to_uint(), 0x1E);
        assert_eq!(BlockValue::from_option(&[0x07]), None, "SZX 7 is BERT");
        assert_eq!(BlockValue::from_option(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn szx_rounds_down_and_clamps() {
        assert_eq!(szx_for_size(1024), 6);
        assert_eq!(szx_for_size(4096), 6);
        assert_eq!(szx_for_size(1000), 5);
        assert_eq!(szx_for_size(16), 0);
        assert_eq!(szx_for_size(1), 0);
    }

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
