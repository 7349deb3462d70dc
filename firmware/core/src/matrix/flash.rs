//! The token's records on flash behind one handle, [`Flash`]: the platform's [`Store`], the
//! buffer records pass through, and the storage key their secret parts are sealed with.
//!
//! A record is `meta length (2 bytes, big-endian) || meta || pickle`: the meta a CBOR value
//! (minicbor) in the clear, the pickle a jeton-olm state encrypted with the storage key, or
//! nothing. Ids, cursors and the device table are not secret and are stored in the clear; the
//! access token is too (see the module's known gaps). Each table's record is written and read
//! by the module that owns the table; this one owns the framing, the key, and the helpers they
//! share to read their meta.

use heapless::String;
use minicbor::encode::write::{Cursor, EndOfSlice};
use minicbor::{Decoder, Encoder};

use jeton_olm::Pickle;

use super::TokenError;
use super::rng::CryptoSource;
use crate::platform::Rng;
use crate::store::{MAX_RECORD_SIZE, RecordId, Store, StoreError};

/// The encoder a record's meta is written with.
pub(super) type Enc<'b> = Encoder<Cursor<&'b mut [u8]>>;

/// What writing a record's meta can fail with (the record buffer is full).
pub(super) type EncError = minicbor::encode::Error<EndOfSlice>;

/// A record's meta CBOR and its pickle, borrowed from the record buffer.
pub(super) type RecordParts<'s> = (&'s [u8], &'s mut [u8]);

/// The token's flash: the store, the record buffer and the storage key. Laid out in the order
/// written (`repr(C)`), the buffer last: see `Core`.
#[repr(C)]
pub(super) struct Flash<S> {
    /// The platform's records (and its files, [`Store::files`]).
    pub(super) store: S,
    /// The key jeton-olm pickles are encrypted with; it never leaves this handle.
    key: [u8; 32],
    /// Records are encoded into and read back from here. Between record operations, steps
    /// that need a large buffer for a moment (a decrypted Olm plaintext, canonical JSON, a
    /// datagram the link rewrites) borrow it; nothing in it outlives the step.
    pub(super) scratch: [u8; MAX_RECORD_SIZE],
}

impl<S> Flash<S> {
    /// The handle over `store` with storage key `key`.
    pub(super) fn new(store: S, key: [u8; 32]) -> Self {
        Flash {
            store,
            scratch: [0; MAX_RECORD_SIZE],
            key,
        }
    }
}

impl<S: Store> Flash<S> {
    /// Writes record `id`: its meta and no pickle.
    pub(super) fn put(
        &mut self,
        id: RecordId,
        meta: impl FnOnce(&mut Enc<'_>) -> Result<(), EncError>,
    ) -> Result<(), TokenError> {
        put_record(&mut self.store, &mut self.scratch, id, meta, |_| Ok(0))
    }

    /// Writes record `id`: its meta, then `value` pickled with the storage key (the pickle's
    /// nonce drawn from `rng`).
    pub(super) fn put_pickled<P: Pickle, R: Rng>(
        &mut self,
        id: RecordId,
        meta: impl FnOnce(&mut Enc<'_>) -> Result<(), EncError>,
        value: &P,
        rng: &mut R,
    ) -> Result<(), TokenError> {
        let key = &self.key;
        put_record(&mut self.store, &mut self.scratch, id, meta, |out| {
            value
                .pickle(&mut CryptoSource(rng), key, out)
                .map_err(|_| TokenError::Store(StoreError::TooLarge))
        })
    }

    /// Reads record `id` into the record buffer: its meta and pickle, or `None` if absent.
    pub(super) fn get(&mut self, id: RecordId) -> Result<Option<RecordParts<'_>>, TokenError> {
        get_record(&mut self.store, &mut self.scratch, id)
    }

    /// Reads record `id` and hands its meta and its sealed pickle to `read`, or `None` if
    /// absent.
    pub(super) fn read<T>(
        &mut self,
        id: RecordId,
        read: impl FnOnce(&[u8], Sealed<'_>) -> Result<T, TokenError>,
    ) -> Result<Option<T>, TokenError> {
        let Some((meta, pickle)) = get_record(&mut self.store, &mut self.scratch, id)? else {
            return Ok(None);
        };
        let sealed = Sealed {
            id,
            pickle,
            key: &self.key,
        };
        read(meta, sealed).map(Some)
    }

    /// Removes record `id`.
    pub(super) fn remove(&mut self, id: RecordId) -> Result<(), TokenError> {
        self.store.remove(id)?;
        Ok(())
    }
}

/// A record's pickle as read from flash, still encrypted with the storage key.
pub(super) struct Sealed<'a> {
    id: RecordId,
    pickle: &'a mut [u8],
    key: &'a [u8; 32],
}

impl Sealed<'_> {
    /// The state the pickle holds.
    pub(super) fn open<P: Pickle>(self) -> Result<P, TokenError> {
        P::from_pickle(self.pickle, self.key).map_err(|_| TokenError::CorruptRecord(self.id))
    }

