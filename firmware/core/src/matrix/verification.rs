//! Device verification by short authentication strings: the `m.sas.v1` method over
//! to-device messages (`m.key.verification.request`, `ready`, `start`, `accept`, `key`,
//! `mac`, `done`, `cancel`), as the [specification] describes it.
//!
//! This module owns the one verification the token runs at a time: its transaction id, the
//! peer device, the ephemeral key and shared secret (jeton-olm's [`Sas`]), the messages
//! still to send, and its deadlines. The person takes part through
//! [`Token::verify`](super::Token::verify) (the token starts),
//! [`Token::confirm_verification`](super::Token::confirm_verification) (the board's button:
//! accept a request, or say that the numbers match) and
//! [`Token::cancel_verification`](super::Token::cancel_verification). They see
//! [`UiEvent::VerificationRequested`], [`UiEvent::ShortAuthString`],
//! [`UiEvent::DeviceVerified`] and [`UiEvent::VerificationCancelled`].
//!
//! Both flows are spoken, in both roles: a request answered with `ready`, then a `start`
//! (Element's flow; the token sends requests when the platform knows the wall-clock time
//! a request carries: [`Token::request_verification`](super::Token::request_verification)),
//! and a `start` without request (matrix-nio 0.26, which speaks no requests, and
//! [`Token::verify`](super::Token::verify)). A verified device is marked in the device
//! table, which is on flash before [`UiEvent::DeviceVerified`] is shown and before `done`
//! leaves.
//!
//! The token offers and accepts the key agreement `curve25519-hkdf-sha256`, the hash
//! `sha256`, the MACs `hkdf-hmac-sha256.v2` (preferred) and `hkdf-hmac-sha256`, and the
//! short strings `decimal` and `emoji`. `hkdf-hmac-sha256` is written in two ways in the
//! wild: libolm's garbled base64 (vodozemac's `calculate_mac_invalid_base64`, which
//! matrix-rust-sdk sends under that name) and standard base64 (matrix-nio 0.26, which
//! computes the v2 MAC under the old name). Under that method the token accepts both, and
//! sends its own MAC only after the peer's arrived, in the encoding the peer used. The
//! commitment is read in unpadded base64 or, as matrix-nio 0.26 writes it, in hex; the
//! token writes base64.
//!
//! The cancel codes the token sends: `m.user`, `m.timeout`, `m.unknown_transaction`,
//! `m.unknown_method`, `m.unexpected_message`, `m.key_mismatch`, `m.user_mismatch`,
//! `m.invalid_message`, `m.mismatched_commitment` and `m.mismatched_sas`; any code the peer
//! sends (`m.accepted` among them) is shown as it came.
//!
//! # Not spoken
//!
//! - A request needs the wall-clock time, which the platform may not have: without it the
//!   token's own verifications begin with `start`. Received requests are not checked
//!   against their `timestamp`.
//! - In-room verification (`m.relates_to`), QR codes, cross-signing (a master key in the
//!   peer's MAC is covered by the key-id MAC but neither checked nor trusted), verification
//!   events that arrive Olm-encrypted, the key agreement `curve25519` (v1).
//! - One verification at a time: a request or start from another transaction meanwhile is
//!   left unanswered (its sender times out). The verification lives in RAM; a power cut
//!   ends it.
//! - A peer that, like the token, waits for the other side's MAC under `hkdf-hmac-sha256`
//!   never gets one: the verification times out.
//!
//! # Cost
//!
//! On a Cortex-M4 (`tests/cortex-m`'s `core` image, opt-level "s", LTO, measured against the
//! image without verification): 17,796 B of flash and 488 B of static RAM (the state in the
//! [`Token`]); on a 64-bit host the token's state grew by 528 B. The key
//! agreement reuses jeton-olm's X25519, HKDF and HMAC.
//!
//! [specification]: https://spec.matrix.org/latest/client-server-api/#device-verification

use heapless::{Deque, String, Vec};
use minicbor::Encoder;
use minicbor::encode::write::Cursor;
use subtle::ConstantTimeEq;

use jeton_olm::Curve25519PublicKey;
use jeton_olm::sas::{EstablishedSas, MAC_BASE64_LEN, MacEncoding, MacMethod, Sas, commitment};
use jeton_proto::TableVersion;
use jeton_proto::view::{Map, Value};

use super::rng::CryptoSource;
use super::send::{cbor, key};
use super::*;
use crate::json::{JsonWriter, write_canonical};

/// A verification that has not finished after this long is cancelled (`m.timeout`).
pub const VERIFICATION_TIMEOUT_MS: u64 = 10 * 60_000;
/// A verification waiting this long for the peer's next message is cancelled (`m.timeout`).
/// Waiting for the person has only the overall limit.
pub const VERIFICATION_STEP_TIMEOUT_MS: u64 = 60_000;
/// Longest transaction id the token keeps; a longer one is not answered.
pub const MAX_TRANSACTION_ID_LEN: usize = 64;
/// Key ids a peer's `m.key.verification.mac` may list (its device key, its cross-signing
/// master key and a few more).
pub const MAX_MAC_KEYS: usize = 6;

/// Messages queued for the peer at most at once (`mac`, `done`, and a `cancel`).
const OUTGOING_DEPTH: usize = 4;

const EVENT_PREFIX: &str = "m.key.verification.";
const SAS_METHOD: &str = "m.sas.v1";
const KEY_AGREEMENT: &str = "curve25519-hkdf-sha256";
const HASH: &str = "sha256";
const MAC_METHODS: [MacMethod; 2] = [MacMethod::HkdfHmacSha256V2, MacMethod::HkdfHmacSha256];

/// A transaction id of a verification.
pub type TransactionId = String<MAX_TRANSACTION_ID_LEN>;

