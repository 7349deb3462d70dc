//! jeton-littlefs: jeton-core's [`FileStore`] on a region of NOR flash, with littlefs.
//!
//! A token's received files and the files it sends live in a littlefs file system
//! (<https://github.com/littlefs-project/littlefs>, v2.9, built by the `littlefs2-sys` crate)
//! on whatever [`NorFlash`] the platform hands over: on RIOT the sectors of the board's
//! `MTD_0` after the record store. littlefs is made for this: every metadata change is an
//! atomic commit with a checksum, file data is copied on write, and a power cut at any point
//! leaves the file system as it was before or after the interrupted operation; it spreads
//! erases over all blocks (dynamic wear levelling). This crate owns the layout and the rules
//! on top:
//!
//! - received files are `/files/<name>`, and only a complete, checked file gets there: a
//!   transfer writes `/tmp/<n>`, and [`FileStore::commit`] closes it (littlefs syncs its data
//!   and metadata) and then renames it into `/files/`, one atomic commit;
//! - what a power cut leaves in `/tmp/` is deleted by [`FileStore::discard_temporaries`],
//!   which jeton-core calls at boot;
//! - files to send are named as they are stored (`sendfile <room> <name>` sends
//!   `/files/<name>`): a name is a plain file name, never a path;
//! - appends stop with [`FileError::QuotaExceeded`] before the medium is full, keeping a few
//!   blocks free for littlefs' own copies ([`FileStore::available`]).
//!
//! # Memory
//!
//! No heap: [`Filesystem`] holds littlefs' state, its read, program and lookahead buffers and
//! [`OPEN_FILES`] file slots with their caches. littlefs keeps pointers into it, so it must
//! not move once mounted: [`Files::mount`] takes it pinned (a `static` on a device).
//!
//! # Safety
//!
//! littlefs is C. The `unsafe` here calls it with pointers into the pinned [`Filesystem`]
//! and turns its callbacks into [`NorFlash`] calls; each block states what it relies on.
#![no_std]
#![allow(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod mount;
mod path;
mod slots;
mod space;
mod storage;

use core::ffi::c_int;
use core::fmt::{self, Write};
use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::ptr::{NonNull, addr_of_mut};

use embedded_storage::nor_flash::NorFlash;
use jeton_core::files::{FileError, FileHandle, FileStore, MAX_FILE_NAME};
use littlefs2_sys as lfs;

pub use mount::{MountError, Mounted};
use path::{Path, check_name, name_of};
use slots::{Open, Slot};

/// How many files may be open at once: a download's ciphertext and plaintext while it is
/// decrypted (jeton-core runs one transfer at a time).
pub const OPEN_FILES: usize = 2;
/// littlefs' read and program unit: a multiple of the flash's own, small enough that a
/// metadata commit wastes little.
const IO_SIZE: usize = 16;
/// littlefs' cache per buffer (read, program, each open file).
const CACHE_SIZE: usize = 256;
/// The allocator's lookahead bitmap: 256 blocks per scan.
const LOOKAHEAD_SIZE: usize = 32;
/// Erases of a metadata pair before littlefs moves it (wear levelling of metadata).
const BLOCK_CYCLES: i32 = 500;
/// The fewest blocks a file system can have: two superblocks, the two directories' metadata
/// pairs and room to work.
const MIN_BLOCKS: usize = 16;
/// Bytes of a data block that a file's contents may be assumed to fill: littlefs keeps a
/// skip-list of pointers at the start of each block (8 bytes on average, up to 128).
const BLOCK_OVERHEAD: u64 = 128;

const RECEIVED: &str = "/files";
const TEMPORARY: &str = "/tmp";
/// The longest path: directory, slash, name, " (n)" and the terminating NUL.
const PATH_CAPACITY: usize = 8 + MAX_FILE_NAME + 12 + 1;
/// Received names tried before a commit gives up: `name`, `name (2)` ... `name (99)`.
const NAME_VARIANTS: u32 = 99;

/// littlefs' state on one NOR flash region, with every buffer it needs. Make it with
/// [`Filesystem::new`], then pin it where it stays and hand it to [`Files::mount`].
pub struct Filesystem<S> {
    lfs: lfs::lfs_t,
    config: lfs::lfs_config,
    storage: S,
    read_cache: Buffer,
    prog_cache: Buffer,
    lookahead: [u32; LOOKAHEAD_SIZE / 4],
    slots: [Slot; OPEN_FILES],
    /// Bytes appends may still take before the free space is measured again.
    free: u64,
    /// The number of the next temporary file (`/tmp/<n>`).
    next_temporary: u32,
    _pinned: PhantomPinned,
}

// SAFETY: the raw pointers inside littlefs' structures point into the same `Filesystem`
// (pinned once mounted), so moving the whole to another thread moves what they point to with
// it; `Files` gives access from one place at a time.
unsafe impl<S: Send> Send for Filesystem<S> {}

impl<S> fmt::Debug for Filesystem<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filesystem")
            .field("blocks", &self.config.block_count)
            .field("block_size", &self.config.block_size)
            .finish_non_exhaustive()
    }
}

