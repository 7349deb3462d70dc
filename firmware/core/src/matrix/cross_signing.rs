//! Cross-signing of the token's own user: its master, self-signing and user-signing Ed25519
//! keys, made on the token and kept on flash in [`record::CROSS_SIGNING`] (their seeds in the
//! record's sealed meta), and the bootstrap that publishes them and signs the token's own
//! device with them (the spec's "Cross-signing" section).
//!
//! A bootstrap is two operations: `POST /keys/device_signing/upload` with the three public
//! keys (the self-signing and user-signing keys signed by the master key), then `POST
//! /keys/signatures/upload` with the token's device keys signed by the self-signing key. The
//! first upload goes without `auth`: a homeserver that lets a user publish cross-signing keys
//! for the first time without user-interactive auth (MSC3967) takes it; one that asks answers
//! 401 with its flows and a session, and the upload goes again with `m.login.password` auth.
//!
//! The password is the person's, given for this one bootstrap: it is held in RAM until the
//! bootstrap ends (the second upload needs it), zeroized then, and never written to flash.
//! The keys are on flash before their upload leaves, so a bootstrap run again after a power
//! cut publishes the same keys.

use core::fmt;

use minicbor::Encoder;
use minicbor::encode::write::Cursor;
use zeroize::{Zeroize, ZeroizeOnDrop};

use jeton_olm::{Ed25519PublicKey, Ed25519SigningKey};
use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::{Map, Value};

use super::bodies::{BodyEncoder, cbor, key};
use super::flash::{Flash, bytes32, corrupt};
use super::login::{Login, password_fields};
use super::rng::CryptoSource;
use super::*;
use crate::json::JsonWriter;
use crate::store::record;

/// The longest password a bootstrap takes.
pub const MAX_PASSWORD_LEN: usize = 128;

/// The longest user-interactive auth session id the token keeps.
const MAX_SESSION_LEN: usize = 64;

/// The login type of the auth stage the token completes.
const PASSWORD_STAGE: &str = "m.login.password";

/// Why a bootstrap of cross-signing failed, in the person's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrossSigningFailure {
    /// The homeserver did not accept the password.
    PasswordRefused,
    /// The homeserver asks for an authentication the token cannot give (not a password).
    NoPasswordAuth,
    /// The homeserver refused the keys, or the signature of the device (the CoAP code).
    Refused(u16),
    /// The homeserver took the keys but not the signature of the token's device.
    DeviceNotSigned,
}

impl fmt::Display for CrossSigningFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PasswordRefused => {
                f.write_str("the homeserver did not accept the password: run xsign again with the right one")
            }
            Self::NoPasswordAuth => f.write_str(
                "the homeserver asks for a confirmation other than the password (single sign-on?): \
                 set up cross-signing on another device and verify the token from it",
            ),
            Self::Refused(code) => write!(
                f,
                "the homeserver refused the cross-signing keys ({}.{:02})",
                code / 100,
                code % 100
            ),
            Self::DeviceNotSigned => f.write_str(
                "the homeserver took the cross-signing keys but not the token's signature: run xsign again",
            ),
        }
    }
}

/// The password of the bootstrap under way, zeroized when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Password {
    bytes: [u8; MAX_PASSWORD_LEN],
    len: usize,
}

impl Password {
    fn new(text: &str) -> Option<Self> {
        let mut password = Password {
            bytes: [0; MAX_PASSWORD_LEN],
            len: text.len(),
        };
        password
            .bytes
            .get_mut(..text.len())?
            .copy_from_slice(text.as_bytes());
        Some(password)
    }

    fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..self.len).unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or_default()
    }
}

/// Where a bootstrap stands: the next request it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `keys/device_signing/upload`, with `auth` once the homeserver asked for it.
    Keys { auth: bool },
    /// `keys/signatures/upload` of the token's device.
    Device,
}

/// A bootstrap under way.
struct Bootstrap {
    password: Password,
    /// The session of the homeserver's user-interactive auth, once it gave one.
    session: String<MAX_SESSION_LEN>,
    step: Step,
}

/// The cross-signing bootstrap under way, if any (the keys themselves are on flash).
#[derive(Default)]
pub(super) struct CrossSigning {
    bootstrap: Option<Bootstrap>,
}

impl fmt::Debug for CrossSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("CrossSigning")
            .field("step", &self.bootstrap.as_ref().map(|b| b.step))
            .finish_non_exhaustive()
    }
}

