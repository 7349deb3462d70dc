//! The Olm session: the double ratchet of one device pair.
//!
//! The sending side is either active (our ratchet key pair and a sending chain) or inactive
//! (we have received the peer's newest ratchet key and will make a new key pair on the next
//! send). Receiving chains are kept for the peer's last [`MAX_RECEIVING_CHAINS`] ratchet keys,
//! and message keys skipped in them are kept, at most [`MAX_SKIPPED_KEYS_PER_CHAIN`] per chain
//! and [`MAX_SKIPPED_KEYS`] in all, oldest dropped first.

use core::fmt;

use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::messages::{
    Message, MessageType, OlmMessage, SessionKeys, normal_len, pre_key_len, write_normal_header,
    write_pre_key_header,
};
use crate::{
    cipher::{
        CipherKeys, MAC_LEN, TRUNCATED_MAC_LEN, VERSION_FULL_MAC, ciphertext_len, hmac_sha256,
    },
    error::{DecryptionError, EncryptionError},
    fifo::Fifo,
    keys::{Curve25519Keypair, Curve25519PublicKey},
    protobuf::Writer,
};

/// Receiving chains kept, as vodozemac and libolm.
pub const MAX_RECEIVING_CHAINS: usize = 5;
/// Skipped message keys kept per receiving chain, as vodozemac.
pub const MAX_SKIPPED_KEYS_PER_CHAIN: usize = 40;
/// Skipped message keys kept in all (vodozemac: 40 per chain, up to 200).
pub const MAX_SKIPPED_KEYS: usize = 64;
/// How far ahead of its chain a message may be, as vodozemac.
pub const MAX_MESSAGE_GAP: u64 = 2000;

const ROOT_INFO: &[u8] = b"OLM_ROOT";
const RATCHET_INFO: &[u8] = b"OLM_RATCHET";
const MESSAGE_KEY_SEED: &[u8] = &[1];
const CHAIN_KEY_SEED: &[u8] = &[2];

/// A symmetric chain: each step gives one message key.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    pub(crate) key: [u8; 32],
    pub(crate) index: u32,
}

impl ChainKey {
    const EMPTY: Self = Self {
        key: [0; 32],
        index: 0,
    };

    fn message_key(&self) -> [u8; 32] {
        hmac_sha256(&self.key, MESSAGE_KEY_SEED)
    }

    fn advance(&mut self) {
        self.key = hmac_sha256(&self.key, CHAIN_KEY_SEED);
        self.index = self.index.wrapping_add(1);
    }
}

/// Splits 64 bytes of HKDF output into a root key and a chain key.
fn kdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> (Zeroizing<[u8; 32]>, ChainKey) {
    let mut okm = Zeroizing::new([0u8; 64]);
    // 64 bytes is far below HKDF-SHA-256's output limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, okm.as_mut_slice());
    let mut root = Zeroizing::new([0u8; 32]);
    let mut chain = ChainKey::default();
    let (r, c) = okm.split_at(32);
    root.copy_from_slice(r);
    chain.key.copy_from_slice(c);
    (root, chain)
}

/// Our half of the double ratchet.
// `Inactive` comes first so that it is the variant of tag zero: [`Session::BLANK`] is then
// all zeros, which the compiler writes into a slot with a memset, where a non-zero tag made
// it copy a 3 KB constant kept in flash.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) enum SendingRatchet {
    Inactive {
        root_key: [u8; 32],
        remote_ratchet_key: [u8; 32],
    },
    Active {
        root_key: [u8; 32],
        ratchet_key: Curve25519Keypair,
        chain: ChainKey,
    },
}

/// The chain for one of the peer's ratchet keys.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet_key: [u8; 32],
    pub(crate) chain: ChainKey,
    /// Ties skipped message keys to this chain.
    pub(crate) serial: u32,
}

impl ReceiverChain {
    const EMPTY: Self = Self {
        ratchet_key: [0; 32],
        chain: ChainKey::EMPTY,
        serial: 0,
    };
}

/// A message key kept for a message that has not arrived yet.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SkippedKey {
    pub(crate) key: [u8; 32],
    pub(crate) chain_index: u32,
    pub(crate) chain_serial: u32,
}

impl SkippedKey {
    const EMPTY: Self = Self {
        key: [0; 32],
        chain_index: 0,
        chain_serial: 0,
    };
}

/// An Olm session with one peer device.
///
/// Not `Clone`: two copies would encrypt different messages with the same message key.
pub struct Session {
    pub(crate) session_keys: SessionKeys,
    pub(crate) sending: SendingRatchet,
    pub(crate) receiving: Fifo<ReceiverChain, MAX_RECEIVING_CHAINS>,
    pub(crate) skipped: Fifo<SkippedKey, MAX_SKIPPED_KEYS>,
    pub(crate) next_serial: u32,
}

