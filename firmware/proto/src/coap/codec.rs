//! The option sequence of RFC 7252 §3.1 on the wire, and `uint` option values (§3.2).
//!
//! Each option is a delta from the previous option's number and a value length, as 4-bit
//! nibbles with 1- or 2-byte extensions (13 and 269 added), then the value; a `0xFF` byte
//! ends the options and starts the payload. This module reads such a sequence without copying
//! and writes option heads into a caller's buffer; it knows numbers only as integers (their
//! names are in [`super::option`]).

use core::fmt;

/// The byte that ends the options and starts the payload.
pub const PAYLOAD_MARKER: u8 = 0xFF;

/// The longest option value the format can express: a 2-byte length extension plus 269.
pub const MAX_OPTION_LEN: usize = 65_535 + 269;

/// Why an option sequence is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionError {
    /// An option header uses the reserved nibble 15, or its number exceeds 65535.
    Invalid,
    /// An option's length runs past the end of the bytes.
    Truncated,
    /// A payload marker is followed by no payload.
    EmptyPayload,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionError::Invalid => "a CoAP option header is malformed",
            OptionError::Truncated => "a CoAP option value runs past the end of the message",
            OptionError::EmptyPayload => "a payload marker is followed by no payload",
        })
    }
}

impl core::error::Error for OptionError {}

/// Reads an option sequence one option at a time, reporting the first malformed one.
#[derive(Clone)]
pub struct OptionReader<'a> {
    rest: &'a [u8],
    number: u16,
}

impl fmt::Debug for OptionReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionReader")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

impl<'a> OptionReader<'a> {
    /// Reads an option sequence encoded from option number 0, up to the payload marker or the
    /// end of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        OptionReader {
            rest: bytes,
            number: 0,
        }
    }

    /// The next option, `None` at the end or at the payload marker (left unread).
    pub fn next_option(&mut self) -> Result<Option<(u16, &'a [u8])>, OptionError> {
        let Some((&first, after_first)) = self.rest.split_first() else {
            return Ok(None);
        };
        if first == PAYLOAD_MARKER {
            return Ok(None);
        }
        let mut cursor = after_first;
        let delta = read_extended(first >> 4, &mut cursor)?;
        let len = read_extended(first & 0x0F, &mut cursor)?;
        let number = u32::from(self.number) + delta;
        let number = u16::try_from(number).map_err(|_| OptionError::Invalid)?;
        let (value, rest) = usize::try_from(len)
            .ok()
            .and_then(|len| cursor.split_at_checked(len))
            .ok_or(OptionError::Truncated)?;
        self.rest = rest;
        self.number = number;
        Ok(Some((number, value)))
    }

    /// The bytes not read yet: empty, or the payload marker and the payload.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// Once [`OptionReader::next_option`] gave `None`: the payload after the marker, empty
    /// when there is no marker.
    pub fn payload(&self) -> Result<&'a [u8], OptionError> {
        match self.rest.split_first() {
            None => Ok(&[]),
            Some((_marker, [])) => Err(OptionError::EmptyPayload),
            Some((_marker, payload)) => Ok(payload),
        }
    }
}

/// Checks a whole option sequence and splits it from the payload after it.
pub fn split_options(bytes: &[u8]) -> Result<(&[u8], &[u8]), OptionError> {
    let mut reader = OptionReader::new(bytes);
    while reader.next_option()?.is_some() {}
    let (options, _) = bytes.split_at(bytes.len() - reader.remaining().len());
    Ok((options, reader.payload()?))
}

/// Reads an option delta or length whose 4-bit field is `nibble`, taking the 1- or
/// 2-byte extension from `cursor`.
fn read_extended(nibble: u8, cursor: &mut &[u8]) -> Result<u32, OptionError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let (&byte, rest) = cursor.split_first().ok_or(OptionError::Truncated)?;
            *cursor = rest;
            Ok(u32::from(byte) + 13)
        }
        14 => {
            let (bytes, rest) = cursor
                .split_first_chunk::<2>()
                .ok_or(OptionError::Truncated)?;
            *cursor = rest;
            Ok(u32::from(u16::from_be_bytes(*bytes)) + 269)
        }
        _ => Err(OptionError::Invalid),
    }
}

/// Iterator over `(number, value)` pairs of an encoded option sequence.
///
/// On a sequence that [`split_options`] accepted it yields every option; on anything else it
/// stops at the first malformed option.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    reader: OptionReader<'a>,
}

