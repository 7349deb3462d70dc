//! The token's files: jeton-littlefs' file system on the sectors of `MTD_0` after jeton's
//! records ([`Region::Files`]), jeton-core's `FileStore` for sending and receiving files.
//!
//! Received files are stored under their (sanitised) names in the file system's `/files/`
//! directory, and `sendfile <room> <name>` sends one of them by that name; a transfer in
//! progress lives in `/tmp/` until it is complete. littlefs keeps every file whole across a
//! power cut, and jeton-core discards what a cut left in `/tmp/` at the next boot. Why
//! littlefs, and the layout, are in riot-sys-config/README.md ("Files").

use core::pin::Pin;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use jeton_core::files::FileStore;
use jeton_littlefs::{Files, Filesystem, Mounted};
use riot_wrappers::println;
use static_cell::StaticCell;

use crate::flash::{Flash, FlashError, Region};

/// The MTD sector size the file system is laid out for (littlefs' block).
const SECTOR_SIZE: u32 = 4096;

/// The file system's sectors as a NOR flash, addressed from its first byte.
#[derive(Debug)]
pub(crate) struct FilesFlash {
    flash: &'static Flash,
}

impl ErrorType for FilesFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FilesFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.flash.read(Region::Files, offset, bytes)
    }

    fn capacity(&self) -> usize {
        let (_, sectors) = self.flash.extent(Region::Files);
        (sectors * SECTOR_SIZE) as usize
    }
}

impl NorFlash for FilesFlash {
    // MTD on the supported boards programs single bytes.
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR_SIZE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let count = to.checked_sub(from).ok_or(FlashError::OutOfRegion)?;
        self.flash
            .erase_sectors(Region::Files, from / SECTOR_SIZE, count / SECTOR_SIZE)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.flash.write(Region::Files, offset, bytes)
    }
}

/// The file system's state: littlefs keeps pointers into it, so it lives here, never moving.
static FILESYSTEM: StaticCell<Filesystem<FilesFlash>> = StaticCell::new();

/// The token's files, as the record store hands them to jeton-core.
pub(crate) type TokenFiles = Files<'static, FilesFlash>;

/// Mounts the file system (a new one on a new token) and prints what it holds; None, with
/// the reason printed, when the board has no room or the flash does not suit it. Call once.
/// Not inlined: the file system's state passes through this frame on its way into the
/// static, and the event loop that calls it must not keep that room.
#[inline(never)]
pub(crate) fn mount(flash: &'static Flash) -> Option<TokenFiles> {
    let (first, sectors) = flash.extent(Region::Files);
    if flash.sector_size() != SECTOR_SIZE {
        println!("files: unavailable: {}", FlashError::UnsupportedGeometry);
        return None;
    }
    let filesystem = FILESYSTEM.try_init(Filesystem::new(FilesFlash { flash }))?;
    match Files::mount(Pin::static_mut(filesystem)) {
        Ok((mut files, mounted)) => {
            let made = match mounted {
                Mounted::Formatted => ", made new",
                Mounted::Existing => "",
            };
            println!(
                "files: littlefs on MTD_0 sectors {first}-{}{made}, {} bytes free",
                first + sectors - 1,
                files.available()
            );
            Some(files)
        }
        Err(err) => {
            println!("files: unavailable: {err}");
            None
        }
    }
}