#[repr(C, align(4))]
struct Buffer([u8; CACHE_SIZE]);

impl<S: NorFlash> Filesystem<S> {
    /// littlefs' state for `storage`, not yet mounted.
    pub fn new(storage: S) -> Self {
        Filesystem {
            lfs: lfs::lfs_t::default(),
            config: lfs::lfs_config::default(),
            storage,
            read_cache: Buffer([0; CACHE_SIZE]),
            prog_cache: Buffer([0; CACHE_SIZE]),
            lookahead: [0; LOOKAHEAD_SIZE / 4],
            slots: core::array::from_fn(|_| Slot {
                file: lfs::lfs_file_t::default(),
                config: lfs::lfs_file_config::default(),
                cache: Buffer([0; CACHE_SIZE]),
                open: Open::No,
                generation: 0,
            }),
            free: 0,
            next_temporary: 0,
            _pinned: PhantomPinned,
        }
    }
}

/// The mounted file system: jeton-core's [`FileStore`].
pub struct Files<'a, S: NorFlash> {
    fs: NonNull<Filesystem<S>>,
    _pinned: PhantomData<Pin<&'a mut Filesystem<S>>>,
}

impl<S: NorFlash> fmt::Debug for Files<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files").finish_non_exhaustive()
    }
}

impl<S: NorFlash> Files<'_, S> {
    fn lfs(&self) -> *mut lfs::lfs_t {
        // SAFETY: a field of the pinned Filesystem.
        unsafe { addr_of_mut!((*self.fs.as_ptr()).lfs) }
    }

    fn config(&self) -> *const lfs::lfs_config {
        // SAFETY: a field of the pinned Filesystem.
        unsafe { addr_of_mut!((*self.fs.as_ptr()).config) }
    }

    fn remove(&mut self, path: &Path) -> Result<(), FileError> {
        // SAFETY: a mounted file system and a NUL-terminated path.
        match unsafe { lfs::lfs_remove(self.lfs(), path.as_ptr()) } {
            lfs::lfs_error_LFS_ERR_NOENT => Ok(()),
            code => check(code).map(drop),
        }
    }

    fn exists(&mut self, path: &Path) -> Result<bool, FileError> {
        let mut info = lfs::lfs_info::default();
        // SAFETY: a mounted file system, a NUL-terminated path and a local info record.
        match unsafe { lfs::lfs_stat(self.lfs(), path.as_ptr(), &mut info) } {
            lfs::lfs_error_LFS_ERR_NOENT => Ok(false),
            code => check(code).map(|_| true),
        }
    }

    /// The first temporary file's name, if there is one.
    fn first_temporary(&mut self) -> Result<Option<Path>, FileError> {
        let dir_path = Path::new(TEMPORARY, "")?;
        let mut dir = lfs::lfs_dir_t::default();
        let mut info = lfs::lfs_info::default();
        // SAFETY: dir stays in this frame while open and is closed before it returns.
        check(unsafe { lfs::lfs_dir_open(self.lfs(), &mut dir, dir_path.as_ptr()) })?;
        let found = loop {
            // SAFETY: an open directory and a local info record.
            match unsafe { lfs::lfs_dir_read(self.lfs(), &mut dir, &mut info) } {
                0 => break Ok(None),
                code if code < 0 => break check(code).map(|_| None),
                _ => {}
            }
            let name = name_of(&info);
            if info.type_ != lfs::lfs_type_LFS_TYPE_DIR as u8 {
                break Path::new(TEMPORARY, name).map(Some);
            }
        };
        // SAFETY: closes the directory opened above.
        let closed = check(unsafe { lfs::lfs_dir_close(self.lfs(), &mut dir) });
        closed.and(found)
    }
}

