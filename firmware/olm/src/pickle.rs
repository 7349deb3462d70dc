//! Pickles: the states of this crate as compact, encrypted and authenticated bytes for flash.
//!
//! Layout: format version (1 byte) || nonce (16) || AES-256-CBC ciphertext || HMAC-SHA-256
//! tag truncated to 16 bytes over everything before it. The AES key, HMAC key and IV come from
//! HKDF-SHA-256 with the nonce as salt, the caller's 32-byte pickle key as input, and the type
//! name in the info, so a pickle only opens as the type it was made from. The plaintext is a
//! CBOR array (minicbor) whose first item is the type's schema version.
//!
//! Encrypting and decrypting work in the caller's buffer, so no state-sized scratch space is
//! needed; [`MAX_ACCOUNT_PICKLE_SIZE`] and its siblings say how big a buffer (or flash slot)
//! must be. This format is jeton's own: vodozemac's JSON pickles are not read or written.
//!
//! The same envelope seals bytes of a caller's own format ([`seal_in_place`], [`open_in_place`]):
//! jeton-core's records on flash, under a label that names the record.

use hmac::Mac;
use minicbor::{
    Decoder, Encoder,
    data::Type,
    encode::write::{Cursor, EndOfSlice},
};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::{
    cipher::CipherKeys,
    error::PickleError,
    fifo::Fifo,
    keys::{Curve25519Keypair, Curve25519PublicKey, Ed25519Keypair, Ed25519PublicKey},
    megolm::{GroupSession, InboundGroupSession, ratchet::MegolmRatchet},
    olm::{
        Account, Session, SessionKeys,
        account::StoredKey,
        session::{ChainKey, ReceiverChain, SendingRatchet, SkippedKey},
    },
};

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const SCHEMA_VERSION: u32 = 1;

/// The pickle size for a CBOR plaintext of at most `plaintext_len` bytes.
const fn envelope_len(plaintext_len: usize) -> usize {
    HEADER_LEN + crate::cipher::ciphertext_len(plaintext_len) + TAG_LEN
}

// Upper bounds of the CBOR encodings: a 32-byte string takes 34 bytes, an unsigned integer
// up to 9 (5 for a u32), an array header 1 to 3, a bool or null 1.
const BYTES32: usize = 34;
const U32: usize = 5;
const ARRAY: usize = 3;
const STORED_KEY: usize = ARRAY + U32 + 1 + 2 * BYTES32;

const fn account_plaintext_len(one_time_keys: usize) -> usize {
    ARRAY
        + U32
        + BYTES32
        + 2 * BYTES32
        + ARRAY
        + one_time_keys * STORED_KEY
        + U32
        + 2 * STORED_KEY
        + U32
}

/// The largest pickle of an [`Account`] holding `one_time_keys` keys.
pub const fn max_account_pickle_size(one_time_keys: usize) -> usize {
    envelope_len(account_plaintext_len(one_time_keys))
}

/// The largest pickle of an [`Account`] with the default 50 one-time keys.
pub const MAX_ACCOUNT_PICKLE_SIZE: usize =
    max_account_pickle_size(crate::olm::DEFAULT_ONE_TIME_KEYS);

const CHAIN: usize = BYTES32 + U32;
const SESSION_PLAINTEXT_LEN: usize = ARRAY
    + U32
    + 3 * BYTES32
    + (ARRAY + U32 + 3 * BYTES32 + CHAIN)
    + ARRAY
    + crate::olm::MAX_RECEIVING_CHAINS * (ARRAY + BYTES32 + CHAIN + U32)
    + ARRAY
    + crate::olm::MAX_SKIPPED_KEYS * (ARRAY + BYTES32 + U32 + U32)
    + U32;

/// The largest pickle of an Olm [`Session`].
pub const MAX_SESSION_PICKLE_SIZE: usize = envelope_len(SESSION_PLAINTEXT_LEN);

const RATCHET: usize = 2 + 128 + U32;
/// The largest pickle of a [`GroupSession`].
pub const MAX_GROUP_SESSION_PICKLE_SIZE: usize = envelope_len(ARRAY + U32 + RATCHET + BYTES32);
/// The largest pickle of an [`InboundGroupSession`].
pub const MAX_INBOUND_GROUP_SESSION_PICKLE_SIZE: usize =
    envelope_len(ARRAY + U32 + RATCHET + BYTES32 + 1);