impl<'a> Options<'a> {
    /// Reads an option sequence encoded from option number 0.
    pub const fn new(bytes: &'a [u8]) -> Options<'a> {
        Options {
            reader: OptionReader::new(bytes),
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let item = self.reader.next_option().ok().flatten();
        if item.is_none() {
            self.reader.rest = &[];
        }
        item
    }
}

/// The bytes that introduce an option: the delta and length nibbles and their
/// extensions, and how many of the five are used. `None` for a value longer than
/// [`MAX_OPTION_LEN`].
pub fn option_head(delta: u16, value_len: usize) -> Option<([u8; 5], usize)> {
    let value_len = u32::try_from(value_len)
        .ok()
        .filter(|len| *len as usize <= MAX_OPTION_LEN)?;
    let (delta_nibble, delta_ext, delta_ext_len) = split_extended(u32::from(delta));
    let (len_nibble, len_ext, len_ext_len) = split_extended(value_len);
    let bytes = core::iter::once((delta_nibble << 4) | len_nibble)
        .chain(delta_ext.into_iter().take(delta_ext_len))
        .chain(len_ext.into_iter().take(len_ext_len));
    let mut head = [0u8; 5];
    for (slot, byte) in head.iter_mut().zip(bytes) {
        *slot = byte;
    }
    Some((head, 1 + delta_ext_len + len_ext_len))
}

/// Splits an option delta or length into its nibble and big-endian extension bytes.
fn split_extended(value: u32) -> (u8, [u8; 2], usize) {
    match value {
        0..=12 => (value as u8, [0, 0], 0),
        13..=268 => (13, [(value - 13) as u8, 0], 1),
        _ => (14, ((value - 269) as u16).to_be_bytes(), 2),
    }
}

/// Reads a CoAP `uint` option value (big-endian, leading zeros allowed, at most 4 bytes).
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte)),
    )
}

/// Encodes `value` as the shortest CoAP `uint` (0 is the empty string): the value is the
/// last `len` bytes of the returned array.
pub fn encode_uint(value: u32) -> ([u8; 4], usize) {
    (
        value.to_be_bytes(),
        4 - (value.leading_zeros() / 8) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(delta: u16, len: usize) -> Vec<u8> {
        let (bytes, used) = option_head(delta, len).unwrap();
        bytes[..used].to_vec()
    }

    /// RFC 7252 §3.1: 0..12 in the nibble, 13..268 as nibble 13 and one byte (value - 13),
    /// 269 and above as nibble 14 and two bytes (value - 269).
    #[test]
    fn option_heads_use_the_rfc_offsets() {
        assert_eq!(head(11, 11), [0xBB]);
        assert_eq!(head(60, 300), [0xDE, 47, 0x00, 0x1F]);
        assert_eq!(head(196, 3), [0xD3, 183]);
        assert_eq!(head(2000, 0), [0xE0, 0x06, 0xC3]);
        assert_eq!(head(0, MAX_OPTION_LEN), [0x0E, 0xFF, 0xFF]);
        assert_eq!(option_head(0, MAX_OPTION_LEN + 1), None);
    }

    #[test]
    fn a_sequence_reads_back_and_splits_from_its_payload() {
        // Uri-Path "a" (delta 11), option 256 "tok" (delta 245: nibble 13, 232), payload "hi".
        let bytes = b"\xb1a\xd3\xe8tok\xffhi";
        let (options, payload) = split_options(bytes).unwrap();
        assert_eq!(payload, b"hi");
        let read: Vec<_> = Options::new(options).collect();
        assert_eq!(read, [(11, &b"a"[..]), (256, &b"tok"[..])]);
        assert_eq!(split_options(b"\xb1a").unwrap(), (&b"\xb1a"[..], &[][..]));
    }

    #[test]
    fn malformed_sequences_name_the_fault() {
        let cases: &[(&[u8], OptionError)] = &[
            (b"\xf0", OptionError::Invalid),
            (b"\x0f", OptionError::Invalid),
            (b"\xb5ab", OptionError::Truncated),
            (b"\xd0", OptionError::Truncated),
            (b"\xe0\x01", OptionError::Truncated),
            (b"\xff", OptionError::EmptyPayload),
            // Two deltas that add up past 65535.
            (b"\xe0\xfe\xf2\xe0\xfe\xf2", OptionError::Invalid),
        ];
        for (bytes, expected) in cases {
            assert_eq!(split_options(bytes), Err(*expected), "{bytes:02x?}");
        }
        // The iterator stops at the fault and stays stopped.
        let mut options = Options::new(b"\xb1a\xf0\xb1b");
        assert_eq!(options.next(), Some((11, &b"a"[..])));
        assert_eq!(options.next(), None);
        assert_eq!(options.next(), None);
    }

    #[test]
    fn uint_encoding_is_minimal() {
        for (value, expected) in [
            (0u32, &[][..]),
            (1, &[1][..]),
            (255, &[255][..]),
            (256, &[1, 0][..]),
            (0x0102_0304, &[1, 2, 3, 4][..]),
        ] {
            let (bytes, len) = encode_uint(value);
            assert_eq!(&bytes[4 - len..], expected);
            assert_eq!(decode_uint(expected), Some(value));
        }
        assert_eq!(decode_uint(&[0, 0, 0, 1]), Some(1));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }
}
