//! The device identity: the Curve25519 and Ed25519 key pairs that make the token a Matrix
//! device, created on the device from the hardware RNG and kept in the identity sector.
//!
//! Until jeton-olm's account type is available to this crate, the identity is the two raw
//! secrets an Olm account is built from (a Curve25519 secret and an Ed25519 seed); the public
//! keys are derived with the same dalek crates jeton-olm uses. The record is written once and
//! checked on every load:
//!
//! ```text
//! offset  0  "JETONID1"                      magic and format version
//! offset  8  Curve25519 secret (32 bytes)
//! offset 40  Ed25519 seed (32 bytes)
//! offset 72  SHA-256(bytes 0..72)[..16]      detects a torn or foreign record
//! ```
//!
//! A record whose check fails (a power cut while it was written) is treated as absent: its keys
//! were never shown to anyone, because they are only printed after the record reads back.
//! The secrets are stored in the clear; encrypting them with a device storage key is
//! jeton-core's `Store` job once it exists.

use base64ct::{Base64Unpadded, Encoding};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::flash::{Flash, FlashError, Region};
use crate::rng::{HardwareRng, RngError};

const MAGIC: &[u8; 8] = b"JETONID1";
const CHECK_LEN: usize = 16;
const RECORD_LEN: usize = 8 + 32 + 32 + CHECK_LEN;
/// Length of a 32-byte key in unpadded base64.
pub(crate) const KEY_BASE64_LEN: usize = 43;

/// Why the identity could not be loaded or created.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityError {
    /// Flash could not be read or written.
    Flash(FlashError),
    /// No random source fit for key material.
    Rng(RngError),
    /// The record written did not read back identically.
    NotPersisted,
}

impl core::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "the identity record is not accessible: {err}"),
            Self::Rng(err) => write!(f, "no identity can be generated: {err}"),
            Self::NotPersisted => f.write_str("the identity record did not read back intact"),
        }
    }
}

impl core::error::Error for IdentityError {}

impl From<FlashError> for IdentityError {
    fn from(err: FlashError) -> Self {
        Self::Flash(err)
    }
}

/// Whether [`Identity::load_or_create`] found a record or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Loaded,
    Created,
}

/// The device's long-term key pairs. `Debug` shows public keys only.
pub(crate) struct Identity {
    curve25519: StaticSecret,
    ed25519: SigningKey,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut curve = [0u8; KEY_BASE64_LEN];
        let mut ed = [0u8; KEY_BASE64_LEN];
        f.debug_struct("Identity")
            .field("curve25519", &self.curve25519_base64(&mut curve))
            .field("ed25519", &self.ed25519_base64(&mut ed))
            .finish()
    }
}

fn check_of(body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::digest(body);
    let mut check = [0u8; CHECK_LEN];
    for (out, byte) in check.iter_mut().zip(digest.iter()) {
        *out = *byte;
    }
    check
}

impl Identity {
    /// Reads the identity record, or creates, writes and re-reads one if there is none.
    pub(crate) fn load_or_create(flash: &Flash) -> Result<(Self, Origin), IdentityError> {
        if let Some(identity) = Self::load(flash)? {
            return Ok((identity, Origin::Loaded));
        }
        let mut rng = HardwareRng::new().map_err(IdentityError::Rng)?;
        let mut record = Zeroizing::new([0u8; RECORD_LEN]);
        let (body, check) = record.split_at_mut(RECORD_LEN - CHECK_LEN);
        let (magic, secrets) = body.split_at_mut(MAGIC.len());
        magic.copy_from_slice(MAGIC);
        rand_core::Rng::fill_bytes(&mut rng, secrets);
        check.copy_from_slice(&check_of(body));

        flash.erase(Region::Identity)?;
        flash.write(Region::Identity, 0, &record[..])?;
        match Self::load(flash)? {
            Some(identity) => Ok((identity, Origin::Created)),
            None => Err(IdentityError::NotPersisted),
        }
    }

    /// Reads the identity record; `None` if the sector holds no intact record.
    pub(crate) fn load(flash: &Flash) -> Result<Option<Self>, IdentityError> {
        let mut record = Zeroizing::new([0u8; RECORD_LEN]);
        flash.read(Region::Identity, 0, &mut record[..])?;
        let (body, check) = record.split_at(RECORD_LEN - CHECK_LEN);
        let (magic, secrets) = body.split_at(MAGIC.len());
        if magic != MAGIC || check != check_of(body) {
            return Ok(None);
        }
        let (curve, ed) = secrets.split_at(32);
        let mut curve_secret = Zeroizing::new([0u8; 32]);
        let mut ed_seed = Zeroizing::new([0u8; 32]);
        curve_secret.copy_from_slice(curve);
        ed_seed.copy_from_slice(ed);
        Ok(Some(Self {
            curve25519: StaticSecret::from(*curve_secret),
            ed25519: SigningKey::from_bytes(&ed_seed),
        }))
    }

    /// The Curve25519 identity key in unpadded base64, as Matrix shows it.
    pub(crate) fn curve25519_base64<'o>(&self, out: &'o mut [u8; KEY_BASE64_LEN]) -> &'o str {
        let public = PublicKey::from(&self.curve25519);
        Base64Unpadded::encode(public.as_bytes(), out).unwrap_or("?")
    }

    /// The Ed25519 fingerprint key in unpadded base64, as Matrix shows it.
    pub(crate) fn ed25519_base64<'o>(&self, out: &'o mut [u8; KEY_BASE64_LEN]) -> &'o str {
        let public = self.ed25519.verifying_key();
        Base64Unpadded::encode(public.as_bytes(), out).unwrap_or("?")
    }
}
