//! Mounting: littlefs' configuration for the storage's geometry, the file system found or
//! made on the flash, and why that can fail.

use core::fmt;
use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::{NonNull, addr_of_mut};

use embedded_storage::nor_flash::NorFlash;
use littlefs2_sys as lfs;

use crate::path::Path;
use crate::storage::{erase, prog, read, sync};
use crate::{
    BLOCK_CYCLES, CACHE_SIZE, Files, Filesystem, IO_SIZE, LOOKAHEAD_SIZE, MIN_BLOCKS, RECEIVED,
    TEMPORARY,
};

/// What [`Files::mount`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounted {
    /// The file system that was there, with its files.
    Existing,
    /// No file system was there (a new token): a new, empty one was made.
    Formatted,
}

/// Why the file system could not be mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MountError {
    /// The flash's sizes do not suit littlefs' buffers (erase size a multiple of 256 bytes,
    /// read and write sizes dividing 16, at least 16 erase blocks).
    Geometry,
    /// littlefs failed with this error code (negative errno style) on a file system that is
    /// there: it is not reformatted, so that no file is lost to a passing fault.
    Littlefs(i32),
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::Geometry => f.write_str("the flash region does not suit littlefs"),
            MountError::Littlefs(code) => {
                write!(
                    f,
                    "the file system could not be mounted (littlefs error {code})"
                )
            }
        }
    }
}

impl core::error::Error for MountError {}

impl<'a, S: NorFlash> Files<'a, S> {
    /// Mounts the file system on `fs`'s flash, making a new one where there is none, and
    /// the two directories it uses.
    pub fn mount(fs: Pin<&'a mut Filesystem<S>>) -> Result<(Self, Mounted), MountError> {
        // SAFETY: nothing below moves the Filesystem: littlefs gets pointers into it, which
        // the pin keeps valid for 'a.
        let fs = NonNull::from(unsafe { Pin::get_unchecked_mut(fs) });
        let files = Files {
            fs,
            _pinned: PhantomData,
        };
        files.configure()?;
        // SAFETY: lfs and config are fields of the pinned Filesystem, configured above.
        let mut mounted = unsafe { lfs::lfs_mount(files.lfs(), files.config()) };
        let state = if mounted == lfs::lfs_error_LFS_ERR_CORRUPT {
            // SAFETY: as for lfs_mount.
            let formatted = unsafe { lfs::lfs_format(files.lfs(), files.config()) };
            if formatted < 0 {
                return Err(MountError::Littlefs(formatted));
            }
            // SAFETY: as for lfs_mount.
            mounted = unsafe { lfs::lfs_mount(files.lfs(), files.config()) };
            Mounted::Formatted
        } else {
            Mounted::Existing
        };
        if mounted < 0 {
            return Err(MountError::Littlefs(mounted));
        }
        for dir in [RECEIVED, TEMPORARY] {
            let path = Path::new(dir, "").map_err(|_| MountError::Geometry)?;
            // SAFETY: a mounted file system and a NUL-terminated path.
            let made = unsafe { lfs::lfs_mkdir(files.lfs(), path.as_ptr()) };
            if made < 0 && made != lfs::lfs_error_LFS_ERR_EXIST {
                return Err(MountError::Littlefs(made));
            }
        }
        Ok((files, state))
    }

    /// Fills in littlefs' configuration for the storage's geometry.
    fn configure(&self) -> Result<(), MountError> {
        let fs = self.fs.as_ptr();
        // SAFETY: a shared look at the storage, which nothing else uses yet.
        let capacity = unsafe { (*fs).storage.capacity() };
        let block_size = S::ERASE_SIZE;
        let blocks = capacity / block_size.max(1);
        let fits = block_size.is_multiple_of(CACHE_SIZE)
            && CACHE_SIZE.is_multiple_of(IO_SIZE)
            && IO_SIZE.is_multiple_of(S::READ_SIZE)
            && IO_SIZE.is_multiple_of(S::WRITE_SIZE)
            && blocks >= MIN_BLOCKS;
        let (Ok(block_size), Ok(blocks), true) =
            (u32::try_from(block_size), u32::try_from(blocks), fits)
        else {
            return Err(MountError::Geometry);
        };
        // SAFETY: the fields named are the pinned Filesystem's; littlefs keeps the pointers
        // for as long as it is mounted, which is at most 'a.
        unsafe {
            addr_of_mut!((*fs).config).write(lfs::lfs_config {
                context: addr_of_mut!((*fs).storage).cast(),
                read: Some(read::<S>),
                prog: Some(prog::<S>),
                erase: Some(erase::<S>),
                sync: Some(sync),
                read_size: IO_SIZE as u32,
                prog_size: IO_SIZE as u32,
                block_size,
                block_count: blocks,
                block_cycles: BLOCK_CYCLES,
                cache_size: CACHE_SIZE as u32,
                lookahead_size: LOOKAHEAD_SIZE as u32,
                read_buffer: addr_of_mut!((*fs).read_cache).cast(),
                prog_buffer: addr_of_mut!((*fs).prog_cache).cast(),
                lookahead_buffer: addr_of_mut!((*fs).lookahead).cast(),
                ..lfs::lfs_config::default()
            });
        }
        Ok(())
    }
}
