//! The two ways a Megolm session travels: the signed session key (version 2, shared in
//! `m.room_key`) and the exported key (version 1, in `m.forwarded_room_key` and key backups).
//!
//! Layouts: version (1) || message index (4, big-endian) || ratchet (128) || Ed25519 public
//! key (32), then for version 2 a signature (64) over all of that.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::ratchet::{MegolmRatchet, RATCHET_LEN};
use crate::{
    base64,
    error::{DecodeError, EncodeError},
    keys::{Ed25519PublicKey, Ed25519Signature},
};

const EXPORT_VERSION: u8 = 1;
const SESSION_KEY_VERSION: u8 = 2;
const UNSIGNED_LEN: usize = 1 + 4 + RATCHET_LEN + Ed25519PublicKey::LENGTH;

/// Decodes secret base64 text, zeroizing the intermediate bytes.
fn decode_base64<T>(
    text: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut bytes = [0u8; SessionKey::LENGTH + 3];
    let result = base64::decode(text.as_bytes(), &mut bytes).and_then(parse);
    bytes.zeroize();
    result
}

/// Encodes secret bytes as base64, zeroizing them afterwards.
fn encode_base64<const N: usize>(mut bytes: [u8; N], out: &mut [u8]) -> Result<&str, EncodeError> {
    let result = base64::encode(&bytes, out);
    bytes.zeroize();
    result
}

/// Accessors both key encodings share; `Debug` prints the public parts only.
macro_rules! export_accessors {
    ($name:ident) => {
        impl $name {
            /// The key as base64 text, written into `out`.
            pub fn to_base64<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, EncodeError> {
                encode_base64(self.to_bytes(), out)
            }

            /// The message index the key starts at.
            pub const fn index(&self) -> u32 {
                self.export.index
            }

            /// The session's public signing key, which is also its session id.
            pub const fn signing_key(&self) -> Ed25519PublicKey {
                self.export.signing_key
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("index", &self.export.index)
                    .field("signing_key", &self.export.signing_key)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Shared by both encodings: everything but the version byte and signature.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RatchetExport {
    pub(crate) index: u32,
    pub(crate) ratchet: [u8; RATCHET_LEN],
    #[zeroize(skip)]
    pub(crate) signing_key: Ed25519PublicKey,
}

impl RatchetExport {
    pub(crate) fn new(ratchet: &MegolmRatchet, signing_key: Ed25519PublicKey) -> Self {
        Self {
            index: ratchet.index(),
            ratchet: ratchet.to_bytes(),
            signing_key,
        }
    }

    fn write(&self, version: u8, out: &mut [u8; UNSIGNED_LEN]) {
        let (v, rest) = out.split_at_mut(1);
        let (index, rest) = rest.split_at_mut(4);
        let (ratchet, key) = rest.split_at_mut(RATCHET_LEN);
        v.copy_from_slice(&[version]);
        index.copy_from_slice(&self.index.to_be_bytes());
        ratchet.copy_from_slice(&self.ratchet);
        key.copy_from_slice(self.signing_key.as_bytes());
    }

    fn read(expected_version: u8, bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::MissingVersion)?;
        if version != expected_version {
            return Err(DecodeError::InvalidVersion {
                expected: expected_version,
                got: version,
            });
        }
        if rest.len() < UNSIGNED_LEN - 1 {
            return Err(DecodeError::TooShort);
        }
        let (index, rest) = rest.split_at(4);
        let (ratchet, rest) = rest.split_at(RATCHET_LEN);
        let key = rest
            .get(..Ed25519PublicKey::LENGTH)
            .ok_or(DecodeError::TooShort)?;
        let mut export = Self {
            index: u32::from_be_bytes(index.try_into().map_err(|_| DecodeError::TooShort)?),
            ratchet: [0; RATCHET_LEN],
            signing_key: Ed25519PublicKey::from_slice(key)?,
        };
        export.ratchet.copy_from_slice(ratchet);
        Ok(export)
    }

    pub(crate) fn ratchet(&self) -> MegolmRatchet {
        MegolmRatchet::from_bytes(&self.ratchet, self.index)
    }
}

/// A Megolm session key (version 2): the ratchet at some index, the session's public signing
/// key, and the session's signature over both. Secret: zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKey {
    pub(crate) export: RatchetExport,
    #[zeroize(skip)]
    pub(crate) signature: Ed25519Signature,
}

impl SessionKey {
    /// The encoded length in bytes.
    pub const LENGTH: usize = UNSIGNED_LEN + Ed25519Signature::LENGTH;
    /// The length of the base64 text.
    pub const BASE64_LENGTH: usize = base64::encoded_len(Self::LENGTH);

    pub(crate) fn signed_bytes(export: &RatchetExport) -> [u8; UNSIGNED_LEN] {
        let mut out = [0u8; UNSIGNED_LEN];
        export.write(SESSION_KEY_VERSION, &mut out);
        out
    }

    /// Decodes a session key and verifies its signature. The input must be exactly
    /// [`SessionKey::LENGTH`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let export = RatchetExport::read(SESSION_KEY_VERSION, bytes)?;
        if bytes.len() < Self::LENGTH {
            return Err(DecodeError::TooShort);
        }
        if bytes.len() > Self::LENGTH {
            return Err(DecodeError::TooLong);
        }
        let (signed, signature) = bytes.split_at(UNSIGNED_LEN);
        let signature = Ed25519Signature::from_slice(signature)?;
        export.signing_key.verify(signed, &signature)?;
        Ok(Self { export, signature })
    }

    /// Decodes a session key from its base64 text.
    pub fn from_base64(text: &str) -> Result<Self, DecodeError> {
        decode_base64(text, Self::from_bytes)
    }

    /// The encoded session key. The caller should zeroize the copy.
    pub fn to_bytes(&self) -> [u8; Self::LENGTH] {
        let mut out = [0u8; Self::LENGTH];
        let (unsigned, signature) = out.split_at_mut(UNSIGNED_LEN);
        let mut signed = Self::signed_bytes(&self.export);
        unsigned.copy_from_slice(&signed);
        signed.zeroize();
        signature.copy_from_slice(&self.signature.to_bytes());
        out
    }
}

export_accessors!(SessionKey);

/// An exported Megolm session key (version 1): like [`SessionKey`] without a signature, so a
/// session made from it has an unverified signing key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ExportedSessionKey {
    pub(crate) export: RatchetExport,
}

impl ExportedSessionKey {
    /// The encoded length in bytes.
    pub const LENGTH: usize = UNSIGNED_LEN;
    /// The length of the base64 text.
    pub const BASE64_LENGTH: usize = base64::encoded_len(Self::LENGTH);

    /// Decodes an exported key; the input must be exactly [`ExportedSessionKey::LENGTH`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let export = RatchetExport::read(EXPORT_VERSION, bytes)?;
        if bytes.len() > Self::LENGTH {
            return Err(DecodeError::TooLong);
        }
        Ok(Self { export })
    }

    /// Decodes an exported key from its base64 text.
    pub fn from_base64(text: &str) -> Result<Self, DecodeError> {
        decode_base64(text, Self::from_bytes)
    }

    /// The encoded key. The caller should zeroize the copy.
    pub fn to_bytes(&self) -> [u8; Self::LENGTH] {
        let mut out = [0u8; Self::LENGTH];
        self.export.write(EXPORT_VERSION, &mut out);
        out
    }
}

export_accessors!(ExportedSessionKey);
