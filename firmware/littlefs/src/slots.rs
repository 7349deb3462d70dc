//! The open-file slots: littlefs' state, configuration and cache of each file open at once,
//! what is open there, and the handles that name them.

use core::ffi::c_int;
use core::ptr::addr_of_mut;

use embedded_storage::nor_flash::NorFlash;
use jeton_core::files::{FileError, FileHandle};
use littlefs2_sys as lfs;

use crate::path::Path;
use crate::{Buffer, Files, OPEN_FILES, check};

/// One open file: littlefs' file state, its configuration and cache, and what it is.
pub(crate) struct Slot {
    pub(crate) file: lfs::lfs_file_t,
    pub(crate) config: lfs::lfs_file_config,
    pub(crate) cache: Buffer,
    pub(crate) open: Open,
    /// Counts the opens of this slot, so that a stale handle does not reach a newer file.
    pub(crate) generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Open {
    No,
    /// A received file opened to be sent.
    Source,
    /// `/tmp/<n>`, being written.
    Temporary(u32),
}

impl<S: NorFlash> Files<'_, S> {
    pub(crate) fn slot(&self, index: usize) -> Result<*mut Slot, FileError> {
        if index >= OPEN_FILES {
            return Err(FileError::NotFound);
        }
        // SAFETY: index is in bounds of the pinned Filesystem's slot array.
        Ok(unsafe {
            addr_of_mut!((*self.fs.as_ptr()).slots)
                .cast::<Slot>()
                .add(index)
        })
    }

    /// The slot `file` names, and what is open there.
    pub(crate) fn lookup(&self, file: FileHandle) -> Result<(usize, *mut Slot, Open), FileError> {
        let index = (file.0 & 0xff) as usize;
        let slot = self.slot(index)?;
        // SAFETY: reads two plain fields of a slot littlefs does not write.
        let (open, generation) = unsafe { ((*slot).open, (*slot).generation) };
        if open == Open::No || generation != file.0 >> 8 {
            return Err(FileError::NotFound);
        }
        Ok((index, slot, open))
    }

    /// Opens `path` with `flags` in a free slot as `open`; its handle.
    pub(crate) fn open_slot(
        &mut self,
        path: &Path,
        flags: u32,
        open: Open,
    ) -> Result<FileHandle, FileError> {
        let index = (0..OPEN_FILES)
            .find(|index| {
                // SAFETY: reads a plain field of an in-bounds slot.
                self.slot(*index)
                    .is_ok_and(|slot| unsafe { (*slot).open } == Open::No)
            })
            .ok_or(FileError::Busy)?;
        let slot = self.slot(index)?;
        // SAFETY: the slot is free, so littlefs holds no pointer to it; its file, config and
        // cache stay where they are while the file is open (the Filesystem is pinned).
        let generation = unsafe {
            (*slot).config = lfs::lfs_file_config {
                buffer: addr_of_mut!((*slot).cache).cast(),
                ..lfs::lfs_file_config::default()
            };
            check(lfs::lfs_file_opencfg(
                self.lfs(),
                addr_of_mut!((*slot).file),
                path.as_ptr(),
                flags as c_int,
                addr_of_mut!((*slot).config),
            ))?;
            (*slot).open = open;
            (*slot).generation = ((*slot).generation + 1) & 0x00ff_ffff;
            (*slot).generation
        };
        Ok(FileHandle(generation << 8 | index as u32))
    }

    /// Closes the file in `slot` (syncing what was written) and frees the slot.
    pub(crate) fn close_slot(&mut self, slot: *mut Slot) -> Result<(), FileError> {
        // SAFETY: the slot holds an open file of this mounted file system.
        unsafe {
            (*slot).open = Open::No;
            check(lfs::lfs_file_close(self.lfs(), addr_of_mut!((*slot).file))).map(drop)
        }
    }
}
