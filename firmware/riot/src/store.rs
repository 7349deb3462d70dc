//! The record store: jeton-core's [`Store`] as a wear-levelled, power-cut-safe key-value map
//! on the store sectors of jeton's flash region, built on `sequential-storage`.
//!
//! sequential-storage appends each new value of a record and erases a page only when it is
//! full and its live items have moved on, so flash wear spreads over all store pages. An item
//! is either wholly there (its CRC checks) or not there after a power cut, and the previous
//! value stays readable until the new one is complete: the atomicity [`Store`] asks for. MTD
//! writes are synchronous, so a record is on flash when `put` returns. sequential-storage's
//! API is async; MTD completes every operation at once, so [`block_on`] polls each future to
//! its end without an executor.
//!
//! A page is two 4 KiB MTD sectors, so that a record of [`MAX_RECORD_SIZE`] bytes (an Olm
//! account pickle) fits one page with its item header.
//!
//! Record ids: jeton-core's are below 0x1000 ([`jeton_core::store::record`]); the firmware's
//! own start at 0xF000.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use jeton_core::store::{MAX_RECORD_SIZE, RecordId, Store, StoreError};
use riot_wrappers::mutex::Mutex;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

use crate::flash::{Flash, FlashError, Region};

/// How many times the firmware has booted (4 bytes, little-endian).
pub(crate) const BOOT_COUNT: RecordId = 0xF001;
/// Scratch record the `selftest` command rewrites.
pub(crate) const SELF_TEST: RecordId = 0xF0FE;

/// The MTD sector size the store is laid out for; `open` refuses a device with another.
const SECTOR_SIZE: u32 = 4096;
/// A store page: two sectors, so that the largest record fits one page.
const PAGE_SIZE: u32 = 2 * SECTOR_SIZE;
/// A key (2 bytes) and the largest record, rounded up to the write size.
const ITEM_BUFFER: usize = MAX_RECORD_SIZE + 8;

/// The buffer sequential-storage reads and writes an item through, shared by every
/// [`RecordStore`]: a static rather than 4 KiB more on the stack of each store operation,
/// which sits at the deepest point of the token's calls. Only the main thread uses the store,
/// so the lock is never contended.
static ITEM: Mutex<[u8; ITEM_BUFFER]> = Mutex::new([0; ITEM_BUFFER]);

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfRegion => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// The store pages of jeton's region as an `embedded-storage-async` NOR flash, addressed from
/// the store's first byte.
#[derive(Debug)]
pub(crate) struct StoreFlash<'f> {
    flash: &'f Flash,
    pages: u32,
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
        (self.pages * PAGE_SIZE) as usize
    }
}

impl NorFlash for StoreFlash<'_> {
    // MTD on the supported boards programs single bytes; 4 keeps items word-aligned.
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE_SIZE as usize;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let count = to.checked_sub(from).ok_or(FlashError::OutOfRegion)?;
        self.flash
            .erase_sectors(Region::Store, from / SECTOR_SIZE, count / SECTOR_SIZE)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.flash.write(Region::Store, offset, bytes)
    }
}

/// NOR flash (and native64's MTD, which ANDs what it programs into what is there) only ever
/// clears bits when programmed, so a word may be programmed again: sequential-storage uses
/// that to mark removed items.
impl MultiwriteNorFlash for StoreFlash<'_> {}

/// Runs a future whose every poll completes (MTD never waits) to its end.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

fn store_error(err: sequential_storage::Error<FlashError>) -> StoreError {
    match err {
        sequential_storage::Error::FullStorage => StoreError::Full,
        sequential_storage::Error::BufferTooSmall(_) => StoreError::TooLarge,
        _ => StoreError::Io,
    }
}

type Map<'f> = MapStorage<RecordId, StoreFlash<'f>, Cache<Uncached, Uncached, Uncached, RecordId>>;

/// jeton-core's [`Store`] on jeton's flash region, with the token's files when it has them.
pub(crate) struct RecordStore<'f> {
    map: Map<'f>,
    pages: u32,
    files: Option<crate::files::TokenFiles>,
}

impl core::fmt::Debug for RecordStore<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordStore")
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl<'f> RecordStore<'f> {
    /// The store on `flash`'s store sectors (whole pages of two sectors; an odd last sector
    /// stays unused).
    pub(crate) fn open(flash: &'f Flash) -> Result<Self, FlashError> {
        if flash.sector_size() != SECTOR_SIZE {
            return Err(FlashError::UnsupportedGeometry);
        }
        let pages = flash.extent(Region::Store).1 / 2;
        let config = MapConfig::try_new(0..pages * PAGE_SIZE)
            .map_err(|_| FlashError::UnsupportedGeometry)?;
        let storage = StoreFlash { flash, pages };
        Ok(Self {
            map: MapStorage::new(storage, config, Cache::new_uncached()),
            pages,
            files: None,
        })
    }

    /// The store that also hands jeton-core the token's files (`files.rs`).
    pub(crate) fn with_files(mut self, files: Option<crate::files::TokenFiles>) -> Self {
        self.files = files;
        self
    }
}