/// Why a verification was cancelled: the codes of `m.key.verification.cancel` the token
/// sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelCode {
    /// `m.user`: the person cancelled.
    User,
    /// `m.timeout`: the verification or one of its steps took too long.
    Timeout,
    /// `m.unknown_transaction`: a message for a transaction the token does not run.
    UnknownTransaction,
    /// `m.unknown_method`: no method, key agreement, hash, MAC or string in common.
    UnknownMethod,
    /// `m.unexpected_message`: a message out of order.
    UnexpectedMessage,
    /// `m.key_mismatch`: a MAC over the keys did not match.
    KeyMismatch,
    /// `m.user_mismatch`: a message from another user than the peer.
    UserMismatch,
    /// `m.invalid_message`: a message without the fields it needs.
    InvalidMessage,
    /// `m.accepted`: another device took the request (received only).
    Accepted,
    /// `m.mismatched_commitment`: the peer's key does not match its commitment.
    MismatchedCommitment,
    /// `m.mismatched_sas`: the person saw different numbers.
    MismatchedSas,
}

impl CancelCode {
    /// The code as the specification writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            CancelCode::User => "m.user",
            CancelCode::Timeout => "m.timeout",
            CancelCode::UnknownTransaction => "m.unknown_transaction",
            CancelCode::UnknownMethod => "m.unknown_method",
            CancelCode::UnexpectedMessage => "m.unexpected_message",
            CancelCode::KeyMismatch => "m.key_mismatch",
            CancelCode::UserMismatch => "m.user_mismatch",
            CancelCode::InvalidMessage => "m.invalid_message",
            CancelCode::Accepted => "m.accepted",
            CancelCode::MismatchedCommitment => "m.mismatched_commitment",
            CancelCode::MismatchedSas => "m.mismatched_sas",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            CancelCode::User => "The user cancelled the verification.",
            CancelCode::Timeout => "The verification timed out.",
            CancelCode::UnknownTransaction => "Unknown transaction.",
            CancelCode::UnknownMethod => "No method in common.",
            CancelCode::UnexpectedMessage => "Unexpected message.",
            CancelCode::KeyMismatch => "A key MAC did not match.",
            CancelCode::UserMismatch => "The message came from another user.",
            CancelCode::InvalidMessage => "Invalid message.",
            CancelCode::Accepted => "Accepted by another device.",
            CancelCode::MismatchedCommitment => "The key does not match the commitment.",
            CancelCode::MismatchedSas => "The short authentication strings did not match.",
        }
    }
}

/// Where a verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The token sent a request; waiting for the other person's `ready`.
    RequestSent,
    /// A request came in; the person decides (confirm sends `ready`).
    RequestReceived,
    /// `ready` sent; waiting for the peer's `start`.
    ReadySent,
    /// A `start` came in without a request; the person decides (confirm accepts).
    StartReceived,
    /// The token sent `start`; waiting for `accept`.
    StartSent,
    /// The token sent `accept`; waiting for the peer's key.
    AcceptSent,
    /// The token started, got `accept` and sent its key; waiting for the peer's key.
    KeySent,
    /// Both keys are known and the strings shown; waiting for the person and the peer's MAC.
    Comparing,
    /// Verified or cancelled; the last messages are still to send.
    Finished,
}

/// A message the token still has to send for the verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    Request,
    Ready,
    Start,
    Accept,
    Key,
    Mac,
    Done,
    Cancel(CancelCode),
}

impl Outgoing {
    fn event_type(self) -> &'static str {
        match self {
            Outgoing::Request => "m.key.verification.request",
            Outgoing::Ready => "m.key.verification.ready",
            Outgoing::Start => "m.key.verification.start",
            Outgoing::Accept => "m.key.verification.accept",
            Outgoing::Key => "m.key.verification.key",
            Outgoing::Mac => "m.key.verification.mac",
            Outgoing::Done => "m.key.verification.done",
            Outgoing::Cancel(_) => "m.key.verification.cancel",
        }
    }
}

/// The ephemeral key before the peer's key arrived, the shared secret after.
enum Keys {
    Ephemeral(Sas),
    Established(EstablishedSas),
    None,
}

/// The verification in progress.
pub(super) struct Verification {
    txn: TransactionId,
    peer_user: UserId,
    peer_device: DeviceId,
    phase: Phase,
    /// Whether the token sent the `start` (it is "the device that started" of the info
    /// strings).
    we_started: bool,
    mac_method: MacMethod,
    /// How the token writes its MAC (see the module documentation).
    mac_encoding: MacEncoding,
    emoji: bool,
    keys: Keys,
    /// The peer's commitment (the token started), or the token's own (it accepts).
    commitment: [u8; 32],
    confirmed: bool,
    their_mac_ok: bool,
    began: Instant,
    step: Instant,
    /// The wall-clock time of the token's request (milliseconds since the Unix epoch).
    requested_at_unix_ms: u64,
    outgoing: Deque<Outgoing, OUTGOING_DEPTH>,
    /// Whether the front of `outgoing` is on its way to the homeserver.
    sending: bool,
}

impl Verification {
    fn new(txn: TransactionId, peer_user: UserId, peer_device: DeviceId, now: Instant) -> Self {
        Verification {
            txn,
            peer_user,
            peer_device,
            phase: Phase::StartSent,
            we_started: false,
            mac_method: MacMethod::HkdfHmacSha256V2,
            mac_encoding: MacEncoding::Base64,
            emoji: false,
            keys: Keys::None,
            commitment: [0; 32],
            confirmed: false,
            their_mac_ok: false,
            began: now,
            step: now,
            requested_at_unix_ms: 0,
            outgoing: Deque::new(),
            sending: false,
        }
    }

    fn send(&mut self, message: Outgoing) {
        // The queue holds every sequence the protocol produces; a full queue can only mean
        // a cancel is already waiting, which ends the verification anyway.
        let _ = self.outgoing.push_back(message);
    }

