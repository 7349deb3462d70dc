//! Unpadded standard base64, the text form Matrix gives keys, signatures and ciphertexts.
//!
//! Decoding also accepts correctly padded input, as vodozemac does. Encoding and decoding run in
//! constant time with respect to the data (base64ct), since the input is often key material.

use base64ct::{Base64Unpadded, Encoding};

use crate::error::{DecodeError, EncodeError};

/// The length of the unpadded base64 encoding of `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

/// The largest number of bytes that `len` characters of base64 decode to.
pub const fn decoded_len_max(len: usize) -> usize {
    len / 4 * 3 + (len % 4) * 3 / 4
}

/// Encodes `input` as unpadded base64 into `out` and returns the text.
pub fn encode<'o>(input: &[u8], out: &'o mut [u8]) -> Result<&'o str, EncodeError> {
    Base64Unpadded::encode(input, out).map_err(|_| EncodeError::BufferTooSmall)
}

/// Decodes unpadded or padded base64 `input` into `out` and returns the bytes.
pub fn decode<'o>(input: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], DecodeError> {
    let unpadded_len = input.iter().rev().skip_while(|&&c| c == b'=').count();
    if decoded_len_max(unpadded_len) > out.len() {
        return Err(DecodeError::BufferTooSmall);
    }
    Base64Unpadded::decode(without_padding(input)?, out).map_err(|_| DecodeError::InvalidBase64)
}

/// `input` without its padding, so that one decoder reads both forms: padded base64 is whole
/// blocks of four characters ending in one or two `=`, what precedes them unpadded base64
/// (base64ct's padded decoder checks the same).
fn without_padding(input: &[u8]) -> Result<&[u8], DecodeError> {
    if input.last() != Some(&b'=') {
        return Ok(input);
    }
    if !input.len().is_multiple_of(4) {
        return Err(DecodeError::InvalidBase64);
    }
    let padding = if input.ends_with(b"==") { 2 } else { 1 };
    input
        .get(..input.len() - padding)
        .ok_or(DecodeError::InvalidBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_padding() {
        let mut text = [0u8; 16];
        let encoded = encode(b"TestVector", &mut text).unwrap();
        assert_eq!(encoded, "VGVzdFZlY3Rvcg");
        assert_eq!(encoded.len(), encoded_len(10));
        let mut bytes = [0u8; 10];
        assert_eq!(
            decode(encoded.as_bytes(), &mut bytes).unwrap(),
            b"TestVector"
        );
    }

    #[test]
    fn accepts_padding_like_vodozemac() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        let padded = decode(b"VGhpc0lzQVRlc3Q=", &mut a).unwrap();
        let unpadded = decode(b"VGhpc0lzQVRlc3Q", &mut b).unwrap();
        assert_eq!(padded, b"ThisIsATest");
        assert_eq!(padded, unpadded);
    }

    #[test]
    fn decodes_every_short_input_as_base64ct_does_padded_or_not() {
        let alphabet = *b"AQg/=";
        let mut input = [0u8; 7];
        for len in 0..=input.len() {
            for mut n in 0..alphabet.len().pow(len as u32) {
                for c in &mut input[..len] {
                    *c = alphabet[n % alphabet.len()];
                    n /= alphabet.len();
                }
                let text = &input[..len];
                let (mut ours, mut theirs) = ([0u8; 8], [0u8; 8]);
                let expected = if text.last() == Some(&b'=') {
                    base64ct::Base64::decode(text, &mut theirs)
                } else {
                    Base64Unpadded::decode(text, &mut theirs)
                };
                assert_eq!(
                    decode(text, &mut ours).ok(),
                    expected.ok(),
                    "{:?}",
                    core::str::from_utf8(text)
                );
            }
        }
    }

    #[test]
    fn rejects_garbage_and_small_buffers() {
        let mut out = [0u8; 16];
        assert_eq!(decode(b"!!!!", &mut out), Err(DecodeError::InvalidBase64));
        let mut tiny = [0u8; 2];
        assert_eq!(
            decode(b"VGVzdFZlY3Rvcg", &mut tiny),
            Err(DecodeError::BufferTooSmall)
        );
        assert_eq!(
            encode(b"TestVector", &mut tiny),
            Err(EncodeError::BufferTooSmall)
        );
    }

    proptest::proptest! {
        #[test]
        fn matches_vodozemac_base64(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let mut text = [0u8; 140];
            let ours = encode(&bytes, &mut text).unwrap();
            let theirs = vodozemac::base64_encode(&bytes);
            proptest::prop_assert_eq!(ours, theirs.as_str());
            let mut back = [0u8; 100];
            proptest::prop_assert_eq!(decode(ours.as_bytes(), &mut back).unwrap(), &bytes[..]);
        }
    }
}