impl Store for RecordStore<'_> {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let mut buffer = ITEM.lock();
        let found =
            block_on(self.map.fetch_item::<&[u8]>(&mut *buffer, &id)).map_err(store_error)?;
        let Some(value) = found else {
            return Ok(None);
        };
        let target = out
            .get_mut(..value.len())
            .ok_or(StoreError::BufferTooSmall)?;
        target.copy_from_slice(value);
        Ok(Some(value.len()))
    }

    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        if data.len() > MAX_RECORD_SIZE {
            return Err(StoreError::TooLarge);
        }
        let mut buffer = ITEM.lock();
        block_on(self.map.store_item(&mut *buffer, &id, &data)).map_err(store_error)
    }

    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        let mut buffer = ITEM.lock();
        block_on(self.map.remove_item(&mut *buffer, &id)).map_err(store_error)
    }

    fn files(&mut self) -> Option<&mut dyn jeton_core::files::FileStore> {
        self.files
            .as_mut()
            .map(|files| files as &mut dyn jeton_core::files::FileStore)
    }
}

/// Why the boot could not be counted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BootCountError {
    /// The store could not be opened on the flash.
    Flash(FlashError),
    /// The store failed.
    Store(StoreError),
}

impl core::fmt::Display for BootCountError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "{err}"),
            Self::Store(err) => write!(f, "{err}"),
        }
    }
}

impl core::error::Error for BootCountError {}

/// Counts this boot in the store and returns the count (1 on the first boot).
#[inline(never)]
pub(crate) fn count_boot(flash: &Flash) -> Result<u32, BootCountError> {
    let mut store = RecordStore::open(flash).map_err(BootCountError::Flash)?;
    let mut bytes = [0u8; 4];
    let boots = match store.get(BOOT_COUNT, &mut bytes) {
        Ok(Some(4)) => u32::from_le_bytes(bytes),
        Ok(_) => 0,
        Err(err) => return Err(BootCountError::Store(err)),
    }
    .saturating_add(1);
    store
        .put(BOOT_COUNT, &boots.to_le_bytes())
        .map_err(BootCountError::Store)?;
    Ok(boots)
}

/// What [`exercise`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExerciseReport {
    /// The last small value read back as written.
    pub(crate) rewrites_intact: bool,
    /// A record of the largest size read back as written.
    pub(crate) large_record_intact: bool,
    /// A removed record read back as absent.
    pub(crate) removal_seen: bool,
}

/// Exercises the store through jeton-core's [`Store`]: `rounds` rewrites of a small record
/// (enough of them go round all pages, so sequential-storage erases and reuses the oldest,
/// moving live records on), one record of [`MAX_RECORD_SIZE`] bytes, and a removal.
#[inline(never)]
pub(crate) fn exercise(flash: &Flash, rounds: u32) -> Result<ExerciseReport, BootCountError> {
    let mut store = RecordStore::open(flash).map_err(BootCountError::Flash)?;
    let mut value = [0u8; 4];
    let start = match store
        .get(SELF_TEST, &mut value)
        .map_err(BootCountError::Store)?
    {
        Some(4) => u32::from_le_bytes(value),
        _ => 0,
    };
    for round in 1..=rounds {
        let next = start.wrapping_add(round).to_le_bytes();
        store.put(SELF_TEST, &next).map_err(BootCountError::Store)?;
    }
    let last = store
        .get(SELF_TEST, &mut value)
        .map_err(BootCountError::Store)?;
    let rewrites_intact =
        last == Some(4) && u32::from_le_bytes(value) == start.wrapping_add(rounds);

    let mut large = [0u8; MAX_RECORD_SIZE];
    for (index, byte) in large.iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(31).wrapping_add(start as u8);
    }
    store
        .put(SELF_TEST + 1, &large)
        .map_err(BootCountError::Store)?;
    let mut read_back = [0u8; MAX_RECORD_SIZE];
    let length = store
        .get(SELF_TEST + 1, &mut read_back)
        .map_err(BootCountError::Store)?;
    let large_record_intact = length == Some(MAX_RECORD_SIZE) && read_back == large;

    store.remove(SELF_TEST + 1).map_err(BootCountError::Store)?;
    let removal_seen = store
        .get(SELF_TEST + 1, &mut read_back)
        .map_err(BootCountError::Store)?
        .is_none();
    Ok(ExerciseReport {
        rewrites_intact,
        large_record_intact,
        removal_seen,
    })
}