    /// When the verification times out.
    fn deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Finished {
            return None;
        }
        let overall = self.began.plus_millis(VERIFICATION_TIMEOUT_MS);
        let waiting_for_peer = match self.phase {
            Phase::ReadySent | Phase::StartSent | Phase::AcceptSent | Phase::KeySent => true,
            Phase::Comparing => self.confirmed && !self.their_mac_ok,
            _ => false,
        };
        Some(if waiting_for_peer {
            overall.min(self.step.plus_millis(VERIFICATION_STEP_TIMEOUT_MS))
        } else {
            overall
        })
    }
}

/// A `cancel` for a transaction the token does not run, to all the sender's devices (a
/// to-device message names its sender's user but not the device).
pub(super) struct StrayCancel {
    user: UserId,
    txn: TransactionId,
    code: CancelCode,
}

/// What a peer's `start` or `accept` chose.
struct Choice {
    mac_method: MacMethod,
    emoji: bool,
}

fn text<'a>(map: &Map<'a>, name: &str) -> Option<&'a str> {
    match map.get(name) {
        Ok(Some(Value::Text(text))) => Some(text),
        _ => None,
    }
}

fn texts<'a>(map: &Map<'a>, name: &str) -> impl Iterator<Item = &'a str> {
    let array = match map.get(name) {
        Ok(Some(Value::Array(array))) => Some(array),
        _ => None,
    };
    array
        .into_iter()
        .flat_map(|array| array.iter())
        .filter_map(|value| match value {
            Ok(Value::Text(text)) => Some(text),
            _ => None,
        })
}

/// A base64 value that the gateway may have turned into bytes (a v2 binary field).
fn base64_text<'o>(value: Value<'_>, out: &'o mut [u8; 88]) -> Option<&'o str> {
    match value {
        Value::Text(text) => {
            let target = out.get_mut(..text.len())?;
            target.copy_from_slice(text.as_bytes());
            core::str::from_utf8(target).ok()
        }
        Value::Bytes(bytes) => jeton_olm::base64::encode(bytes, out).ok(),
        _ => None,
    }
}

/// The methods of a peer's `start` the token speaks, or `m.unknown_method`.
fn choose_from_start(content: &Map<'_>) -> Result<Choice, CancelCode> {
    let speaks = |name, wanted: &str| texts(content, name).any(|t| t == wanted);
    if text(content, "method") != Some(SAS_METHOD)
        || !speaks("key_agreement_protocols", KEY_AGREEMENT)
        || !speaks("hashes", HASH)
    {
        return Err(CancelCode::UnknownMethod);
    }
    let mac_method = MAC_METHODS
        .into_iter()
        .find(|m| texts(content, "message_authentication_codes").any(|t| t == m.name()))
        .ok_or(CancelCode::UnknownMethod)?;
    let decimal = speaks("short_authentication_string", "decimal");
    let emoji = speaks("short_authentication_string", "emoji");
    if !decimal && !emoji {
        return Err(CancelCode::UnknownMethod);
    }
    Ok(Choice { mac_method, emoji })
}

/// The methods of a peer's `accept`, checked against what the token offered.
fn choice_of_accept(content: &Map<'_>) -> Result<Choice, CancelCode> {
    if text(content, "key_agreement_protocol") != Some(KEY_AGREEMENT)
        || text(content, "hash") != Some(HASH)
    {
        return Err(CancelCode::UnknownMethod);
    }
    let mac_method = text(content, "message_authentication_code")
        .and_then(MacMethod::from_name)
        .ok_or(CancelCode::UnknownMethod)?;
    let mut decimal = false;
    let mut emoji = false;
    for string in texts(content, "short_authentication_string") {
        match string {
            "decimal" => decimal = true,
            "emoji" => emoji = true,
            _ => return Err(CancelCode::UnknownMethod),
        }
    }
    if !decimal && !emoji {
        return Err(CancelCode::UnknownMethod);
    }
    Ok(Choice { mac_method, emoji })
}

/// Appends `parts` to a bounded text.
fn concat<const N: usize>(out: &mut String<N>, parts: &[&str]) -> Result<(), TokenError> {
    for part in parts {
        out.push_str(part)
            .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
    }
    Ok(())
}

