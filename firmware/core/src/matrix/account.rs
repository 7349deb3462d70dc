//! The token's own Olm account: its identity keys, the one-time and fallback keys it
//! publishes, and how many of them the server holds; on flash in [`record::ACCOUNT`]
//! (pickled with the storage key).
//!
//! The device keys are signed over their canonical JSON and uploaded once after the first
//! login; one-time keys are made and uploaded a few at a time until the server holds half of
//! what the account keeps, and again when a sync reports that half of those were claimed; a
//! fallback key whenever the server has none unused. An account whose keys changed is on
//! flash before they are uploaded, and before an inbound Olm session that consumed one is
//! reported ([`super::olm_sessions`]). Boot makes the account in place, or unpickles it there
//! ([`super::boot`]).
//!
//! The cross-signing keys of the token's own user are kept apart, in
//! `cross_signing` (feature `cross-signing`).

use heapless::{String, Vec};

use jeton_olm::olm::Account;
use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::{KeysUploadResponse, SyncResponse};
use jeton_proto::write::{self, DeviceKeysUpload, SIGNED_CURVE25519, SignedKeyUpload, Signer};

use super::flash::Flash;
use super::rng::CryptoSource;
use super::*;
use crate::json::JsonWriter;
use crate::store::record;

/// The device's identity, for the `keys` command.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The user, once logged in.
    pub user_id: Option<UserId>,
    /// The device id, once logged in.
    pub device_id: Option<DeviceId>,
    /// The Curve25519 identity key (base64).
    pub curve25519: String<44>,
    /// The Ed25519 fingerprint key (base64).
    pub ed25519: String<44>,
}

/// A one-time or fallback key, signed: its id (base64), public key and signature.
type SignedKey = ([u8; 11], [u8; 32], [u8; 64]);

/// A signed key as the upload body takes it.
fn upload((name, key, signature): &SignedKey) -> SignedKeyUpload<'_> {
    SignedKeyUpload {
        key_id: core::str::from_utf8(name).unwrap_or_default(),
        key,
        signature,
    }
}

/// The token's Olm account and the state of its key uploads. Boot writes its fields in place
/// ([`super::boot`]), the account last: it is large.
#[repr(C)]
pub(super) struct OwnAccount {
    /// The Curve25519 identity key in base64, as Olm messages to the token name it.
    pub(super) curve_b64: String<44>,
    /// One-time keys the server holds, as last reported.
    pub(super) server_one_time_keys: u32,
    /// More one-time keys are to be uploaded.
    pub(super) one_time_keys_wanted: bool,
    /// A new fallback key is to be uploaded.
    pub(super) fallback_wanted: bool,
    /// The Olm account.
    pub(super) olm: Account<ONE_TIME_KEYS>,
}

impl OwnAccount {
    /// Writes the account to flash (after any change to its keys, before anything depends on
    /// it).
    pub(super) fn save<S: Store, R: Rng>(
        &self,
        flash: &mut Flash<S>,
        rng: &mut R,
    ) -> Result<(), TokenError> {
        save_account(flash, rng, &self.olm)
    }

    /// Whether keys are to be uploaded.
    pub(super) fn wants_upload(&self) -> bool {
        self.one_time_keys_wanted || self.fallback_wanted
    }

    /// Makes the keys the next upload carries: one-time keys up to the server's share, a
    /// batch at a time (bodies stay under the work buffer), and a fallback key if the server
    /// needs one; all of them with the device keys (`with_device_keys`, the first upload).
    fn replenish<R: Rng>(&mut self, rng: &mut R, with_device_keys: bool) {
        let unpublished = self.olm.one_time_keys().count();
        if self.one_time_keys_wanted || with_device_keys {
            let target = ONE_TIME_KEYS / 2;
            let missing = target.saturating_sub(self.server_one_time_keys as usize + unpublished);
            let count = missing.min(UPLOAD_BATCH.saturating_sub(unpublished));
            if count > 0 {
                let mut source = CryptoSource(rng);
                self.olm.generate_one_time_keys(&mut source, count);
            }
        }
        if (self.fallback_wanted || with_device_keys) && self.olm.fallback_key().is_none() {
            self.olm.generate_fallback_key(&mut CryptoSource(rng));
        }
    }

