//! The two transfer pipelines over a [`FileStore`]: an [`Upload`] reads a source file and
//! encrypts it one block at a time; a [`Download`] stores a ciphertext as it arrives, checks its
//! SHA-256, and only then decrypts it into a second temporary file that becomes the received
//! file. Neither ever holds more than one block of the file.

use heapless::String;

use super::attachment::{AttachmentKey, CiphertextHash, Decryptor, EncryptedFile, Encryptor};
use super::{FileError, FileHandle, FileStore, MAX_FILE_NAME, MAX_FILE_SIZE, MAX_MIME_TYPE};
use crate::platform::Rng;

/// A file being encrypted for upload, block by block from its source.
#[derive(Debug)]
pub struct Upload {
    key: AttachmentKey,
    encryptor: Encryptor,
    source: FileHandle,
    size: u64,
}

impl Upload {
    /// Opens `path` (as the platform names files) and draws a fresh key and IV.
    pub fn start(
        files: &mut dyn FileStore,
        path: &str,
        rng: &mut impl Rng,
    ) -> Result<Self, FileError> {
        if path.is_empty() {
            return Err(FileError::BadName);
        }
        let (source, size) = files.open(path)?;
        if size > MAX_FILE_SIZE {
            let _ = files.close(source);
            return Err(FileError::TooLarge);
        }
        let key = AttachmentKey::generate(rng);
        let encryptor = Encryptor::new();
        Ok(Upload {
            key,
            encryptor,
            source,
            size,
        })
    }

    /// The plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes encrypted so far.
    pub fn offset(&self) -> u64 {
        self.encryptor.offset()
    }

    /// Whether every byte was encrypted.
    pub fn is_complete(&self) -> bool {
        self.encryptor.offset() >= self.size
    }

    /// Reads and encrypts the next block into `out` (its whole length unless the file ends);
    /// returns its length.
    pub fn next_block(
        &mut self,
        files: &mut dyn FileStore,
        out: &mut [u8],
    ) -> Result<usize, FileError> {
        let mut filled = 0;
        while filled < out.len() {
            let offset = self.encryptor.offset() + filled as u64;
            let rest = out.get_mut(filled..).unwrap_or_default();
            let read = files.read_at(self.source, offset, rest)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled < out.len() && self.encryptor.offset() + (filled as u64) < self.size {
            // The source shrank while it was being sent.
            return Err(FileError::Incomplete);
        }
        self.encryptor
            .encrypt(&self.key, out.get_mut(..filled).unwrap_or_default());
        Ok(filled)
    }

    /// The gateway lost the blocks it had (4.08): start again from the first block, with the
    /// same key, so the same ciphertext.
    pub fn restart(&mut self) {
        self.encryptor = Encryptor::new();
    }

    /// The last block's exchange failed: [`Upload::next_block`] produces it again.
    pub fn repeat_last_block(&mut self) {
        self.encryptor.rewind_last();
    }

    /// Closes the source and returns the key and the ciphertext's SHA-256, for the event.
    pub fn finish(self, files: &mut dyn FileStore) -> (AttachmentKey, [u8; 32]) {
        let _ = files.close(self.source);
        (self.key, self.encryptor.finish())
    }

    /// Closes the source without sending anything.
    pub fn abandon(self, files: &mut dyn FileStore) {
        let _ = files.close(self.source);
    }
}

/// A received file being downloaded, checked and decrypted.
#[derive(Debug)]
pub struct Download {
    file: EncryptedFile,
    /// The file name it will be stored under.
    pub name: String<MAX_FILE_NAME>,
    /// Its MIME type, as the event says.
    pub mimetype: String<MAX_MIME_TYPE>,
    ciphertext: FileHandle,
    hash: CiphertextHash,
    received: u64,
}

/// A file that was received, checked and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    /// The name it is stored under.
    pub name: String<MAX_FILE_NAME>,
    /// Its MIME type.
    pub mimetype: String<MAX_MIME_TYPE>,
    /// Its size.
    pub size: u64,
}

/// `text` cut to at most `N` bytes at a character boundary.
fn cut<const N: usize>(text: &str) -> String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    String::try_from(text.get(..end).unwrap_or_default()).unwrap_or_default()
}

/// A file name safe to store: no directory part, no leading dot, never empty.
fn safe_name(name: &str) -> String<MAX_FILE_NAME> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = base.trim_start_matches('.');
    let cleaned: String<MAX_FILE_NAME> = cut(base);
    if cleaned.is_empty() || cleaned.chars().any(char::is_control) {
        cut("file")
    } else {
        cleaned
    }
}

