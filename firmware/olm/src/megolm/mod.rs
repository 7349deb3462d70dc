//! Megolm: the outbound [`GroupSession`] a sender encrypts room messages with, and the
//! [`InboundGroupSession`] every receiver decrypts them with.

mod message;
pub(crate) mod ratchet;
mod session_keys;

use core::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroize;

use self::{
    message::write_header,
    ratchet::{MegolmRatchet, RATCHET_LEN},
    session_keys::RatchetExport,
};
pub use self::{
    message::{MegolmMessage, megolm_message_len},
    session_keys::{ExportedSessionKey, SessionKey},
};
use crate::{
    cipher::{CipherKeys, MAC_LEN, TRUNCATED_MAC_LEN, VERSION_FULL_MAC, ciphertext_len},
    error::{DecryptionError, EncryptionError},
    keys::{Ed25519Keypair, Ed25519PublicKey},
};

/// An outbound Megolm session: encrypts and signs room messages.
///
/// Not `Clone`: two copies would encrypt different messages with the same index and keys.
pub struct GroupSession {
    ratchet: MegolmRatchet,
    signing_key: Ed25519Keypair,
}

impl GroupSession {
    /// A new session with a random ratchet and signing key, at message index 0.
    pub fn new<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; RATCHET_LEN];
        rng.fill_bytes(&mut bytes);
        let ratchet = MegolmRatchet::from_bytes(&bytes, 0);
        bytes.zeroize();
        Self {
            ratchet,
            signing_key: Ed25519Keypair::generate(rng),
        }
    }

    pub(crate) fn from_parts(ratchet: MegolmRatchet, signing_key: Ed25519Keypair) -> Self {
        Self {
            ratchet,
            signing_key,
        }
    }

    pub(crate) const fn ratchet(&self) -> &MegolmRatchet {
        &self.ratchet
    }

    pub(crate) const fn signing_keypair(&self) -> &Ed25519Keypair {
        &self.signing_key
    }

    /// The session id: the public signing key (as base64 it is the Matrix `session_id`).
    pub fn session_id(&self) -> Ed25519PublicKey {
        self.signing_key.public_key()
    }

    /// The index the next message will be encrypted with.
    pub const fn message_index(&self) -> u32 {
        self.ratchet.index()
    }

    /// The signed session key at the current index, to share with the room's devices.
    pub fn session_key(&self) -> SessionKey {
        let export = RatchetExport::new(&self.ratchet, self.signing_key.public_key());
        let mut signed = SessionKey::signed_bytes(&export);
        let signature = self.signing_key.sign(&signed);
        signed.zeroize();
        SessionKey { export, signature }
    }

    /// Encrypts `plaintext` into `out` and returns the length of the encoded message; `out`
    /// needs [`megolm_message_len`] bytes. The ratchet then moves on by one.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, EncryptionError> {
        let index = self.ratchet.index();
        if index == u32::MAX {
            return Err(EncryptionError::IndexExhausted);
        }
        let keys = CipherKeys::megolm(self.ratchet.as_bytes());
        let ct_len = ciphertext_len(plaintext.len());
        let too_small = |_| EncryptionError::BufferTooSmall;
        let (mut w, _) = write_header(out, index, ct_len).map_err(too_small)?;
        let ct = w.reserve(ct_len).map_err(too_small)?;
        keys.encrypt(plaintext, ct)
            .ok_or(EncryptionError::BufferTooSmall)?;
        let mac = keys.mac(&[w.written()]);
        w.put(mac.get(..TRUNCATED_MAC_LEN).unwrap_or_default())
            .map_err(too_small)?;
        let signature = self.signing_key.sign(w.written());
        w.put(&signature.to_bytes()).map_err(too_small)?;
        self.ratchet.advance();
        Ok(w.position())
    }
}

impl fmt::Debug for GroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSession")
            .field("session_id", &self.session_id())
            .field("message_index", &self.message_index())
            .finish_non_exhaustive()
    }
}

/// What [`InboundGroupSession::decrypt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptedMessage {
    /// The number of plaintext bytes written to the front of the output buffer.
    pub plaintext_len: usize,
    /// The index of the message; the caller checks it against replays.
    pub message_index: u32,
}

/// An inbound Megolm session: decrypts any message at or after its first known index.
#[derive(Clone)]
pub struct InboundGroupSession {
    /// The ratchet at the first known index; never moves unless told to.
    initial_ratchet: MegolmRatchet,
    /// A cache of the ratchet at the last index decrypted, so in-order decryption is cheap.
    latest_ratchet: MegolmRatchet,
    signing_key: Ed25519PublicKey,
    signing_key_verified: bool,
}

impl InboundGroupSession {
    /// A session from a signed session key (its signature was checked when it was decoded).
    pub fn new(key: &SessionKey) -> Self {
        Self::from_export(&key.export, true)
    }

