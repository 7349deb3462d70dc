//! The storage under littlefs: its callbacks, which turn littlefs' block reads, programs and
//! erases into [`NorFlash`] calls.

use core::ffi::{c_int, c_void};

use embedded_storage::nor_flash::NorFlash;
use littlefs2_sys as lfs;

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

pub(crate) unsafe extern "C" fn read<S: NorFlash>(
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

pub(crate) unsafe extern "C" fn prog<S: NorFlash>(
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

pub(crate) unsafe extern "C" fn erase<S: NorFlash>(
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
pub(crate) unsafe extern "C" fn sync(_: *const lfs::lfs_config) -> c_int {
    0
}