impl CrossSigning {
    /// No bootstrap under way.
    pub(super) const fn new() -> Self {
        CrossSigning { bootstrap: None }
    }
}

/// The three cross-signing keys.
struct Keys {
    master: Ed25519SigningKey,
    self_signing: Ed25519SigningKey,
    user_signing: Ed25519SigningKey,
}

impl Keys {
    /// Three new keys from `rng`.
    fn generate<R: Rng>(rng: &mut R) -> Self {
        let mut source = CryptoSource(rng);
        Keys {
            master: Ed25519SigningKey::generate(&mut source),
            self_signing: Ed25519SigningKey::generate(&mut source),
            user_signing: Ed25519SigningKey::generate(&mut source),
        }
    }

    /// Writes the keys' seeds to flash (in the record's sealed meta).
    fn save<S: Store>(&self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        flash.put(record::CROSS_SIGNING, |e| {
            e.array(3)?
                .bytes(self.master.seed())?
                .bytes(self.self_signing.seed())?
                .bytes(self.user_signing.seed())?;
            Ok(())
        })
    }

    /// Reads the keys from flash, if the token made them.
    fn load<S: Store>(flash: &mut Flash<S>) -> Result<Option<Keys>, TokenError> {
        let id = record::CROSS_SIGNING;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(None);
        };
        let mut d = minicbor::Decoder::new(meta);
        d.array().map_err(corrupt(id))?;
        let mut key = || -> Result<Ed25519SigningKey, TokenError> {
            let mut seed = bytes32(&mut d, id)?;
            let key = Ed25519SigningKey::from_seed(&seed);
            seed.zeroize();
            Ok(key)
        };
        let keys = Keys {
            master: key()?,
            self_signing: key()?,
            user_signing: key()?,
        };
        flash.scratch.zeroize();
        Ok(Some(keys))
    }

    /// The keys on flash, or new ones, written there before anything uses them.
    fn load_or_make<S: Store, R: Rng>(
        flash: &mut Flash<S>,
        rng: &mut R,
    ) -> Result<Keys, TokenError> {
        if let Some(keys) = Keys::load(flash)? {
            return Ok(keys);
        }
        let keys = Keys::generate(rng);
        keys.save(flash)?;
        flash.scratch.zeroize();
        Ok(keys)
    }
}

/// A public key in unpadded base64, as key ids and JSON carry it.
fn base64_of<'o>(key: &Ed25519PublicKey, out: &'o mut [u8; 44]) -> &'o str {
    jeton_olm::base64::encode(key.as_bytes(), out).unwrap_or_default()
}

