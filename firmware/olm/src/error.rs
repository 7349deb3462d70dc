//! The error enums of the crate, one per domain. None of them carries key material.

use core::fmt;

/// Bytes that should hold a message, key or encoding could not be read.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input was empty, so it had no version byte.
    MissingVersion,
    /// The version byte was not one this crate reads.
    InvalidVersion {
        /// The version this crate writes.
        expected: u8,
        /// The version found.
        got: u8,
    },
    /// The input ended before all fixed-size parts were read.
    TooShort,
    /// The input had bytes left over after a fixed-size encoding.
    TooLong,
    /// The protobuf body was malformed (bad varint, tag, wire type or length).
    InvalidProtobuf,
    /// A key had the wrong length.
    InvalidKeyLength,
    /// An Ed25519 public key was not a valid curve point.
    InvalidPublicKey,
    /// The signature over a signed encoding did not verify.
    InvalidSignature,
    /// The text was not valid base64.
    InvalidBase64,
    /// The output buffer given was too small.
    BufferTooSmall,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingVersion => f.write_str("The input was empty and had no version byte."),
            Self::InvalidVersion { expected, got } => {
                write!(
                    f,
                    "The input had version {got}, but version {expected} was expected."
                )
            }
            Self::TooShort => f.write_str("The input was too short."),
            Self::TooLong => f.write_str("The input had unexpected trailing bytes."),
            Self::InvalidProtobuf => f.write_str("The message body was not valid protobuf."),
            Self::InvalidKeyLength => f.write_str("A key in the input had the wrong length."),
            Self::InvalidPublicKey => f.write_str("An Ed25519 public key was not a valid point."),
            Self::InvalidSignature => f.write_str("The signature on the input did not verify."),
            Self::InvalidBase64 => f.write_str("The input was not valid base64."),
            Self::BufferTooSmall => f.write_str("The output buffer was too small."),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A message could not be encrypted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionError {
    /// The output buffer was smaller than the encoded message.
    BufferTooSmall,
    /// A Diffie-Hellman exchange gave an all-zero secret (a malicious or broken peer key).
    NonContributoryKey,
    /// The sending chain ran out of message indices.
    IndexExhausted,
}

impl fmt::Display for EncryptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("The output buffer was too small for the message."),
            Self::NonContributoryKey => f.write_str(
                "A Diffie-Hellman exchange was non-contributory, the peer key is unsafe.",
            ),
            Self::IndexExhausted => f.write_str("The sending chain ran out of message indices."),
        }
    }
}

impl core::error::Error for EncryptionError {}

/// A message could not be decrypted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptionError {
    /// The message bytes could not be decoded.
    Decode(DecodeError),
    /// The MAC of the message did not verify.
    InvalidMac,
    /// The message carried a MAC of a length this session does not use.
    InvalidMacLength {
        /// The MAC length the session uses.
        expected: usize,
        /// The MAC length of the message.
        got: usize,
    },
    /// The plaintext had invalid padding.
    InvalidPadding,
    /// The Ed25519 signature of a Megolm message did not verify.
    InvalidSignature,
    /// A Megolm message used an index before the first one this session knows.
    UnknownMessageIndex {
        /// The first index the session can decrypt.
        first_known_index: u32,
        /// The index of the message.
        message_index: u32,
    },
    /// The message key for an earlier Olm message was already used or dropped.
    MissingMessageKey {
        /// The chain index of the message.
        chain_index: u64,
    },
    /// The Olm message was too far ahead of the receiving chain.
    TooBigMessageGap {
        /// How far ahead it was.
        gap: u64,
        /// The largest gap accepted.
        max: u64,
    },
    /// A Diffie-Hellman exchange gave an all-zero secret.
    NonContributoryKey,
    /// The output buffer was smaller than the ciphertext.
    BufferTooSmall,
}

impl fmt::Display for DecryptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "The message could not be decoded: {e}"),
            Self::InvalidMac => f.write_str("The MAC of the message did not verify."),
            Self::InvalidMacLength { expected, got } => {
                write!(
                    f,
                    "The message had a {got}-byte MAC, but {expected} bytes were expected."
                )
            }
            Self::InvalidPadding => f.write_str("The decrypted message had invalid padding."),
            Self::InvalidSignature => f.write_str("The signature of the message did not verify."),
            Self::UnknownMessageIndex {
                first_known_index,
                message_index,
            } => write!(
                f,
                "The message has index {message_index}, before the first known index \
                 {first_known_index}."
            ),
            Self::MissingMessageKey { chain_index } => {
                write!(
                    f,
                    "The message key for chain index {chain_index} is not available."
                )
            }
            Self::TooBigMessageGap { gap, max } => {
                write!(
                    f,
                    "The message is {gap} messages ahead, more than the {max} allowed."
                )
            }
            Self::NonContributoryKey => f.write_str(
                "A Diffie-Hellman exchange was non-contributory, the peer key is unsafe.",
            ),
            Self::BufferTooSmall => {
                f.write_str("The output buffer was too small for the plaintext.")
            }
        }
    }
}

impl core::error::Error for DecryptionError {}

impl From<DecodeError> for DecryptionError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// An inbound Olm session could not be created from a pre-key message.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCreationError {
    /// The pre-key message named a one-time key this account does not hold.
    MissingOneTimeKey,
    /// The identity key in the pre-key message was not the expected sender's.
    MismatchedIdentityKey,
    /// The pre-key message used a message version this session kind does not speak.
    MismatchedSessionConfig,
    /// A Diffie-Hellman exchange gave an all-zero secret.
    NonContributoryKey,
    /// The first message could not be decrypted.
    Decryption(DecryptionError),
}

impl fmt::Display for SessionCreationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingOneTimeKey => {
                f.write_str("The pre-key message used a one-time key this account does not hold.")
            }
            Self::MismatchedIdentityKey => {
                f.write_str("The pre-key message came from a different identity key than expected.")
            }
            Self::MismatchedSessionConfig => f.write_str(
                "The pre-key message used a message version this session does not speak.",
            ),
            Self::NonContributoryKey => f.write_str(
                "A Diffie-Hellman exchange was non-contributory, the peer key is unsafe.",
            ),
            Self::Decryption(e) => write!(f, "The pre-key message could not be decrypted: {e}"),
        }
    }
}

impl core::error::Error for SessionCreationError {}

impl From<DecryptionError> for SessionCreationError {
    fn from(e: DecryptionError) -> Self {
        Self::Decryption(e)
    }
}

/// A pickle could not be written or read.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickleError {
    /// The output buffer was too small for the pickle.
    BufferTooSmall,
    /// The pickle was too short or too long to be one.
    InvalidLength,
    /// The pickle format version is not one this crate reads.
    UnknownVersion,
    /// The MAC did not verify: the wrong pickle key, a pickle of another type, or tampering.
    InvalidMac,
    /// The decrypted pickle was not a valid encoding of the type.
    InvalidContent,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("The output buffer was too small for the pickle."),
            Self::InvalidLength => f.write_str("The pickle had an impossible length."),
            Self::UnknownVersion => {
                f.write_str("The pickle has a format version this crate does not read.")
            }
            Self::InvalidMac => f.write_str(
                "The pickle did not authenticate: wrong key, wrong type, or it was tampered with.",
            ),
            Self::InvalidContent => f.write_str("The decrypted pickle content was not valid."),
        }
    }
}

impl core::error::Error for PickleError {}

/// Bytes could not be encoded.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer was too small.
    BufferTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => {
                f.write_str("The output buffer was too small for the encoding.")
            }
        }
    }
}

impl core::error::Error for EncodeError {}
