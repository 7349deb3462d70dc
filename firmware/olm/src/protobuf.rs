//! The small subset of protobuf that Olm and Megolm messages use: varints and length-delimited
//! byte fields, read the way prost reads them (fields in any order, unknown fields skipped,
//! the last occurrence of a field wins, absent fields default).

use crate::error::{DecodeError, EncodeError};

pub(crate) const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// The number of bytes of the varint encoding of `value`.
pub(crate) const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A field's tag byte; all fields used here have numbers below 16.
pub(crate) const fn tag(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

/// Appends bytes to a caller-owned buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) const fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn put_varint(&mut self, mut value: u64) -> Result<(), EncodeError> {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                return self.put(&[byte]);
            }
            self.put(&[byte | 0x80])?;
        }
    }

    pub(crate) fn put_bytes_field(&mut self, field: u8, bytes: &[u8]) -> Result<(), EncodeError> {
        self.put(&[tag(field, WIRE_BYTES)])?;
        self.put_varint(bytes.len() as u64)?;
        self.put(bytes)
    }

    pub(crate) fn put_varint_field(&mut self, field: u8, value: u64) -> Result<(), EncodeError> {
        self.put(&[tag(field, WIRE_VARINT)])?;
        self.put_varint(value)
    }

    /// A mutable view of `len` bytes at the current position, then moves past them.
    pub(crate) fn reserve(&mut self, len: usize) -> Result<&mut [u8], EncodeError> {
        let start = self.pos;
        let end = start.checked_add(len).ok_or(EncodeError::BufferTooSmall)?;
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        self.pos = end;
        self.buf
            .get_mut(start..end)
            .ok_or(EncodeError::BufferTooSmall)
    }

    pub(crate) fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }
}

/// A field value as read from the wire.
pub(crate) enum FieldValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Reads protobuf fields from a byte slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or(DecodeError::InvalidProtobuf)?;
            self.rest = rest;
            // The tenth byte may only carry the top bit of a u64 (as prost checks).
            if i == 9 && byte > 1 {
                return Err(DecodeError::InvalidProtobuf);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidProtobuf)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError::InvalidProtobuf);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// The next field number and value, skipping fixed-width fields as prost does;
    /// `None` at the end of the input.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, FieldValue<'a>)>, DecodeError> {
        loop {
            if self.rest.is_empty() {
                return Ok(None);
            }
            let key = self.varint()?;
            if key > u64::from(u32::MAX) {
                return Err(DecodeError::InvalidProtobuf);
            }
            let wire_type = (key & 0x7) as u8;
            let field = (key >> 3) as u32;
            if field == 0 {
                return Err(DecodeError::InvalidProtobuf);
            }
            match wire_type {
                WIRE_VARINT => return Ok(Some((field, FieldValue::Varint(self.varint()?)))),
                WIRE_BYTES => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| DecodeError::InvalidProtobuf)?;
                    return Ok(Some((field, FieldValue::Bytes(self.take(len)?))));
                }
                WIRE_FIXED64 => {
                    self.take(8)?;
                }
                WIRE_FIXED32 => {
                    self.take(4)?;
                }
                _ => return Err(DecodeError::InvalidProtobuf),
            }
        }
    }
}

/// Reads a bytes field that must arrive with the bytes wire type.
pub(crate) fn expect_bytes<'a>(value: FieldValue<'a>) -> Result<&'a [u8], DecodeError> {
    match value {
        FieldValue::Bytes(b) => Ok(b),
        FieldValue::Varint(_) => Err(DecodeError::InvalidProtobuf),
    }
}

/// Reads a varint field that must arrive with the varint wire type.
pub(crate) fn expect_varint(value: FieldValue<'_>) -> Result<u64, DecodeError> {
    match value {
        FieldValue::Varint(v) => Ok(v),
        FieldValue::Bytes(_) => Err(DecodeError::InvalidProtobuf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn writes_and_reads_fields() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf);
        w.put_varint_field(2, 300).unwrap();
        w.put_bytes_field(4, b"abc").unwrap();
        let n = w.position();
        assert_eq!(&buf[..n], &[0x10, 0xac, 0x02, 0x22, 3, b'a', b'b', b'c']);
        let mut r = Reader::new(&buf[..n]);
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, expect_varint(v).unwrap()), (2, 300));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, expect_bytes(v).unwrap()), (4, &b"abc"[..]));
        assert!(r.next_field().unwrap().is_none());
    }

    #[test]
    fn rejects_truncated_and_bad_wire_types() {
        assert!(Reader::new(&[0x22, 5, 1]).next_field().is_err());
        assert!(Reader::new(&[0x0b]).next_field().is_err());
        assert!(Reader::new(&[0x10, 0x80]).next_field().is_err());
        assert!(Reader::new(&[0x00, 0x00]).next_field().is_err());
    }
}
