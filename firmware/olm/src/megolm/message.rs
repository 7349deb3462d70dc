//! The Megolm message encoding: version byte 3, a protobuf body (field 1: message index,
//! field 2: ciphertext), an 8-byte truncated HMAC over everything before it, and an Ed25519
//! signature over everything before the signature.

use core::fmt;

use crate::{
    cipher::{TRUNCATED_MAC_LEN, VERSION_TRUNCATED_MAC, ciphertext_len, message_version},
    error::DecodeError,
    keys::Ed25519Signature,
    protobuf::{self, Reader, Writer, varint_len},
};

const INDEX_FIELD: u8 = 1;
const CIPHERTEXT_FIELD: u8 = 2;

/// The encoded length of a Megolm message carrying `plaintext_len` bytes.
pub const fn megolm_message_len(plaintext_len: usize) -> usize {
    megolm_body_len(u32::MAX, ciphertext_len(plaintext_len))
        + TRUNCATED_MAC_LEN
        + Ed25519Signature::LENGTH
}

/// Version byte plus protobuf body.
pub(crate) const fn megolm_body_len(index: u32, ciphertext_len: usize) -> usize {
    1 + 1 + varint_len(index as u64) + 1 + varint_len(ciphertext_len as u64) + ciphertext_len
}

/// A decoded Megolm message, borrowing the bytes it was read from.
#[derive(Clone, Copy)]
pub struct MegolmMessage<'a> {
    version: u8,
    message_index: u32,
    ciphertext: &'a [u8],
    mac: &'a [u8],
    signature: Ed25519Signature,
    /// The bytes the MAC covers (version and body).
    mac_input: &'a [u8],
    /// The bytes the signature covers (version, body and MAC).
    signed_input: &'a [u8],
}

impl<'a> MegolmMessage<'a> {
    /// Decodes a message. Versions 3 and 4 are read, as by vodozemac; sessions decrypt 3.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (version, mac_len) = message_version(bytes)?;
        let suffix = mac_len + Ed25519Signature::LENGTH;
        if bytes.len() < suffix + 2 {
            return Err(DecodeError::TooShort);
        }
        let (signed_input, signature) = bytes.split_at(bytes.len() - Ed25519Signature::LENGTH);
        let (mac_input, mac) = signed_input.split_at(signed_input.len() - mac_len);
        let body = mac_input.get(1..).ok_or(DecodeError::TooShort)?;

        let mut message_index = 0;
        let mut ciphertext: &[u8] = &[];
        let mut reader = Reader::new(body);
        while let Some((field, value)) = reader.next_field()? {
            match field {
                // prost reads a uint32 as a varint and keeps the low 32 bits.
                1 => message_index = protobuf::expect_varint(value)? as u32,
                2 => ciphertext = protobuf::expect_bytes(value)?,
                _ => {}
            }
        }
        Ok(Self {
            version,
            message_index,
            ciphertext,
            mac,
            signature: Ed25519Signature::from_slice(signature)?,
            mac_input,
            signed_input,
        })
    }

    /// The index of the ratchet the message was encrypted with.
    pub const fn message_index(&self) -> u32 {
        self.message_index
    }

    /// The AES-CBC ciphertext.
    pub const fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }

    /// The message version byte.
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// The sender's signature.
    pub const fn signature(&self) -> &Ed25519Signature {
        &self.signature
    }

    pub(crate) const fn mac(&self) -> &'a [u8] {
        self.mac
    }

    pub(crate) const fn mac_input(&self) -> &'a [u8] {
        self.mac_input
    }

    pub(crate) const fn signed_input(&self) -> &'a [u8] {
        self.signed_input
    }
}

impl fmt::Debug for MegolmMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegolmMessage")
            .field("version", &self.version)
            .field("message_index", &self.message_index)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Writes version and body header, leaving room for the ciphertext; returns the writer and
/// the ciphertext's offset.
pub(crate) fn write_header(
    out: &mut [u8],
    message_index: u32,
    ciphertext_len: usize,
) -> Result<(Writer<'_>, usize), crate::error::EncodeError> {
    let mut w = Writer::new(out);
    w.put(&[VERSION_TRUNCATED_MAC])?;
    w.put_varint_field(INDEX_FIELD, u64::from(message_index))?;
    w.put(&[protobuf::tag(CIPHERTEXT_FIELD, protobuf::WIRE_BYTES)])?;
    w.put_varint(ciphertext_len as u64)?;
    let offset = w.position();
    Ok((w, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_vodozemac_test_vector_layout() {
        // Layout from the Megolm specification: 0x03, 0x08 index, 0x12 len ciphertext,
        // 8-byte MAC, 64-byte signature.
        let mut msg = vec![3u8, 0x08, 0x05, 0x12, 0x03, b'a', b'b', b'c'];
        msg.extend_from_slice(b"MACHEREE");
        msg.extend_from_slice(&[7u8; 64]);
        let m = MegolmMessage::from_bytes(&msg).unwrap();
        assert_eq!(m.message_index(), 5);
        assert_eq!(m.ciphertext(), b"abc");
        assert_eq!(m.mac(), b"MACHEREE");
        assert_eq!(m.signature().to_bytes(), [7u8; 64]);
        assert_eq!(m.mac_input(), &msg[..8]);
        assert_eq!(m.signed_input(), &msg[..16]);
    }

    #[test]
    fn rejects_short_and_unknown_versions() {
        assert_eq!(
            MegolmMessage::from_bytes(&[]).err(),
            Some(DecodeError::MissingVersion)
        );
        assert!(matches!(
            MegolmMessage::from_bytes(&[2u8; 100]).err(),
            Some(DecodeError::InvalidVersion { got: 2, .. })
        ));
        assert_eq!(
            MegolmMessage::from_bytes(&[3u8; 73]).err(),
            Some(DecodeError::TooShort)
        );
    }

    #[test]
    fn message_len_bounds_real_messages() {
        assert_eq!(megolm_body_len(0, 16), 1 + 2 + 2 + 16);
        assert!(megolm_message_len(100) >= megolm_body_len(70000, 112) + 72);
    }
}