    /// A session from an exported key, whose signing key is not vouched for by a signature.
    pub fn import(key: &ExportedSessionKey) -> Self {
        Self::from_export(&key.export, false)
    }

    fn from_export(export: &RatchetExport, verified: bool) -> Self {
        let ratchet = export.ratchet();
        Self {
            latest_ratchet: ratchet.clone(),
            initial_ratchet: ratchet,
            signing_key: export.signing_key,
            signing_key_verified: verified,
        }
    }

    pub(crate) fn from_parts(
        initial_ratchet: MegolmRatchet,
        signing_key: Ed25519PublicKey,
        signing_key_verified: bool,
    ) -> Self {
        Self {
            latest_ratchet: initial_ratchet.clone(),
            initial_ratchet,
            signing_key,
            signing_key_verified,
        }
    }

    pub(crate) const fn initial_ratchet(&self) -> &MegolmRatchet {
        &self.initial_ratchet
    }

    /// The session id: the sender's public signing key.
    pub const fn session_id(&self) -> Ed25519PublicKey {
        self.signing_key
    }

    /// Whether the signing key came with a signature (a session key) rather than an export.
    pub const fn signing_key_verified(&self) -> bool {
        self.signing_key_verified
    }

    /// The first message index this session can decrypt.
    pub const fn first_known_index(&self) -> u32 {
        self.initial_ratchet.index()
    }

    /// Forgets the keys before `index`; returns whether anything changed.
    pub fn advance_to(&mut self, index: u32) -> bool {
        if self.first_known_index() < index {
            self.initial_ratchet.advance_to(index);
            if self.latest_ratchet.index() < index {
                self.latest_ratchet = self.initial_ratchet.clone();
            }
            true
        } else {
            false
        }
    }

    /// The ratchet at `index`, moving the cached one; `None` before the first known index.
    fn find_ratchet(&mut self, index: u32) -> Option<&MegolmRatchet> {
        if self.initial_ratchet.index() == index {
            Some(&self.initial_ratchet)
        } else if self.latest_ratchet.index() == index {
            Some(&self.latest_ratchet)
        } else if self.latest_ratchet.index() < index {
            self.latest_ratchet.advance_to(index);
            Some(&self.latest_ratchet)
        } else if self.initial_ratchet.index() < index {
            self.latest_ratchet.clone_from(&self.initial_ratchet);
            self.latest_ratchet.advance_to(index);
            Some(&self.latest_ratchet)
        } else {
            None
        }
    }

    /// Checks the signature and MAC of `message`, then decrypts it into `out`, which needs as
    /// many bytes as the ciphertext.
    pub fn decrypt(
        &mut self,
        message: &MegolmMessage<'_>,
        out: &mut [u8],
    ) -> Result<DecryptedMessage, DecryptionError> {
        self.signing_key
            .verify(message.signed_input(), message.signature())
            .map_err(|_| DecryptionError::InvalidSignature)?;
        let index = message.message_index();
        let first_known_index = self.first_known_index();
        let ratchet = self
            .find_ratchet(index)
            .ok_or(DecryptionError::UnknownMessageIndex {
                first_known_index,
                message_index: index,
            })?;
        let keys = CipherKeys::megolm(ratchet.as_bytes());
        if message.version() == VERSION_FULL_MAC {
            return Err(DecryptionError::InvalidMacLength {
                expected: TRUNCATED_MAC_LEN,
                got: MAC_LEN,
            });
        }
        keys.verify_truncated_mac(message.mac_input(), message.mac())?;
        let plaintext_len = keys.decrypt(message.ciphertext(), out)?;
        Ok(DecryptedMessage {
            plaintext_len,
            message_index: index,
        })
    }

    /// The session exported at `index`, for forwarding or backup; `None` before the first
    /// known index.
    pub fn export_at(&mut self, index: u32) -> Option<ExportedSessionKey> {
        let signing_key = self.signing_key;
        self.find_ratchet(index).map(|ratchet| ExportedSessionKey {
            export: RatchetExport::new(ratchet, signing_key),
        })
    }

    /// The session exported at its first known index.
    pub fn export_at_first_known_index(&self) -> ExportedSessionKey {
        ExportedSessionKey {
            export: RatchetExport::new(&self.initial_ratchet, self.signing_key),
        }
    }
}

impl From<&GroupSession> for InboundGroupSession {
    fn from(session: &GroupSession) -> Self {
        Self::new(&session.session_key())
    }
}

impl fmt::Debug for InboundGroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundGroupSession")
            .field("session_id", &self.signing_key)
            .field("first_known_index", &self.first_known_index())
            .field("signing_key_verified", &self.signing_key_verified)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