/// The outcome of [`Session::encrypt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The Matrix `type` of the message.
    pub message_type: MessageType,
    /// The number of bytes written to the front of the output buffer.
    pub len: usize,
}

impl Session {
    /// A placeholder that only ever sits in a slot until [`Session::fill_slot`] overwrites
    /// every field; it never leaves the crate. A constant of zeros, so that putting it into
    /// a slot is a memset there rather than a 3 KB temporary on the stack.
    const BLANK: Session = Session {
        session_keys: SessionKeys {
            identity_key: Curve25519PublicKey([0; 32]),
            base_key: Curve25519PublicKey([0; 32]),
            one_time_key: Curve25519PublicKey([0; 32]),
        },
        sending: SendingRatchet::Inactive {
            root_key: [0; 32],
            remote_ratchet_key: [0; 32],
        },
        receiving: Fifo::from_empty([ReceiverChain::EMPTY; MAX_RECEIVING_CHAINS]),
        skipped: Fifo::from_empty([SkippedKey::EMPTY; MAX_SKIPPED_KEYS]),
        next_serial: 0,
    };

    /// Makes `slot` a session with these keys and sending ratchet and no receiving chains,
    /// in place: a session is 3 KB, too much for a Cortex-M stack to hold several copies of
    /// while it is built and moved. What the slot held before is zeroized.
    pub(crate) fn fill_slot(
        slot: &mut Option<Session>,
        session_keys: SessionKeys,
        sending: SendingRatchet,
    ) -> &mut Session {
        let session = slot.get_or_insert_with(|| Session::BLANK);
        session.session_keys = session_keys;
        session.sending = sending;
        session.receiving.clear();
        session.skipped.clear();
        session.next_serial = 0;
        session
    }