type Enc<'a> = Encoder<Cursor<&'a mut [u8]>>;
type EncResult = Result<(), minicbor::encode::Error<EndOfSlice>>;

/// The HKDF info of an envelope's keys: this prefix, then the type name or label.
const KEYS_INFO_PREFIX: &[u8] = b"JETON_PICKLE_";
const KEYS_INFO_LEN: usize = 48;

fn keys_for(pickle_key: &[u8; 32], nonce: &[u8], type_name: &[u8]) -> CipherKeys {
    let mut info = [0u8; KEYS_INFO_LEN];
    let prefix = KEYS_INFO_PREFIX;
    let len = prefix.len() + type_name.len();
    if let Some(slot) = info.get_mut(..prefix.len()) {
        slot.copy_from_slice(prefix);
    }
    if let Some(slot) = info.get_mut(prefix.len()..len) {
        slot.copy_from_slice(type_name);
    }
    CipherKeys::expand(pickle_key, info.get(..len).unwrap_or_default(), nonce)
}

/// Encodes with `encode` after the header, encrypts in place, appends the tag.
fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    pickle_key: &[u8; 32],
    type_name: &[u8],
    out: &mut [u8],
    encode: impl FnOnce(&mut Enc<'_>) -> EncResult,
) -> Result<usize, PickleError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let result = out
        .get_mut(HEADER_LEN..)
        .ok_or(PickleError::BufferTooSmall)
        .and_then(|body| {
            let mut encoder = Encoder::new(Cursor::new(body));
            encode(&mut encoder).map_err(|_| PickleError::BufferTooSmall)?;
            Ok(encoder.writer().position())
        })
        .and_then(|plaintext_len| seal_envelope(&nonce, pickle_key, type_name, out, plaintext_len));
    if result.is_err() {
        out.zeroize();
    }
    result
}

/// Authenticates and decrypts `pickle` in place, hands the plaintext to `decode`, then
/// zeroizes the buffer.
fn open<T>(
    pickle: &mut [u8],
    pickle_key: &[u8; 32],
    type_name: &[u8],
    decode: impl FnOnce(&mut Decoder<'_>) -> Result<T, minicbor::decode::Error>,
) -> Result<T, PickleError> {
    let result = open_in_place(pickle, pickle_key, type_name).and_then(|plaintext| {
        decode(&mut Decoder::new(plaintext)).map_err(|_| PickleError::InvalidContent)
    });
    pickle.zeroize();
    result
}

/// The longest label [`seal_in_place`] takes.
pub const MAX_LABEL_LEN: usize = KEYS_INFO_LEN - KEYS_INFO_PREFIX.len();

/// Where the plaintext goes in the buffer [`seal_in_place`] seals: after the envelope's header.
pub const SEAL_HEADER_LEN: usize = HEADER_LEN;

/// The length of an envelope's tag, its last bytes: it authenticates everything before it.
pub const SEAL_TAG_LEN: usize = TAG_LEN;

/// The length of the envelope [`seal_in_place`] makes of `plaintext_len` bytes.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    envelope_len(plaintext_len)
}

