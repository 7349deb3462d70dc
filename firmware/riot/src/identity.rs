//! The storage key: the 32-byte key jeton-core's Matrix client encrypts its jeton-olm pickles
//! (the Olm account, sessions, room keys) with, made on the device from the hardware RNG at
//! the first boot and kept in its own sector of jeton's flash region:
//!
//! ```text
//! storage key sector:  "JETONSK1" | 32-byte storage key
//! ```
//!
//! The 8-byte marker is programmed last, after the key, into an erased sector, so a power cut
//! while the key is written leaves a sector without a marker, which reads as "no key": no
//! pickle was made with it yet, since the Token boots only after the key is on flash.
//!
//! The key is kept next to the pickles; it makes the pickles' authentication meaningful but
//! protects nothing against someone who reads the whole flash. A board with a secure element
//! or key-derivation hardware should supply it instead.

use zeroize::Zeroizing;

use crate::flash::{Flash, FlashError, Region};
use crate::rng::{HardwareRng, RngError};

const STORAGE_KEY_MARKER: &[u8; 8] = b"JETONSK1";
const MARKER_LEN: u32 = 8;

/// Why the storage key could not be read or made.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityError {
    /// Flash could not be read or written.
    Flash(FlashError),
    /// No random source fit for key material.
    Rng(RngError),
}

impl core::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "the storage key is not accessible: {err}"),
            Self::Rng(err) => write!(f, "no storage key can be generated: {err}"),
        }
    }
}

impl core::error::Error for IdentityError {}

impl From<FlashError> for IdentityError {
    fn from(err: FlashError) -> Self {
        Self::Flash(err)
    }
}

/// Whether `region`'s sector holds a committed record.
fn has_record(flash: &Flash, region: Region, marker: &[u8; 8]) -> Result<bool, FlashError> {
    let mut found = [0u8; 8];
    flash.read(region, 0, &mut found)?;
    Ok(&found == marker)
}

/// Erases `region`'s sector, programs `body` after the marker's place, then the marker.
fn write_record(
    flash: &Flash,
    region: Region,
    marker: &[u8; 8],
    body: &[u8],
) -> Result<(), FlashError> {
    flash.erase(region)?;
    flash.write(region, MARKER_LEN, body)?;
    flash.write(region, 0, marker)
}

/// The storage key, created on first use.
pub(crate) fn storage_key(flash: &Flash) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if has_record(flash, Region::StorageKey, STORAGE_KEY_MARKER)? {
        flash.read(Region::StorageKey, MARKER_LEN, &mut key[..])?;
        return Ok(key);
    }
    let mut rng = HardwareRng::new().map_err(IdentityError::Rng)?;
    rand_core::Rng::fill_bytes(&mut rng, &mut key[..]);
    write_record(flash, Region::StorageKey, STORAGE_KEY_MARKER, &key[..])?;
    Ok(key)
}