    /// The initiator's side, from the 3DH secret, built in `slot`.
    pub(crate) fn new_outbound_in<'s, R: CryptoRng + ?Sized>(
        slot: &'s mut Option<Session>,
        rng: &mut R,
        shared_secret: &[u8; 96],
        session_keys: SessionKeys,
    ) -> &'s mut Session {
        let (root_key, chain) = kdf(&[0], shared_secret, ROOT_INFO);
        let sending = SendingRatchet::Active {
            root_key: *root_key,
            ratchet_key: Curve25519Keypair::generate(rng),
            chain,
        };
        Self::fill_slot(slot, session_keys, sending)
    }

    /// The receiver's side, from the 3DH secret and the initiator's first ratchet key, built
    /// in `slot`.
    pub(crate) fn new_inbound_in<'s>(
        slot: &'s mut Option<Session>,
        shared_secret: &[u8; 96],
        remote_ratchet_key: Curve25519PublicKey,
        session_keys: SessionKeys,
    ) -> &'s mut Session {
        let (root_key, chain) = kdf(&[0], shared_secret, ROOT_INFO);
        let sending = SendingRatchet::Inactive {
            root_key: *root_key,
            remote_ratchet_key: remote_ratchet_key.0,
        };
        let session = Self::fill_slot(slot, session_keys, sending);
        session.add_receiving_chain(remote_ratchet_key.0, chain);
        session
    }

    /// The session id: SHA-256 of the initiator's identity key, base key and one-time key.
    pub fn session_id(&self) -> SessionId {
        let digest = Sha256::new()
            .chain_update(self.session_keys.identity_key.as_bytes())
            .chain_update(self.session_keys.base_key.as_bytes())
            .chain_update(self.session_keys.one_time_key.as_bytes())
            .finalize();
        SessionId(digest.into())
    }

    /// The keys that identify the session.
    pub const fn session_keys(&self) -> SessionKeys {
        self.session_keys
    }

    /// Whether any message from the peer was decrypted (until then we send pre-key messages).
    pub const fn has_received_message(&self) -> bool {
        !self.receiving.is_empty()
    }

    fn add_receiving_chain(&mut self, ratchet_key: [u8; 32], chain: ChainKey) -> u32 {
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        if self.receiving.is_full() {
            let oldest = self.receiving.as_slice().first().map(|c| c.serial);
            self.skipped.retain(|k| Some(k.chain_serial) != oldest);
        }
        self.receiving.push(ReceiverChain {
            ratchet_key,
            chain,
            serial,
        });
        serial
    }

    fn add_skipped_key(&mut self, key: SkippedKey) {
        let serial = key.chain_serial;
        if self
            .skipped
            .iter()
            .filter(|k| k.chain_serial == serial)
            .count()
            >= MAX_SKIPPED_KEYS_PER_CHAIN
        {
            self.skipped.remove_first(|k| k.chain_serial == serial);
        }
        self.skipped.push(key);
    }

    /// Encrypts `plaintext` into `out`, which needs [`super::olm_message_len`] bytes. Takes
    /// the RNG because the first message after receiving makes a new ratchet key pair.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<EncryptedMessage, EncryptionError> {
        if let SendingRatchet::Inactive {
            root_key,
            remote_ratchet_key,
        } = &self.sending
        {
            let ratchet_key = Curve25519Keypair::generate(rng);
            let shared = ratchet_key
                .diffie_hellman(&Curve25519PublicKey(*remote_ratchet_key))
                .ok_or(EncryptionError::NonContributoryKey)?;
            let (root_key, chain) = kdf(root_key, shared.as_bytes(), RATCHET_INFO);
            self.sending = SendingRatchet::Active {
                root_key: *root_key,
                ratchet_key,
                chain,
            };
        }
        let SendingRatchet::Active {
            ratchet_key, chain, ..
        } = &mut self.sending
        else {
            return Err(EncryptionError::NonContributoryKey);
        };
        if chain.index == u32::MAX {
            return Err(EncryptionError::IndexExhausted);
        }
        let ct_len = ciphertext_len(plaintext.len());
        let inner_len = normal_len(u64::from(chain.index), ct_len);
        let pre_key = self.receiving.is_empty();
        let total = if pre_key {
            pre_key_len(inner_len)
        } else {
            inner_len
        };
        if out.len() < total {
            return Err(EncryptionError::BufferTooSmall);
        }

        let mut message_key = chain.message_key();
        let keys = CipherKeys::olm(&message_key);
        message_key.zeroize();
        let too_small = |_| EncryptionError::BufferTooSmall;
        let mut w = Writer::new(out);
        if pre_key {
            write_pre_key_header(&mut w, &self.session_keys, inner_len).map_err(too_small)?;
        }
        let inner_start = w.position();
        write_normal_header(
            &mut w,
            &ratchet_key.public_key(),
            u64::from(chain.index),
            ct_len,
        )
        .map_err(too_small)?;
        keys.encrypt(plaintext, w.reserve(ct_len).map_err(too_small)?)
            .ok_or(EncryptionError::BufferTooSmall)?;
        let mac = keys.mac(&[w.written().get(inner_start..).unwrap_or_default()]);
        w.put(mac.get(..TRUNCATED_MAC_LEN).unwrap_or_default())
            .map_err(too_small)?;
        chain.advance();
        let message_type = if pre_key {
            MessageType::PreKey
        } else {
            MessageType::Normal
        };
        Ok(EncryptedMessage {
            message_type,
            len: w.position(),
        })
    }

    /// Decrypts `message` into `out`, which needs as many bytes as its ciphertext; returns the
    /// plaintext length. On any error the session is unchanged.
    pub fn decrypt(
        &mut self,
        message: &OlmMessage<'_>,
        out: &mut [u8],
    ) -> Result<usize, DecryptionError> {
        self.decrypt_message(message.message(), out)
    }

    pub(crate) fn decrypt_message(
        &mut self,
        message: &Message<'_>,
        out: &mut [u8],
    ) -> Result<usize, DecryptionError> {
        let ratchet_key = message.ratchet_key().0;
        if let Some(position) = self
            .receiving
            .iter()
            .position(|c| c.ratchet_key == ratchet_key)
        {
            return self.decrypt_in_chain(position, message, out);
        }
        match &self.sending {
            SendingRatchet::Active {
                root_key,
                ratchet_key: ours,
                ..
            } => {
                let shared = ours
                    .diffie_hellman(&message.ratchet_key())
                    .ok_or(DecryptionError::NonContributoryKey)?;
                let (new_root, chain) = kdf(root_key, shared.as_bytes(), RATCHET_INFO);
                let found = find_message_key(&chain, message.chain_index())?;
                let plaintext_len = decrypt_with_key(&found.message_key, message, out)?;
                self.sending = SendingRatchet::Inactive {
                    root_key: *new_root,
                    remote_ratchet_key: ratchet_key,
                };
                let serial = self.add_receiving_chain(ratchet_key, chain);
                self.commit_new_key(serial, message.chain_index());
                Ok(plaintext_len)
            }
            // We have not answered the peer's newest ratchet key yet, so no honest peer can
            // have moved on to another one. vodozemac would ratchet with a fresh key pair and
            // then fail the MAC; the outcome without that detour is the same.
            SendingRatchet::Inactive { .. } => {
                // A low-order key makes every exchange non-contributory; a clamped scalar
                // shows it as well as a fresh one would.
                if Curve25519Keypair::from_secret(&[1; 32])
                    .diffie_hellman(&message.ratchet_key())
                    .is_none()
                {
                    return Err(DecryptionError::NonContributoryKey);
                }
                let gap = message.chain_index();
                if gap > MAX_MESSAGE_GAP {
                    Err(DecryptionError::TooBigMessageGap {
                        gap,
                        max: MAX_MESSAGE_GAP,
                    })
                } else {
                    Err(DecryptionError::InvalidMac)
                }
            }
        }
    }

    fn decrypt_in_chain(
        &mut self,
        position: usize,
        message: &Message<'_>,
        out: &mut [u8],
    ) -> Result<usize, DecryptionError> {
        let chain_index = message.chain_index();
        let Some(receiver) = self.receiving.as_slice().get(position) else {
            return Err(DecryptionError::MissingMessageKey { chain_index });
        };
        let serial = receiver.serial;
        if u64::from(receiver.chain.index) > chain_index {
            let skipped = self
                .skipped
                .iter()
                .position(|k| k.chain_serial == serial && u64::from(k.chain_index) == chain_index)
                .ok_or(DecryptionError::MissingMessageKey { chain_index })?;
            let mut key = self
                .skipped
                .as_slice()
                .get(skipped)
                .map(|k| k.key)
                .unwrap_or_default();
            let result = decrypt_with_key(&key, message, out);
            key.zeroize();
            let plaintext_len = result?;
            self.skipped.remove(skipped);
            return Ok(plaintext_len);
        }
        let found = find_message_key(&receiver.chain, chain_index)?;
        let plaintext_len = decrypt_with_key(&found.message_key, message, out)?;
        self.commit_new_key(serial, chain_index);
        Ok(plaintext_len)
    }

    /// After a message at `chain_index` decrypted: moves the chain past it, keeping the keys of
    /// the last skipped messages.
    fn commit_new_key(&mut self, serial: u32, chain_index: u64) {
        loop {
            let Some(receiver) = self
                .receiving
                .as_mut_slice()
                .iter_mut()
                .find(|c| c.serial == serial)
            else {
                return;
            };
            let index = u64::from(receiver.chain.index);
            if index > chain_index {
                return;
            }
            let skipped = (index < chain_index
                && chain_index - index <= MAX_SKIPPED_KEYS_PER_CHAIN as u64)
                .then(|| SkippedKey {
                    key: receiver.chain.message_key(),
                    chain_index: receiver.chain.index,
                    chain_serial: serial,
                });
            receiver.chain.advance();
            if let Some(key) = skipped {
                self.add_skipped_key(key);
            }
        }
    }
}

