//! Names and paths: the plain names files are stored and sent under, and the NUL-terminated
//! paths littlefs takes.

use core::ffi::c_char;
use core::fmt::{self, Write};

use jeton_core::files::{FileError, MAX_FILE_NAME};
use littlefs2_sys as lfs;

use crate::{PATH_CAPACITY, RECEIVED};

/// A name the token stores or sends a file under: a plain file name.
pub(crate) fn check_name(name: &str) -> Result<(), FileError> {
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
pub(crate) struct Path {
    bytes: [u8; PATH_CAPACITY],
    len: usize,
}

impl Path {
    /// `dir/name` (`dir` alone when `name` is empty, `name` alone when `dir` is).
    pub(crate) fn new(dir: &str, name: &str) -> Result<Path, FileError> {
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
    pub(crate) fn received(name: &str, variant: u32) -> Result<Path, FileError> {
        let mut path = Path::new(RECEIVED, name)?;
        if variant > 1 {
            write!(path, " ({variant})").map_err(|_| FileError::BadName)?;
        }
        Ok(path)
    }

    pub(crate) fn as_str(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|bytes| core::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    pub(crate) fn as_ptr(&self) -> *const c_char {
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
pub(crate) fn name_of(info: &lfs::lfs_info) -> &str {
    // SAFETY: lfs_info.name is a char array; viewing it as bytes changes nothing.
    let bytes: &[u8] =
        unsafe { core::slice::from_raw_parts(info.name.as_ptr().cast(), info.name.len()) };
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    bytes
        .get(..len)
        .and_then(|name| core::str::from_utf8(name).ok())
        .unwrap_or_default()
}
