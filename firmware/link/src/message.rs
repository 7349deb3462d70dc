//! The CoAP message as the link sees it: a code, a sorted option list and a payload, with no
//! UDP framing (type, message id and token stay with the caller's codec, as OSCORE leaves
//! them outside the protection). This module also owns the option encoding of RFC 7252
//! §3.1 that the OSCORE plaintext reuses.

use crate::OscoreError;

/// The most options one message may carry, inner and outer together.
pub const MAX_OPTIONS: usize = 24;

/// CoAP's largest option length (13-bit extension + 269).
const MAX_OPTION_LEN: usize = 65_804;

/// A message's options, sorted by number (repeated numbers keep their order).
#[derive(Clone, Copy)]
pub struct OptionList<'a> {
    len: usize,
    items: [(u16, &'a [u8]); MAX_OPTIONS],
}

impl Default for OptionList<'_> {
    fn default() -> Self {
        OptionList {
            len: 0,
            items: [(0, &[]); MAX_OPTIONS],
        }
    }
}

impl core::fmt::Debug for OptionList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for OptionList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a> OptionList<'a> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list of these options, which must be sorted by number.
    pub fn from_sorted(options: &[(u16, &'a [u8])]) -> Result<Self, OscoreError> {
        let mut list = Self::new();
        for &(number, value) in options {
            list.push(number, value)?;
        }
        Ok(list)
    }

    /// Appends an option; its number must not be below the last one's.
    pub fn push(&mut self, number: u16, value: &'a [u8]) -> Result<(), OscoreError> {
        if self.iter().last().is_some_and(|(last, _)| last > number) {
            return Err(OscoreError::OptionsOutOfOrder);
        }
        self.insert(number, value)
    }

    /// Inserts an option at its place by number (after options with the same number).
    pub fn insert(&mut self, number: u16, value: &'a [u8]) -> Result<(), OscoreError> {
        if value.len() > MAX_OPTION_LEN {
            return Err(OscoreError::OptionTooLong);
        }
        if self.len >= MAX_OPTIONS {
            return Err(OscoreError::TooManyOptions);
        }
        let at = self.iter().take_while(|(n, _)| *n <= number).count();
        let tail = self
            .items
            .get_mut(at..=self.len)
            .ok_or(OscoreError::TooManyOptions)?;
        tail.rotate_right(1);
        if let Some(slot) = tail.first_mut() {
            *slot = (number, value);
        }
        self.len += 1;
        Ok(())
    }

    /// The options in order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        self.items.iter().take(self.len).copied()
    }

    /// The value of the first option with this number.
    pub fn get(&self, number: u16) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == number).map(|(_, v)| v)
    }

    /// The number of options.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no options.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A CoAP message without its UDP framing: what OSCORE protects, or the outer message it
/// produces.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Message<'a> {
    /// The request method or response code (`class << 5 | detail`).
    pub code: u8,
    /// The options, sorted by number.
    pub options: OptionList<'a>,
    /// The payload (empty for none).
    pub payload: &'a [u8],
}

/// Writes options in RFC 7252 encoding (delta and length nibbles with extensions) at
/// `out[*at..]`, advancing `at`.
pub(crate) fn encode_options<'a>(
    options: impl Iterator<Item = (u16, &'a [u8])>,
    out: &mut [u8],
    at: &mut usize,
) -> Result<(), OscoreError> {
    let mut previous = 0u16;
    for (number, value) in options {
        let delta = number
            .checked_sub(previous)
            .ok_or(OscoreError::OptionsOutOfOrder)?;
        previous = number;
        let (delta_nibble, delta_ext, delta_ext_len) = nibble(usize::from(delta));
        let (len_nibble, len_ext, len_ext_len) = nibble(value.len());
        if value.len() > MAX_OPTION_LEN {
            return Err(OscoreError::OptionTooLong);
        }
        put(out, at, &[(delta_nibble << 4) | len_nibble])?;
        put(out, at, delta_ext.get(..delta_ext_len).unwrap_or(&[]))?;
        put(out, at, len_ext.get(..len_ext_len).unwrap_or(&[]))?;
        put(out, at, value)?;
    }
    Ok(())
}