/// The key for `chain_index` in `chain`, computed on a copy so nothing changes until the
/// message has authenticated.
struct FoundKey {
    message_key: [u8; 32],
}

impl Drop for FoundKey {
    fn drop(&mut self) {
        self.message_key.zeroize();
    }
}

fn find_message_key(chain: &ChainKey, chain_index: u64) -> Result<FoundKey, DecryptionError> {
    let gap = chain_index.saturating_sub(u64::from(chain.index));
    // Chains count in 32 bits here (vodozemac: 64); a chain that long cannot occur, since it
    // takes four billion messages without a reply.
    if gap > MAX_MESSAGE_GAP || chain_index >= u64::from(u32::MAX) {
        return Err(DecryptionError::TooBigMessageGap {
            gap,
            max: MAX_MESSAGE_GAP,
        });
    }
    let mut walker = chain.clone();
    for _ in 0..gap {
        walker.advance();
    }
    Ok(FoundKey {
        message_key: walker.message_key(),
    })
}

fn decrypt_with_key(
    message_key: &[u8; 32],
    message: &Message<'_>,
    out: &mut [u8],
) -> Result<usize, DecryptionError> {
    if message.version() == VERSION_FULL_MAC {
        return Err(DecryptionError::InvalidMacLength {
            expected: TRUNCATED_MAC_LEN,
            got: MAC_LEN,
        });
    }
    let keys = CipherKeys::olm(message_key);
    keys.verify_truncated_mac(message.mac_input(), message.mac())?;
    keys.decrypt(message.ciphertext(), out)
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id())
            .field("receiving_chains", &self.receiving.len())
            .field("skipped_message_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// An Olm session id: 32 bytes, base64 in Matrix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub(crate) [u8; 32]);

crate::keys::public_bytes_type!(SessionId, 32, "an Olm session id");

impl SessionId {
    /// Reads a session id from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, crate::error::DecodeError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| crate::error::DecodeError::InvalidKeyLength)
    }
}
