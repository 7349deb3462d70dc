//! The storage adapter: jeton's region of the board's first MTD device (`MTD_0`).
//!
//! On native64 that is RIOT's file-backed MTD (a file named on the command line, 8 MiB in
//! 4 KiB sectors); on Cortex-M boards it is whatever the board exposes as `MTD_0`.
//! jeton uses the first `JETON_FLASH_SECTORS` sectors (default 33, at least 7) for its
//! records and the next `JETON_FILES_SECTORS` (default 1024, fewer where the device ends
//! sooner) for the token's files (see riot-sys-config/), laid out by [`Region`].

/// What went wrong talking to the flash device.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlashError {
    /// The board has no MTD device, or the build lacks the `mtd` module.
    NoDevice,
    /// An access would leave jeton's region.
    OutOfRegion,
    /// The MTD driver reported an error (a negative errno).
    Driver(i32),
    /// The device's sectors are not the 4 KiB jeton's layout is made for.
    UnsupportedGeometry,
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDevice => f.write_str("the board has no MTD flash device for jeton"),
            Self::OutOfRegion => f.write_str("the flash access lies outside jeton's region"),
            Self::Driver(errno) => write!(f, "the MTD driver failed with error {errno}"),
            Self::UnsupportedGeometry => {
                f.write_str("the flash sectors are not the 4 KiB jeton's layout is made for")
            }
        }
    }
}

impl core::error::Error for FlashError {}

// SAFETY: the declarations match jeton_platform.c; each call site states what it passes.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn jeton_flash_init(
        sector_size: *mut u32,
        sector_count: *mut u32,
        write_size: *mut u32,
        device_sectors: *mut u32,
    ) -> i32;
    fn jeton_flash_read(offset: u32, dest: *mut u8, count: u32) -> i32;
    fn jeton_flash_write(offset: u32, src: *const u8, count: u32) -> i32;
    fn jeton_flash_erase_sectors(first: u32, count: u32) -> i32;
}

const ENODEV: i32 = riot_sys::ENODEV as i32;

fn check(result: i32) -> Result<(), FlashError> {
    match result {
        0.. => Ok(()),
        err if err == -ENODEV => Err(FlashError::NoDevice),
        err => Err(FlashError::Driver(err)),
    }
}

/// What each sector of jeton's region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// The key the pickles are encrypted with (see `identity.rs`).
    StorageKey,
    /// The wear-levelled key-value store (see `store.rs`): every sector between the storage
    /// key and the self-test scratch sector.
    Store,
    /// Scratch space for the `selftest` command; its contents mean nothing.
    SelfTest,
    /// The token's file system (see `files.rs`): the sectors after jeton's records.
    Files,
}

/// jeton's region of `MTD_0`.
#[derive(Debug)]
pub(crate) struct Flash {
    sector_size: u32,
    /// jeton's records: sectors 0 to `sector_count - 1`.
    sector_count: u32,
    write_size: u32,
    /// The token's files: the next `files_sectors` sectors.
    files_sectors: u32,
}

/// Sectors of `MTD_0` after jeton's records that hold the token's files
/// (`JETON_FILES_SECTORS`, riot-sys-config/jeton.mk).
const FILES_SECTORS: u32 = crate::parse_u32(env!("JETON_FILES_SECTORS"));

impl Flash {
    /// Initialises `MTD_0` and reads its geometry.
    #[allow(unsafe_code)]
    pub(crate) fn open() -> Result<Self, FlashError> {
        let (mut sector_size, mut sector_count, mut write_size, mut device_sectors) = (0, 0, 0, 0);
        // SAFETY: the four pointers are to live locals the C side only writes to.
        check(unsafe {
            jeton_flash_init(
                &mut sector_size,
                &mut sector_count,
                &mut write_size,
                &mut device_sectors,
            )
        })?;
        // Sector 0 (reserved: it held an earlier build's account pickle), storage key, the store's two pages of two sectors, self-test scratch.
        if sector_count < 7 || sector_size == 0 {
            return Err(FlashError::OutOfRegion);
        }
        Ok(Self {
            sector_size,
            sector_count,
            write_size,
            files_sectors: device_sectors
                .saturating_sub(sector_count)
                .min(FILES_SECTORS),
        })
    }

    pub(crate) fn sector_size(&self) -> u32 {
        self.sector_size
    }

    pub(crate) fn sector_count(&self) -> u32 {
        self.sector_count
    }

    pub(crate) fn write_size(&self) -> u32 {
        self.write_size
    }

    /// The first sector of a part of the region and how many sectors it spans.
    pub(crate) fn extent(&self, region: Region) -> (u32, u32) {
        match region {
            Region::StorageKey => (1, 1),
            Region::Store => (2, self.sector_count - 3),
            Region::SelfTest => (self.sector_count - 1, 1),
            Region::Files => (self.sector_count, self.files_sectors),
        }
    }

    /// The byte address of `offset` within `region`, if `len` bytes from there stay inside it.
    fn locate(&self, region: Region, offset: u32, len: usize) -> Result<u32, FlashError> {
        let (first, sectors) = self.extent(region);
        let len = u32::try_from(len).map_err(|_| FlashError::OutOfRegion)?;
        match offset.checked_add(len) {
            Some(end) if end <= sectors * self.sector_size => {}
            _ => return Err(FlashError::OutOfRegion),
        }
        Ok(first * self.sector_size + offset)
    }

    /// Reads `buf.len()` bytes from `offset` within `region`.
    #[allow(unsafe_code)]
    pub(crate) fn read(
        &self,
        region: Region,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), FlashError> {
        let at = self.locate(region, offset, buf.len())?;
        // SAFETY: buf is a valid, exclusively borrowed buffer of buf.len() bytes, which fits u32.
        check(unsafe { jeton_flash_read(at, buf.as_mut_ptr(), buf.len() as u32) })
    }

    /// Programs `data` at `offset` within `region`, which must be erased there.
    #[allow(unsafe_code)]
    pub(crate) fn write(&self, region: Region, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let at = self.locate(region, offset, data.len())?;
        // SAFETY: data is a valid buffer of data.len() bytes, which fits u32; MTD only reads it.
        check(unsafe { jeton_flash_write(at, data.as_ptr(), data.len() as u32) })
    }

    /// Erases all of `region` (to all 0xff).
    pub(crate) fn erase(&self, region: Region) -> Result<(), FlashError> {
        let (_, sectors) = self.extent(region);
        self.erase_sectors(region, 0, sectors)
    }

    /// Erases `count` sectors of `region` from its sector `first`.
    #[allow(unsafe_code)]
    pub(crate) fn erase_sectors(
        &self,
        region: Region,
        first: u32,
        count: u32,
    ) -> Result<(), FlashError> {
        let (start, sectors) = self.extent(region);
        match first.checked_add(count) {
            Some(end) if end <= sectors => {}
            _ => return Err(FlashError::OutOfRegion),
        }
        // SAFETY: erases whole sectors inside jeton's region, checked just above.
        check(unsafe { jeton_flash_erase_sectors(start + first, count) })
    }
}
