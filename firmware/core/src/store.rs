//! Persistent records: the [`Store`] trait a platform implements, the record ids the Matrix
//! client uses, and [`MemoryStore`], an in-memory store that can simulate a power cut.
//!
//! # The contract, for implementers
//!
//! A store keeps small byte records (at most [`MAX_RECORD_SIZE`] bytes) under small fixed
//! ids ([`RecordId`]). jeton-core's crash safety rests on two promises:
//!
//! 1. **Atomic records.** After a power cut during [`Store::put`] or [`Store::remove`], the
//!    record holds either its old value or its new value, never a mix. On flash this means
//!    writing the new value to a fresh page (or a second copy with a sequence number and a
//!    checksum) and only then invalidating the old one.
//! 2. **Durable on return, in order.** When `put` or `remove` returns `Ok`, the change
//!    survives a power cut, and so does every change made before it. jeton-core relies on
//!    this to order its writes: it writes the next Megolm index before handing out the
//!    datagram that uses it, and it writes a message to the outbox before telling the user
//!    it was queued. A store that caches writes must flush before returning.
//!
//! jeton-core performs all its writes inside the input call that causes them
//! (`handle_datagram`, `handle_timeout`, a command). Datagrams that call queues leave only
//! afterwards, through `poll_transmit`, so a write always precedes the datagrams that
//! depend on it.
//!
//! A RIOT board implements the trait on an MTD partition; the host simulator on a
//! directory with one file per record (write to a temporary file, `fsync`, rename).

use core::fmt;

/// Identifies a record. The Matrix client uses the ids of [`record`].
pub type RecordId = u16;

/// The largest record jeton-core writes: an Olm account pickle with its one-time keys.
pub const MAX_RECORD_SIZE: usize = 4096;

/// The record ids of the Matrix client. Ranges hold one record per table slot.
pub mod record {
    use super::RecordId;

    /// The Olm account (pickled with the storage key).
    pub const ACCOUNT: RecordId = 0x0001;
    /// Login: user id, device id, access token, filter id, whether keys are uploaded.
    pub const LOGIN: RecordId = 0x0002;
    /// The sync cursor (`next_batch` of the last sync taken in).
    pub const SYNC_CURSOR: RecordId = 0x0003;
    /// The device table (tracked users' devices with their verified keys).
    pub const DEVICES: RecordId = 0x0004;
    /// The outbound transaction counter and id prefix (transaction ids are never reused).
    pub const TRANSACTIONS: RecordId = 0x0005;
    /// The user's cross-signing keys (master, self-signing, user-signing), their seeds in the
    /// sealed meta.
    pub const CROSS_SIGNING: RecordId = 0x0006;
    /// Rooms: slot `i` at `ROOMS + i`.
    pub const ROOMS: RecordId = 0x0100;
    /// Outbound Megolm sessions, one per room slot: `OUTBOUND + i`.
    pub const OUTBOUND: RecordId = 0x0200;
    /// Inbound Megolm sessions: `INBOUND + i`.
    pub const INBOUND: RecordId = 0x0300;
    /// Olm sessions: `OLM + i`.
    pub const OLM: RecordId = 0x0400;
    /// Outbox entries: `OUTBOX + i`.
    pub const OUTBOX: RecordId = 0x0500;
    /// Room keys waiting for their room, sender or device (pickled with the storage key):
    /// `PENDING + i`.
    pub const PENDING: RecordId = 0x0600;
    /// Gaps being back-filled ([`crate::matrix`]'s `backfill`): `BACKFILL + i`.
    pub const BACKFILL: RecordId = 0x0700;
    /// The link's OSCORE security context and its sequence number high-water mark
    /// ([`crate::link`]).
    pub const LINK: RecordId = 0x0010;
}

/// Why a store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The record is larger than the store's record size.
    TooLarge,
    /// The store has no room for another record.
    Full,
    /// The medium reported an error.
    Io,
    /// The buffer given to [`Store::get`] is smaller than the record.
    BufferTooSmall,
    /// The record does not open with this token's storage key: written by another token,
    /// moved from another record, or damaged.
    Unreadable,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::TooLarge => "the record is larger than the store allows",
            StoreError::Full => "the store is full",
            StoreError::Io => "the storage medium reported an error",
            StoreError::BufferTooSmall => "the buffer is smaller than the stored record",
            StoreError::Unreadable => "the stored record does not open with this token's key",
        })
    }
}

impl core::error::Error for StoreError {}

/// Persistent storage of small records. See the [module documentation](self) for the
/// atomicity and ordering contract.
pub trait Store {
    /// Copies record `id` into `out` and returns its length, or `None` if there is none.
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError>;

    /// Replaces record `id` with `data`, atomically and durably.
    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError>;

    /// Removes record `id` (no error if there is none), atomically and durably.
    fn remove(&mut self, id: RecordId) -> Result<(), StoreError>;

    /// The platform's file storage, if it has one (for sending and receiving files); a
    /// store without files keeps this default.
    fn files(&mut self) -> Option<&mut dyn crate::files::FileStore> {
        None
    }
}

impl<S: Store + ?Sized> Store for &mut S {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        (**self).get(id, out)
    }
    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        (**self).put(id, data)
    }
    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        (**self).remove(id)
    }
    fn files(&mut self) -> Option<&mut dyn crate::files::FileStore> {
        (**self).files()
    }
}

