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

mod incoming;
mod outgoing;

use heapless::{Deque, String};

use jeton_olm::sas::{EstablishedSas, MacEncoding, MacMethod, Sas};

use super::*;
use crate::matrix::rng::CryptoSource;

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

    /// Queues `message` for the peer. Out of line: it is called from every step.
    #[inline(never)]
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

/// The verification the token runs, and a cancel it owes for a message of another
/// transaction.
pub(super) struct Verifications {
    /// The device verification in progress.
    active: Option<Verification>,
    /// A cancel owed for a verification message of an unknown transaction.
    stray_cancel: Option<StrayCancel>,
}

impl Verifications {
    /// No verification.
    pub(super) const fn new() -> Self {
        Verifications {
            active: None,
            stray_cancel: None,
        }
    }

    /// The user of the verification still running, whose devices stay tracked while it runs.
    pub(super) fn peer_user(&self) -> Option<&str> {
        self.active
            .as_ref()
            .filter(|v| v.phase != Phase::Finished)
            .map(|v| v.peer_user.as_str())
    }
}

/// A `cancel` for a transaction the token does not run, to all the sender's devices (a
/// to-device message names its sender's user but not the device).
pub(super) struct StrayCancel {
    user: UserId,
    txn: TransactionId,
    code: CancelCode,
}

/// The `MATRIX_KEY_VERIFICATION_MAC` info prefix for MACs sent by `from` to `to`.
fn mac_info(from: (&str, &str), to: (&str, &str), txn: &str) -> Result<String<320>, TokenError> {
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

/// Appends `parts` to a bounded text.
fn concat<const N: usize>(out: &mut String<N>, parts: &[&str]) -> Result<(), TokenError> {
    for part in parts {
        out.push_str(part)
            .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
    }
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
        self.withdraw_unanswered_request();
        if self
            .verification
            .active
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
        self.verification.active = Some(verification);
        self.track_for_verification(user, device);
        Ok(())
    }

    /// The person starts another verification while the token's own request has had no
    /// answer: that request is cancelled (`m.user`) and gives way. A request still on its
    /// way out, or a cancel still owed elsewhere, keeps it.
    fn withdraw_unanswered_request(&mut self) {
        let Some(v) = self.verification.active.as_ref() else {
            return;
        };
        if !(v.we_started && v.phase == Phase::RequestSent && !v.sending)
            || self.verification.stray_cancel.is_some()
        {
            return;
        }
        self.verification.stray_cancel = Some(StrayCancel {
            user: v.peer_user.clone(),
            txn: v.txn.clone(),
            code: CancelCode::User,
        });
        self.env.ui.event(&UiEvent::VerificationCancelled {
            user_id: &v.peer_user,
            device_id: &v.peer_device,
            code: CancelCode::User.as_str(),
            by_peer: false,
        });
        self.verification.active = None;
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
        let Some(v) = &mut self.verification.active else {
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
        if let Some(v) = &mut self.verification.active {
            v.step = now;
        }
        Ok(())
    }

    /// The person pressed cancel: `m.mismatched_sas` while comparing strings, `m.user`
    /// before.
    pub(super) fn cancel_verification(&mut self) -> Result<(), CommandError> {
        let code = match &self.verification.active {
            Some(v) if v.phase == Phase::Comparing => CancelCode::MismatchedSas,
            Some(v) if v.phase != Phase::Finished => CancelCode::User,
            _ => return Err(CommandError::NoVerification),
        };
        self.cancel_active(code);
        Ok(())
    }

    /// Cancels the verification in progress with `code`, telling the peer and the person.
    fn cancel_active(&mut self, code: CancelCode) {
        let Some(v) = &mut self.verification.active else {
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
        self.verification
            .active
            .as_ref()
            .and_then(Verification::deadline)
    }

    /// Cancels the verification in progress with `m.timeout` if its time is up.
    pub(super) fn check_verification_timeout(&mut self, now: Instant) {
        if self.verification_deadline().is_some_and(|due| now >= due) {
            self.cancel_active(CancelCode::Timeout);
        }
    }

    /// Both MACs agree and the person confirmed: the device is verified, on flash first.
    #[inline(never)]
    fn finish_verified(&mut self) -> Result<(), TokenError> {
        let Some(v) = &mut self.verification.active else {
            return Ok(());
        };
        // The keys stay until the MAC is out (`on_verification_sent`).
        v.phase = Phase::Finished;
        v.send(Outgoing::Done);
        if let Some(slot) = self.devices.set_verified(&v.peer_user, &v.peer_device) {
            // A key withheld from it for want of verification goes to it now.
            self.rooms.retry_device(slot);
        }
        self.devices.save(&mut self.env.flash)?;
        if let Some(v) = &self.verification.active {
            self.env.ui.event(&UiEvent::DeviceVerified {
                user_id: &v.peer_user,
                device_id: &v.peer_device,
            });
        }
        Ok(())
    }

    /// The homeserver took the message [`Self::next_verification_message`] wrote (or
    /// refused it for good): on to the next.
    pub(super) fn on_verification_sent(&mut self, stray: bool) {
        if stray {
            self.verification.stray_cancel = None;
            return;
        }
        let Some(v) = &mut self.verification.active else {
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
            self.verification.active = None;
        }
    }
}