impl<S: NorFlash> FileStore for Files<'_, S> {
    fn open(&mut self, name: &str) -> Result<(FileHandle, u64), FileError> {
        check_name(name)?;
        let path = Path::new(RECEIVED, name)?;
        let handle = self.open_slot(&path, lfs::lfs_open_flags_LFS_O_RDONLY, Open::Source)?;
        let (_, slot, _) = self.lookup(handle)?;
        // SAFETY: the slot's file is open.
        let size = unsafe { lfs::lfs_file_size(self.lfs(), addr_of_mut!((*slot).file)) };
        match u64::try_from(size) {
            Ok(size) => Ok((handle, size)),
            Err(_) => {
                let _ = self.close_slot(slot);
                Err(error(size))
            }
        }
    }

    fn create_temp(&mut self) -> Result<FileHandle, FileError> {
        // SAFETY: a plain field of the pinned Filesystem.
        let number = unsafe {
            let next = addr_of_mut!((*self.fs.as_ptr()).next_temporary);
            let number = *next;
            *next = number.wrapping_add(1);
            number
        };
        let mut name = Path::new("", "")?;
        write!(name, "{number}").map_err(|_| FileError::BadName)?;
        let path = Path::new(TEMPORARY, name.as_str())?;
        let flags = lfs::lfs_open_flags_LFS_O_RDWR
            | lfs::lfs_open_flags_LFS_O_CREAT
            | lfs::lfs_open_flags_LFS_O_TRUNC
            | lfs::lfs_open_flags_LFS_O_APPEND;
        self.open_slot(&path, flags, Open::Temporary(number))
    }

    fn append(&mut self, file: FileHandle, data: &[u8]) -> Result<(), FileError> {
        let (_, slot, Open::Temporary(_)) = self.lookup(file)? else {
            return Err(FileError::NotFound);
        };
        let len = lfs::lfs_size_t::try_from(data.len()).map_err(|_| FileError::TooLarge)?;
        self.take_room(u64::from(len))?;
        // SAFETY: the slot's file is open for writing; data is valid for len bytes.
        let written = unsafe {
            lfs::lfs_file_write(
                self.lfs(),
                addr_of_mut!((*slot).file),
                data.as_ptr().cast(),
                len,
            )
        };
        match check(written)? {
            n if n == len => Ok(()),
            _ => Err(FileError::Io),
        }
    }

    fn read_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, FileError> {
        let (_, slot, _) = self.lookup(file)?;
        let offset = lfs::lfs_soff_t::try_from(offset).map_err(|_| FileError::TooLarge)?;
        let len = lfs::lfs_size_t::try_from(out.len()).unwrap_or(lfs::lfs_size_t::MAX);
        // SAFETY: the slot's file is open; out is valid for len bytes.
        let read = unsafe {
            let file = addr_of_mut!((*slot).file);
            check(lfs::lfs_file_seek(
                self.lfs(),
                file,
                offset,
                lfs::lfs_whence_flags_LFS_SEEK_SET as c_int,
            ))?;
            lfs::lfs_file_read(self.lfs(), file, out.as_mut_ptr().cast(), len)
        };
        Ok(check(read)? as usize)
    }

    fn commit(&mut self, file: FileHandle, name: &str) -> Result<(), FileError> {
        check_name(name)?;
        let (_, slot, Open::Temporary(number)) = self.lookup(file)? else {
            return Err(FileError::NotFound);
        };
        let mut temporary_name = Path::new("", "")?;
        write!(temporary_name, "{number}").map_err(|_| FileError::BadName)?;
        let temporary = Path::new(TEMPORARY, temporary_name.as_str())?;
        // Closing syncs the data and the file's metadata: from here a power cut leaves the
        // whole file in /tmp (discarded at boot) or, after the rename, in /files.
        self.close_slot(slot)?;
        let mut target = None;
        for variant in 1..=NAME_VARIANTS {
            let candidate = Path::received(name, variant)?;
            if !self.exists(&candidate)? {
                target = Some(candidate);
                break;
            }
        }
        let renamed = match &target {
            // SAFETY: a mounted file system and two NUL-terminated paths.
            Some(target) => {
                check(unsafe { lfs::lfs_rename(self.lfs(), temporary.as_ptr(), target.as_ptr()) })
                    .map(drop)
            }
            None => Err(FileError::BadName),
        };
        if renamed.is_err() {
            let _ = self.remove(&temporary);
        }
        renamed
    }

    fn close(&mut self, file: FileHandle) -> Result<(), FileError> {
        let (_, slot, open) = self.lookup(file)?;
        self.close_slot(slot)?;
        if let Open::Temporary(number) = open {
            let mut name = Path::new("", "")?;
            write!(name, "{number}").map_err(|_| FileError::BadName)?;
            self.remove(&Path::new(TEMPORARY, name.as_str())?)?;
        }
        Ok(())
    }

    fn available(&mut self) -> u64 {
        self.measure()
    }

    fn discard_temporaries(&mut self) -> Result<(), FileError> {
        for index in 0..OPEN_FILES {
            let slot = self.slot(index)?;
            // SAFETY: reads a plain field of an in-bounds slot.
            if let Open::Temporary(_) = unsafe { (*slot).open } {
                self.close_slot(slot)?;
            }
        }
        while let Some(path) = self.first_temporary()? {
            self.remove(&path)?;
        }
        self.measure();
        Ok(())
    }
}

/// littlefs' result: a count, or an error as jeton-core names it.
fn check(code: c_int) -> Result<u32, FileError> {
    u32::try_from(code).map_err(|_| error(code))
}

fn error(code: c_int) -> FileError {
    match code {
        lfs::lfs_error_LFS_ERR_NOENT => FileError::NotFound,
        lfs::lfs_error_LFS_ERR_NOSPC => FileError::QuotaExceeded,
        lfs::lfs_error_LFS_ERR_FBIG => FileError::TooLarge,
        lfs::lfs_error_LFS_ERR_NAMETOOLONG
        | lfs::lfs_error_LFS_ERR_ISDIR
        | lfs::lfs_error_LFS_ERR_NOTDIR
        | lfs::lfs_error_LFS_ERR_INVAL => FileError::BadName,
        _ => FileError::Io,
    }
}

#[cfg(test)]
mod tests;
