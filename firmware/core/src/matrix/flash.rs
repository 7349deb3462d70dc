//! The token's records on flash behind one handle, [`Flash`]: the platform's [`Store`], the
//! buffer records pass through, and the storage key that seals them.
//!
//! A record is `sealed meta length (2 bytes, big-endian) || sealed meta || pickle`: the meta a
//! CBOR value (minicbor), the pickle a jeton-olm state encrypted with the storage key, or
//! nothing. The meta is sealed with the storage key ([`jeton_olm::pickle::seal_in_place`])
//! under a label of the record's id and the pickle's tag, so a dumped flash shows no access
//! token, cursor, room, device or queued message, and a record (or a pickle) moved to another
//! id does not open. Each table's record is written and read by the module that owns the
//! table; this one owns the framing, the key, and the helpers they share to read their meta.
//! Records outside this framing (the link's context) are sealed whole through
//! [`SealedStore`].

use heapless::String;
use minicbor::encode::write::{Cursor, EndOfSlice};
use minicbor::{Decoder, Encoder};
use zeroize::Zeroize;

use jeton_olm::Pickle;
use jeton_olm::pickle::{SEAL_HEADER_LEN, SEAL_TAG_LEN, open_in_place, seal_in_place, sealed_len};

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
    /// The key records are sealed with; it never leaves this handle.
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
        put_record(
            &mut self.store,
            &mut self.scratch,
            &self.key,
            id,
            meta,
            |_| Ok(0),
        )
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
        put_record(&mut self.store, &mut self.scratch, key, id, meta, |out| {
            value
                .pickle(&mut CryptoSource(rng), key, out)
                .map_err(|_| TokenError::Store(StoreError::TooLarge))
        })
    }

    /// Reads record `id` into the record buffer: its meta and pickle, or `None` if absent.
    pub(super) fn get(&mut self, id: RecordId) -> Result<Option<RecordParts<'_>>, TokenError> {
        get_record(&mut self.store, &mut self.scratch, &self.key, id)
    }

    /// Reads record `id` and hands its meta and its sealed pickle to `read`, or `None` if
    /// absent.
    pub(super) fn read<T>(
        &mut self,
        id: RecordId,
        read: impl FnOnce(&[u8], Sealed<'_>) -> Result<T, TokenError>,
    ) -> Result<Option<T>, TokenError> {
        let Some((meta, pickle)) = get_record(&mut self.store, &mut self.scratch, &self.key, id)?
        else {
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

    /// The store as a record kept outside this module's framing sees it, each record sealed
    /// whole ([`SealedStore`]), and the record buffer but for the room sealing takes.
    pub(super) fn sealed_store(&mut self) -> (SealedStore<'_, S>, &mut [u8]) {
        let (scratch, room) = self
            .scratch
            .split_at_mut(MAX_RECORD_SIZE - SEALED_STORE_ROOM);
        let store = SealedStore {
            store: &mut self.store,
            key: &self.key,
            room,
        };
        (store, scratch)
    }
}

/// The most a [`SealedStore`] record takes on flash: the link's context (a few dozen bytes)
/// sealed.
const SEALED_STORE_ROOM: usize = 128;

/// The platform's store with each record sealed whole under the storage key and a label of
/// its id: for a record kept outside [`Flash`]'s framing, at most [`SEALED_STORE_ROOM`] bytes
/// sealed. A record that does not open is [`StoreError::Unreadable`].
pub(crate) struct SealedStore<'a, S> {
    store: &'a mut S,
    key: &'a [u8; 32],
    /// Where a record is sealed before it is written.
    room: &'a mut [u8],
}

impl<S: Store> Store for SealedStore<'_, S> {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let Some(len) = self.store.get(id, out)? else {
            return Ok(None);
        };
        let sealed = out.get_mut(..len).ok_or(StoreError::BufferTooSmall)?;
        let opened =
            open_in_place(sealed, self.key, &label(WHOLE_LABEL, id, &[])).map(|plain| plain.len());
        let Ok(plaintext_len) = opened else {
            sealed.zeroize();
            return Err(StoreError::Unreadable);
        };
        sealed.copy_within(SEAL_HEADER_LEN..SEAL_HEADER_LEN + plaintext_len, 0);
        if let Some(rest) = sealed.get_mut(plaintext_len..) {
            rest.zeroize();
        }
        Ok(Some(plaintext_len))
    }

    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        let room = self
            .room
            .get_mut(..sealed_len(data.len()))
            .ok_or(StoreError::TooLarge)?;
        if let Some(plaintext) = room.get_mut(SEAL_HEADER_LEN..SEAL_HEADER_LEN + data.len()) {
            plaintext.copy_from_slice(data);
        }
        let result = seal_in_place(self.key, &label(WHOLE_LABEL, id, &[]), room, data.len())
            .map_err(|_| StoreError::TooLarge)
            .and_then(|len| self.store.put(id, room.get(..len).unwrap_or_default()));
        room.zeroize();
        result
    }

    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        self.store.remove(id)
    }
}

