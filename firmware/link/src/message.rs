//! The CoAP message as the link sees it: a code, a sorted option list and a payload, with no
//! UDP framing (type, message id and token stay with the caller's codec, as OSCORE leaves
//! them outside the protection). The OSCORE plaintext's options use the encoding of RFC 7252
//! §3.1, jeton-proto's [`codec`](jeton_proto::coap::codec), which the token's CoAP engine
//! shares.

use jeton_proto::coap::codec::{MAX_OPTION_LEN, OptionReader, option_head};

use crate::OscoreError;

/// The most options one message may carry, inner and outer together.
pub const MAX_OPTIONS: usize = 24;

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
        let (head, head_len) = option_head(delta, value.len()).ok_or(OscoreError::OptionTooLong)?;
        put(out, at, head.get(..head_len).unwrap_or(&[]))?;
        put(out, at, value)?;
    }
    Ok(())
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
    let mut reader = OptionReader::new(bytes);
    while let Some((number, value)) = reader
        .next_option()
        .map_err(|_| OscoreError::MalformedPlaintext)?
    {
        options.insert(number, value)?;
    }
    reader
        .payload()
        .map_err(|_| OscoreError::MalformedPlaintext)
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
