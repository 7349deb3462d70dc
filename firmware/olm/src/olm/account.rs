//! The Olm account: a device's long-term identity keys, its one-time keys and its fallback
//! keys, and the creation of sessions from them.

use core::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    messages::{PreKeyMessage, SessionKeys},
    session::Session,
};
use crate::{
    cipher::VERSION_TRUNCATED_MAC,
    error::SessionCreationError,
    fifo::Fifo,
    keys::{
        Curve25519Keypair, Curve25519PublicKey, Ed25519Keypair, Ed25519PublicKey, Ed25519Signature,
    },
    primitives::SharedSecret,
};

/// One-time keys an account holds by default.
pub const DEFAULT_ONE_TIME_KEYS: usize = 50;

/// The id of a one-time or fallback key; base64 of its 8 big-endian bytes names it in
/// Matrix (`signed_curve25519:AAAAAAAAAAA`), as vodozemac does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

impl KeyId {
    /// The id as base64 (11 characters), written into `out`.
    pub fn to_base64<'o>(&self, out: &'o mut [u8; 11]) -> &'o str {
        crate::base64::encode(&self.0.to_be_bytes(), out).unwrap_or_default()
    }
}

/// The account's two public identity keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityKeys {
    /// The Ed25519 key the device signs with (its fingerprint).
    pub ed25519: Ed25519PublicKey,
    /// The Curve25519 key Olm sessions are made with.
    pub curve25519: Curve25519PublicKey,
}

/// A one-time or fallback key with its id and whether the server has it.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct StoredKey {
    pub(crate) key_id: u32,
    pub(crate) published: bool,
    pub(crate) keypair: Curve25519Keypair,
}

impl StoredKey {
    /// An unused slot, as a constant: an empty list of keys is then a memset where it is
    /// made, not a list-sized temporary on the stack.
    pub(crate) const EMPTY: Self = Self {
        key_id: 0,
        published: false,
        keypair: Curve25519Keypair::EMPTY,
    };
}

impl Default for Curve25519Keypair {
    fn default() -> Self {
        Self::from_parts(&[0; 32], Curve25519PublicKey([0; 32]))
    }
}

/// What [`Account::generate_one_time_keys`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneTimeKeyGenerationResult {
    /// Keys created.
    pub created: usize,
    /// Old keys dropped to make room (the oldest first), as vodozemac does when full.
    pub removed: usize,
}

/// A device's Olm account holding up to `N` one-time keys.
///
/// Not `Clone`: a copy would let a one-time key be used twice.
pub struct Account<const N: usize = DEFAULT_ONE_TIME_KEYS> {
    pub(crate) signing_key: Ed25519Keypair,
    pub(crate) identity_key: Curve25519Keypair,
    pub(crate) one_time_keys: Fifo<StoredKey, N>,
    pub(crate) next_key_id: u32,
    pub(crate) fallback_key: Option<StoredKey>,
    pub(crate) previous_fallback_key: Option<StoredKey>,
    pub(crate) next_fallback_key_id: u32,
}

/// The outcome of [`Account::create_inbound_session`].
#[derive(Debug)]
pub struct InboundCreationResult {
    /// The new session.
    pub session: Session,
    /// The length of the first message's plaintext, written to the output buffer.
    pub plaintext_len: usize,
}