/// The canonical JSON of the cross-signing key object of `key` for `usage`, without
/// signatures: what its signatures sign.
pub fn cross_signing_key_json<'b>(
    out: &'b mut [u8],
    user_id: &str,
    usage: &str,
    key: &Ed25519PublicKey,
) -> Result<&'b [u8], TokenError> {
    let mut id = [0u8; 44];
    let mut w = JsonWriter::new(out);
    w.raw(br#"{"keys":{"#)?
        .string_parts(&["ed25519:", base64_of(key, &mut id)])?
        .raw(b":")?
        .base64(key.as_bytes())?
        .raw(br#"},"usage":["#)?
        .string(usage)?
        .raw(br#"],"user_id":"#)?
        .string(user_id)?
        .raw(b"}")?;
    let len = w.len();
    Ok(out.get(..len).unwrap_or_default())
}

/// A signature made by `signer` as the `signatures` object carries it.
struct Signature<'a> {
    user_id: &'a str,
    signer: &'a Ed25519PublicKey,
    signature: [u8; 64],
}

/// `signatures: {<user>: {"ed25519:<signer>": <signature>}}`.
fn write_signature(e: &mut BodyEncoder<'_>, signature: &Signature<'_>) -> Result<(), TokenError> {
    let mut id = [0u8; 44];
    key(e, "signatures")?;
    cbor(e.map(1))?;
    cbor(e.str(signature.user_id))?;
    cbor(e.map(1))?;
    write_key_id(e, base64_of(signature.signer, &mut id))?;
    cbor(e.bytes(&signature.signature))?;
    Ok(())
}

/// The text `ed25519:<id>`.
fn write_key_id(e: &mut BodyEncoder<'_>, id: &str) -> Result<(), TokenError> {
    let mut text: String<52> = String::new();
    text.push_str("ed25519:")
        .and_then(|()| text.push_str(id))
        .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
    cbor(e.str(&text))?;
    Ok(())
}

/// A cross-signing key object: `{user_id, usage: [usage], keys: {"ed25519:<key>": key}}`,
/// with `signature` when one is given.
fn write_key_object(
    e: &mut BodyEncoder<'_>,
    user_id: &str,
    usage: &str,
    public: &Ed25519PublicKey,
    signature: Option<&Signature<'_>>,
) -> Result<(), TokenError> {
    let mut id = [0u8; 44];
    cbor(e.map(if signature.is_some() { 4 } else { 3 }))?;
    key(e, "user_id")?;
    cbor(e.str(user_id))?;
    key(e, "usage")?;
    cbor(e.array(1))?;
    cbor(e.str(usage))?;
    key(e, "keys")?;
    cbor(e.map(1))?;
    write_key_id(e, base64_of(public, &mut id))?;
    cbor(e.bytes(public.as_bytes()))?;
    if let Some(signature) = signature {
        write_signature(e, signature)?;
    }
    Ok(())
}

/// `auth` with the password: `{type, identifier: {type: m.id.user, user}, password[, session]}`.
fn write_auth(
    e: &mut BodyEncoder<'_>,
    user_id: &str,
    password: &str,
    session: &str,
) -> Result<(), TokenError> {
    key(e, "auth")?;
    cbor(e.map(if session.is_empty() { 3 } else { 4 }))?;
    password_fields(e, user_id, password)?;
    if !session.is_empty() {
        key(e, "session")?;
        cbor(e.str(session))?;
    }
    Ok(())
}

/// The `keys/device_signing/upload` body (with `auth` when given as (password, session));
/// the subkeys' signatures are made over canonical JSON in `scratch`.
fn keys_body(
    out: &mut [u8],
    scratch: &mut [u8],
    user_id: &str,
    keys: &Keys,
    auth: Option<(&str, &str)>,
) -> Result<usize, TokenError> {
    let master = keys.master.public_key();
    let mut sign = |usage: &str, subkey: &Ed25519SigningKey| -> Result<_, TokenError> {
        let json = cross_signing_key_json(scratch, user_id, usage, &subkey.public_key())?;
        Ok(keys.master.sign(json).to_bytes())
    };
    let self_signature = sign("self_signing", &keys.self_signing)?;
    let user_signature = sign("user_signing", &keys.user_signing)?;
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(if auth.is_some() { 4 } else { 3 }))?;
    key(&mut e, "master_key")?;
    write_key_object(&mut e, user_id, "master", &master, None)?;
    for (name, usage, subkey, signature) in [
        (
            "self_signing_key",
            "self_signing",
            &keys.self_signing,
            self_signature,
        ),
        (
            "user_signing_key",
            "user_signing",
            &keys.user_signing,
            user_signature,
        ),
    ] {
        key(&mut e, name)?;
        let signature = Signature {
            user_id,
            signer: &master,
            signature,
        };
        write_key_object(
            &mut e,
            user_id,
            usage,
            &subkey.public_key(),
            Some(&signature),
        )?;
    }
    if let Some((password, session)) = auth {
        write_auth(&mut e, user_id, password, session)?;
    }
    Ok(e.writer().position())
}

/// The `keys/signatures/upload` body: the token's device keys signed by the self-signing key
/// (over their canonical JSON in `scratch`), as the homeserver holds them but for the
/// signatures.
fn device_body(
    out: &mut [u8],
    scratch: &mut [u8],
    login: &Login,
    identity: &jeton_olm::olm::IdentityKeys,
    self_signing: &Ed25519SigningKey,
) -> Result<usize, TokenError> {
    let (user_id, device_id) = (login.user_id.as_str(), login.device_id.as_str());
    let (curve, ed) = (identity.curve25519.as_bytes(), identity.ed25519.as_bytes());
    let json = device_keys_json(scratch, user_id, device_id, curve, ed)?;
    let signature = Signature {
        user_id,
        signer: &self_signing.public_key(),
        signature: self_signing.sign(json).to_bytes(),
    };
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(1))?;
    cbor(e.str(user_id))?;
    cbor(e.map(1))?;
    cbor(e.str(device_id))?;
    cbor(e.map(5))?;
    key(&mut e, "user_id")?;
    cbor(e.str(user_id))?;
    key(&mut e, "device_id")?;
    cbor(e.str(device_id))?;
    key(&mut e, "algorithms")?;
    cbor(e.array(2))?;
    cbor(e.str(jeton_proto::view::OLM_ALGORITHM))?;
    cbor(e.str(jeton_proto::view::MEGOLM_ALGORITHM))?;
    key(&mut e, "keys")?;
    cbor(e.map(2))?;
    for (algorithm, key) in [("curve25519:", curve), ("ed25519:", ed)] {
        let mut id: String<{ 11 + MAX_DEVICE_ID_LEN }> = String::new();
        let _ = id.push_str(algorithm);
        let _ = id.push_str(device_id);
        cbor(e.str(&id))?;
        cbor(e.bytes(key))?;
    }
    write_signature(&mut e, &signature)?;
    Ok(e.writer().position())
}

