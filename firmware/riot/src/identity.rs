//! The device identity: jeton-olm's Olm [`Account`], created on the device from the hardware
//! RNG and kept on flash as an encrypted pickle.
//!
//! Two records, each in its own sector of jeton's flash region:
//!
//! ```text
//! storage key sector:  "JETONSK1" | 32-byte storage key
//! account sector:      "JETONAC1" | pickle length (u16 LE) | jeton-olm account pickle
//! ```
//!
//! Each record's 8-byte marker is programmed last, after its body, into an erased sector, so a
//! power cut while a record is written leaves a sector without a marker, which reads as "no
//! record": the half-made identity was never shown to anyone. A record *with* its marker whose
//! pickle does not open is an error, never a reason to make a new identity silently.
//!
//! The storage key is a random key kept next to the pickles; it makes the pickles'
//! authentication meaningful but protects nothing against someone who reads the whole flash.
//! A board with a secure element or key-derivation hardware should supply it instead.

use jeton_olm::olm::{Account, IdentityKeys};
use jeton_olm::{Pickle, PickleError};
use zeroize::Zeroizing;

use crate::flash::{Flash, FlashError, Region};
use crate::rng::{HardwareRng, RngError};

/// One-time keys the stored account holds. Its pickle must fit one 4 KiB sector.
pub(crate) const ONE_TIME_KEYS: usize = 20;

/// The device's Olm account.
pub(crate) type DeviceAccount = Account<ONE_TIME_KEYS>;

const ACCOUNT_MARKER: &[u8; 8] = b"JETONAC1";
const STORAGE_KEY_MARKER: &[u8; 8] = b"JETONSK1";
const MARKER_LEN: u32 = 8;
const LENGTH_LEN: u32 = 2;
const PICKLE_CAPACITY: usize = <DeviceAccount as Pickle>::MAX_PICKLE_SIZE;

/// Why the identity could not be loaded or created.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityError {
    /// Flash could not be read or written.
    Flash(FlashError),
    /// No random source fit for key material.
    Rng(RngError),
    /// A stored record is there but does not open.
    Pickle(PickleError),
    /// An account record exists but its storage key does not.
    StorageKeyMissing,
    /// The account's pickle does not fit the flash sector.
    TooLarge,
}

impl core::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "the identity is not accessible: {err}"),
            Self::Rng(err) => write!(f, "no identity can be generated: {err}"),
            Self::Pickle(err) => write!(f, "the stored identity does not open: {err}"),
            Self::StorageKeyMissing => {
                f.write_str("an identity is stored but the storage key that opens it is missing")
            }
            Self::TooLarge => f.write_str("the identity's pickle does not fit a flash sector"),
        }
    }
}

impl core::error::Error for IdentityError {}

impl From<FlashError> for IdentityError {
    fn from(err: FlashError) -> Self {
        Self::Flash(err)
    }
}

impl From<PickleError> for IdentityError {
    fn from(err: PickleError) -> Self {
        Self::Pickle(err)
    }
}

/// Whether [`load_or_create`] found the account or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Loaded,
    Created,
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
fn storage_key(flash: &Flash, create: bool) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if has_record(flash, Region::StorageKey, STORAGE_KEY_MARKER)? {
        flash.read(Region::StorageKey, MARKER_LEN, &mut key[..])?;
        return Ok(key);
    }
    if !create {
        return Err(IdentityError::StorageKeyMissing);
    }
    let mut rng = HardwareRng::new().map_err(IdentityError::Rng)?;
    rand_core::Rng::fill_bytes(&mut rng, &mut key[..]);
    write_record(flash, Region::StorageKey, STORAGE_KEY_MARKER, &key[..])?;
    Ok(key)
}

/// Reads the stored account; `None` if none was ever committed.
#[inline(never)]
pub(crate) fn load(flash: &Flash) -> Result<Option<DeviceAccount>, IdentityError> {
    if !has_record(flash, Region::Account, ACCOUNT_MARKER)? {
        return Ok(None);
    }
    let key = storage_key(flash, false)?;
    let mut length = [0u8; 2];
    flash.read(Region::Account, MARKER_LEN, &mut length)?;
    let length = usize::from(u16::from_le_bytes(length));
    let mut pickle = Zeroizing::new([0u8; PICKLE_CAPACITY]);
    let stored = pickle
        .get_mut(..length)
        .ok_or(IdentityError::Pickle(PickleError::InvalidLength))?;
    flash.read(Region::Account, MARKER_LEN + LENGTH_LEN, stored)?;
    Ok(Some(DeviceAccount::from_pickle(stored, &key)?))
}

/// What `keys` shows of the account: public keys and how many one-time keys it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdentitySummary {
    pub(crate) keys: IdentityKeys,
    pub(crate) one_time_keys: usize,
}

impl IdentitySummary {
    fn of(account: &DeviceAccount) -> Self {
        Self {
            keys: account.identity_keys(),
            one_time_keys: account.stored_one_time_key_count(),
        }
    }
}

/// Reads the stored account, or creates one (with its one-time keys), stores it and reads it
/// back.
///
/// Not inlined: the account and its pickle buffer are several KiB, and this keeps them off
/// the shell's frame except while `keys` runs.
#[inline(never)]
pub(crate) fn load_or_create(flash: &Flash) -> Result<(IdentitySummary, Origin), IdentityError> {
    if let Some(account) = load(flash)? {
        return Ok((IdentitySummary::of(&account), Origin::Loaded));
    }
    let created = create_and_store(flash)?;
    match load(flash)? {
        Some(stored) if IdentitySummary::of(&stored) == created => Ok((created, Origin::Created)),
        _ => Err(IdentityError::Flash(FlashError::ReadBackMismatch)),
    }
}

/// Creates an account with its one-time keys and commits its pickle to flash.
#[inline(never)]
fn create_and_store(flash: &Flash) -> Result<IdentitySummary, IdentityError> {
    let mut rng = HardwareRng::new().map_err(IdentityError::Rng)?;
    let key = storage_key(flash, true)?;
    let mut account = DeviceAccount::new(&mut rng);
    account.generate_one_time_keys(&mut rng, ONE_TIME_KEYS);

    let mut record = Zeroizing::new([0u8; 2 + PICKLE_CAPACITY]);
    let (length, pickle) = record.split_at_mut(2);
    let written = account.pickle(&mut rng, &key, pickle)?;
    let written_u16 = u16::try_from(written).map_err(|_| IdentityError::TooLarge)?;
    length.copy_from_slice(&written_u16.to_le_bytes());
    let body = record.get(..2 + written).ok_or(IdentityError::TooLarge)?;
    if body.len() + MARKER_LEN as usize > flash.sector_size() as usize {
        return Err(IdentityError::TooLarge);
    }
    write_record(flash, Region::Account, ACCOUNT_MARKER, body)?;
    Ok(IdentitySummary::of(&account))
}

/// The device's identity keys, if an account is stored.
#[inline(never)]
pub(crate) fn stored_keys(flash: &Flash) -> Result<Option<IdentityKeys>, IdentityError> {
    Ok(load(flash)?.map(|account| account.identity_keys()))
}
