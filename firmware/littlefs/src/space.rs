//! The free space: what appends may still take before littlefs' reserve, measured again
//! only when an append would not fit.

use embedded_storage::nor_flash::NorFlash;
use jeton_core::files::FileError;
use littlefs2_sys as lfs;

use crate::{BLOCK_OVERHEAD, Files};

impl<S: NorFlash> Files<'_, S> {
    /// Measures the free space again: what appends may take from now on.
    pub(crate) fn measure(&mut self) -> u64 {
        // SAFETY: a mounted file system; lfs_fs_size only reads.
        let used = unsafe { lfs::lfs_fs_size(self.lfs()) };
        // SAFETY: reads the configuration written by `configure`.
        let (blocks, block_size) =
            unsafe { ((*self.config()).block_count, (*self.config()).block_size) };
        let free = match u32::try_from(used) {
            Ok(used) => blocks.saturating_sub(used).saturating_sub(reserve(blocks)),
            Err(_) => 0,
        };
        let free = u64::from(free) * u64::from(block_size).saturating_sub(BLOCK_OVERHEAD);
        // SAFETY: a plain field of the pinned Filesystem.
        unsafe { (*self.fs.as_ptr()).free = free };
        free
    }

    /// Takes `len` bytes from the free space, measuring again before refusing.
    pub(crate) fn take_room(&mut self, len: u64) -> Result<(), FileError> {
        // SAFETY: a plain field of the pinned Filesystem.
        let mut free = unsafe { (*self.fs.as_ptr()).free };
        if len > free {
            free = self.measure();
        }
        let rest = free.checked_sub(len).ok_or(FileError::QuotaExceeded)?;
        // SAFETY: as above.
        unsafe { (*self.fs.as_ptr()).free = rest };
        Ok(())
    }
}

/// Blocks kept free for littlefs' copies on write and metadata compaction.
fn reserve(blocks: u32) -> u32 {
    (blocks / 32).max(4)
}