    /// A one-time (`fallback`: fallback) key signed over its canonical JSON (written into
    /// `scratch`).
    fn signed_key(
        &self,
        scratch: &mut [u8],
        id: jeton_olm::olm::KeyId,
        public: &jeton_olm::Curve25519PublicKey,
        fallback: bool,
    ) -> Result<SignedKey, TokenError> {
        let json = one_time_key_json(scratch, public.as_bytes(), fallback)?;
        let signature = self.olm.sign(json).to_bytes();
        let mut name = [0u8; 11];
        id.to_base64(&mut name);
        Ok((name, *public.as_bytes(), signature))
    }

    /// The `keys/upload` body of the unpublished keys (with the device keys, signed, when
    /// `with_device_keys`) into `out`: its length. Signatures are made over canonical JSON
    /// written into `scratch`.
    fn upload_body(
        &self,
        out: &mut [u8],
        scratch: &mut [u8],
        login: &Login,
        with_device_keys: bool,
    ) -> Result<usize, TokenError> {
        let signer = Signer {
            user_id: &login.user_id,
            device_id: &login.device_id,
        };
        let identity = self.olm.identity_keys();
        let device_signature = {
            let json = device_keys_json(
                scratch,
                &login.user_id,
                &login.device_id,
                identity.curve25519.as_bytes(),
                identity.ed25519.as_bytes(),
            )?;
            self.olm.sign(json).to_bytes()
        };
        let device = DeviceKeysUpload {
            curve25519: identity.curve25519.as_bytes(),
            ed25519: identity.ed25519.as_bytes(),
            signature: &device_signature,
        };
        let mut keys: Vec<SignedKey, UPLOAD_BATCH> = Vec::new();
        for (id, public) in self.olm.one_time_keys() {
            let _ = keys.push(self.signed_key(scratch, id, &public, false)?);
        }
        let fallback = match self.olm.fallback_key() {
            Some((id, public)) => Some(self.signed_key(scratch, id, &public, true)?),
            None => None,
        };
        let uploads: Vec<SignedKeyUpload<'_>, UPLOAD_BATCH> = keys.iter().map(upload).collect();
        let fallback_upload = fallback.as_ref().map(upload);
        Ok(write::keys_upload_body(
            out,
            &signer,
            with_device_keys.then_some(&device),
            &uploads,
            fallback_upload.as_ref(),
        )?)
    }

    /// The key counts a sync reports: one-time keys the server holds (replenished when half
    /// its share was claimed), and whether it has an unused fallback key.
    pub(super) fn on_key_counts(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        let count = sync.one_time_keys_count(SIGNED_CURVE25519)?;
        self.server_one_time_keys = u32::try_from(count).unwrap_or(0);
        // Replenish when half the server's share was claimed.
        if count < (ONE_TIME_KEYS / 4) as i64 {
            self.one_time_keys_wanted = true;
        }
        if let Some(mut types) = sync.unused_fallback_key_types()?
            && !types.any(|t| t == Ok(SIGNED_CURVE25519))
        {
            self.fallback_wanted = true;
        }
        Ok(())
    }
}

/// Writes `account` to flash.
pub(super) fn save_account<S: Store, R: Rng>(
    flash: &mut Flash<S>,
    rng: &mut R,
    account: &Account<ONE_TIME_KEYS>,
) -> Result<(), TokenError> {
    flash.put_pickled(record::ACCOUNT, |_| Ok(()), account, rng)
}

/// Reads the account into `slot` (left as it was when there is none or on an error).
pub(super) fn load_account_into<'a, S: Store>(
    flash: &mut Flash<S>,
    slot: &'a mut core::mem::MaybeUninit<Account<ONE_TIME_KEYS>>,
) -> Result<Option<&'a mut Account<ONE_TIME_KEYS>>, TokenError> {
    flash.read(record::ACCOUNT, |_, pickle| {
        Ok(slot.write(pickle.open_inline()?))
    })
}

