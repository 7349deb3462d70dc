//! The Olm message encodings.
//!
//! A normal message is version byte 3, a protobuf body (field 1: ratchet key, field 2: chain
//! index, field 4: ciphertext) and an 8-byte truncated HMAC of all that. A pre-key message is
//! version byte 3 and a protobuf body (field 1: one-time key, 2: base key, 3: identity key,
//! 4: the encoded normal message); it has no MAC of its own.

use core::fmt;

use crate::{
    cipher::{TRUNCATED_MAC_LEN, VERSION_TRUNCATED_MAC, ciphertext_len, message_version},
    error::{DecodeError, EncodeError},
    keys::Curve25519PublicKey,
    protobuf::{self, Reader, Writer, varint_len},
};

const PRE_KEY_VERSION: u8 = 3;

/// Bytes of a 32-byte key field: tag, length, key.
const KEY_FIELD_LEN: usize = 2 + Curve25519PublicKey::LENGTH;

/// The Matrix `type` of an Olm message: 0 for pre-key, 1 for normal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A pre-key message (`type: 0`), sent until the session has received a reply.
    PreKey = 0,
    /// A normal message (`type: 1`).
    Normal = 1,
}

/// The encoded length of a normal message at `chain_index` with `ciphertext_len` bytes.
pub(crate) const fn normal_len(chain_index: u64, ciphertext_len: usize) -> usize {
    1 + KEY_FIELD_LEN
        + 1
        + varint_len(chain_index)
        + 1
        + varint_len(ciphertext_len as u64)
        + ciphertext_len
        + TRUNCATED_MAC_LEN
}

/// The encoded length of a pre-key message wrapping a normal message of `inner_len` bytes.
pub(crate) const fn pre_key_len(inner_len: usize) -> usize {
    1 + 3 * KEY_FIELD_LEN + 1 + varint_len(inner_len as u64) + inner_len
}

/// The largest encoded Olm message (pre-key or normal) carrying `plaintext_len` bytes.
pub const fn olm_message_len(plaintext_len: usize) -> usize {
    pre_key_len(normal_len(u32::MAX as u64, ciphertext_len(plaintext_len)))
}

/// A decoded normal Olm message, borrowing the bytes it was read from.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    version: u8,
    ratchet_key: Curve25519PublicKey,
    chain_index: u64,
    ciphertext: &'a [u8],
    mac: &'a [u8],
    mac_input: &'a [u8],
}

impl<'a> Message<'a> {
    /// Decodes a normal message (versions 3 and 4 are read, as by vodozemac).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (version, mac_len) = message_version(bytes)?;
        if bytes.len() < mac_len + 2 {
            return Err(DecodeError::TooShort);
        }
        let (mac_input, mac) = bytes.split_at(bytes.len() - mac_len);
        let mut ratchet_key: &[u8] = &[];
        let mut chain_index = 0;
        let mut ciphertext: &[u8] = &[];
        let mut reader = Reader::new(mac_input.get(1..).unwrap_or_default());
        while let Some((field, value)) = reader.next_field()? {
            match field {
                1 => ratchet_key = protobuf::expect_bytes(value)?,
                2 => chain_index = protobuf::expect_varint(value)?,
                4 => ciphertext = protobuf::expect_bytes(value)?,
                _ => {}
            }
        }
        Ok(Self {
            version,
            ratchet_key: Curve25519PublicKey::from_slice(ratchet_key)?,
            chain_index,
            ciphertext,
            mac,
            mac_input,
        })
    }

    /// The sender's current ratchet key.
    pub const fn ratchet_key(&self) -> Curve25519PublicKey {
        self.ratchet_key
    }

    /// The index of the message in the sender's chain.
    pub const fn chain_index(&self) -> u64 {
        self.chain_index
    }

    /// The AES-CBC ciphertext.
    pub const fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }

    /// The message version byte.
    pub const fn version(&self) -> u8 {
        self.version
    }

    pub(crate) const fn mac(&self) -> &'a [u8] {
        self.mac
    }

    pub(crate) const fn mac_input(&self) -> &'a [u8] {
        self.mac_input
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("version", &self.version)
            .field("ratchet_key", &self.ratchet_key)
            .field("chain_index", &self.chain_index)
            .finish_non_exhaustive()
    }
}

/// The three public keys that identify an Olm session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    /// The initiator's Curve25519 identity key.
    pub identity_key: Curve25519PublicKey,
    /// The initiator's ephemeral base key.
    pub base_key: Curve25519PublicKey,
    /// The receiver's one-time (or fallback) key the session was made with.
    pub one_time_key: Curve25519PublicKey,
}

/// A decoded pre-key message.
#[derive(Debug, Clone, Copy)]
pub struct PreKeyMessage<'a> {
    session_keys: SessionKeys,
    message: Message<'a>,
}