/// A record's pickle as read from flash, still encrypted with the storage key.
pub(super) struct Sealed<'a> {
    id: RecordId,
    pickle: &'a mut [u8],
    key: &'a [u8; 32],
}

impl Sealed<'_> {
    /// The state the pickle holds. Out of line: the callers share the opening and its error.
    #[inline(never)]
    pub(super) fn open<P: Pickle>(self) -> Result<P, TokenError> {
        self.open_inline()
    }

    /// The state the pickle holds, opened in the caller: for a large state that the caller
    /// writes in place (no copy of it on the stack).
    #[inline(always)]
    pub(super) fn open_inline<P: Pickle>(self) -> Result<P, TokenError> {
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

/// Encodes `meta` (and appends a pickle when `pickle` writes one) into `scratch`, seals the
/// meta, and stores it as record `id`.
fn put_record<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
    id: RecordId,
    meta: impl FnOnce(&mut Enc<'_>) -> Result<(), EncError>,
    pickle: impl FnOnce(&mut [u8]) -> Result<usize, TokenError>,
) -> Result<(), TokenError> {
    let too_large = TokenError::Store(StoreError::TooLarge);
    let (head, rest) = scratch.split_at_mut(2);
    let meta_len = {
        let plaintext = rest.get_mut(SEAL_HEADER_LEN..).ok_or(too_large)?;
        let mut e = Encoder::new(Cursor::new(plaintext));
        meta(&mut e).map_err(|_| too_large)?;
        e.writer().position()
    };
    let (sealed_meta, tail) = rest
        .split_at_mut_checked(sealed_len(meta_len))
        .ok_or(too_large)?;
    let pickle_len = pickle(tail)?;
    let label = label(META_LABEL, id, tail.get(..pickle_len).unwrap_or_default());
    let sealed_meta_len =
        seal_in_place(key, &label, sealed_meta, meta_len).map_err(|_| too_large)?;
    head.copy_from_slice(&(sealed_meta_len as u16).to_be_bytes());
    let total = 2 + sealed_meta_len + pickle_len;
    store.put(id, scratch.get(..total).unwrap_or_default())?;
    Ok(())
}

/// Reads record `id` into `scratch` and opens its meta: `(meta, pickle)`, or `None` if absent.
fn get_record<'s, S: Store>(
    store: &mut S,
    scratch: &'s mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
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
    let (sealed_meta, pickle) = rest
        .split_at_mut_checked(meta_len)
        .ok_or(TokenError::CorruptRecord(id))?;
    let meta = open_in_place(sealed_meta, key, &label(META_LABEL, id, pickle))
        .map_err(|_| TokenError::CorruptRecord(id))?;
    Ok(Some((meta, pickle)))
}

/// The label a record is sealed under: what is sealed (`prefix`), the record's id, and the tag
/// of its pickle if it has one (which authenticates the pickle), so that neither the meta nor
/// the pickle opens elsewhere.
fn label(prefix: &[u8; 6], id: RecordId, pickle: &[u8]) -> heapless::Vec<u8, LABEL_LEN> {
    let mut label = heapless::Vec::new();
    let tag = pickle
        .len()
        .checked_sub(SEAL_TAG_LEN)
        .and_then(|start| pickle.get(start..))
        .unwrap_or_default();
    for part in [prefix.as_slice(), &id.to_be_bytes(), tag] {
        // The parts fit by construction (LABEL_LEN).
        let _ = label.extend_from_slice(part);
    }
    label
}

