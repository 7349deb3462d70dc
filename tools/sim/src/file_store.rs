//! A [`Store`] on a directory: one file per record, replaced atomically.
//!
//! `put` writes the record to a temporary file, syncs it, renames it over the record and
//! syncs the directory, so a crash leaves the old or the new record and a returned `put`
//! is on disk: the contract of [`jeton_core::store`].

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use jeton_core::store::{MAX_RECORD_SIZE, RecordId, Store, StoreError};

/// Records as files `record-XXXX` in a directory.
#[derive(Debug)]
pub(crate) struct FileStore {
    dir: PathBuf,
    files: Option<crate::host_files::HostFiles>,
}

impl FileStore {
    /// A store in `dir`, created if missing.
    pub(crate) fn open(dir: &Path) -> std::io::Result<FileStore> {
        fs::create_dir_all(dir)?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            files: None,
        })
    }

    /// The store with file storage for sending and receiving files.
    pub(crate) fn with_files(mut self, files: crate::host_files::HostFiles) -> Self {
        self.files = Some(files);
        self
    }

    fn path(&self, id: RecordId) -> PathBuf {
        self.dir.join(format!("record-{id:04x}"))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()
    }
}

impl Store for FileStore {
    fn get(&mut self, id: RecordId, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        match fs::read(self.path(id)) {
            Ok(bytes) => {
                let target = out
                    .get_mut(..bytes.len())
                    .ok_or(StoreError::BufferTooSmall)?;
                target.copy_from_slice(&bytes);
                Ok(Some(bytes.len()))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(_) => Err(StoreError::Io),
        }
    }

    fn put(&mut self, id: RecordId, data: &[u8]) -> Result<(), StoreError> {
        if data.len() > MAX_RECORD_SIZE {
            return Err(StoreError::TooLarge);
        }
        let path = self.path(id);
        let temporary = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(data)?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            self.sync_dir()
        };
        write().map_err(|_| StoreError::Io)
    }

    fn remove(&mut self, id: RecordId) -> Result<(), StoreError> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => self.sync_dir().map_err(|_| StoreError::Io),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(_) => Err(StoreError::Io),
        }
    }

    fn files(&mut self) -> Option<&mut dyn jeton_core::files::FileStore> {
        self.files
            .as_mut()
            .map(|files| files as &mut dyn jeton_core::files::FileStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_removal_is_durable() {
        let dir = std::env::temp_dir().join(format!("jeton-sim-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = FileStore::open(&dir).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(store.get(3, &mut out), Ok(None));
        store.put(3, b"first").unwrap();
        store.put(3, b"second").unwrap();
        store.put(4, b"other").unwrap();
        store.remove(4).unwrap();
        store.remove(4).unwrap();
        let mut reopened = FileStore::open(&dir).unwrap();
        assert_eq!(reopened.get(3, &mut out), Ok(Some(6)));
        assert_eq!(&out[..6], b"second");
        assert_eq!(reopened.get(4, &mut out), Ok(None));
        assert_eq!(
            reopened.get(3, &mut [0u8; 2]),
            Err(StoreError::BufferTooSmall)
        );
        assert_eq!(
            reopened.put(5, &vec![0u8; MAX_RECORD_SIZE + 1]),
            Err(StoreError::TooLarge)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
