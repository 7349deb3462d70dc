//! The identifiers a protected message carries: a sender or recipient id (kid), a Partial IV,
//! and the pair of them that binds a response to its request.

use crate::OscoreError;

use super::{MAX_ID_LEN, MAX_PIV_LEN};

/// A sender or recipient id (a kid): 0 to [`MAX_ID_LEN`] bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Id {
    pub(super) len: u8,
    pub(super) bytes: [u8; MAX_ID_LEN],
}

impl Id {
    /// The id with these bytes.
    pub fn new(bytes: &[u8]) -> Result<Id, OscoreError> {
        let mut id = Id::default();
        id.bytes
            .get_mut(..bytes.len())
            .ok_or(OscoreError::IdTooLong)?
            .copy_from_slice(bytes);
        id.len = bytes.len() as u8;
        Ok(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl core::fmt::Debug for Id {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Id(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A Partial IV: a sequence number in 1 to 5 big-endian bytes without leading zeros.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PartialIv {
    len: u8,
    bytes: [u8; MAX_PIV_LEN],
}

impl PartialIv {
    /// The Partial IV of a sequence number (0 is the single byte 0x00).
    pub fn from_sequence(sequence: u64) -> PartialIv {
        let all = sequence.to_be_bytes();
        let significant = (8 - (sequence.leading_zeros() / 8) as usize).clamp(1, MAX_PIV_LEN);
        let mut piv = PartialIv {
            len: significant as u8,
            ..PartialIv::default()
        };
        if let (Some(dst), Some(src)) =
            (piv.bytes.get_mut(..significant), all.get(8 - significant..))
        {
            dst.copy_from_slice(src);
        }
        piv
    }

    /// The Partial IV in these bytes (1 to 5 of them).
    pub fn new(bytes: &[u8]) -> Result<PartialIv, OscoreError> {
        if bytes.is_empty() || bytes.len() > MAX_PIV_LEN {
            return Err(OscoreError::MalformedOscoreOption);
        }
        let mut piv = PartialIv {
            len: bytes.len() as u8,
            ..PartialIv::default()
        };
        piv.bytes
            .get_mut(..bytes.len())
            .ok_or(OscoreError::MalformedOscoreOption)?
            .copy_from_slice(bytes);
        Ok(piv)
    }

    /// The bytes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The sequence number it encodes.
    pub fn sequence(&self) -> u64 {
        self.as_bytes()
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl core::fmt::Debug for PartialIv {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PartialIv({})", self.sequence())
    }
}

/// What ties a response to its request: the request's kid and Partial IV, which the
/// response's AAD (and, without its own Partial IV, its nonce) reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestBinding {
    /// The requester's sender id.
    pub kid: Id,
    /// The request's Partial IV.
    pub piv: PartialIv,
}