/// Seals bytes of the caller's own format in the pickles' envelope (see the [module
/// documentation](self)), in place: the plaintext lies in `buf[SEAL_HEADER_LEN..][..plaintext_len]`,
/// and `buf[..sealed_len(plaintext_len)]` becomes the envelope. `label` takes the place of a
/// pickle's type name: the envelope opens only under the same key and label, so a label can
/// bind it to where it is kept. Returns the envelope's length; a label longer than
/// [`MAX_LABEL_LEN`] is [`PickleError::InvalidLength`]. On an error `buf` is zeroized,
/// plaintext included.
///
/// The nonce is synthetic (the idea of RFC 5297's SIV): an HMAC of the label and plaintext
/// under the key, so sealing needs no randomness and two different plaintexts never share a
/// nonce. The same bytes sealed twice under one label give the same envelope, which shows
/// only that they did not change.
pub fn seal_in_place(
    key: &[u8; 32],
    label: &[u8],
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, PickleError> {
    let result = buf
        .get(HEADER_LEN..HEADER_LEN + plaintext_len)
        .ok_or(PickleError::BufferTooSmall)
        .map(|plaintext| synthetic_nonce(key, label, plaintext))
        .and_then(|nonce| seal_envelope(&nonce, key, label, buf, plaintext_len));
    if result.is_err() {
        buf.zeroize();
    }
    result
}

/// HMAC-SHA-256 under `key` of a domain prefix, the label's length, the label and the
/// plaintext, truncated to a nonce.
fn synthetic_nonce(key: &[u8; 32], label: &[u8], plaintext: &[u8]) -> [u8; NONCE_LEN] {
    let mut mac = crate::cipher::hmac(key);
    mac.update(b"JETON_SEAL_NONCE");
    mac.update(&[label.len() as u8]);
    mac.update(label);
    mac.update(plaintext);
    let full = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(full.get(..NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
    nonce
}

/// Writes the header with `nonce`, encrypts the plaintext after it in place, appends the tag.
fn seal_envelope(
    nonce: &[u8; NONCE_LEN],
    key: &[u8; 32],
    label: &[u8],
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, PickleError> {
    if label.len() > MAX_LABEL_LEN {
        return Err(PickleError::InvalidLength);
    }
    let (header, body) = buf
        .split_at_mut_checked(HEADER_LEN)
        .ok_or(PickleError::BufferTooSmall)?;
    let (version, nonce_slot) = header.split_at_mut(1);
    version.copy_from_slice(&[FORMAT_VERSION]);
    nonce_slot.copy_from_slice(nonce);
    let keys = keys_for(key, nonce, label);
    let ct_len = keys
        .encrypt_in_place(body, plaintext_len)
        .ok_or(PickleError::BufferTooSmall)?;

    let tagged = HEADER_LEN + ct_len;
    let tag = keys.mac(&[buf.get(..tagged).unwrap_or_default()]);
    let slot = buf
        .get_mut(tagged..tagged + TAG_LEN)
        .ok_or(PickleError::BufferTooSmall)?;
    slot.copy_from_slice(tag.get(..TAG_LEN).unwrap_or_default());
    Ok(tagged + TAG_LEN)
}

/// Authenticates and decrypts an envelope [`seal_in_place`] made with the same key and label,
/// in place; returns the plaintext. The caller zeroizes `sealed` when done with it: it then
/// holds the plaintext and its padding.
pub fn open_in_place<'b>(
    sealed: &'b mut [u8],
    key: &[u8; 32],
    label: &[u8],
) -> Result<&'b mut [u8], PickleError> {
    if sealed.len() < HEADER_LEN + 16 + TAG_LEN || label.len() > MAX_LABEL_LEN {
        return Err(PickleError::InvalidLength);
    }
    if sealed.first() != Some(&FORMAT_VERSION) {
        return Err(PickleError::UnknownVersion);
    }
    let (authenticated, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
    let (header, body) = authenticated.split_at_mut(HEADER_LEN);
    let keys = keys_for(key, header.get(1..).unwrap_or_default(), label);
    let expected = keys.mac(&[header, body]);
    if !bool::from(expected.get(..TAG_LEN).unwrap_or_default().ct_eq(tag)) {
        return Err(PickleError::InvalidMac);
    }
    let plaintext_len = keys
        .decrypt_in_place(body)
        .map_err(|_| PickleError::InvalidContent)?;
    body.get_mut(..plaintext_len)
        .ok_or(PickleError::InvalidContent)
}

/// A 32-byte string; the copy zeroizes itself, since most are secrets.
fn bytes32(d: &mut Decoder<'_>) -> Result<Zeroizing<[u8; 32]>, minicbor::decode::Error> {
    let bytes: [u8; 32] = d
        .bytes()?
        .try_into()
        .map_err(|_| invalid("expected 32 bytes"))?;
    Ok(Zeroizing::new(bytes))
}

fn invalid(what: &'static str) -> minicbor::decode::Error {
    minicbor::decode::Error::message(what)
}

fn schema(d: &mut Decoder<'_>) -> Result<(), minicbor::decode::Error> {
    d.array()?;
    if d.u32()? == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(invalid("unknown schema version"))
    }
}

fn encode_keypair(e: &mut Enc<'_>, keypair: &Curve25519Keypair) -> EncResult {
    e.bytes(keypair.secret_bytes())?
        .bytes(keypair.public_key().as_bytes())?;
    Ok(())
}

fn decode_keypair(d: &mut Decoder<'_>) -> Result<Curve25519Keypair, minicbor::decode::Error> {
    let secret = bytes32(d)?;
    let public = Curve25519PublicKey(*bytes32(d)?);
    Ok(Curve25519Keypair::from_parts(&secret, public))
}

fn decode_signing_key(d: &mut Decoder<'_>) -> Result<Ed25519Keypair, minicbor::decode::Error> {
    let secret = bytes32(d)?;
    Ok(Ed25519Keypair::from_secret(&secret))
}

/// The pickle API every state implements.
pub trait Pickle: format::PickleFormat {
    /// The largest pickle of this type.
    const MAX_PICKLE_SIZE: usize;

    /// Writes the encrypted pickle into `out` and returns its length; `out` needs
    /// [`Pickle::MAX_PICKLE_SIZE`] bytes at most. A fresh nonce comes from `rng`.
    fn pickle<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        pickle_key: &[u8; 32],
        out: &mut [u8],
    ) -> Result<usize, PickleError> {
        seal(rng, pickle_key, Self::TYPE_NAME, out, |e| self.encode(e))
    }

    /// Reads a pickle made with the same key. It is decrypted in place and the plaintext is
    /// zeroized afterwards, so `pickle` does not hold the pickle any more on success.
    fn from_pickle(pickle: &mut [u8], pickle_key: &[u8; 32]) -> Result<Self, PickleError> {
        open(pickle, pickle_key, Self::TYPE_NAME, Self::decode)
    }

    /// [`Pickle::from_pickle`] into `slot`, reusing its memory where the type allows (an Olm
    /// [`Session`] is decoded in place, without a session-sized temporary: for small stacks).
    /// On failure `slot` is emptied, and what it held zeroized.
    fn from_pickle_into<'s>(
        pickle: &mut [u8],
        pickle_key: &[u8; 32],
        slot: &'s mut Option<Self>,
    ) -> Result<&'s mut Self, PickleError> {
        let result = open(pickle, pickle_key, Self::TYPE_NAME, |d| {
            Self::decode_into(d, slot)
        });
        if result.is_err() {
            *slot = None;
        }
        result?;
        slot.as_mut().ok_or(PickleError::InvalidContent)
    }
}

