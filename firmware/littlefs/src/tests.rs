//! The FileStore contract on a simulated NOR flash that can lose power at any operation.

extern crate std;

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

use super::*;

const BLOCK: usize = 4096;

/// NOR flash in RAM: erase sets bytes to 0xff, programming clears bits. With `cut_at` set,
/// operation number `cut_at` is interrupted halfway (half its bytes programmed or erased) and
/// every later one fails, as after a power cut, until the next boot.
#[derive(Clone)]
struct Medium {
    bytes: Rc<RefCell<Vec<u8>>>,
    operations: Rc<Cell<u64>>,
    cut_at: Rc<Cell<Option<u64>>>,
}

impl Medium {
    fn new(blocks: usize) -> Self {
        Medium {
            bytes: Rc::new(RefCell::new(vec![0xff; blocks * BLOCK])),
            operations: Rc::new(Cell::new(0)),
            cut_at: Rc::new(Cell::new(None)),
        }
    }

    /// Counts an operation: Ok(true) to do it whole, Ok(false) to do half, Err when dead.
    fn operate(&self) -> Result<bool, NorFlashErrorKind> {
        let number = self.operations.get();
        self.operations.set(number + 1);
        match self.cut_at.get() {
            Some(cut) if number > cut => Err(NorFlashErrorKind::Other),
            Some(cut) if number == cut => Ok(false),
            _ => Ok(true),
        }
    }

    /// The power comes back: the next boot's operations all succeed.
    fn reboot(&self) {
        self.cut_at.set(None);
    }
}

struct RamFlash(Medium);

impl ErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self
            .0
            .cut_at
            .get()
            .is_some_and(|cut| self.0.operations.get() > cut)
        {
            return Err(NorFlashErrorKind::Other);
        }
        let start = offset as usize;
        let source = self.0.bytes.borrow();
        let from = source
            .get(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(from);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.bytes.borrow().len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = BLOCK;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let whole = self.0.operate()?;
        let mut bytes = self.0.bytes.borrow_mut();
        let range = bytes
            .get_mut(from as usize..to as usize)
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        let len = if whole { range.len() } else { range.len() / 2 };
        range[..len].fill(0xff);
        if whole {
            Ok(())
        } else {
            Err(NorFlashErrorKind::Other)
        }
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        let whole = self.0.operate()?;
        let mut bytes = self.0.bytes.borrow_mut();
        let start = offset as usize;
        let range = bytes
            .get_mut(start..start + data.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        let len = if whole { data.len() } else { data.len() / 2 };
        for (cell, byte) in range.iter_mut().zip(&data[..len]) {
            *cell &= *byte;
        }
        if whole {
            Ok(())
        } else {
            Err(NorFlashErrorKind::Other)
        }
    }
}