/// The canonical JSON of the token's device keys object, which it signs.
pub fn device_keys_json<'b>(
    out: &'b mut [u8],
    user_id: &str,
    device_id: &str,
    curve25519: &[u8; 32],
    ed25519: &[u8; 32],
) -> Result<&'b [u8], TokenError> {
    let mut w = JsonWriter::new(out);
    w.raw(br#"{"algorithms":[""#)?
        .raw(jeton_proto::view::OLM_ALGORITHM.as_bytes())?
        .raw(br#"",""#)?
        .raw(jeton_proto::view::MEGOLM_ALGORITHM.as_bytes())?
        .raw(br#""],"device_id":"#)?
        .string(device_id)?
        .raw(br#","keys":{"#)?
        .string_parts(&["curve25519:", device_id])?
        .raw(b":")?
        .base64(curve25519)?
        .raw(b",")?
        .string_parts(&["ed25519:", device_id])?
        .raw(b":")?
        .base64(ed25519)?
        .raw(br#"},"user_id":"#)?
        .string(user_id)?
        .raw(b"}")?;
    let len = w.len();
    Ok(out.get(..len).unwrap_or_default())
}

/// The canonical JSON of a signed one-time (or fallback) key object without signatures.
pub fn one_time_key_json<'b>(
    out: &'b mut [u8],
    key: &[u8; 32],
    fallback: bool,
) -> Result<&'b [u8], TokenError> {
    let mut w = JsonWriter::new(out);
    if fallback {
        w.raw(br#"{"fallback":true,"key":"#)?;
    } else {
        w.raw(br#"{"key":"#)?;
    }
    w.base64(key)?.raw(b"}")?;
    let len = w.len();
    Ok(out.get(..len).unwrap_or_default())
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Persists the Olm account (after any change to its keys, before anything depends on it).
    pub(super) fn save_account(&mut self) -> Result<(), TokenError> {
        self.account.save(&mut self.env.flash, &mut self.env.rng)
    }

    /// Uploads the device keys (first time), new one-time keys and a new fallback key. The
    /// account with the new keys is on flash before the upload leaves.
    pub(super) fn start_upload(
        &mut self,
        coap: &mut Coap,
        with_device_keys: bool,
    ) -> Result<(), TokenError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        self.account.replenish(&mut self.env.rng, with_device_keys);
        self.account.save(&mut self.env.flash, &mut self.env.rng)?;
        let len = self.account.upload_body(
            &mut self.env.work,
            &mut self.env.flash.scratch,
            login,
            with_device_keys,
        )?;
        self.account.one_time_keys_wanted = false;
        self.account.fallback_wanted = false;
        self.start(
            coap,
            Operation::Upload { with_device_keys },
            Code::POST,
            &[endpoint::KEYS_UPLOAD],
            len,
        )
    }

    /// The keys are on the server: the account marks them published (on flash), and the
    /// login records that the device keys are.
    pub(super) fn on_uploaded(
        &mut self,
        body: &[u8],
        with_device_keys: bool,
    ) -> Result<(), TokenError> {
        let response = KeysUploadResponse::parse(body, TableVersion::V2)?;
        let count = response.one_time_key_count(SIGNED_CURVE25519)?;
        let account = &mut self.account;
        account.olm.mark_keys_as_published();
        account.server_one_time_keys = u32::try_from(count).unwrap_or(0);
        account.one_time_keys_wanted = (count as usize) < ONE_TIME_KEYS / 2;
        self.save_account()?;
        if with_device_keys && let Some(login) = &mut self.login {
            login.keys_uploaded = true;
            login.save(&mut self.env.flash)?;
        }
        self.env.ui.event(&UiEvent::KeysPublished {
            one_time_keys: u32::try_from(count).unwrap_or(0),
        });
        Ok(())
    }

    /// The upload failed because the gateway lost the access token: it goes again, whole.
    pub(super) fn upload_again(&mut self) {
        self.account.one_time_keys_wanted = true;
        self.account.fallback_wanted = true;
    }
}