/// A response's top-level map, if it is one.
fn top_map(body: &[u8]) -> Option<Map<'_>> {
    match Value::parse(body, TableVersion::V2).ok()? {
        Value::Map(map) => Some(map),
        _ => None,
    }
}

/// Whether a 401 body is a user-interactive auth challenge (it lists `flows`), not the
/// refusal of the access token.
pub(super) fn is_challenge(body: &[u8]) -> bool {
    top_map(body).is_some_and(|map| matches!(map.get("flows"), Ok(Some(Value::Array(_)))))
}

/// Whether `flows` offers a flow of the password stage alone.
fn offers_password(map: &Map<'_>) -> bool {
    let Ok(Some(Value::Array(flows))) = map.get("flows") else {
        return false;
    };
    flows.iter().any(|flow| {
        let Ok(Value::Map(flow)) = flow else {
            return false;
        };
        let Ok(Some(Value::Array(stages))) = flow.get("stages") else {
            return false;
        };
        stages.len() == 1 && stages.iter().all(|s| s == Ok(Value::Text(PASSWORD_STAGE)))
    })
}

/// Whether a `keys/signatures/upload` answer lists failures.
fn has_failures(body: &[u8]) -> bool {
    let Some(map) = top_map(body) else {
        return false;
    };
    matches!(map.get("failures"), Ok(Some(Value::Map(failures))) if !failures.is_empty())
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Starts a bootstrap with `password`: the keys are on flash (made now if the token has
    /// none) before this returns; the uploads follow as operations.
    pub(super) fn start_cross_signing(&mut self, password: &str) -> Result<(), CommandError> {
        if self.login.is_none() {
            return Err(CommandError::NotLoggedIn);
        }
        if self.cross_signing.bootstrap.is_some() {
            return Err(CommandError::CrossSigningInProgress);
        }
        let password =
            Password::new(password).ok_or(TokenError::LimitReached(Limit::PasswordLength))?;
        Keys::load_or_make(&mut self.env.flash, &mut self.env.rng)?;
        self.cross_signing.bootstrap = Some(Bootstrap {
            password,
            session: String::new(),
            step: Step::Keys { auth: false },
        });
        Ok(())
    }

    /// Starts the bootstrap's next request, if one is under way: true when it did.
    pub(super) fn plan_cross_signing(&mut self, coap: &mut Coap) -> Result<bool, TokenError> {
        let (Some(bootstrap), Some(login)) = (&self.cross_signing.bootstrap, &self.login) else {
            return Ok(false);
        };
        let Some(keys) = Keys::load(&mut self.env.flash)? else {
            // The record is gone (a reset in between): the person starts again.
            self.cross_signing.bootstrap = None;
            return Err(TokenError::CorruptRecord(record::CROSS_SIGNING));
        };
        let (out, scratch) = (&mut self.env.work, &mut self.env.flash.scratch);
        let (operation, path, len) = match bootstrap.step {
            Step::Keys { auth } => {
                let auth = auth.then(|| (bootstrap.password.as_str(), bootstrap.session.as_str()));
                let len = keys_body(out, scratch, &login.user_id, &keys, auth);
                (
                    Operation::CrossSigningKeys,
                    endpoint::KEYS_DEVICE_SIGNING_UPLOAD,
                    len,
                )
            }
            Step::Device => {
                let identity = self.account.olm.identity_keys();
                let len = device_body(out, scratch, login, &identity, &keys.self_signing);
                (
                    Operation::CrossSigningDevice,
                    endpoint::KEYS_SIGNATURES_UPLOAD,
                    len,
                )
            }
        };
        scratch.zeroize();
        let len = len?;
        self.start(coap, operation, Code::POST, &[path], len)?;
        // The password was copied into the request; the work buffer forgets it.
        self.env.work.zeroize();
        Ok(true)
    }

    /// The keys upload answered 401 with auth flows: the upload goes again with the password,
    /// once; a second challenge means the password was refused.
    pub(super) fn on_cross_signing_challenge(&mut self, body: &[u8]) {
        let Some(bootstrap) = &mut self.cross_signing.bootstrap else {
            return;
        };
        let Some(map) = top_map(body) else {
            return self.end_cross_signing(Some(CrossSigningFailure::Refused(401)));
        };
        if bootstrap.step != (Step::Keys { auth: false }) {
            return self.end_cross_signing(Some(CrossSigningFailure::PasswordRefused));
        }
        if !offers_password(&map) {
            return self.end_cross_signing(Some(CrossSigningFailure::NoPasswordAuth));
        }
        if let Ok(Some(Value::Text(session))) = map.get("session") {
            bootstrap.session = String::try_from(session).unwrap_or_default();
        }
        bootstrap.step = Step::Keys { auth: true };
    }

    /// A bootstrap request the homeserver refused (`code`).
    pub(super) fn on_cross_signing_refused(&mut self, code: Code) {
        let code = code_number(code);
        if code == 429 || code >= 500 {
            // Not the homeserver's verdict on the keys (a busy gateway or homeserver): the
            // same request goes again after the back-off.
            return;
        }
        self.end_cross_signing(Some(CrossSigningFailure::Refused(code)));
    }

    /// The keys are published: the device's signature is next.
    pub(super) fn on_cross_signing_keys(&mut self) {
        if let Some(bootstrap) = &mut self.cross_signing.bootstrap {
            bootstrap.step = Step::Device;
        }
    }

    /// The device's signature was answered: the bootstrap is over.
    pub(super) fn on_cross_signing_device(&mut self, body: &[u8]) {
        let failure = has_failures(body).then_some(CrossSigningFailure::DeviceNotSigned);
        self.end_cross_signing(failure);
    }

    /// Ends the bootstrap (its password zeroized as it drops) and tells the person.
    fn end_cross_signing(&mut self, failure: Option<CrossSigningFailure>) {
        if self.cross_signing.bootstrap.take().is_none() {
            return;
        }
        if let Some(reason) = failure {
            return self.env.ui.event(&UiEvent::CrossSigningFailed { reason });
        }
        let master = match Keys::load(&mut self.env.flash) {
            Ok(Some(keys)) => keys.master.public_key(),
            Ok(None) => return,
            Err(error) => return self.error(error),
        };
        let mut text = [0u8; 44];
        let user_id = self
            .login
            .as_ref()
            .map(|l| l.user_id.as_str())
            .unwrap_or("");
        self.env.ui.event(&UiEvent::CrossSigned {
            user_id,
            master_key: base64_of(&master, &mut text),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_object_json_is_canonical() {
        let key = Ed25519SigningKey::from_seed(&[7; 32]).public_key();
        let mut id = [0u8; 44];
        let b64 = base64_of(&key, &mut id).to_owned();
        let mut out = [0u8; 256];
        let json = cross_signing_key_json(&mut out, "@a:b", "master", &key).unwrap();
        assert_eq!(
            core::str::from_utf8(json).unwrap(),
            format!(
                r#"{{"keys":{{"ed25519:{b64}":"{b64}"}},"usage":["master"],"user_id":"@a:b"}}"#
            )
        );
    }

    #[test]
    fn the_password_is_bounded_and_reads_back() {
        assert_eq!(Password::new("hunter2").unwrap().as_str(), "hunter2");
        assert!(Password::new(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_none());
    }

    /// The profile CBOR of a JSON body, as the gateway sends it.
    fn cbor_of(json: serde_json::Value) -> std::vec::Vec<u8> {
        jeton_proto::transcode::json_to_cbor(&json, TableVersion::V2).unwrap()
    }

    #[test]
    fn a_challenge_lists_flows_and_a_refused_token_does_not() {
        let challenge = cbor_of(serde_json::json!(
            {"session": "s", "flows": [{"stages": ["m.login.password"]}], "params": {}}
        ));
        assert!(is_challenge(&challenge));
        assert!(offers_password(&top_map(&challenge).unwrap()));
        let refused = cbor_of(serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "x"}));
        assert!(!is_challenge(&refused));
        let sso =
            cbor_of(serde_json::json!({"session": "s", "flows": [{"stages": ["m.login.sso"]}]}));
        assert!(!offers_password(&top_map(&sso).unwrap()));
    }
}