impl<'a> PreKeyMessage<'a> {
    /// Decodes a pre-key message.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::MissingVersion)?;
        if version != PRE_KEY_VERSION {
            return Err(DecodeError::InvalidVersion {
                expected: PRE_KEY_VERSION,
                got: version,
            });
        }
        let mut keys: [&[u8]; 3] = [&[]; 3];
        let mut message: &[u8] = &[];
        let mut reader = Reader::new(body);
        while let Some((field, value)) = reader.next_field()? {
            match field {
                1..=3 => {
                    let bytes = protobuf::expect_bytes(value)?;
                    if let Some(slot) = keys.get_mut(field as usize - 1) {
                        *slot = bytes;
                    }
                }
                4 => message = protobuf::expect_bytes(value)?,
                _ => {}
            }
        }
        let [one_time_key, base_key, identity_key] = keys;
        let session_keys = SessionKeys {
            one_time_key: Curve25519PublicKey::from_slice(one_time_key)?,
            base_key: Curve25519PublicKey::from_slice(base_key)?,
            identity_key: Curve25519PublicKey::from_slice(identity_key)?,
        };
        Ok(Self {
            session_keys,
            message: Message::from_bytes(message)?,
        })
    }

    /// The keys that identify the session this message starts.
    pub const fn session_keys(&self) -> SessionKeys {
        self.session_keys
    }

    /// The receiver's one-time key the sender used.
    pub const fn one_time_key(&self) -> Curve25519PublicKey {
        self.session_keys.one_time_key
    }

    /// The sender's base key.
    pub const fn base_key(&self) -> Curve25519PublicKey {
        self.session_keys.base_key
    }

    /// The sender's identity key.
    pub const fn identity_key(&self) -> Curve25519PublicKey {
        self.session_keys.identity_key
    }

    /// The normal message inside.
    pub const fn message(&self) -> &Message<'a> {
        &self.message
    }
}

/// A decoded Olm message of either type.
#[derive(Debug, Clone, Copy)]
pub enum OlmMessage<'a> {
    /// A normal message.
    Normal(Message<'a>),
    /// A pre-key message.
    PreKey(PreKeyMessage<'a>),
}

impl<'a> OlmMessage<'a> {
    /// Decodes a message given its Matrix `type` (0: pre-key, 1: normal).
    pub fn from_parts(message_type: MessageType, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match message_type {
            MessageType::PreKey => Self::PreKey(PreKeyMessage::from_bytes(bytes)?),
            MessageType::Normal => Self::Normal(Message::from_bytes(bytes)?),
        })
    }

    /// The message's Matrix `type`.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::Normal(_) => MessageType::Normal,
            Self::PreKey(_) => MessageType::PreKey,
        }
    }

    /// The normal message, which for a pre-key message is the one it wraps.
    pub const fn message(&self) -> &Message<'a> {
        match self {
            Self::Normal(m) => m,
            Self::PreKey(m) => &m.message,
        }
    }
}

/// Writes a normal message's version and body up to the ciphertext; returns the ciphertext
/// slot's offset from the start of the message.
pub(crate) fn write_normal_header(
    w: &mut Writer<'_>,
    ratchet_key: &Curve25519PublicKey,
    chain_index: u64,
    ciphertext_len: usize,
) -> Result<(), EncodeError> {
    w.put(&[VERSION_TRUNCATED_MAC])?;
    w.put_bytes_field(1, ratchet_key.as_bytes())?;
    w.put_varint_field(2, chain_index)?;
    w.put(&[protobuf::tag(4, protobuf::WIRE_BYTES)])?;
    w.put_varint(ciphertext_len as u64)
}

/// Writes a pre-key message's version and keys, up to the wrapped message.
pub(crate) fn write_pre_key_header(
    w: &mut Writer<'_>,
    keys: &SessionKeys,
    inner_len: usize,
) -> Result<(), EncodeError> {
    w.put(&[PRE_KEY_VERSION])?;
    w.put_bytes_field(1, keys.one_time_key.as_bytes())?;
    w.put_bytes_field(2, keys.base_key.as_bytes())?;
    w.put_bytes_field(3, keys.identity_key.as_bytes())?;
    w.put(&[protobuf::tag(4, protobuf::WIRE_BYTES)])?;
    w.put_varint(inner_len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_layout_from_the_olm_specification() {
        // The test vector vodozemac and libolm use for a normal message.
        let bytes = b"\x03\n\x20ratchetkeyhereprettyplease123456\x10\x02\"\nciphertextMACHEREE";
        let m = Message::from_bytes(bytes).unwrap();
        assert_eq!(
            m.ratchet_key().as_bytes(),
            b"ratchetkeyhereprettyplease123456"
        );
        assert_eq!(m.chain_index(), 2);
        assert_eq!(m.ciphertext(), b"ciphertext");
        assert_eq!(m.mac(), b"MACHEREE");
        assert_eq!(normal_len(2, 10), bytes.len());

        let mut out = [0u8; 64];
        let mut w = Writer::new(&mut out);
        write_normal_header(&mut w, &m.ratchet_key(), 2, 10).unwrap();
        w.put(b"ciphertext").unwrap();
        w.put(b"MACHEREE").unwrap();
        assert_eq!(w.written(), bytes);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert_eq!(
            Message::from_bytes(&[]).err(),
            Some(DecodeError::MissingVersion)
        );
        assert_eq!(
            Message::from_bytes(&[3; 9]).err(),
            Some(DecodeError::TooShort)
        );
        assert!(matches!(
            Message::from_bytes(&[5; 20]).err(),
            Some(DecodeError::InvalidVersion { got: 5, .. })
        ));
        // A body without a ratchet key.
        assert_eq!(
            Message::from_bytes(b"\x03\x10\x01MACHEREE").err(),
            Some(DecodeError::InvalidKeyLength)
        );
        assert!(PreKeyMessage::from_bytes(&[4, 1, 2]).is_err());
        assert!(PreKeyMessage::from_bytes(&[3]).is_err());
    }
}
