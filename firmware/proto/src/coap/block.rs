//! The value of a Block1 or Block2 option (RFC 7959 §2.2) and block sizes.

use core::fmt;

use super::codec::decode_uint;

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
        let raw = decode_uint(value)?;
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

    /// RFC 7959 figure 2: Block2 num 2, more, SZX 6 (1024 bytes) is 0x2e.
    #[test]
    fn block_values_round_trip_per_rfc7959_examples() {
        let v = BlockValue::from_option(&[0x2e]).unwrap();
        assert_eq!(
            v,
            BlockValue {
                num: 2,
                more: true,
                szx: 6
            }
        );
        assert_eq!(v.to_uint(), 0x2e);
        assert_eq!(v.offset(), 2048);
        let first = BlockValue {
            num: 0,
            more: false,
            szx: 0,
        };
        assert_eq!(first.to_uint(), 0, "written as the empty option value");
    }

    #[test]
    fn szx_rounds_down_and_clamps() {
        assert_eq!(szx_for_size(1024), 6);
        assert_eq!(szx_for_size(4096), 6);
        assert_eq!(szx_for_size(1000), 5);
        assert_eq!(szx_for_size(16), 0);
        assert_eq!(szx_for_size(1), 0);
    }
}