pub(crate) mod format {
    /// How a type turns into the CBOR plaintext of its pickle; sealed to this crate.
    pub trait PickleFormat: Sized {
        /// Bound into the key derivation, so a pickle opens only as its own type.
        const TYPE_NAME: &'static [u8];

        fn encode(&self, e: &mut super::Enc<'_>) -> super::EncResult;

        fn decode(d: &mut minicbor::Decoder<'_>) -> Result<Self, minicbor::decode::Error>;

        /// Decodes into `slot`; a type whose temporaries would be large decodes in place.
        fn decode_into(
            d: &mut minicbor::Decoder<'_>,
            slot: &mut Option<Self>,
        ) -> Result<(), minicbor::decode::Error> {
            *slot = Some(Self::decode(d)?);
            Ok(())
        }
    }
}

use format::PickleFormat;

fn encode_stored_key(e: &mut Enc<'_>, key: &StoredKey) -> EncResult {
    e.array(4)?.u32(key.key_id)?.bool(key.published)?;
    encode_keypair(e, &key.keypair)
}

fn decode_stored_key(d: &mut Decoder<'_>) -> Result<StoredKey, minicbor::decode::Error> {
    d.array()?;
    Ok(StoredKey {
        key_id: d.u32()?,
        published: d.bool()?,
        keypair: decode_keypair(d)?,
    })
}

fn encode_optional_key(e: &mut Enc<'_>, key: Option<&StoredKey>) -> EncResult {
    match key {
        Some(key) => encode_stored_key(e, key),
        None => e.null().map(|_| ()),
    }
}

fn decode_optional_key(d: &mut Decoder<'_>) -> Result<Option<StoredKey>, minicbor::decode::Error> {
    if d.datatype()? == Type::Null {
        d.null()?;
        Ok(None)
    } else {
        decode_stored_key(d).map(Some)
    }
}

/// Reads an array of at most `N` items into `fifo`, which is emptied (zeroized) first.
fn decode_fifo_into<T: Zeroize + Default, const N: usize>(
    d: &mut Decoder<'_>,
    fifo: &mut Fifo<T, N>,
    item: impl Fn(&mut Decoder<'_>) -> Result<T, minicbor::decode::Error>,
) -> Result<(), minicbor::decode::Error> {
    fifo.clear();
    let len = d.array()?.ok_or_else(|| invalid("indefinite array"))?;
    if len > N as u64 {
        return Err(invalid("more entries than the capacity"));
    }
    for _ in 0..len {
        fifo.push(item(d)?);
    }
    Ok(())
}

impl<const N: usize> Pickle for Account<N> {
    const MAX_PICKLE_SIZE: usize = max_account_pickle_size(N);
}

impl<const N: usize> PickleFormat for Account<N> {
    const TYPE_NAME: &'static [u8] = b"ACCOUNT";

    fn encode(&self, e: &mut Enc<'_>) -> EncResult {
        e.array(8)?
            .u32(SCHEMA_VERSION)?
            .bytes(self.signing_key.secret_bytes())?;
        encode_keypair(e, &self.identity_key)?;
        e.array(self.one_time_keys.len() as u64)?;
        for key in self.one_time_keys.iter() {
            encode_stored_key(e, key)?;
        }
        e.u32(self.next_key_id)?;
        encode_optional_key(e, self.fallback_key.as_ref())?;
        encode_optional_key(e, self.previous_fallback_key.as_ref())?;
        e.u32(self.next_fallback_key_id)?;
        Ok(())
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        schema(d)?;
        let mut account = Self {
            signing_key: decode_signing_key(d)?,
            identity_key: decode_keypair(d)?,
            one_time_keys: Fifo::from_empty([StoredKey::EMPTY; N]),
            next_key_id: 0,
            fallback_key: None,
            previous_fallback_key: None,
            next_fallback_key_id: 0,
        };
        // Into the account's own list: no list-sized temporary.
        decode_fifo_into(d, &mut account.one_time_keys, decode_stored_key)?;
        account.next_key_id = d.u32()?;
        account.fallback_key = decode_optional_key(d)?;
        account.previous_fallback_key = decode_optional_key(d)?;
        account.next_fallback_key_id = d.u32()?;
        Ok(account)
    }
}

fn encode_chain(e: &mut Enc<'_>, chain: &ChainKey) -> EncResult {
    e.bytes(&chain.key)?.u32(chain.index)?;
    Ok(())
}

fn decode_chain(d: &mut Decoder<'_>) -> Result<ChainKey, minicbor::decode::Error> {
    Ok(ChainKey {
        key: *bytes32(d)?,
        index: d.u32()?,
    })
}

const ACTIVE: u32 = 0;
const INACTIVE: u32 = 1;

impl Pickle for Session {
    const MAX_PICKLE_SIZE: usize = MAX_SESSION_PICKLE_SIZE;
}

impl PickleFormat for Session {
    const TYPE_NAME: &'static [u8] = b"SESSION";

    fn encode(&self, e: &mut Enc<'_>) -> EncResult {
        let keys = &self.session_keys;
        e.array(8)?.u32(SCHEMA_VERSION)?;
        e.bytes(keys.identity_key.as_bytes())?;
        e.bytes(keys.base_key.as_bytes())?
            .bytes(keys.one_time_key.as_bytes())?;
        match &self.sending {
            SendingRatchet::Active {
                root_key,
                ratchet_key,
                chain,
            } => {
                e.array(6)?.u32(ACTIVE)?.bytes(root_key)?;
                encode_keypair(e, ratchet_key)?;
                encode_chain(e, chain)?;
            }
            SendingRatchet::Inactive {
                root_key,
                remote_ratchet_key,
            } => {
                e.array(3)?
                    .u32(INACTIVE)?
                    .bytes(root_key)?
                    .bytes(remote_ratchet_key)?;
            }
        }
        e.array(self.receiving.len() as u64)?;
        for chain in self.receiving.iter() {
            e.array(4)?.bytes(&chain.ratchet_key)?;
            encode_chain(e, &chain.chain)?;
            e.u32(chain.serial)?;
        }
        e.array(self.skipped.len() as u64)?;
        for key in self.skipped.iter() {
            e.array(3)?
                .bytes(&key.key)?
                .u32(key.chain_index)?
                .u32(key.chain_serial)?;
        }
        e.u32(self.next_serial)?;
        Ok(())
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        let mut slot = None;
        Self::decode_into(d, &mut slot)?;
        slot.ok_or_else(|| invalid("no session"))
    }

    fn decode_into(
        d: &mut Decoder<'_>,
        slot: &mut Option<Self>,
    ) -> Result<(), minicbor::decode::Error> {
        schema(d)?;
        let session_keys = SessionKeys {
            identity_key: Curve25519PublicKey(*bytes32(d)?),
            base_key: Curve25519PublicKey(*bytes32(d)?),
            one_time_key: Curve25519PublicKey(*bytes32(d)?),
        };
        d.array()?;
        let sending = match d.u32()? {
            ACTIVE => SendingRatchet::Active {
                root_key: *bytes32(d)?,
                ratchet_key: decode_keypair(d)?,
                chain: decode_chain(d)?,
            },
            INACTIVE => SendingRatchet::Inactive {
                root_key: *bytes32(d)?,
                remote_ratchet_key: *bytes32(d)?,
            },
            _ => return Err(invalid("unknown sending ratchet state")),
        };
        let session = Session::fill_slot(slot, session_keys, sending);
        decode_fifo_into(d, &mut session.receiving, |d| {
            d.array()?;
            Ok(ReceiverChain {
                ratchet_key: *bytes32(d)?,
                chain: decode_chain(d)?,
                serial: d.u32()?,
            })
        })?;
        decode_fifo_into(d, &mut session.skipped, |d| {
            d.array()?;
            Ok(SkippedKey {
                key: *bytes32(d)?,
                chain_index: d.u32()?,
                chain_serial: d.u32()?,
            })
        })?;
        session.next_serial = d.u32()?;
        Ok(())
    }
}

fn encode_ratchet(e: &mut Enc<'_>, ratchet: &MegolmRatchet) -> EncResult {
    e.bytes(ratchet.as_bytes())?.u32(ratchet.index())?;
    Ok(())
}

fn decode_ratchet(d: &mut Decoder<'_>) -> Result<MegolmRatchet, minicbor::decode::Error> {
    let bytes: &[u8; 128] = d
        .bytes()?
        .try_into()
        .map_err(|_| invalid("expected 128 bytes"))?;
    Ok(MegolmRatchet::from_bytes(bytes, d.u32()?))
}

impl Pickle for GroupSession {
    const MAX_PICKLE_SIZE: usize = MAX_GROUP_SESSION_PICKLE_SIZE;
}

impl PickleFormat for GroupSession {
    const TYPE_NAME: &'static [u8] = b"GROUP_SESSION";

    fn encode(&self, e: &mut Enc<'_>) -> EncResult {
        e.array(4)?.u32(SCHEMA_VERSION)?;
        encode_ratchet(e, self.ratchet())?;
        e.bytes(self.signing_keypair().secret_bytes())?;
        Ok(())
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        schema(d)?;
        Ok(GroupSession::from_parts(
            decode_ratchet(d)?,
            decode_signing_key(d)?,
        ))
    }
}

impl Pickle for InboundGroupSession {
    const MAX_PICKLE_SIZE: usize = MAX_INBOUND_GROUP_SESSION_PICKLE_SIZE;
}

impl PickleFormat for InboundGroupSession {
    const TYPE_NAME: &'static [u8] = b"INBOUND_GROUP_SESSION";

    fn encode(&self, e: &mut Enc<'_>) -> EncResult {
        e.array(5)?.u32(SCHEMA_VERSION)?;
        encode_ratchet(e, self.initial_ratchet())?;
        e.bytes(self.session_id().as_bytes())?
            .bool(self.signing_key_verified())?;
        Ok(())
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        schema(d)?;
        let ratchet = decode_ratchet(d)?;
        let signing_key =
            Ed25519PublicKey::from_slice(d.bytes()?).map_err(|_| invalid("bad signing key"))?;
        Ok(InboundGroupSession::from_parts(
            ratchet,
            signing_key,
            d.bool()?,
        ))
    }
}

#[cfg(test)]
mod tests;

/// Decodes an unencrypted pickle plaintext, so the fuzzer reaches the CBOR decoder without
/// having to forge a MAC.
#[doc(hidden)]
pub fn decode_plaintext<T: Pickle>(plaintext: &[u8]) -> Result<T, PickleError> {
    T::decode(&mut Decoder::new(plaintext)).map_err(|_| PickleError::InvalidContent)
}