    /// The Olm session the pickle holds, decoded into `slot` in place (a session is 3 KB: no
    /// copy of it on the stack).
    pub(super) fn open_session_into(
        self,
        slot: &mut Option<jeton_olm::olm::Session>,
    ) -> Result<&mut jeton_olm::olm::Session, TokenError> {
        jeton_olm::olm::Session::from_pickle_into(self.pickle, self.key, slot)
            .map_err(|_| TokenError::CorruptRecord(self.id))
    }
}

/// Encodes `meta` (and appends a pickle when `pickle` writes one) into `scratch` and stores
/// it as record `id`.
fn put_record<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    id: RecordId,
    meta: impl FnOnce(&mut Enc<'_>) -> Result<(), EncError>,
    pickle: impl FnOnce(&mut [u8]) -> Result<usize, TokenError>,
) -> Result<(), TokenError> {
    let (head, rest) = scratch.split_at_mut(2);
    let meta_len = {
        let mut e = Encoder::new(Cursor::new(&mut *rest));
        meta(&mut e).map_err(|_| TokenError::Store(StoreError::TooLarge))?;
        e.writer().position()
    };
    let tail = rest.get_mut(meta_len..).ok_or(TokenError::Crypto)?;
    let pickle_len = pickle(tail)?;
    head.copy_from_slice(&(meta_len as u16).to_be_bytes());
    let total = 2 + meta_len + pickle_len;
    store.put(id, scratch.get(..total).unwrap_or_default())?;
    Ok(())
}

/// Reads record `id` into `scratch`: `(meta, pickle)`, or `None` if absent.
fn get_record<'s, S: Store>(
    store: &mut S,
    scratch: &'s mut [u8; MAX_RECORD_SIZE],
    id: RecordId,
) -> Result<Option<RecordParts<'s>>, TokenError> {
    let Some(len) = store.get(id, scratch)? else {
        return Ok(None);
    };
    let record = scratch
        .get_mut(..len)
        .ok_or(TokenError::CorruptRecord(id))?;
    let (head, rest) = record
        .split_at_mut_checked(2)
        .ok_or(TokenError::CorruptRecord(id))?;
    let meta_len = usize::from(u16::from_be_bytes([
        head.first().copied().unwrap_or(0),
        head.get(1).copied().unwrap_or(0),
    ]));
    let (meta, pickle) = rest
        .split_at_mut_checked(meta_len)
        .ok_or(TokenError::CorruptRecord(id))?;
    Ok(Some((meta, pickle)))
}

/// Maps a meta decoding error to [`TokenError::CorruptRecord`] of record `id`.
pub(super) fn corrupt(id: RecordId) -> impl Fn(minicbor::decode::Error) -> TokenError {
    move |_| TokenError::CorruptRecord(id)
}

/// A text of a record's meta, into a bounded string.
pub(super) fn text<const N: usize>(
    d: &mut Decoder<'_>,
    id: RecordId,
) -> Result<String<N>, TokenError> {
    let t = d.str().map_err(corrupt(id))?;
    String::try_from(t).map_err(|_| TokenError::CorruptRecord(id))
}

/// A 32-byte key of a record's meta.
pub(super) fn bytes32(d: &mut Decoder<'_>, id: RecordId) -> Result<[u8; 32], TokenError> {
    d.bytes()
        .map_err(corrupt(id))?
        .try_into()
        .map_err(|_| TokenError::CorruptRecord(id))
}