impl Download {
    /// Prepares to receive `file`, announced as `size` bytes (the event's `info.size`, if any).
    pub fn start(
        files: &mut dyn FileStore,
        file: EncryptedFile,
        name: &str,
        mimetype: &str,
        size: Option<u64>,
    ) -> Result<Self, FileError> {
        if let Some(size) = size {
            Self::check_room(files, size)?;
        }
        let ciphertext = files.create_temp()?;
        Ok(Download {
            file,
            name: safe_name(name),
            mimetype: cut(mimetype),
            ciphertext,
            hash: CiphertextHash::default(),
            received: 0,
        })
    }

    /// The ciphertext and then the plaintext are both on storage for a moment.
    fn check_room(files: &mut dyn FileStore, size: u64) -> Result<(), FileError> {
        if size > MAX_FILE_SIZE {
            return Err(FileError::TooLarge);
        }
        if size.saturating_mul(2) > files.available() {
            return Err(FileError::QuotaExceeded);
        }
        Ok(())
    }

    /// The `mxc://` URL to download.
    pub fn url(&self) -> &str {
        &self.file.url
    }

    /// Ciphertext bytes stored so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The total size once the first block told it (CoAP Size2).
    pub fn expect_total(&mut self, files: &mut dyn FileStore, total: u64) -> Result<(), FileError> {
        Self::check_room(files, total)
    }

    /// Stores and hashes the block at `offset`; what is already stored (a duplicate, or the
    /// start of a transfer resumed at an earlier block) is skipped, a gap is an error.
    pub fn absorb(
        &mut self,
        files: &mut dyn FileStore,
        offset: u64,
        block: &[u8],
    ) -> Result<(), FileError> {
        let end = offset + block.len() as u64;
        if end <= self.received {
            return Ok(());
        }
        if offset > self.received {
            return Err(FileError::Incomplete);
        }
        let skip = usize::try_from(self.received - offset).map_err(|_| FileError::Incomplete)?;
        let block = block.get(skip..).unwrap_or_default();
        if end > MAX_FILE_SIZE {
            return Err(FileError::TooLarge);
        }
        files.append(self.ciphertext, block)?;
        self.hash.update(block);
        self.received = end;
        Ok(())
    }

    /// The whole ciphertext is stored: checks its SHA-256 and only then decrypts it, through
    /// `work` (one block at a time), into the received file. Every temporary file is gone
    /// afterwards, whatever the outcome.
    pub fn finish(
        self,
        files: &mut dyn FileStore,
        work: &mut [u8],
    ) -> Result<ReceivedFile, FileError> {
        let Download {
            file,
            name,
            mimetype,
            ciphertext,
            hash,
            received,
        } = self;
        let result = (|| {
            hash.verify(&file.sha256)?;
            let plaintext = files.create_temp()?;
            let decrypted = decrypt_into(files, &file.key, ciphertext, plaintext, received, work)
                .and_then(|()| files.commit(plaintext, &name));
            if decrypted.is_err() {
                let _ = files.close(plaintext);
            }
            decrypted
        })();
        let _ = files.close(ciphertext);
        result.map(|()| ReceivedFile {
            name,
            mimetype,
            size: received,
        })
    }

    /// Gives up: deletes the temporary file.
    pub fn abandon(self, files: &mut dyn FileStore) {
        let _ = files.close(self.ciphertext);
    }
}

fn decrypt_into(
    files: &mut dyn FileStore,
    key: &AttachmentKey,
    ciphertext: FileHandle,
    plaintext: FileHandle,
    len: u64,
    work: &mut [u8],
) -> Result<(), FileError> {
    let mut decryptor = Decryptor::new(key);
    let mut offset = 0u64;
    while offset < len {
        let read = files.read_at(ciphertext, offset, work)?;
        if read == 0 {
            return Err(FileError::Incomplete);
        }
        let block = work.get_mut(..read).unwrap_or_default();
        decryptor.decrypt(block);
        files.append(plaintext, block)?;
        offset += read as u64;
    }
    work.fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_names_lose_directories_and_stay_bounded() {
        assert_eq!(safe_name("../../etc/passwd").as_str(), "passwd");
        assert_eq!(safe_name("C:\\x\\y.txt").as_str(), "y.txt");
        assert_eq!(safe_name(".hidden").as_str(), "hidden");
        assert_eq!(safe_name("").as_str(), "file");
        assert_eq!(safe_name("a\u{7}b").as_str(), "file");
        let long = "é".repeat(100);
        let name = safe_name(&long);
        assert!(name.len() <= MAX_FILE_NAME && name.chars().all(|c| c == 'é'));
    }
}