impl<const N: usize> Account<N> {
    /// A new account with fresh identity keys and no one-time keys.
    pub fn new<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            signing_key: Ed25519Keypair::generate(rng),
            identity_key: Curve25519Keypair::generate(rng),
            one_time_keys: Fifo::from_empty([StoredKey::EMPTY; N]),
            next_key_id: 0,
            fallback_key: None,
            previous_fallback_key: None,
            next_fallback_key_id: 0,
        }
    }

    /// The public identity keys.
    pub fn identity_keys(&self) -> IdentityKeys {
        IdentityKeys {
            ed25519: self.ed25519_key(),
            curve25519: self.curve25519_key(),
        }
    }

    /// The Ed25519 identity key.
    pub fn ed25519_key(&self) -> Ed25519PublicKey {
        self.signing_key.public_key()
    }

    /// The Curve25519 identity key.
    pub const fn curve25519_key(&self) -> Curve25519PublicKey {
        self.identity_key.public_key()
    }

    /// Signs `message` with the Ed25519 identity key. For Matrix objects (device keys,
    /// one-time keys) `message` is the canonical JSON of the object without its `signatures`
    /// and `unsigned` members; the caller canonicalises, since this crate knows no JSON.
    /// [`Ed25519PublicKey::verify`] checks such a signature.
    pub fn sign(&self, message: &[u8]) -> Ed25519Signature {
        self.signing_key.sign(message)
    }

    /// How many one-time keys to keep on the server: half the store, so that keys claimed
    /// but not yet used are not dropped when new ones are made (vodozemac: 50 of 100).
    pub const fn max_number_of_one_time_keys(&self) -> usize {
        N / 2
    }

    /// One-time keys held, published or not.
    pub const fn stored_one_time_key_count(&self) -> usize {
        self.one_time_keys.len()
    }

    /// Makes `count` new one-time keys; when the store is full, the oldest are dropped.
    pub fn generate_one_time_keys<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        count: usize,
    ) -> OneTimeKeyGenerationResult {
        let mut removed = 0;
        for _ in 0..count {
            let key = StoredKey {
                key_id: self.next_key_id,
                published: false,
                keypair: Curve25519Keypair::generate(rng),
            };
            self.next_key_id = self.next_key_id.wrapping_add(1);
            if self.one_time_keys.push(key) {
                removed += 1;
            }
        }
        OneTimeKeyGenerationResult {
            created: count,
            removed,
        }
    }

    /// The one-time keys not yet marked as published, oldest first.
    pub fn one_time_keys(&self) -> impl Iterator<Item = (KeyId, Curve25519PublicKey)> + '_ {
        self.one_time_keys
            .iter()
            .filter(|k| !k.published)
            .map(|k| (KeyId(u64::from(k.key_id)), k.keypair.public_key()))
    }

    /// Makes a new fallback key. The current one becomes the previous one and stays usable
    /// until the new one is used or [`Account::forget_fallback_key`] is called; the one before
    /// it is dropped and returned.
    pub fn generate_fallback_key<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Option<Curve25519PublicKey> {
        let key = StoredKey {
            key_id: self.next_fallback_key_id,
            published: false,
            keypair: Curve25519Keypair::generate(rng),
        };
        self.next_fallback_key_id = self.next_fallback_key_id.wrapping_add(1);
        let dropped = self
            .previous_fallback_key
            .take()
            .map(|k| k.keypair.public_key());
        self.previous_fallback_key = self.fallback_key.replace(key);
        dropped
    }

    /// The current fallback key if it is not yet published.
    pub fn fallback_key(&self) -> Option<(KeyId, Curve25519PublicKey)> {
        self.fallback_key
            .as_ref()
            .filter(|k| !k.published)
            .map(|k| (KeyId(u64::from(k.key_id)), k.keypair.public_key()))
    }

    /// Drops the previous fallback key; returns whether there was one.
    pub fn forget_fallback_key(&mut self) -> bool {
        self.previous_fallback_key.take().is_some()
    }

    /// Marks all one-time keys and the fallback key as uploaded.
    pub fn mark_keys_as_published(&mut self) {
        for key in self.one_time_keys.as_mut_slice() {
            key.published = true;
        }
        if let Some(key) = &mut self.fallback_key {
            key.published = true;
        }
    }

    /// Drops the one-time key `public_key`; returns whether it was held.
    pub fn remove_one_time_key(&mut self, public_key: &Curve25519PublicKey) -> bool {
        self.one_time_keys
            .remove_first(|k| k.keypair.public_key() == *public_key)
    }

    /// Starts a session to a peer from its identity key and one of its one-time or fallback
    /// keys. The session sends pre-key messages until it receives a reply.
    pub fn create_outbound_session<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        identity_key: Curve25519PublicKey,
        one_time_key: Curve25519PublicKey,
    ) -> Result<Session, SessionCreationError> {
        let mut slot = None;
        self.create_outbound_session_in(rng, identity_key, one_time_key, &mut slot)?;
        slot.ok_or(SessionCreationError::NonContributoryKey)
    }

    /// [`Account::create_outbound_session`] building the session in `slot` (what it held is
    /// zeroized), so that no session-sized temporary is needed: for small stacks.
    pub fn create_outbound_session_in<'s, R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        identity_key: Curve25519PublicKey,
        one_time_key: Curve25519PublicKey,
        slot: &'s mut Option<Session>,
    ) -> Result<&'s mut Session, SessionCreationError> {
        let base_key = Curve25519Keypair::generate(rng);
        // Initiator: DH(I_A, E_B) || DH(B_A, I_B) || DH(B_A, E_B).
        let secret = triple_diffie_hellman([
            self.identity_key.diffie_hellman(&one_time_key),
            base_key.diffie_hellman(&identity_key),
            base_key.diffie_hellman(&one_time_key),
        ])?;
        let keys = SessionKeys {
            identity_key: self.curve25519_key(),
            base_key: base_key.public_key(),
            one_time_key,
        };
        Ok(Session::new_outbound_in(slot, rng, &secret, keys))
    }

    fn find_one_time_key(
        &self,
        public_key: &Curve25519PublicKey,
    ) -> Option<(&Curve25519Keypair, KeySource)> {
        if let Some(k) = self
            .one_time_keys
            .iter()
            .find(|k| k.keypair.public_key() == *public_key)
        {
            return Some((&k.keypair, KeySource::OneTime));
        }
        if let Some(k) = self
            .fallback_key
            .as_ref()
            .filter(|k| k.keypair.public_key() == *public_key)
        {
            return Some((&k.keypair, KeySource::CurrentFallback));
        }
        self.previous_fallback_key
            .as_ref()
            .filter(|k| k.keypair.public_key() == *public_key)
            .map(|k| (&k.keypair, KeySource::PreviousFallback))
    }

    /// Accepts a session a peer started: checks the sender, finds the one-time (or fallback)
    /// key the pre-key message names, decrypts the first message into `out` and, only if that
    /// works, drops the one-time key (a fallback key stays).
    pub fn create_inbound_session(
        &mut self,
        their_identity_key: Curve25519PublicKey,
        message: &PreKeyMessage<'_>,
        out: &mut [u8],
    ) -> Result<InboundCreationResult, SessionCreationError> {
        let mut slot = None;
        let plaintext_len =
            self.create_inbound_session_in(their_identity_key, message, out, &mut slot)?;
        let session = slot.ok_or(SessionCreationError::MismatchedSessionConfig)?;
        Ok(InboundCreationResult {
            session,
            plaintext_len,
        })
    }

    /// [`Account::create_inbound_session`] building the session in `slot`, so that no
    /// session-sized temporary is needed: for small stacks. Returns the plaintext length;
    /// on success `slot` holds the new session, on failure it is emptied (and what it held
    /// zeroized).
    pub fn create_inbound_session_in(
        &mut self,
        their_identity_key: Curve25519PublicKey,
        message: &PreKeyMessage<'_>,
        out: &mut [u8],
        slot: &mut Option<Session>,
    ) -> Result<usize, SessionCreationError> {
        *slot = None;
        if their_identity_key != message.identity_key() {
            return Err(SessionCreationError::MismatchedIdentityKey);
        }
        if message.message().version() != VERSION_TRUNCATED_MAC {
            return Err(SessionCreationError::MismatchedSessionConfig);
        }
        let one_time_key = message.one_time_key();
        let (private, source) = self
            .find_one_time_key(&one_time_key)
            .ok_or(SessionCreationError::MissingOneTimeKey)?;
        // Receiver: the same three secrets from the other side's keys.
        let secret = triple_diffie_hellman([
            private.diffie_hellman(&message.identity_key()),
            self.identity_key.diffie_hellman(&message.base_key()),
            private.diffie_hellman(&message.base_key()),
        ])?;
        let session = Session::new_inbound_in(
            slot,
            &secret,
            message.message().ratchet_key(),
            message.session_keys(),
        );
        let plaintext_len = match session.decrypt_message(message.message(), out) {
            Ok(len) => len,
            Err(error) => {
                *slot = None;
                return Err(error.into());
            }
        };
        match source {
            KeySource::OneTime => {
                self.remove_one_time_key(&one_time_key);
            }
            KeySource::CurrentFallback => {
                self.previous_fallback_key = None;
            }
            KeySource::PreviousFallback => {}
        }
        Ok(plaintext_len)
    }
}

/// Concatenates the three Diffie-Hellman secrets of Olm's key agreement.
fn triple_diffie_hellman(
    parts: [Option<SharedSecret>; 3],
) -> Result<Zeroizing<[u8; 96]>, SessionCreationError> {
    let mut secret = Zeroizing::new([0u8; 96]);
    for (chunk, part) in secret.chunks_exact_mut(32).zip(parts) {
        chunk.copy_from_slice(
            part.ok_or(SessionCreationError::NonContributoryKey)?
                .as_bytes(),
        );
    }
    Ok(secret)
}

#[derive(Clone, Copy)]
enum KeySource {
    OneTime,
    CurrentFallback,
    PreviousFallback,
}

impl<const N: usize> fmt::Debug for Account<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("identity_keys", &self.identity_keys())
            .field("one_time_keys", &self.one_time_keys.len())
            .field(
                "fallback_key",
                &self.fallback_key.as_ref().map(|k| k.keypair.public_key()),
            )
            .finish_non_exhaustive()
    }
}