/// The content of the token's `m.key.verification.start`.
fn write_start_content(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    own_device: &str,
    txn: &str,
) -> Result<(), TokenError> {
    let list = |e: &mut Encoder<Cursor<&mut [u8]>>, name, items: &[&str]| {
        key(e, name)?;
        cbor(e.array(items.len() as u64))?;
        for item in items {
            cbor(e.str(item))?;
        }
        Ok::<(), TokenError>(())
    };
    cbor(e.map(7))?;
    key(e, "from_device")?;
    cbor(e.str(own_device))?;
    key(e, "method")?;
    cbor(e.str(SAS_METHOD))?;
    list(e, "key_agreement_protocols", &[KEY_AGREEMENT])?;
    list(e, "hashes", &[HASH])?;
    list(
        e,
        "message_authentication_codes",
        &MAC_METHODS.map(MacMethod::name),
    )?;
    list(e, "short_authentication_string", &["decimal", "emoji"])?;
    key(e, "transaction_id")?;
    cbor(e.str(txn))?;
    Ok(())
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    fn own_ids(&self) -> (UserId, DeviceId) {
        self.login
            .as_ref()
            .map(|l| (l.user_id.clone(), l.device_id.clone()))
            .unwrap_or_default()
    }

    fn new_transaction_id(&mut self) -> Result<TransactionId, TokenError> {
        let mut txn = TransactionId::new();
        for _ in 0..4 {
            push_number(&mut txn, u64::from(self.env.rng.next_u32()), 16, 8)?;
        }
        Ok(txn)
    }

    /// Starts verifying `device` of `user`: with a request (`ready` answered with the
    /// token's `start`) when `unix_time_ms` gives the wall-clock time a request must carry,
    /// else with `start` alone (which matrix-nio, not speaking requests, needs).
    pub(super) fn verify_device(
        &mut self,
        user: &str,
        device: &str,
        unix_time_ms: Option<u64>,
        now: Instant,
    ) -> Result<(), CommandError> {
        if self.login.is_none() {
            return Err(CommandError::NotLoggedIn);
        }
        if self
            .verification
            .as_ref()
            .is_some_and(|v| v.phase != Phase::Finished)
        {
            return Err(CommandError::VerificationInProgress);
        }
        let txn = self.new_transaction_id()?;
        let mut verification = Verification::new(txn, bounded(user)?, bounded(device)?, now);
        verification.we_started = true;
        match unix_time_ms {
            Some(time) => {
                verification.phase = Phase::RequestSent;
                verification.requested_at_unix_ms = time;
                verification.send(Outgoing::Request);
            }
            None => {
                verification.keys = Keys::Ephemeral(Sas::new(&mut CryptoSource(&mut self.env.rng)));
                verification.send(Outgoing::Start);
            }
        }
        self.verification = Some(verification);
        self.track_for_verification(user, device);
        Ok(())
    }

    /// Makes sure the peer's device keys will be known when its MAC arrives.
    fn track_for_verification(&mut self, user: &str, device: &str) {
        if self.devices.find(user, device).is_none() {
            self.track(user);
        }
    }

    /// The person pressed the button: accept the request or the start, or confirm that the
    /// strings match.
    pub(super) fn confirm_verification(&mut self, now: Instant) -> Result<(), CommandError> {
        let Some(v) = &mut self.verification else {
            return Err(CommandError::NoVerification);
        };
        match v.phase {
            Phase::RequestReceived => {
                v.send(Outgoing::Ready);
                v.phase = Phase::ReadySent;
            }
            Phase::StartReceived => {
                v.send(Outgoing::Accept);
                v.phase = Phase::AcceptSent;
            }
            Phase::Comparing if !v.confirmed => {
                v.confirmed = true;
                // Under the legacy MAC the token answers the peer's MAC in its encoding, so
                // it waits for it (see the module documentation).
                let hold = v.mac_method == MacMethod::HkdfHmacSha256 && !v.their_mac_ok;
                if !hold {
                    v.send(Outgoing::Mac);
                }
                if v.their_mac_ok {
                    self.finish_verified()?;
                }
            }
            _ => return Err(CommandError::NoVerification),
        }
        if let Some(v) = &mut self.verification {
            v.step = now;
        }
        Ok(())
    }

    /// The person pressed cancel: `m.mismatched_sas` while comparing strings, `m.user`
    /// before.
    pub(super) fn cancel_verification(&mut self) -> Result<(), CommandError> {
        let code = match &self.verification {
            Some(v) if v.phase == Phase::Comparing => CancelCode::MismatchedSas,
            Some(v) if v.phase != Phase::Finished => CancelCode::User,
            _ => return Err(CommandError::NoVerification),
        };
        self.cancel_active(code);
        Ok(())
    }

    /// Cancels the verification in progress with `code`, telling the peer and the person.
    fn cancel_active(&mut self, code: CancelCode) {
        let Some(v) = &mut self.verification else {
            return;
        };
        if v.phase == Phase::Finished {
            return;
        }
        // The message in flight stays at the front; the rest is replaced by the cancel.
        let in_flight = v.outgoing.front().copied().filter(|_| v.sending);
        v.outgoing.clear();
        if let Some(message) = in_flight {
            v.send(message);
        }
        v.send(Outgoing::Cancel(code));
        v.phase = Phase::Finished;
        v.keys = Keys::None;
        self.env.ui.event(&UiEvent::VerificationCancelled {
            user_id: &v.peer_user,
            device_id: &v.peer_device,
            code: code.as_str(),
            by_peer: false,
        });
    }

    /// When the verification in progress times out.
    pub(super) fn verification_deadline(&self) -> Option<Instant> {
        self.verification.as_ref().and_then(Verification::deadline)
    }

    /// Cancels the verification in progress with `m.timeout` if its time is up.
    pub(super) fn check_verification_timeout(&mut self, now: Instant) {
        if self.verification_deadline().is_some_and(|due| now >= due) {
            self.cancel_active(CancelCode::Timeout);
        }
    }

    /// An `m.key.verification.*` to-device event from `sender`. Problems are answered with
    /// a cancel or reported; they never stop the sync that carried the event.
    // Not inlined into the sync's to-device loop, which also runs the Olm decryption.
    #[inline(never)]
    pub(super) fn on_verification_event(
        &mut self,
        sender: &str,
        event_type: &str,
        content: Map<'_>,
        now: Instant,
    ) {
        let Some(kind) = event_type.strip_prefix(EVENT_PREFIX) else {
            return;
        };
        // In-room verification (`m.relates_to`) is not spoken: without a transaction id
        // there is nothing to answer.
        let Some(txn) = text(&content, "transaction_id") else {
            return;
        };
        let ours = self
            .verification
            .as_ref()
            .is_some_and(|v| v.txn.as_str() == txn);
        let result = if ours {
            self.on_active_event(sender, kind, &content, now)
        } else {
            self.on_new_event(sender, kind, txn, &content, now)
        };
        if let Err(error) = result {
            // Something over a capacity (an id, a key id list): the transaction cannot go on.
            if ours {
                self.cancel_active(CancelCode::InvalidMessage);
            }
            self.error(error);
        }
    }

    fn on_new_event(
        &mut self,
        sender: &str,
        kind: &str,
        txn: &str,
        content: &Map<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        match kind {
            "request" | "start" => {}
            // Nothing to answer to the end of a transaction the token does not run.
            "cancel" | "done" => return Ok(()),
            _ => {
                self.stray_cancel = Some(StrayCancel {
                    user: bounded(sender)?,
                    txn: bounded(txn)?,
                    code: CancelCode::UnknownTransaction,
                });
                return Ok(());
            }
        }
        if self
            .verification
            .as_ref()
            .is_some_and(|v| v.phase != Phase::Finished)
        {
            // One verification at a time: the other one waits for its timeout.
            return Ok(());
        }
        let Some(device) = text(content, "from_device") else {
            return Ok(());
        };
        let (Ok(peer_user), Ok(peer_device), Ok(txn)) =
            (bounded(sender), bounded(device), bounded(txn))
        else {
            return Err(TokenError::LimitReached(Limit::IdLength));
        };
        let mut v = Verification::new(txn, peer_user, peer_device, now);
        if kind == "request" {
            v.phase = Phase::RequestReceived;
            self.verification = Some(v);
            if !texts(content, "methods").any(|m| m == SAS_METHOD) {
                self.cancel_active(CancelCode::UnknownMethod);
                return Ok(());
            }
        } else {
            v.phase = Phase::StartReceived;
            self.verification = Some(v);
            if let Err(code) = self.take_start(content) {
                self.cancel_active(code);
                return Ok(());
            }
        }
        self.track_for_verification(sender, device);
        if let Some(v) = &self.verification {
            self.env.ui.event(&UiEvent::VerificationRequested {
                user_id: &v.peer_user,
                device_id: &v.peer_device,
            });
        }
        Ok(())
    }

    /// Reads the peer's `start`: the methods, a fresh ephemeral key and the commitment to
    /// it over the canonical JSON of the start.
    fn take_start(&mut self, content: &Map<'_>) -> Result<(), CancelCode> {
        let choice = choose_from_start(content)?;
        let sas = Sas::new(&mut CryptoSource(&mut self.env.rng));
        let canonical = {
            let mut w = JsonWriter::new(&mut self.env.flash.scratch);
            write_canonical(&mut w, *content, &[]).map_err(|_| CancelCode::InvalidMessage)?;
            w.len()
        };
        let json = self.env.flash.scratch.get(..canonical).unwrap_or_default();
        let ours = commitment(&sas.public_key(), json);
        let Some(v) = &mut self.verification else {
            return Ok(());
        };
        v.we_started = false;
        v.mac_method = choice.mac_method;
        v.mac_encoding = default_encoding(choice.mac_method);
        v.emoji = choice.emoji;
        v.commitment = ours;
        v.keys = Keys::Ephemeral(sas);
        Ok(())
    }

    fn on_active_event(
        &mut self,
        sender: &str,
        kind: &str,
        content: &Map<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &mut self.verification else {
            return Ok(());
        };
        if v.peer_user.as_str() != sender {
            if kind != "cancel" {
                self.cancel_active(CancelCode::UserMismatch);
            }
            return Ok(());
        }
        if v.phase == Phase::Finished {
            // The peer's `done` or `cancel` after ours: nothing left to do.
            if v.outgoing.is_empty() {
                self.verification = None;
            }
            return Ok(());
        }
        v.step = now;
        let phase = v.phase;
        match (kind, phase) {
            ("cancel", _) => {
                let code = text(content, "code").unwrap_or("m.unknown");
                self.env.ui.event(&UiEvent::VerificationCancelled {
                    user_id: &v.peer_user,
                    device_id: &v.peer_device,
                    code,
                    by_peer: true,
                });
                self.verification = None;
            }
            ("start", Phase::ReadySent) => {
                if text(content, "from_device") != Some(v.peer_device.as_str()) {
                    self.cancel_active(CancelCode::UserMismatch);
                } else if let Err(code) = self.take_start(content) {
                    self.cancel_active(code);
                } else if let Some(v) = &mut self.verification {
                    v.send(Outgoing::Accept);
                    v.phase = Phase::AcceptSent;
                }
            }
            ("ready", Phase::RequestSent) => {
                if text(content, "from_device") != Some(v.peer_device.as_str()) {
                    self.cancel_active(CancelCode::UserMismatch);
                } else if !texts(content, "methods").any(|m| m == SAS_METHOD) {
                    self.cancel_active(CancelCode::UnknownMethod);
                } else {
                    v.keys = Keys::Ephemeral(Sas::new(&mut CryptoSource(&mut self.env.rng)));
                    v.send(Outgoing::Start);
                    v.phase = Phase::StartSent;
                }
            }
            ("start", Phase::StartSent) => {
                // Both sides started: the start of the smaller user id (device id for the
                // same user) stands.
                let theirs_wins = (v.peer_user.as_str(), v.peer_device.as_str())
                    < (own_user.as_str(), own_device.as_str());
                if theirs_wins {
                    // A start on its way still leaves; the peer drops it by the same rule.
                    let in_flight = v.sending && v.outgoing.front() == Some(&Outgoing::Start);
                    if !in_flight {
                        v.outgoing.retain(|m| *m != Outgoing::Start);
                    }
                    if let Err(code) = self.take_start(content) {
                        self.cancel_active(code);
                    } else if let Some(v) = &mut self.verification {
                        v.send(Outgoing::Accept);
                        v.phase = Phase::AcceptSent;
                    }
                }
            }
            ("accept", Phase::StartSent) => {
                let accepted = choice_of_accept(content).and_then(|choice| {
                    let commitment = text(content, "commitment")
                        .and_then(decode_commitment)
                        .ok_or(CancelCode::InvalidMessage)?;
                    Ok((choice, commitment))
                });
                match accepted {
                    Err(code) => self.cancel_active(code),
                    Ok((choice, commitment)) => {
                        v.mac_method = choice.mac_method;
                        v.mac_encoding = default_encoding(choice.mac_method);
                        v.emoji = choice.emoji;
                        v.commitment = commitment;
                        v.send(Outgoing::Key);
                        v.phase = Phase::KeySent;
                    }
                }
            }
            ("key", Phase::KeySent | Phase::AcceptSent) => self.on_key(content)?,
            ("mac", Phase::Comparing) if !v.their_mac_ok => self.on_mac(content)?,
            // `ready` answers a request, which the token never sends; `done` before the MACs
            // and anything else out of order is unexpected.
            _ => self.cancel_active(CancelCode::UnexpectedMessage),
        }
        Ok(())
    }

    /// The peer's ephemeral key: checked against its commitment (the token started), the
    /// shared secret agreed, the strings shown.
    fn on_key(&mut self, content: &Map<'_>) -> Result<(), TokenError> {
        let mut decoded = [0u8; 33];
        let their_key = text(content, "key")
            .and_then(|k| jeton_olm::base64::decode(k.as_bytes(), &mut decoded).ok())
            .and_then(|k| Curve25519PublicKey::from_slice(k).ok());
        let Some(their_key) = their_key else {
            self.cancel_active(CancelCode::InvalidMessage);
            return Ok(());
        };
        let we_started = self.verification.as_ref().is_some_and(|v| v.we_started);
        if we_started {
            let expected = self.verification.as_ref().map(|v| v.commitment);
            let computed = self.own_start_commitment(&their_key)?;
            let equal = expected.is_some_and(|e| bool::from(e.ct_eq(&computed)));
            if !equal {
                self.cancel_active(CancelCode::MismatchedCommitment);
                return Ok(());
            }
        }
        let Some(v) = &mut self.verification else {
            return Ok(());
        };
        let Keys::Ephemeral(sas) = core::mem::replace(&mut v.keys, Keys::None) else {
            self.cancel_active(CancelCode::UnexpectedMessage);
            return Ok(());
        };
        let our_key = sas.public_key();
        let Ok(established) = sas.diffie_hellman(&their_key) else {
            self.cancel_active(CancelCode::KeyMismatch);
            return Ok(());
        };
        v.keys = Keys::Established(established);
        if !v.we_started {
            v.send(Outgoing::Key);
        }
        v.phase = Phase::Comparing;
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &self.verification else {
            return Ok(());
        };
        let mut ours = [0u8; 43];
        let mut theirs = [0u8; 43];
        let ours = our_key.to_base64(&mut ours);
        let theirs = their_key.to_base64(&mut theirs);
        let own = [own_user.as_str(), own_device.as_str(), ours];
        let peer = [v.peer_user.as_str(), v.peer_device.as_str(), theirs];
        let (first, second) = if v.we_started {
            (own, peer)
        } else {
            (peer, own)
        };
        let mut info: String<320> = String::new();
        concat(&mut info, &["MATRIX_KEY_VERIFICATION_SAS|"])?;
        for part in first.iter().chain(second.iter()) {
            concat(&mut info, &[part, "|"])?;
        }
        concat(&mut info, &[&v.txn])?;
        let Keys::Established(established) = &v.keys else {
            return Ok(());
        };
        let bytes = established.bytes(info.as_bytes());
        self.env.ui.event(&UiEvent::ShortAuthString {
            user_id: &v.peer_user,
            device_id: &v.peer_device,
            decimals: bytes.decimals(),
            emoji: v.emoji.then(|| bytes.emoji_indices()),
        });
        Ok(())
    }

    /// The commitment a peer must have sent to `their_key` for the token's own `start`.
    fn own_start_commitment(
        &mut self,
        their_key: &Curve25519PublicKey,
    ) -> Result<[u8; 32], TokenError> {
        let (_, own_device) = self.own_ids();
        let txn = self
            .verification
            .as_ref()
            .map(|v| v.txn.clone())
            .unwrap_or_default();
        let len = {
            let mut e = Encoder::new(Cursor::new(&mut self.env.work[..]));
            write_start_content(&mut e, &own_device, &txn)?;
            e.writer().position()
        };
        let start = Value::parse(
            self.env.work.get(..len).unwrap_or_default(),
            TableVersion::V2,
        )?;
        let Value::Map(start) = start else {
            return Err(TokenError::Json(crate::json::JsonError::Malformed));
        };
        let mut w = JsonWriter::new(&mut self.env.flash.scratch);
        write_canonical(&mut w, start, &[])?;
        Ok(commitment(their_key, w.as_bytes()))
    }

    /// The `MATRIX_KEY_VERIFICATION_MAC` info prefix for MACs sent by `from` to `to`.
    fn mac_info(
        from: (&str, &str),
        to: (&str, &str),
        txn: &str,
    ) -> Result<String<320>, TokenError> {
        let mut info = String::new();
        concat(
            &mut info,
            &[
                "MATRIX_KEY_VERIFICATION_MAC",
                from.0,
                from.1,
                to.0,
                to.1,
                txn,
            ],
        )?;
        Ok(info)
    }

    /// The peer's MAC over its device key and the list of key ids.
    fn on_mac(&mut self, content: &Map<'_>) -> Result<(), TokenError> {
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &self.verification else {
            return Ok(());
        };
        let Some(device) = self.devices.find(&v.peer_user, &v.peer_device) else {
            // The device keys never arrived: nothing to check the MAC against.
            self.cancel_active(CancelCode::KeyMismatch);
            return Ok(());
        };
        let their_ed = device.ed;
        let Keys::Established(established) = &v.keys else {
            return Ok(());
        };
        let info = Self::mac_info(
            (&v.peer_user, &v.peer_device),
            (&own_user, &own_device),
            &v.txn,
        )?;
        let (Ok(Some(Value::Map(macs))), Some(keys_mac)) =
            (content.get("mac"), content.get("keys").ok().flatten())
        else {
            self.cancel_active(CancelCode::InvalidMessage);
            return Ok(());
        };
        let mut ids: Vec<&str, MAX_MAC_KEYS> = Vec::new();
        for entry in macs.entries() {
            let Ok((id, _)) = entry else {
                self.cancel_active(CancelCode::InvalidMessage);
                return Ok(());
            };
            if ids.push(id).is_err() {
                self.cancel_active(CancelCode::InvalidMessage);
                return Ok(());
            }
        }
        sort_ids(&mut ids);
        let mut key_ids: String<{ MAX_MAC_KEYS * (MAX_ID_LEN + 1) }> = String::new();
        for (at, id) in ids.iter().enumerate() {
            concat(&mut key_ids, &[if at > 0 { "," } else { "" }, id])?;
        }
        let mut device_key_id: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
        concat(&mut device_key_id, &["ed25519:", &v.peer_device])?;
        let method = v.mac_method;
        let check = |input: &str, suffix: &str, tag: Value<'_>| -> Option<MacEncoding> {
            let mut full: String<400> = String::new();
            concat(&mut full, &[&info, suffix]).ok()?;
            let mut text = [0u8; 88];
            let tag = base64_text(tag, &mut text)?;
            established
                .verify_mac(input.as_bytes(), full.as_bytes(), method, tag)
                .ok()
        };
        let mut verdict = check(&key_ids, "KEY_IDS", keys_mac);
        let mut device_key_seen = false;
        let mut ed_text = [0u8; 43];
        let ed_text = jeton_olm::base64::encode(&their_ed, &mut ed_text).unwrap_or_default();
        for entry in macs.entries().flatten() {
            let (id, tag) = entry;
            if id == device_key_id.as_str() {
                device_key_seen = true;
                let encoding = check(ed_text, id, tag);
                if encoding.is_none() {
                    verdict = None;
                }
            }
            // Other keys (a cross-signing master key) are not known to the token: covered
            // by the key-id MAC, not checked one by one.
        }
        let Some(encoding) = verdict.filter(|_| device_key_seen) else {
            self.cancel_active(CancelCode::KeyMismatch);
            return Ok(());
        };
        let Some(v) = &mut self.verification else {
            return Ok(());
        };
        v.their_mac_ok = true;
        if v.mac_method == MacMethod::HkdfHmacSha256 {
            // Answer in the encoding the peer used (see the module documentation); the
            // person's confirmation may already be waiting for this.
            v.mac_encoding = encoding;
            if v.confirmed {
                v.send(Outgoing::Mac);
            }
        }
        if v.confirmed {
            self.finish_verified()?;
        }
        Ok(())
    }

    /// Both MACs agree and the person confirmed: the device is verified, on flash first.
    fn finish_verified(&mut self) -> Result<(), TokenError> {
        let Some(v) = &mut self.verification else {
            return Ok(());
        };
        // The keys stay until the MAC is out (`on_verification_sent`).
        v.phase = Phase::Finished;
        v.send(Outgoing::Done);
        self.devices.set_verified(&v.peer_user, &v.peer_device);
        self.devices.save(&mut self.env.flash)?;
        if let Some(v) = &self.verification {
            self.env.ui.event(&UiEvent::DeviceVerified {
                user_id: &v.peer_user,
                device_id: &v.peer_device,
            });
        }
        Ok(())
    }

    /// Writes the next verification message into the work buffer: its body length, event
    /// type and whether it is the stray cancel, or `None`.
    pub(super) fn next_verification_message(
        &mut self,
    ) -> Result<Option<(usize, &'static str, bool)>, TokenError> {
        if let Some(stray) = &self.stray_cancel {
            let len = to_device_body(&mut self.env.work, &stray.user, "*", |e| {
                write_cancel(e, &stray.txn, stray.code)
            })?;
            return Ok(Some((len, Outgoing::Cancel(stray.code).event_type(), true)));
        }
        let (own_user, own_device) = self.own_ids();
        let own_ed = *self.account.olm.ed25519_key().as_bytes();
        let Some(v) = &self.verification else {
            return Ok(None);
        };
        let Some(message) = v.outgoing.front().copied() else {
            return Ok(None);
        };
        let txn = v.txn.as_str();
        let len = to_device_body(&mut self.env.work, &v.peer_user, &v.peer_device, |e| {
            match message {
                Outgoing::Request => {
                    cbor(e.map(4))?;
                    key(e, "from_device")?;
                    cbor(e.str(&own_device))?;
                    key(e, "methods")?;
                    cbor(e.array(1))?;
                    cbor(e.str(SAS_METHOD))?;
                    key(e, "timestamp")?;
                    cbor(e.u64(v.requested_at_unix_ms))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Ready => {
                    cbor(e.map(3))?;
                    key(e, "from_device")?;
                    cbor(e.str(&own_device))?;
                    key(e, "methods")?;
                    cbor(e.array(1))?;
                    cbor(e.str(SAS_METHOD))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Start => write_start_content(e, &own_device, txn)?,
                Outgoing::Accept => {
                    cbor(e.map(7))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                    key(e, "method")?;
                    cbor(e.str(SAS_METHOD))?;
                    key(e, "key_agreement_protocol")?;
                    cbor(e.str(KEY_AGREEMENT))?;
                    key(e, "hash")?;
                    cbor(e.str(HASH))?;
                    key(e, "message_authentication_code")?;
                    cbor(e.str(v.mac_method.name()))?;
                    key(e, "short_authentication_string")?;
                    if v.emoji {
                        cbor(e.array(2))?;
                        cbor(e.str("decimal"))?;
                        cbor(e.str("emoji"))?;
                    } else {
                        cbor(e.array(1))?;
                        cbor(e.str("decimal"))?;
                    }
                    key(e, "commitment")?;
                    let mut text = [0u8; 43];
                    let text = jeton_olm::base64::encode(&v.commitment, &mut text)
                        .map_err(|_| TokenError::Crypto)?;
                    cbor(e.str(text))?;
                }
                Outgoing::Key => {
                    let public = match &v.keys {
                        Keys::Ephemeral(sas) => sas.public_key(),
                        Keys::Established(established) => established.our_public_key(),
                        Keys::None => return Err(TokenError::Crypto),
                    };
                    cbor(e.map(2))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                    key(e, "key")?;
                    let mut text = [0u8; 43];
                    cbor(e.str(public.to_base64(&mut text)))?;
                }
                Outgoing::Mac => {
                    let Keys::Established(established) = &v.keys else {
                        return Err(TokenError::Crypto);
                    };
                    let info = Self::mac_info(
                        (&own_user, &own_device),
                        (&v.peer_user, &v.peer_device),
                        txn,
                    )?;
                    let mut key_id: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
                    concat(&mut key_id, &["ed25519:", &own_device])?;
                    let mut ed_text = [0u8; 43];
                    let ed_text = jeton_olm::base64::encode(&own_ed, &mut ed_text)
                        .map_err(|_| TokenError::Crypto)?;
                    let mut full: String<400> = String::new();
                    concat(&mut full, &[&info, &key_id])?;
                    let mut key_mac = [0u8; MAC_BASE64_LEN];
                    let key_mac = established.mac_text(
                        ed_text.as_bytes(),
                        full.as_bytes(),
                        v.mac_encoding,
                        &mut key_mac,
                    );
                    full.clear();
                    concat(&mut full, &[&info, "KEY_IDS"])?;
                    let mut ids_mac = [0u8; MAC_BASE64_LEN];
                    let ids_mac = established.mac_text(
                        key_id.as_bytes(),
                        full.as_bytes(),
                        v.mac_encoding,
                        &mut ids_mac,
                    );
                    cbor(e.map(3))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                    key(e, "mac")?;
                    cbor(e.map(1))?;
                    cbor(e.str(&key_id))?;
                    cbor(e.str(key_mac))?;
                    key(e, "keys")?;
                    cbor(e.str(ids_mac))?;
                }
                Outgoing::Done => {
                    cbor(e.map(1))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Cancel(code) => write_cancel(e, txn, code)?,
            }
            Ok(())
        })?;
        if let Some(v) = &mut self.verification {
            v.sending = true;
        }
        Ok(Some((len, message.event_type(), false)))
    }

    /// The homeserver took the message [`Self::next_verification_message`] wrote (or
    /// refused it for good): on to the next.
    pub(super) fn on_verification_sent(&mut self, stray: bool) {
        if stray {
            self.stray_cancel = None;
            return;
        }
        let Some(v) = &mut self.verification else {
            return;
        };
        if !core::mem::take(&mut v.sending) {
            // A verification that began while the message of the last one was in flight.
            return;
        }
        let sent = v.outgoing.pop_front();
        if sent == Some(Outgoing::Mac) && v.phase == Phase::Finished {
            // The secret is no longer needed once the MAC is out.
            v.keys = Keys::None;
        }
        if v.phase == Phase::Finished && v.outgoing.is_empty() {
            self.verification = None;
        }
    }
}

/// A commitment in unpadded base64 (the specification), or in hex (matrix-nio 0.26,
/// <https://github.com/matrix-nio/matrix-nio/issues/570>): 43 and 64 characters cannot be
/// confused.
fn decode_commitment(text: &str) -> Option<[u8; 32]> {
    if text.len() == 64 {
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = core::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        return Some(out);
    }
    let mut decoded = [0u8; 33];
    let bytes = jeton_olm::base64::decode(text.as_bytes(), &mut decoded).ok()?;
    bytes.try_into().ok()
}

/// The MAC encoding a method starts with (see the module documentation).
fn default_encoding(method: MacMethod) -> MacEncoding {
    match method {
        MacMethod::HkdfHmacSha256V2 => MacEncoding::Base64,
        MacMethod::HkdfHmacSha256 => MacEncoding::LibolmInPlace,
    }
}

fn write_cancel(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    txn: &str,
    code: CancelCode,
) -> Result<(), TokenError> {
    cbor(e.map(3))?;
    key(e, "transaction_id")?;
    cbor(e.str(txn))?;
    key(e, "code")?;
    cbor(e.str(code.as_str()))?;
    key(e, "reason")?;
    cbor(e.str(code.reason()))?;
    Ok(())
}

/// A `sendToDevice` body with one message: `{"messages": {user: {device: content}}}`.
fn to_device_body(
    out: &mut [u8],
    user: &str,
    device: &str,
    content: impl FnOnce(&mut Encoder<Cursor<&mut [u8]>>) -> Result<(), TokenError>,
) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(1))?;
    key(&mut e, "messages")?;
    cbor(e.map(1))?;
    cbor(e.str(user))?;
    cbor(e.map(1))?;
    cbor(e.str(device))?;
    content(&mut e)?;
    Ok(e.writer().position())
}

/// Sorts key ids by their bytes, the order the MAC's key list is built in.
///
/// An insertion sort: a MAC names a handful of keys, and core's generic sort costs about
/// 7 KB of flash on a Cortex-M.
fn sort_ids(ids: &mut [&str]) {
    for sorted in 1..ids.len() {
        let mut i = sorted;
        while i > 0 {
            let (Some(before), Some(here)) = (ids.get(i - 1), ids.get(i)) else {
                break;
            };
            if before <= here {
                break;
            }
            ids.swap(i - 1, i);
            i -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_ids;

    proptest::proptest! {
        #[test]
        fn key_ids_sort_as_the_standard_sort_does(ids in proptest::collection::vec("[a-zA-Z0-9:_]{0,12}", 0..8)) {
            let mut ours: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut standard = ours.clone();
            sort_ids(&mut ours);
            standard.sort();
            proptest::prop_assert_eq!(ours, standard);
        }
    }
}