/// One record of a [`MemoryStore`].
#[derive(Clone)]
struct Slot<const SIZE: usize> {
    id: RecordId,
    data: heapless::Vec<u8, SIZE>,
}

/// A store in RAM for tests and the simulator's dry runs: up to `RECORDS` records of up to
/// `SIZE` bytes.
///
/// It can simulate a power cut: after [`MemoryStore::cut_power_after`]`(n)`, the first `n`
/// changes are kept and every later one is silently dropped (the device is dead and cannot
/// notice). A test then rebuilds the client from [`MemoryStore::powered_up`] to see exactly
/// what was on flash at the cut.
#[derive(Clone)]
pub struct MemoryStore<const RECORDS: usize = 64, const SIZE: usize = MAX_RECORD_SIZE> {
    slots: heapless::Vec<Slot<SIZE>, RECORDS>,
    writes: u32,
    cut_after: Option<u32>,
}

impl<const RECORDS: usize, const SIZE: usize> fmt::Debug for MemoryStore<RECORDS, SIZE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.slots.len())
            .field("writes", &self.writes)
            .field("cut_after", &self.cut_after)
            .finish()
    }
}

impl<const RECORDS: usize, const SIZE: usize> Default for MemoryStore<RECORDS, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RECORDS: usize, const SIZE: usize> MemoryStore<RECORDS, SIZE> {
    /// An empty store.
    pub const fn new() -> Self {
        MemoryStore {
            slots: heapless::Vec::new(),
            writes: 0,
            cut_after: None,
        }
    }

    /// Changes (puts and removes) attempted so far, including dropped ones.
    pub const fn writes(&self) -> u32 {
        self.writes
    }

    /// Keeps the next `n` changes, then drops every later one.
    pub fn cut_power_after(&mut self, n: u32) {
        self.cut_after = Some(self.writes.saturating_add(n));
    }

    /// Whether the simulated power cut has happened (a change was dropped).
    pub fn is_dead(&self) -> bool {
        self.cut_after.is_some_and(|cut| self.writes > cut)
    }

    /// The store as the device finds it after power comes back: the kept records, the power
    /// cut cleared.
    #[must_use]
    pub fn powered_up(&self) -> Self {
        MemoryStore {
            slots: self.slots.clone(),
            writes: 0,
            cut_after: None,
        }
    }

    /// Whether record `id` exists.
    pub fn contains(&self, id: RecordId) -> bool {
        self.slots.iter().any(|slot| slot.id == id)
    }

    /// Every record, as a dump of the flash would show it.
    pub fn records(&self) -> impl Iterator<Item = (RecordId, &[u8])> {
        self.slots
            .iter()
            .map(|slot| (slot.id, slot.data.as_slice()))
    }

    /// Counts a change; false if it falls after the power cut.
    fn admit(&mut self) -> bool {
        self.writes = self.writes.saturating_add(1);
        self.cut_after.is_none_or(|cut| self.writes <= cut)
    }
}

impl<const RECORDS: usize, const SIZE: usize> Store for MemoryStore<RECORDS, SIZE> {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let Some(slot) = self.slots.iter().find(|slot| slot.id == id) else {
            return Ok(None);
        };
        let target = out
            .get_mut(..slot.data.len())
            .ok_or(StoreError::BufferTooSmall)?;
        target.copy_from_slice(&slot.data);
        Ok(Some(slot.data.len()))
    }

    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        let value = heapless::Vec::from_slice(data).map_err(|_| StoreError::TooLarge)?;
        if !self.admit() {
            return Ok(());
        }
        if let Some(slot) = self.slots.iter_mut().find(|slot| slot.id == id) {
            slot.data = value;
            return Ok(());
        }
        self.slots
            .push(Slot { id, data: value })
            .map_err(|_| StoreError::Full)
    }

    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        if !self.admit() {
            return Ok(());
        }
        self.slots.retain(|slot| slot.id != id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replace_and_remove() {
        let mut store: MemoryStore<4, 16> = MemoryStore::new();
        let mut out = [0u8; 16];
        assert_eq!(store.get(1, &mut out), Ok(None));
        store.put(1, b"old").unwrap();
        store.put(1, b"newer").unwrap();
        assert_eq!(store.get(1, &mut out), Ok(Some(5)));
        assert_eq!(&out[..5], b"newer");
        assert_eq!(store.get(1, &mut [0u8; 2]), Err(StoreError::BufferTooSmall));
        assert_eq!(store.put(2, &[0u8; 17]), Err(StoreError::TooLarge));
        store.remove(1).unwrap();
        assert_eq!(store.get(1, &mut out), Ok(None));
    }

    #[test]
    fn a_power_cut_keeps_exactly_the_changes_before_it() {
        let mut store: MemoryStore<4, 16> = MemoryStore::new();
        store.put(1, b"a").unwrap();
        store.cut_power_after(2);
        store.put(2, b"b").unwrap();
        store.remove(1).unwrap();
        assert!(!store.is_dead());
        store.put(3, b"c").unwrap();
        assert!(store.is_dead());
        let mut rebooted = store.powered_up();
        let mut out = [0u8; 16];
        assert_eq!(rebooted.get(1, &mut out), Ok(None));
        assert_eq!(rebooted.get(2, &mut out), Ok(Some(1)));
        assert_eq!(rebooted.get(3, &mut out), Ok(None));
        assert!(!rebooted.is_dead());
    }
}
