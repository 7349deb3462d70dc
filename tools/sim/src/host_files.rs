//! The token's file storage on the host: files to send are read where the user names them,
//! received files land in the files directory (`<state dir>/files/` unless `--files-dir`
//! names another), and transfers in progress live in its `.partial/` until they are complete
//! (then renamed into place), so a file there is always whole. What a crash leaves in
//! `.partial/` is deleted at start. Where each received file was stored goes to
//! [`Saved`], for the shell to print.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use jeton_core::files::{FileError, FileHandle, FileStore};

/// An open source file or a temporary file.
#[derive(Debug)]
struct Open {
    file: fs::File,
    /// Set for a temporary file: deleted when closed.
    temporary: Option<PathBuf>,
}

/// The paths received files were stored under, oldest first, until the shell takes them.
pub(crate) type Saved = Rc<RefCell<VecDeque<PathBuf>>>;

/// Files of the simulated token.
#[derive(Debug)]
pub(crate) struct HostFiles {
    received: PathBuf,
    partial: PathBuf,
    quota: u64,
    open: HashMap<u32, Open>,
    next: u32,
    saved: Saved,
}

fn io(_: std::io::Error) -> FileError {
    FileError::Io
}

impl HostFiles {
    /// Storage in the directory `received`, holding at most `quota` bytes of received files;
    /// where each one is stored goes to `saved`.
    pub(crate) fn new(received: &Path, quota: u64, saved: Saved) -> std::io::Result<HostFiles> {
        let partial = received.join(".partial");
        fs::create_dir_all(&partial)?;
        Ok(HostFiles {
            received: received.to_path_buf(),
            partial,
            quota,
            open: HashMap::new(),
            next: 0,
            saved,
        })
    }

    fn used(&self) -> u64 {
        [&self.received, &self.partial]
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .filter(fs::Metadata::is_file)
            .map(|m| m.len())
            .sum()
    }

    fn insert(&mut self, open: Open) -> FileHandle {
        self.next += 1;
        self.open.insert(self.next, open);
        FileHandle(self.next)
    }

    fn get(&mut self, file: FileHandle) -> Result<&mut Open, FileError> {
        self.open.get_mut(&file.0).ok_or(FileError::NotFound)
    }
}

impl FileStore for HostFiles {
    fn open(&mut self, name: &str) -> Result<(FileHandle, u64), FileError> {
        let file = fs::File::open(name).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound,
            _ => FileError::Io,
        })?;
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            // A directory opens on Unix, and only its reads fail.
            return Err(FileError::BadName);
        }
        let size = metadata.len();
        Ok((
            self.insert(Open {
                file,
                temporary: None,
            }),
            size,
        ))
    }

    fn create_temp(&mut self) -> Result<FileHandle, FileError> {
        let path = self
            .partial
            .join(format!("{}-{}.part", std::process::id(), self.next + 1));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        Ok(self.insert(Open {
            file,
            temporary: Some(path),
        }))
    }

    fn append(&mut self, file: FileHandle, data: &[u8]) -> Result<(), FileError> {
        if self.used() + data.len() as u64 > self.quota {
            return Err(FileError::QuotaExceeded);
        }
        self.get(file)?.file.write_all(data).map_err(io)
    }

    fn read_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, FileError> {
        use std::io::{Read, Seek, SeekFrom};
        let open = self.get(file)?;
        open.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let read = open.file.read(out).map_err(io)?;
        // Appends continue at the end.
        open.file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(read)
    }

    fn commit(&mut self, file: FileHandle, name: &str) -> Result<(), FileError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(FileError::BadName);
        }
        let open = self.open.remove(&file.0).ok_or(FileError::NotFound)?;
        let temporary = open.temporary.ok_or(FileError::NotFound)?;
        open.file.sync_all().map_err(io)?;
        drop(open.file);
        // A free name: "name", then "name (2)", ...
        let mut target = self.received.join(name);
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = self.received.join(format!("{name} ({n})"));
        }
        fs::rename(&temporary, &target).map_err(io)?;
        fs::File::open(&self.received)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
        self.saved
            .borrow_mut()
            .push_back(fs::canonicalize(&target).unwrap_or(target));
        Ok(())
    }

    fn close(&mut self, file: FileHandle) -> Result<(), FileError> {
        if let Some(Open {
            temporary: Some(path),
            ..
        }) = self.open.remove(&file.0)
        {
            fs::remove_file(path).map_err(io)?;
        }
        Ok(())
    }

    fn available(&mut self) -> u64 {
        self.quota.saturating_sub(self.used())
    }

    fn discard_temporaries(&mut self) -> Result<(), FileError> {
        for entry in fs::read_dir(&self.partial).map_err(io)? {
            fs::remove_file(entry.map_err(io)?.path()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appears_only_when_committed_and_leftovers_are_discarded() {
        let dir = std::env::temp_dir().join(format!("jeton-sim-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let saved = Saved::default();
        let mut files = HostFiles::new(&dir.join("files"), 1000, saved.clone()).unwrap();
        let temp = files.create_temp().unwrap();
        files.append(temp, b"hello ").unwrap();
        files.append(temp, b"world").unwrap();
        let mut out = [0u8; 5];
        assert_eq!(files.read_at(temp, 6, &mut out).unwrap(), 5);
        assert_eq!(&out, b"world");
        assert!(
            fs::read_dir(dir.join("files")).unwrap().count() == 1,
            "only .partial"
        );
        files.commit(temp, "greeting.txt").unwrap();
        assert_eq!(
            fs::read(dir.join("files/greeting.txt")).unwrap(),
            b"hello world"
        );
        // The same name again gets a free one; a name with a directory is refused.
        let again = files.create_temp().unwrap();
        files.commit(again, "greeting.txt").unwrap();
        assert!(dir.join("files/greeting.txt (2)").exists());
        let stored: Vec<PathBuf> = saved.borrow_mut().drain(..).collect();
        let files_dir = fs::canonicalize(dir.join("files")).unwrap();
        assert_eq!(
            stored,
            [
                files_dir.join("greeting.txt"),
                files_dir.join("greeting.txt (2)")
            ]
        );
        let bad = files.create_temp().unwrap();
        assert_eq!(files.commit(bad, "../x"), Err(FileError::BadName));
        // Beyond the quota, and what a crash leaves.
        let big = files.create_temp().unwrap();
        assert_eq!(files.append(big, &[0; 1000]), Err(FileError::QuotaExceeded));
        files.discard_temporaries().unwrap();
        assert_eq!(fs::read_dir(dir.join("files/.partial")).unwrap().count(), 0);
        let (source, size) = files
            .open(dir.join("files/greeting.txt").to_str().unwrap())
            .unwrap();
        assert_eq!(size, 11);
        files.close(source).unwrap();
        let directory = files.open(dir.to_str().unwrap());
        assert_eq!(directory.map(|(_, size)| size), Err(FileError::BadName));
        fs::remove_dir_all(&dir).unwrap();
    }
}