fn filesystem(medium: &Medium) -> Pin<Box<Filesystem<RamFlash>>> {
    Box::pin(Filesystem::new(RamFlash(medium.clone())))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Stores `data` as a received file the way jeton-core does: a temporary file written in
/// blocks, then committed, and closed (deleted) if that failed; the first error.
fn receive(files: &mut dyn FileStore, name: &str, data: &[u8]) -> Result<(), FileError> {
    let temporary = files.create_temp()?;
    let stored = data
        .chunks(1024)
        .try_for_each(|block| files.append(temporary, block))
        .and_then(|()| files.commit(temporary, name));
    if stored.is_err() {
        let _ = files.close(temporary);
    }
    stored
}

/// The whole of received file `name`, read in blocks as an upload does.
fn read_back(files: &mut dyn FileStore, name: &str) -> Result<Vec<u8>, FileError> {
    let (file, size) = files.open(name)?;
    let mut whole = Vec::new();
    let mut block = [0u8; 700];
    loop {
        let read = files.read_at(file, whole.len() as u64, &mut block)?;
        if read == 0 {
            break;
        }
        whole.extend_from_slice(&block[..read]);
    }
    files.close(file)?;
    assert_eq!(whole.len() as u64, size, "the size open reported");
    Ok(whole)
}

#[test]
fn a_received_file_appears_only_once_committed_and_survives_remounting() {
    let medium = Medium::new(64);
    let mut fs = filesystem(&medium);
    let (mut files, mounted) = Files::mount(fs.as_mut()).unwrap();
    assert_eq!(mounted, Mounted::Formatted);
    let data = pattern(5000, 7);
    let temporary = files.create_temp().unwrap();
    files.append(temporary, &data[..3000]).unwrap();
    assert_eq!(files.open("photo.jpg"), Err(FileError::NotFound));
    files.append(temporary, &data[3000..]).unwrap();
    let mut middle = [0u8; 100];
    assert_eq!(files.read_at(temporary, 2950, &mut middle), Ok(100));
    assert_eq!(&middle[..], &data[2950..3050]);
    files.commit(temporary, "photo.jpg").unwrap();
    assert_eq!(read_back(&mut files, "photo.jpg").unwrap(), data);
    assert!(
        matches!(files.first_temporary(), Ok(None)),
        "no temporary file is left"
    );
    drop(fs);

    let mut fs = filesystem(&medium);
    let (mut files, mounted) = Files::mount(fs.as_mut()).unwrap();
    assert_eq!(mounted, Mounted::Existing);
    assert_eq!(read_back(&mut files, "photo.jpg").unwrap(), data);
}

#[test]
fn names_are_plain_file_names_and_a_taken_name_gets_a_number() {
    let medium = Medium::new(64);
    let mut fs = filesystem(&medium);
    let (mut files, _) = Files::mount(fs.as_mut()).unwrap();
    receive(&mut files, "notes.txt", b"first").unwrap();
    receive(&mut files, "notes.txt", b"second").unwrap();
    assert_eq!(read_back(&mut files, "notes.txt").unwrap(), b"first");
    assert_eq!(read_back(&mut files, "notes.txt (2)").unwrap(), b"second");
    for bad in ["", "../notes.txt", "a/b", ".hidden", "a\\b", "tab\there"] {
        assert_eq!(
            receive(&mut files, bad, b"x"),
            Err(FileError::BadName),
            "{bad:?}"
        );
        assert_eq!(
            files.open(bad).map(drop),
            Err(FileError::BadName),
            "{bad:?}"
        );
    }
    let long = "n".repeat(MAX_FILE_NAME + 1);
    assert_eq!(files.open(&long).map(drop), Err(FileError::BadName));
    assert_eq!(files.open("absent.txt").map(drop), Err(FileError::NotFound));
    assert!(
        matches!(files.first_temporary(), Ok(None)),
        "refused commits leave nothing"
    );
}

#[test]
fn handles_name_what_they_opened_and_nothing_else() {
    let medium = Medium::new(64);
    let mut fs = filesystem(&medium);
    let (mut files, _) = Files::mount(fs.as_mut()).unwrap();
    receive(&mut files, "a.txt", b"abc").unwrap();
    let (source, size) = files.open("a.txt").unwrap();
    assert_eq!(size, 3);
    assert_eq!(
        files.append(source, b"more"),
        Err(FileError::NotFound),
        "a source is read-only"
    );
    assert_eq!(files.commit(source, "b.txt"), Err(FileError::NotFound));
    let temporary = files.create_temp().unwrap();
    assert_eq!(
        files.create_temp(),
        Err(FileError::Busy),
        "two files are open"
    );
    files.close(source).unwrap();
    let mut out = [0u8; 4];
    assert_eq!(
        files.read_at(source, 0, &mut out),
        Err(FileError::NotFound),
        "closed"
    );
    let reused = files.create_temp().unwrap();
    assert_ne!(reused, source, "a reused slot gets a new handle");
    assert_eq!(files.read_at(source, 0, &mut out), Err(FileError::NotFound));
    files.close(temporary).unwrap();
    files.close(reused).unwrap();
    assert!(
        matches!(files.first_temporary(), Ok(None)),
        "closing deletes temporary files"
    );
}

#[test]
fn appends_stop_before_the_medium_is_full_and_deleting_gives_the_room_back() {
    let medium = Medium::new(32);
    let mut fs = filesystem(&medium);
    let (mut files, _) = Files::mount(fs.as_mut()).unwrap();
    let room = files.available();
    assert!(room > 20 * 4096 && room < 32 * 4096, "{room}");
    let temporary = files.create_temp().unwrap();
    let block = [0x5a; 1024];
    let mut stored = 0u64;
    let refused = loop {
        match files.append(temporary, &block) {
            Ok(()) => stored += 1024,
            Err(err) => break err,
        }
        assert!(stored <= room, "more than the room it announced");
    };
    assert_eq!(refused, FileError::QuotaExceeded);
    assert!(
        stored + 1024 > room - 4096,
        "it stopped {} bytes early",
        room - stored
    );
    files.close(temporary).unwrap();
    assert_eq!(files.available(), room);
    receive(&mut files, "after.bin", &pattern(10_000, 3)).unwrap();
}

#[test]
fn a_flash_unfit_for_littlefs_is_refused() {
    let medium = Medium::new(8);
    let mut fs = filesystem(&medium);
    assert_eq!(
        Files::mount(fs.as_mut()).map(drop),
        Err(MountError::Geometry)
    );
}

#[test]
fn a_power_cut_anywhere_keeps_the_old_files_and_never_shows_a_partial_one() {
    let old = pattern(3000, 1);
    let new = pattern(6000, 2);
    let medium = Medium::new(32);
    {
        let mut fs = filesystem(&medium);
        let (mut files, _) = Files::mount(fs.as_mut()).unwrap();
        receive(&mut files, "old.txt", &old).unwrap();
    }
    let before = medium.bytes.borrow().clone();

    // How many flash operations a whole boot with the transfer takes.
    let boot = |medium: &Medium| {
        let mut fs = filesystem(medium);
        let (mut files, _) = Files::mount(fs.as_mut()).map_err(|_| FileError::Io)?;
        files.discard_temporaries()?;
        receive(&mut files, "new.txt", &new)
    };
    medium.operations.set(0);
    boot(&medium).unwrap();
    let operations = medium.operations.get();
    assert!(operations > 20, "{operations}");

    let mut completed = 0;
    for cut in 0..operations {
        *medium.bytes.borrow_mut() = before.clone();
        medium.operations.set(0);
        medium.cut_at.set(Some(cut));
        assert!(
            boot(&medium).is_err(),
            "the cut at operation {cut} was felt"
        );
        medium.reboot();

        let mut fs = filesystem(&medium);
        let (mut files, mounted) =
            Files::mount(fs.as_mut()).unwrap_or_else(|err| panic!("cut at operation {cut}: {err}"));
        assert_eq!(mounted, Mounted::Existing, "cut at operation {cut}");
        files.discard_temporaries().unwrap();
        assert_eq!(
            read_back(&mut files, "old.txt").unwrap(),
            old,
            "cut at {cut}"
        );
        match read_back(&mut files, "new.txt") {
            Ok(data) => {
                assert_eq!(data, new, "cut at operation {cut}: a partial file");
                completed += 1;
            }
            Err(err) => assert_eq!(err, FileError::NotFound, "cut at operation {cut}"),
        }
        assert!(
            matches!(files.first_temporary(), Ok(None)),
            "cut at operation {cut}"
        );
        // The file system still takes the whole transfer.
        receive(&mut files, "again.txt", &new).unwrap();
    }
    // Only the cuts during the rename's own commit can leave the new file in place.
    assert!(
        completed < 4,
        "{completed} of {operations} cuts kept the new file"
    );
    std::println!("{operations} flash operations, each cut once: {completed} kept the new file");
}
