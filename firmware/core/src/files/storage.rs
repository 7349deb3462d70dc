//! The platform trait for file storage and the limits that bound it.

use core::fmt;

/// The largest file the token sends or receives (16 MiB, the gateway's default media limit).
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// The longest file name kept (bytes of UTF-8); a longer received name is cut at a character
/// boundary, a longer name to send is refused.
pub const MAX_FILE_NAME: usize = 96;
/// The longest MIME type kept.
pub const MAX_MIME_TYPE: usize = 64;

/// A file the platform opened or created for the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHandle(pub u32);

/// Why a file operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The platform has no file storage.
    Unsupported,
    /// No file by that name.
    NotFound,
    /// The file is larger than [`MAX_FILE_SIZE`].
    TooLarge,
    /// The storage quota would be exceeded.
    QuotaExceeded,
    /// The file name is empty, too long, or names a directory.
    BadName,
    /// The medium reported an error.
    Io,
    /// The received ciphertext's SHA-256 is not the one the event promised: nothing was stored.
    HashMismatch,
    /// The event's `file` object is not an encrypted attachment this token reads.
    BadAttachment,
    /// Blocks arrived out of order or the transfer ended early.
    Incomplete,
    /// A transfer is already under way (one at a time).
    Busy,
    /// Files go only to end-to-end encrypted rooms (the key travels in the event).
    UnencryptedRoom,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileError::Unsupported => "this device has no file storage",
            FileError::NotFound => "the file does not exist",
            FileError::TooLarge => {
                "the file is larger than the limit of the token, the gateway or the homeserver"
            }
            FileError::QuotaExceeded => "the file storage quota would be exceeded",
            FileError::BadName => "the file name is not usable (empty, too long, or a directory)",
            FileError::Io => "the file storage reported an error",
            FileError::HashMismatch => {
                "the received file does not match its SHA-256: it was tampered with or damaged, and was not stored"
            }
            FileError::BadAttachment => "the event's encrypted file description is not usable",
            FileError::Incomplete => "the file transfer was cut short",
            FileError::Busy => "another file transfer is under way",
            FileError::UnencryptedRoom => "files are sent only to end-to-end encrypted rooms",
        })
    }
}

impl core::error::Error for FileError {}

/// File storage, as a platform provides it: source files to send, temporary files that become
/// received files only when committed.
///
/// # The contract, for implementers
///
/// - A temporary file ([`FileStore::create_temp`]) is never visible as a received file. Only
///   [`FileStore::commit`] makes it one, atomically (write, `fsync`, rename). Temporary files
///   left by a power cut are discarded by [`FileStore::discard_temporaries`], which the
///   platform calls at boot.
/// - [`FileStore::append`] fails with [`FileError::QuotaExceeded`] rather than fill the
///   medium; [`FileStore::available`] tells how much room is left.
/// - Names are plain file names (no directory part); the platform decides where they live.
pub trait FileStore {
    /// Opens a file to send; returns it and its size.
    fn open(&mut self, name: &str) -> Result<(FileHandle, u64), FileError>;
    /// Creates an empty temporary file.
    fn create_temp(&mut self) -> Result<FileHandle, FileError>;
    /// Appends to a temporary file.
    fn append(&mut self, file: FileHandle, data: &[u8]) -> Result<(), FileError>;
    /// Reads from `offset`; returns the bytes read (0 at the end).
    fn read_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, FileError>;
    /// Makes a complete temporary file a received file named `name` (replacing none: the
    /// platform picks a free name if `name` is taken); returns nothing more.
    fn commit(&mut self, file: FileHandle, name: &str) -> Result<(), FileError>;
    /// Closes a file opened for sending, or deletes a temporary file.
    fn close(&mut self, file: FileHandle) -> Result<(), FileError>;
    /// Bytes the token may still store.
    fn available(&mut self) -> u64;
    /// Deletes every temporary file (at boot: what a power cut left).
    fn discard_temporaries(&mut self) -> Result<(), FileError>;
}
