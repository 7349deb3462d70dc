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

use core::ffi::{c_char, c_int, c_void};
use core::fmt::{self, Write};
use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::ptr::{NonNull, addr_of_mut};

use embedded_storage::nor_flash::NorFlash;
use jeton_core::files::{FileError, FileHandle, FileStore, MAX_FILE_NAME};
use littlefs2_sys as lfs;

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

/// One open file: littlefs' file state, its configuration and cache, and what it is.
struct Slot {
    file: lfs::lfs_file_t,
    config: lfs::lfs_file_config,
    cache: Buffer,
    open: Open,
    /// Counts the opens of this slot, so that a stale handle does not reach a newer file.
    generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    No,
    /// A received file opened to be sent.
    Source,
    /// `/tmp/<n>`, being written.
    Temporary(u32),
}

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

    fn lfs(&self) -> *mut lfs::lfs_t {
        // SAFETY: a field of the pinned Filesystem.
        unsafe { addr_of_mut!((*self.fs.as_ptr()).lfs) }
    }

    fn config(&self) -> *const lfs::lfs_config {
        // SAFETY: a field of the pinned Filesystem.
        unsafe { addr_of_mut!((*self.fs.as_ptr()).config) }
    }

    fn slot(&self, index: usize) -> Result<*mut Slot, FileError> {
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
    fn lookup(&self, file: FileHandle) -> Result<(usize, *mut Slot, Open), FileError> {
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
    fn open_slot(&mut self, path: &Path, flags: u32, open: Open) -> Result<FileHandle, FileError> {
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
    fn close_slot(&mut self, slot: *mut Slot) -> Result<(), FileError> {
        // SAFETY: the slot holds an open file of this mounted file system.
        unsafe {
            (*slot).open = Open::No;
            check(lfs::lfs_file_close(self.lfs(), addr_of_mut!((*slot).file))).map(drop)
        }
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

    /// Measures the free space again: what appends may take from now on.
    fn measure(&mut self) -> u64 {
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
    fn take_room(&mut self, len: u64) -> Result<(), FileError> {
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

/// Blocks kept free for littlefs' copies on write and metadata compaction.
fn reserve(blocks: u32) -> u32 {
    (blocks / 32).max(4)
}

/// A name the token stores or sends a file under: a plain file name.
fn check_name(name: &str) -> Result<(), FileError> {
    let plain = !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(FileError::BadName)
    }
}

/// A NUL-terminated path for littlefs.
struct Path {
    bytes: [u8; PATH_CAPACITY],
    len: usize,
}

impl Path {
    /// `dir/name` (`dir` alone when `name` is empty, `name` alone when `dir` is).
    fn new(dir: &str, name: &str) -> Result<Path, FileError> {
        let mut path = Path {
            bytes: [0; PATH_CAPACITY],
            len: 0,
        };
        let joined = match (dir.is_empty(), name.is_empty()) {
            (false, false) => write!(path, "{dir}/{name}"),
            _ => write!(path, "{dir}{name}"),
        };
        joined.map_err(|_| FileError::BadName)?;
        Ok(path)
    }

    /// `/files/<name>`, or `/files/<name> (<variant>)` from the second variant on.
    fn received(name: &str, variant: u32) -> Result<Path, FileError> {
        let mut path = Path::new(RECEIVED, name)?;
        if variant > 1 {
            write!(path, " ({variant})").map_err(|_| FileError::BadName)?;
        }
        Ok(path)
    }

    fn as_str(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|bytes| core::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    fn as_ptr(&self) -> *const c_char {
        self.bytes.as_ptr().cast()
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        // One byte stays for the terminating NUL.
        match self.bytes.get_mut(self.len..end) {
            Some(target) if end < PATH_CAPACITY && !s.contains('\0') => {
                target.copy_from_slice(s.as_bytes());
                self.len = end;
                Ok(())
            }
            _ => Err(fmt::Error),
        }
    }
}

/// The name in a directory entry.
fn name_of(info: &lfs::lfs_info) -> &str {
    // SAFETY: lfs_info.name is a char array; viewing it as bytes changes nothing.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts(info.name.as_ptr().cast(), info.name.len()) };
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    bytes
        .get(..len)
        .and_then(|name| core::str::from_utf8(name).ok())
        .unwrap_or_default()
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

/// The storage and the byte address of `off` in `block`, for littlefs' callbacks.
///
/// # Safety
///
/// `c` is the configuration `configure` wrote, whose context is the storage of a mounted
/// Filesystem; littlefs calls back only from inside a call this crate made, while no other
/// reference to the storage is alive.
unsafe fn target<'s, S>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
    off: lfs::lfs_off_t,
) -> Option<(&'s mut S, u32)> {
    // SAFETY: see the function's contract.
    let config = unsafe { &*c };
    let at = block.checked_mul(config.block_size)?.checked_add(off)?;
    // SAFETY: see the function's contract.
    Some((unsafe { &mut *config.context.cast::<S>() }, at))
}

fn status<E>(result: Result<(), E>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(_) => lfs::lfs_error_LFS_ERR_IO,
    }
}

unsafe extern "C" fn read<S: NorFlash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
    off: lfs::lfs_off_t,
    buffer: *mut c_void,
    size: lfs::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs passes its configuration and a buffer of `size` bytes.
    let Some((storage, at)) = (unsafe { target::<S>(c, block, off) }) else {
        return lfs::lfs_error_LFS_ERR_IO;
    };
    // SAFETY: as above.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), size as usize) };
    status(storage.read(at, bytes))
}

unsafe extern "C" fn prog<S: NorFlash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
    off: lfs::lfs_off_t,
    buffer: *const c_void,
    size: lfs::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs passes its configuration and a buffer of `size` bytes.
    let Some((storage, at)) = (unsafe { target::<S>(c, block, off) }) else {
        return lfs::lfs_error_LFS_ERR_IO;
    };
    // SAFETY: as above.
    let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), size as usize) };
    status(storage.write(at, bytes))
}

unsafe extern "C" fn erase<S: NorFlash>(
    c: *const lfs::lfs_config,
    block: lfs::lfs_block_t,
) -> c_int {
    // SAFETY: littlefs passes its configuration.
    let Some((storage, at)) = (unsafe { target::<S>(c, block, 0) }) else {
        return lfs::lfs_error_LFS_ERR_IO;
    };
    // SAFETY: as above.
    let block_size = unsafe { (*c).block_size };
    match at.checked_add(block_size) {
        Some(end) => status(storage.erase(at, end)),
        None => lfs::lfs_error_LFS_ERR_IO,
    }
}

/// NOR flash writes are done when they return.
unsafe extern "C" fn sync(_: *const lfs::lfs_config) -> c_int {
    0
}

#[cfg(test)]
mod tests;
