//! The record store: a wear-levelled, power-cut-safe key-value map on the store sectors of
//! jeton's flash region, built on `sequential-storage`.
//!
//! sequential-storage appends each new value of a key and erases a sector only when it is
//! full and its live items have moved on, so flash wear spreads over all store sectors, and
//! an item is either wholly there (checked by its CRC) or not there after a power cut. Its
//! API is async; the MTD underneath completes every operation at once, so [`block_on`] polls
//! each future to completion without a real executor.
//!
//! jeton-core's `Store` trait (sync cursor, sessions, outbox) will be implemented on this map
//! when it exists; today the firmware keeps its boot count here.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use sequential_storage::cache::Cache;
use sequential_storage::map::{MapConfig, MapStorage};

use crate::flash::{Flash, FlashError, Region};

/// The store's record keys. Each key holds one value; storing it again replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordKey {
    /// How many times the firmware has booted (`u32`).
    BootCount = 1,
    /// Scratch value the `selftest` command rewrites (`u32`).
    SelfTest = 0xfe,
}

/// The sector size the store is laid out for; `open` refuses a device with another.
const SECTOR_SIZE: usize = 4096;
/// Buffer for one key and value, rounded up to the write size.
const ITEM_BUFFER: usize = 64;

/// Why a store operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// The flash underneath failed.
    Flash(FlashError),
    /// The device's sectors are not the 4 KiB the store is laid out for.
    UnsupportedGeometry,
    /// The store sectors hold no room for the item even after compaction.
    Full,
    /// sequential-storage found the sectors inconsistent (erase the store to recover).
    Corrupted,
    /// Any other sequential-storage error (a value that does not decode, a buffer size).
    Map,
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "the store's flash failed: {err}"),
            Self::UnsupportedGeometry => {
                f.write_str("the flash sectors are not the 4 KiB the store is laid out for")
            }
            Self::Full => f.write_str("the store is full"),
            Self::Corrupted => f.write_str("the store's sectors are inconsistent"),
            Self::Map => f.write_str("the store could not read or write the item"),
        }
    }
}

impl core::error::Error for StoreError {}

impl From<sequential_storage::Error<FlashError>> for StoreError {
    fn from(err: sequential_storage::Error<FlashError>) -> Self {
        match err {
            sequential_storage::Error::Storage { value, .. } => Self::Flash(value),
            sequential_storage::Error::FullStorage => Self::Full,
            sequential_storage::Error::Corrupted { .. } => Self::Corrupted,
            _ => Self::Map,
        }
    }
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfRegion => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// The store sectors of jeton's region as an `embedded-storage-async` NOR flash, addressed
/// from the store's first byte.
#[derive(Debug)]
pub(crate) struct StoreFlash<'f> {
    flash: &'f Flash,
}

impl ErrorType for StoreFlash<'_> {
    type Error = FlashError;
}

impl ReadNorFlash for StoreFlash<'_> {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.flash.read(Region::Store, offset, bytes)
    }

    fn capacity(&self) -> usize {
        let (_, sectors) = self.flash.extent(Region::Store);
        sectors as usize * SECTOR_SIZE
    }
}

impl NorFlash for StoreFlash<'_> {
    // MTD on the supported boards programs single bytes; 4 keeps items word-aligned.
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let sector = SECTOR_SIZE as u32;
        self.flash
            .erase_sectors(Region::Store, from / sector, (to - from) / sector)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.flash.write(Region::Store, offset, bytes)
    }
}

/// Runs a future whose every poll completes (the MTD never waits) to its end.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

type Map<'f> = MapStorage<
    u8,
    StoreFlash<'f>,
    Cache<
        sequential_storage::cache::Uncached,
        sequential_storage::cache::Uncached,
        sequential_storage::cache::Uncached,
        u8,
    >,
>;

/// The record store on jeton's flash region.
pub(crate) struct RecordStore<'f> {
    map: Map<'f>,
}

impl core::fmt::Debug for RecordStore<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordStore").finish_non_exhaustive()
    }
}

impl<'f> RecordStore<'f> {
    /// The store on `flash`'s store sectors.
    pub(crate) fn open(flash: &'f Flash) -> Result<Self, StoreError> {
        if flash.sector_size() as usize != SECTOR_SIZE {
            return Err(StoreError::UnsupportedGeometry);
        }
        let storage = StoreFlash { flash };
        let end = u32::try_from(storage.capacity()).map_err(|_| StoreError::UnsupportedGeometry)?;
        let config = MapConfig::try_new(0..end).map_err(|_| StoreError::UnsupportedGeometry)?;
        Ok(Self {
            map: MapStorage::new(storage, config, Cache::new_uncached()),
        })
    }

    /// The value stored under `key`, if any.
    pub(crate) fn fetch_u32(&mut self, key: RecordKey) -> Result<Option<u32>, StoreError> {
        let mut buffer = [0u8; ITEM_BUFFER];
        Ok(block_on(
            self.map.fetch_item::<u32>(&mut buffer, &(key as u8)),
        )?)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub(crate) fn store_u32(&mut self, key: RecordKey, value: u32) -> Result<(), StoreError> {
        let mut buffer = [0u8; ITEM_BUFFER];
        Ok(block_on(self.map.store_item(
            &mut buffer,
            &(key as u8),
            &value,
        ))?)
    }
}

/// Counts this boot in the store and returns the count (1 on the first boot).
pub(crate) fn count_boot(flash: &Flash) -> Result<u32, StoreError> {
    let mut store = RecordStore::open(flash)?;
    let boots = store
        .fetch_u32(RecordKey::BootCount)?
        .unwrap_or(0)
        .saturating_add(1);
    store.store_u32(RecordKey::BootCount, boots)?;
    Ok(boots)
}

/// Rewrites the self-test record `rounds` times and reads the last value back: enough rounds
/// fill store sectors, so sequential-storage has to move on to further sectors (and, with
/// more, erase and reuse the oldest).
pub(crate) fn exercise(flash: &Flash, rounds: u32) -> Result<bool, StoreError> {
    let mut store = RecordStore::open(flash)?;
    let start = store.fetch_u32(RecordKey::SelfTest)?.unwrap_or(0);
    for round in 1..=rounds {
        store.store_u32(RecordKey::SelfTest, start.wrapping_add(round))?;
    }
    Ok(store.fetch_u32(RecordKey::SelfTest)? == Some(start.wrapping_add(rounds)))
}