/// The nibble and extension bytes for a delta or length.
fn nibble(value: usize) -> (u8, [u8; 2], usize) {
    match value {
        0..=12 => (value as u8, [0, 0], 0),
        13..=268 => (13, [(value - 13) as u8, 0], 1),
        _ => {
            let ext = (value.saturating_sub(269) as u16).to_be_bytes();
            (14, ext, 2)
        }
    }
}

/// Copies `bytes` to `out[*at..]`, advancing `at`.
pub(crate) fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) -> Result<(), OscoreError> {
    let end = at
        .checked_add(bytes.len())
        .ok_or(OscoreError::BufferTooSmall)?;
    out.get_mut(*at..end)
        .ok_or(OscoreError::BufferTooSmall)?
        .copy_from_slice(bytes);
    *at = end;
    Ok(())
}

/// Reads an RFC 7252 option sequence and the payload after the 0xFF marker. Fails on a
/// reserved nibble, a truncated option, an empty payload after a marker, or too many options.
pub(crate) fn decode_options<'a>(
    bytes: &'a [u8],
    options: &mut OptionList<'a>,
) -> Result<&'a [u8], OscoreError> {
    let mut rest = bytes;
    let mut number = 0u32;
    while let Some((&first, tail)) = rest.split_first() {
        if first == 0xFF {
            if tail.is_empty() {
                return Err(OscoreError::MalformedPlaintext);
            }
            return Ok(tail);
        }
        rest = tail;
        let delta = extended(first >> 4, &mut rest)?;
        let len = extended(first & 0x0F, &mut rest)?;
        number += delta;
        let number16 = u16::try_from(number).map_err(|_| OscoreError::MalformedPlaintext)?;
        if rest.len() < len as usize {
            return Err(OscoreError::MalformedPlaintext);
        }
        let (value, tail) = rest.split_at(len as usize);
        rest = tail;
        options.insert(number16, value)?;
    }
    Ok(&[])
}

fn extended(nibble: u8, rest: &mut &[u8]) -> Result<u32, OscoreError> {
    let take = |rest: &mut &[u8], n: usize| -> Result<u32, OscoreError> {
        let bytes = rest.get(..n).ok_or(OscoreError::MalformedPlaintext)?;
        *rest = rest.get(n..).unwrap_or(&[]);
        Ok(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
    };
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => Ok(take(rest, 1)? + 13),
        14 => Ok(take(rest, 2)? + 269),
        _ => Err(OscoreError::MalformedPlaintext),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_rfc7252_encoding() {
        let long = [7u8; 300];
        let list = OptionList::from_sorted(&[
            (11, b"_matrix"),
            (11, b"client"),
            (27, &[0x16]),
            (256, b"token"),
            (2000, &long),
        ])
        .unwrap();
        let mut out = [0u8; 400];
        let mut at = 0;
        encode_options(list.iter(), &mut out, &mut at).unwrap();
        out[at] = 0xFF;
        out[at + 1] = 0x42;
        let mut decoded = OptionList::new();
        let payload = decode_options(&out[..at + 2], &mut decoded).unwrap();
        assert_eq!(decoded, list);
        assert_eq!(payload, &[0x42]);
    }

    #[test]
    fn insert_keeps_number_order_and_capacity_is_an_error() {
        let mut list = OptionList::new();
        list.insert(11, b"b").unwrap();
        list.insert(3, b"a").unwrap();
        list.insert(11, b"c").unwrap();
        let numbers: Vec<_> = list.iter().collect();
        assert_eq!(numbers, [(3, &b"a"[..]), (11, b"b"), (11, b"c")]);
        assert_eq!(list.push(5, b""), Err(OscoreError::OptionsOutOfOrder));
        for _ in list.len()..MAX_OPTIONS {
            list.push(60, b"").unwrap();
        }
        assert_eq!(list.push(60, b""), Err(OscoreError::TooManyOptions));
    }

    #[test]
    fn reserved_nibbles_and_truncation_are_malformed() {
        let mut list = OptionList::new();
        assert_eq!(
            decode_options(&[0xF0], &mut list),
            Err(OscoreError::MalformedPlaintext)
        );
        let mut list = OptionList::new();
        assert_eq!(
            decode_options(&[0xB3, b'a'], &mut list),
            Err(OscoreError::MalformedPlaintext)
        );
        let mut list = OptionList::new();
        assert_eq!(
            decode_options(&[0xFF], &mut list),
            Err(OscoreError::MalformedPlaintext),
            "a payload marker with no payload"
        );
    }
}