/// The label prefix of a record's meta, and of a record sealed whole ([`SealedStore`]).
const META_LABEL: &[u8; 6] = b"RECORD";
const WHOLE_LABEL: &[u8; 6] = b"SEALED";
const LABEL_LEN: usize = META_LABEL.len() + 2 + SEAL_TAG_LEN;
const _: () = assert!(LABEL_LEN <= jeton_olm::pickle::MAX_LABEL_LEN);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::rng::TransportRng;
    use crate::store::{MemoryStore, record};

    /// A fixed seed for the generator that pickles draw from.
    struct Seed;

    impl Rng for Seed {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(7);
        }
    }

    const KEY: [u8; 32] = [0x5a; 32];
    const TOKEN: &str = "syt_dG9rZW4_secret";

    fn flash() -> Flash<MemoryStore<8>> {
        Flash::new(MemoryStore::new(), KEY)
    }

    fn shows(store: &MemoryStore<8>, secret: &[u8]) -> bool {
        store
            .records()
            .any(|(_, bytes)| bytes.windows(secret.len()).any(|w| w == secret))
    }

    fn put_token(flash: &mut Flash<MemoryStore<8>>, id: RecordId) {
        flash.put(id, |e| e.str(TOKEN).map(drop)).unwrap();
    }

    fn read_token(
        flash: &mut Flash<MemoryStore<8>>,
        id: RecordId,
    ) -> Result<String<32>, TokenError> {
        let (meta, _) = flash.get(id)?.unwrap();
        text(&mut Decoder::new(meta), id)
    }

    #[test]
    fn a_records_meta_reads_back_and_does_not_show_on_flash() {
        let mut flash = flash();
        put_token(&mut flash, record::LOGIN);
        assert!(!shows(&flash.store, TOKEN.as_bytes()));
        assert_eq!(read_token(&mut flash, record::LOGIN).unwrap(), TOKEN);
    }

    #[test]
    fn a_record_moved_to_another_id_or_read_with_another_key_does_not_open() {
        let mut flash = flash();
        put_token(&mut flash, record::LOGIN);
        let mut bytes = [0u8; MAX_RECORD_SIZE];
        let len = flash.store.get(record::LOGIN, &mut bytes).unwrap().unwrap();
        flash.store.put(record::SYNC_CURSOR, &bytes[..len]).unwrap();
        assert_eq!(
            read_token(&mut flash, record::SYNC_CURSOR),
            Err(TokenError::CorruptRecord(record::SYNC_CURSOR))
        );
        let mut stranger = Flash::new(flash.store.clone(), [0xa5; 32]);
        assert_eq!(
            read_token(&mut stranger, record::LOGIN),
            Err(TokenError::CorruptRecord(record::LOGIN))
        );
    }

    #[test]
    fn a_pickle_moved_under_another_records_meta_does_not_open() {
        let mut flash = flash();
        let mut rng = TransportRng::seeded_from(&mut Seed);
        let session =
            |rng: &mut TransportRng| jeton_olm::megolm::GroupSession::new(&mut CryptoSource(rng));
        for slot in [record::OUTBOUND, record::OUTBOUND + 1] {
            flash
                .put_pickled(
                    slot,
                    |e| e.u16(slot).map(drop),
                    &session(&mut rng),
                    &mut rng,
                )
                .unwrap();
        }
        let mut first = [0u8; MAX_RECORD_SIZE];
        let mut second = [0u8; MAX_RECORD_SIZE];
        flash.store.get(record::OUTBOUND, &mut first).unwrap();
        let second_len = flash
            .store
            .get(record::OUTBOUND + 1, &mut second)
            .unwrap()
            .unwrap();
        let meta_len = 2 + usize::from(u16::from_be_bytes([first[0], first[1]]));
        let mut swapped = first[..meta_len].to_vec();
        swapped.extend_from_slice(&second[meta_len..second_len]);
        flash.store.put(record::OUTBOUND, &swapped).unwrap();
        assert!(matches!(
            flash.get(record::OUTBOUND),
            Err(TokenError::CorruptRecord(record::OUTBOUND))
        ));
        assert!(flash.get(record::OUTBOUND + 1).unwrap().is_some());
    }

    #[test]
    fn a_sealed_store_record_reads_back_and_does_not_open_elsewhere() {
        let mut flash = flash();
        let context = *b"OSCORE master secret and salt, sequence mark";
        let (mut store, _) = flash.sealed_store();
        store.put(record::LINK, &context).unwrap();
        let mut out = [0u8; 128];
        assert_eq!(store.get(record::LINK, &mut out), Ok(Some(context.len())));
        assert_eq!(&out[..context.len()], &context);
        assert_eq!(store.get(record::LOGIN, &mut out), Ok(None));
        assert!(!shows(&flash.store, b"OSCORE master"));

        let len = flash.store.get(record::LINK, &mut out).unwrap().unwrap();
        flash.store.put(record::LOGIN, &out[..len]).unwrap();
        let (mut store, _) = flash.sealed_store();
        assert_eq!(
            store.get(record::LOGIN, &mut out),
            Err(StoreError::Unreadable)
        );
        assert_eq!(
            store.put(record::LINK, &[0; SEALED_STORE_ROOM]),
            Err(StoreError::TooLarge)
        );
    }
}
