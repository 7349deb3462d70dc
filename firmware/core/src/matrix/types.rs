//! The vocabulary of the Matrix client: its limits, configuration, UI events and errors.

use core::fmt;

use heapless::String;

use crate::coap::{ClientConfig, ExchangeError, RequestError};
use crate::json::JsonError;
use crate::store::StoreError;
use jeton_olm::DecryptionError;
use jeton_proto::view::ViewError;
use jeton_proto::write::WriteError;

/// Rooms the token is in (or joining).
pub const MAX_ROOMS: usize = 4;
/// Joined members tracked per room (the token itself included).
pub const MAX_MEMBERS: usize = 8;
/// Users whose device lists the token tracks.
pub const MAX_TRACKED_USERS: usize = 12;
/// Devices of tracked users the token knows (its own excluded). At most 32: a room's
/// outbound session records with a bit mask which of them have its key.
pub const MAX_DEVICES: usize = 16;
/// Olm sessions kept on flash (only the one in use is in RAM).
pub const MAX_OLM_SESSIONS: usize = 16;
/// Inbound Megolm sessions (room keys received).
pub const MAX_INBOUND_SESSIONS: usize = 8;
/// Room keys waiting for their sender's device keys.
pub const MAX_PENDING_ROOM_KEYS: usize = 2;
/// Encrypted events waiting for a room key that is being verified, fetched again once it is.
pub const MAX_RETRY_EVENTS: usize = 4;
/// Message indexes remembered per inbound session for replay detection.
pub const REPLAY_WINDOW: usize = 16;
/// Longest message text, in bytes of UTF-8.
pub const MAX_MESSAGE_LEN: usize = 512;
/// Messages waiting to be acknowledged by the homeserver.
pub const OUTBOX_DEPTH: usize = 4;
/// Invites waiting for the user's decision.
pub const MAX_INVITES: usize = 2;
/// Users whose invites are accepted without asking.
pub const MAX_ALLOWED_INVITERS: usize = 4;
/// One-time keys the account holds; half of them are kept on the server.
pub const ONE_TIME_KEYS: usize = 20;
/// One-time keys per `keys/upload` body, so that the body fits [`WORK_BYTES`].
pub const UPLOAD_BATCH: usize = 5;
/// Longest user, room or event id the token stores.
pub const MAX_ID_LEN: usize = 64;
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 32;
/// Longest access token.
pub const MAX_ACCESS_TOKEN_LEN: usize = 160;
/// Longest sync cursor or filter id.
pub const MAX_CURSOR_LEN: usize = 96;
/// The CoAP request arena: a Megolm send of a [`MAX_MESSAGE_LEN`] message fits.
pub const REQUEST_BYTES: usize = 2048;
/// The buffer request bodies and decrypted plaintexts are built in.
pub const WORK_BYTES: usize = 1536;
/// The CoAP response buffer: the largest sync or keys/query response the token reads.
pub const RESPONSE_BYTES: usize = 4096;

/// A user id (`@user:server`).
pub type UserId = String<MAX_ID_LEN>;
/// A room id (`!room:server`).
pub type RoomId = String<MAX_ID_LEN>;
/// An event id.
pub type EventId = String<MAX_ID_LEN>;
/// A device id.
pub type DeviceId = String<MAX_DEVICE_ID_LEN>;

/// A bounded table that is full, named in [`TokenError::LimitReached`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`MAX_ROOMS`].
    Rooms,
    /// [`MAX_MEMBERS`].
    Members,
    /// [`MAX_TRACKED_USERS`].
    TrackedUsers,
    /// [`MAX_DEVICES`].
    Devices,
    /// [`MAX_OLM_SESSIONS`].
    OlmSessions,
    /// [`MAX_INBOUND_SESSIONS`].
    InboundSessions,
    /// [`MAX_PENDING_ROOM_KEYS`].
    PendingRoomKeys,
    /// [`OUTBOX_DEPTH`].
    Outbox,
    /// [`MAX_INVITES`].
    Invites,
    /// An id longer than [`MAX_ID_LEN`], [`MAX_DEVICE_ID_LEN`], [`MAX_ACCESS_TOKEN_LEN`]
    /// or [`MAX_CURSOR_LEN`].
    IdLength,
    /// [`MAX_MESSAGE_LEN`].
    MessageLength,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Rooms => "rooms",
            Limit::Members => "members per room",
            Limit::TrackedUsers => "tracked users",
            Limit::Devices => "devices",
            Limit::OlmSessions => "Olm sessions",
            Limit::InboundSessions => "room keys",
            Limit::PendingRoomKeys => "room keys awaiting verification",
            Limit::Outbox => "unsent messages",
            Limit::Invites => "pending invites",
            Limit::IdLength => "identifier length",
            Limit::MessageLength => "message length",
        })
    }
}

/// Something went wrong inside the token; reported as [`UiEvent::Error`] or returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The store failed.
    Store(StoreError),
    /// A stored record could not be read (corrupt, or pickled with another storage key).
    CorruptRecord(u16),
    /// A CoAP request could not be queued.
    Request(RequestError),
    /// A CoAP exchange failed.
    Exchange(ExchangeError),
    /// The gateway or homeserver answered with this CoAP code (`class * 100 + detail`).
    Server(u16),
    /// A response body was not what the profile says.
    Malformed(ViewError),
    /// A request body could not be written.
    Write(WriteError),
    /// JSON could not be written or read.
    Json(JsonError),
    /// A bounded table is full.
    LimitReached(Limit),
    /// Encryption failed.
    Crypto,
    /// A file transfer failed.
    File(crate::files::FileError),
    /// The protected link to the gateway failed.
    Link(crate::link::LinkError),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Store(e) => write!(f, "storage failed: {e}"),
            TokenError::CorruptRecord(id) => write!(f, "stored record {id:#06x} is unreadable"),
            TokenError::Request(e) => write!(f, "a request could not be queued: {e}"),
            TokenError::Exchange(e) => write!(f, "a request failed: {e}"),
            TokenError::Server(code) => {
                write!(f, "the server answered {}.{:02}", code / 100, code % 100)
            }
            TokenError::Malformed(e) => write!(f, "a response was malformed: {e}"),
            TokenError::Write(e) => write!(f, "a request body could not be written: {e}"),
            TokenError::Json(e) => write!(f, "JSON failed: {e}"),
            TokenError::LimitReached(limit) => write!(f, "the limit of {limit} is reached"),
            TokenError::Crypto => f.write_str("encryption failed"),
            TokenError::File(e) => write!(f, "a file transfer failed: {e}"),
            TokenError::Link(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for TokenError {}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        TokenError::Store(e)
    }
}
impl From<RequestError> for TokenError {
    fn from(e: RequestError) -> Self {
        TokenError::Request(e)
    }
}
impl From<ViewError> for TokenError {
    fn from(e: ViewError) -> Self {
        TokenError::Malformed(e)
    }
}
impl From<WriteError> for TokenError {
    fn from(e: WriteError) -> Self {
        TokenError::Write(e)
    }
}
impl From<crate::files::FileError> for TokenError {
    fn from(e: crate::files::FileError) -> Self {
        TokenError::File(e)
    }
}
impl From<JsonError> for TokenError {
    fn from(e: JsonError) -> Self {
        TokenError::Json(e)
    }
}

/// Why a user command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The token has not logged in yet.
    NotLoggedIn,
    /// A login is already under way, or the token is logged in.
    AlreadyLoggedIn,
    /// The token is not in that room.
    UnknownRoom,
    /// There is no invite to that room.
    NoSuchInvite,
    /// A verification is already under way.
    VerificationInProgress,
    /// No verification waits for the person.
    NoVerification,
    /// The text starts with the control character the token reserves for file events.
    ReservedText,
    /// Something could not be done; the error says what.
    Failed(TokenError),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotLoggedIn => f.write_str("the token is not logged in"),
            CommandError::AlreadyLoggedIn => f.write_str("the token is already logged in"),
            CommandError::UnknownRoom => f.write_str("the token is not in that room"),
            CommandError::NoSuchInvite => f.write_str("there is no invite to that room"),
            CommandError::VerificationInProgress => {
                f.write_str("a verification is already under way")
            }
            CommandError::NoVerification => f.write_str("no verification waits for confirmation"),
            CommandError::ReservedText => {
                f.write_str("the message starts with a control character the token reserves")
            }
            CommandError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for CommandError {}

impl<E: Into<TokenError>> From<E> for CommandError {
    fn from(e: E) -> Self {
        CommandError::Failed(e.into())
    }
}

/// Why an encrypted message could not be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndecryptableReason {
    /// No room key for its session (sent before the token joined, or not shared with it).
    UnknownSession,
    /// The key of its session is still being verified; the event is fetched again after.
    AwaitingKey,
    /// The same session and index arrived before under another event id: a replay.
    Replay,
    /// The session's sender is not the event's sender.
    SenderMismatch,
    /// The plaintext names another room.
    WrongRoom,
    /// Decryption failed (signature, MAC, index before the first known one).
    Decryption(DecryptionError),
    /// The event or its plaintext was not the expected shape.
    Malformed,
    /// An algorithm the token does not speak.
    UnsupportedAlgorithm,
}

impl fmt::Display for UndecryptableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSession => f.write_str("the room key was not shared with this device"),
            Self::AwaitingKey => f.write_str("the room key is being verified"),
            Self::Replay => f.write_str("it replays an earlier message"),
            Self::SenderMismatch => f.write_str("its sender does not own the room key"),
            Self::WrongRoom => f.write_str("it was encrypted for another room"),
            Self::Decryption(e) => write!(f, "decryption failed: {e}"),
            Self::Malformed => f.write_str("it is malformed"),
            Self::UnsupportedAlgorithm => f.write_str("its algorithm is not supported"),
        }
    }
}

/// Why a received room key or device was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionReason {
    /// The sending device is unknown even after asking the server.
    UnknownDevice,
    /// A field of the Olm payload does not match (sender, device, recipient, keys).
    Mismatch(&'static str),
    /// The device's self-signature does not verify.
    BadSignature,
    /// A known device id came back with other keys.
    KeysChanged,
    /// The Olm message could not be decrypted.
    Olm,
    /// The payload was not a well-formed room key.
    Malformed,
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownDevice => f.write_str("the sending device is unknown"),
            Self::Mismatch(field) => write!(f, "the field {field} does not match"),
            Self::BadSignature => f.write_str("the signature does not verify"),
            Self::KeysChanged => f.write_str("a known device changed its keys"),
            Self::Olm => f.write_str("the Olm message could not be decrypted"),
            Self::Malformed => f.write_str("the payload is malformed"),
        }
    }
}

/// What the user sees: every UI event the token emits through [`Ui`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UiEvent<'a> {
    /// Login succeeded.
    LoggedIn {
        /// The user.
        user_id: &'a str,
        /// The device id (kept across reboots).
        device_id: &'a str,
    },
    /// Device keys and one-time keys are on the server.
    KeysPublished {
        /// One-time keys the server now holds.
        one_time_keys: u32,
    },
    /// A sync was processed.
    Synced,
    /// A message arrived.
    Message {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// The event id.
        event_id: &'a str,
        /// The text.
        body: &'a str,
        /// Whether it was end-to-end encrypted (false: shown as unencrypted).
        encrypted: bool,
        /// Whether the sending device was verified by SAS (encrypted messages only).
        sender_verified: bool,
    },
    /// An encrypted message could not be shown.
    Undecryptable {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// The event id.
        event_id: &'a str,
        /// Why.
        reason: UndecryptableReason,
    },
    /// A room key was rejected.
    RoomKeyRejected {
        /// Who sent it.
        sender: &'a str,
        /// Why.
        reason: RejectionReason,
    },
    /// A device was not added to the device table.
    DeviceRejected {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
        /// Why.
        reason: RejectionReason,
    },
    /// A message is on flash and will be sent.
    Queued {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// The room.
        room_id: &'a str,
    },
    /// The homeserver has the message.
    Delivered {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// The room.
        room_id: &'a str,
        /// Its event id.
        event_id: &'a str,
    },
    /// A message was dropped without being sent.
    SendFailed {
        /// The number [`Token::send_text`](super::Token::send_text) returned.
        local_id: u32,
        /// Why.
        error: TokenError,
    },
    /// An invite waits for the user (`join` accepts it).
    Invited {
        /// The room.
        room_id: &'a str,
        /// Who invited.
        inviter: &'a str,
    },
    /// The token joined a room.
    Joined {
        /// The room.
        room_id: &'a str,
    },
    /// A file transfer of more than a few blocks advanced.
    FileProgress {
        /// Whether the token is sending (else receiving) the file.
        sending: bool,
        /// Bytes transferred.
        done: u64,
        /// Bytes in all.
        total: u64,
        /// The file's name.
        name: &'a str,
    },
    /// A file is uploaded, and its event is queued as message `local_id`.
    FileUploaded {
        /// The number of the event's message ([`UiEvent::Queued`], [`UiEvent::Delivered`]).
        local_id: u32,
        /// The file's size.
        size: u64,
        /// The file's name.
        name: &'a str,
    },
    /// A file arrived, its hash checked, and it is stored under `name`.
    FileReceived {
        /// The room.
        room_id: &'a str,
        /// The sender.
        sender: &'a str,
        /// Its size.
        size: u64,
        /// Its MIME type.
        mimetype: &'a str,
        /// The name it is stored under.
        name: &'a str,
    },
    /// A file transfer failed; nothing was stored (receiving) or sent (sending).
    FileFailed {
        /// Why.
        error: crate::files::FileError,
        /// The file's name.
        name: &'a str,
    },
    /// Something failed; the token carries on.
    Error(TokenError),
    /// A device asks to verify the token (a request, or a start without one):
    /// [`Token::confirm_verification`](super::Token::confirm_verification) accepts.
    VerificationRequested {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// The short authentication string to compare with the other device's screen:
    /// [`Token::confirm_verification`](super::Token::confirm_verification) if they match,
    /// [`Token::cancel_verification`](super::Token::cancel_verification) if not.
    ShortAuthString {
        /// The other device's user.
        user_id: &'a str,
        /// The other device.
        device_id: &'a str,
        /// Three numbers from 1000 to 9191.
        decimals: [u16; 3],
        /// Seven indices into [`jeton_olm::sas::EMOJI`], when both sides offered emoji.
        emoji: Option<[u8; 7]>,
    },
    /// The device is verified and remembered as such.
    DeviceVerified {
        /// Its user.
        user_id: &'a str,
        /// Its id.
        device_id: &'a str,
    },
    /// A verification ended without verifying.
    VerificationCancelled {
        /// The other device's user.
        user_id: &'a str,
        /// The other device.
        device_id: &'a str,
        /// The cancel code (`m.mismatched_sas`, `m.timeout`, ...).
        code: &'a str,
        /// Whether the other device cancelled (false: the token did).
        by_peer: bool,
    },
    /// The protected link to the gateway has a new security context (EDHOC completed).
    LinkEstablished {
        /// The token's OSCORE sender id (the kid of its requests).
        sender_id: &'a [u8],
    },
}

impl<'a> UiEvent<'a> {
    /// The event as one line of text, the form jeton-sim and the RIOT shell print so that
    /// people and scripts read the same thing from both: a kind word, then the fields
    /// separated by spaces, a message body last with `\` and newlines escaped. `None` for
    /// an event that prints nothing ([`UiEvent::Synced`]).
    pub fn line(&self) -> Option<EventLine<'_, 'a>> {
        (!matches!(self, UiEvent::Synced)).then_some(EventLine(self))
    }
}

/// One [`UiEvent`] as a line of text; see [`UiEvent::line`].
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'e, 'a>(&'e UiEvent<'a>);

impl fmt::Display for EventLine<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            UiEvent::LoggedIn { user_id, device_id } => {
                write!(f, "logged-in {user_id} {device_id}")
            }
            UiEvent::KeysPublished { one_time_keys } => write!(f, "keys-published {one_time_keys}"),
            UiEvent::Synced => Ok(()),
            UiEvent::Message {
                room_id,
                sender,
                event_id,
                body,
                encrypted,
                sender_verified,
            } => write!(
                f,
                "message {room_id} {sender} {event_id} {} {}",
                match (encrypted, sender_verified) {
                    (true, true) => "e2e-verified",
                    (true, false) => "e2e",
                    (false, _) => "unencrypted",
                },
                EscapedBody(body)
            ),
            UiEvent::Undecryptable {
                room_id,
                sender,
                event_id,
                reason,
            } => write!(f, "undecryptable {room_id} {sender} {event_id} {reason}"),
            UiEvent::RoomKeyRejected { sender, reason } => {
                write!(f, "room-key-rejected {sender} {reason}")
            }
            UiEvent::DeviceRejected {
                user_id,
                device_id,
                reason,
            } => write!(f, "device-rejected {user_id} {device_id} {reason}"),
            UiEvent::Queued { local_id, room_id } => write!(f, "queued {local_id} {room_id}"),
            UiEvent::Delivered {
                local_id,
                room_id,
                event_id,
            } => write!(f, "delivered {local_id} {room_id} {event_id}"),
            UiEvent::SendFailed { local_id, error } => write!(f, "send-failed {local_id} {error}"),
            UiEvent::Invited { room_id, inviter } => write!(f, "invited {room_id} {inviter}"),
            UiEvent::Joined { room_id } => write!(f, "joined {room_id}"),
            UiEvent::FileProgress {
                sending,
                done,
                total,
                name,
            } => write!(
                f,
                "file-progress {} {done}/{total} {}",
                if *sending { "send" } else { "receive" },
                EscapedBody(name)
            ),
            UiEvent::FileUploaded {
                local_id,
                size,
                name,
            } => write!(f, "file-uploaded {local_id} {size} {}", EscapedBody(name)),
            UiEvent::FileReceived {
                room_id,
                sender,
                size,
                mimetype,
                name,
            } => write!(
                f,
                "file-received {room_id} {sender} {size} {mimetype} {}",
                EscapedBody(name)
            ),
            UiEvent::FileFailed { error, name } => {
                write!(f, "file-failed {} ({error})", EscapedBody(name))
            }
            UiEvent::Error(error) => write!(f, "error {error}"),
            UiEvent::VerificationRequested { user_id, device_id } => {
                write!(f, "verification-request {user_id} {device_id}")
            }
            UiEvent::ShortAuthString {
                user_id,
                device_id,
                decimals: [a, b, c],
                emoji,
            } => {
                write!(f, "sas {user_id} {device_id} {a} {b} {c}")?;
                if let Some(emoji) = emoji {
                    f.write_str(" emoji")?;
                    for (at, index) in emoji.iter().enumerate() {
                        let name = jeton_olm::sas::EMOJI
                            .get(usize::from(*index))
                            .map_or("?", |(_, name)| name);
                        f.write_str(if at == 0 { " " } else { "," })?;
                        f.write_str(name)?;
                    }
                }
                Ok(())
            }
            UiEvent::DeviceVerified { user_id, device_id } => {
                write!(f, "verified {user_id} {device_id}")
            }
            UiEvent::VerificationCancelled {
                user_id,
                device_id,
                code,
                by_peer,
            } => write!(
                f,
                "verification-cancelled {user_id} {device_id} {code} {}",
                if *by_peer { "by-peer" } else { "by-token" }
            ),
            UiEvent::LinkEstablished { sender_id } => {
                f.write_str("link-established kid=")?;
                for byte in *sender_id {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A message body on one line: `\` becomes `\\` and a newline `\n`, so the body can be
/// the last field of an event line and still be read back exactly.
#[derive(Debug, Clone, Copy)]
pub struct EscapedBody<'a>(pub &'a str);

impl fmt::Display for EscapedBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// Where UI events go: a display, a log, the simulator's stdout.
///
/// The token calls [`Ui::event`] from inside its input methods; the event borrows the
/// token's buffers, so an implementation copies what it keeps. It must not block.
pub trait Ui {
    /// Shows or records `event`.
    fn event(&mut self, event: &UiEvent<'_>);
}

impl<U: Ui + ?Sized> Ui for &mut U {
    fn event(&mut self, event: &UiEvent<'_>) {
        (**self).event(event);
    }
}

/// How the token is set up; the platform provides it at boot.
#[derive(Clone, Debug)]
pub struct Config {
    /// The key jeton-olm pickles are encrypted with. The platform derives it from a
    /// device secret (a key slot, a secure element, a file with mode 0600 on a host).
    pub storage_key: [u8; 32],
    /// The display name given to the device at its first login.
    pub device_display_name: String<MAX_ID_LEN>,
    /// Users whose invites are accepted without asking.
    pub auto_join_from: heapless::Vec<UserId, MAX_ALLOWED_INVITERS>,
    /// The CoAP engine's parameters.
    pub coap: ClientConfig,
    /// The `timeout` of a long-poll sync, in milliseconds.
    pub long_poll_timeout_ms: u32,
    /// Share room keys only with devices verified by SAS (off by default: every device of
    /// every member gets them, as in most Matrix clients).
    pub share_keys_only_with_verified: bool,
}

impl Config {
    /// A configuration with defaults around `storage_key`.
    pub fn new(storage_key: [u8; 32]) -> Self {
        let mut device_display_name = String::new();
        let _ = device_display_name.push_str("jeton");
        Config {
            storage_key,
            device_display_name,
            auto_join_from: heapless::Vec::new(),
            coap: ClientConfig::default(),
            long_poll_timeout_ms: 30_000,
            share_keys_only_with_verified: false,
        }
    }
}

/// A string copied into a bounded [`String`], or [`Limit::IdLength`].
pub(crate) fn bounded<const N: usize>(text: &str) -> Result<String<N>, TokenError> {
    String::try_from(text).map_err(|_| TokenError::LimitReached(Limit::IdLength))
}

/// Appends `value` in `radix` (2 to 64; up to 16 the digits are `core::fmt`'s lower-case ones,
/// then `g`-`z`, `A`-`Z`, `-`, `_`: all URL-safe), at least `width` digits, without
/// `core::fmt` (which costs kilobytes of flash on the device).
pub(crate) fn push_number<const N: usize>(
    out: &mut String<N>,
    value: u64,
    radix: u64,
    width: usize,
) -> Result<(), TokenError> {
    const DIGITS: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
    let mut digits = [b'0'; 20];
    let mut n = value;
    let mut len = 0;
    while (n > 0 || len < width.max(1)) && len < digits.len() {
        let digit = DIGITS.get((n % radix) as usize).copied().unwrap_or(b'0');
        if let Some(slot) = digits.get_mut(len) {
            *slot = digit;
        }
        n /= radix;
        len += 1;
    }
    for digit in digits.get(..len).unwrap_or_default().iter().rev() {
        out.push(char::from(*digit))
            .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_like_core_fmt() {
        for (value, radix, width) in [
            (0u64, 10, 0),
            (30_000, 10, 0),
            (u64::MAX, 10, 0),
            (0xbeef, 16, 8),
            (u64::MAX, 16, 8),
            (5, 16, 0),
        ] {
            let mut out: String<24> = String::new();
            push_number(&mut out, value, radix, width).unwrap();
            let expected = if radix == 16 {
                format!("{value:0width$x}")
            } else {
                format!("{value:0width$}")
            };
            assert_eq!(out.as_str(), expected);
        }
        let mut short: String<2> = String::new();
        assert!(push_number(&mut short, 123, 10, 0).is_err());
    }

    #[test]
    fn radix_64_uses_url_safe_digits() {
        let mut out: String<24> = String::new();
        push_number(&mut out, u64::from(u32::MAX), 64, 6).unwrap();
        // 2^32 - 1 = 3 * 64^5 + 63 * (64^4 + 64^3 + 64^2 + 64 + 1)
        assert_eq!(out.as_str(), "3_____");
        out.clear();
        push_number(&mut out, 64 + 36, 64, 0).unwrap();
        assert_eq!(out.as_str(), "1A");
    }
}

#[cfg(test)]
mod event_line_tests {
    use super::*;

    #[test]
    fn a_message_line_ends_with_its_body_escaped_onto_one_line() {
        let event = UiEvent::Message {
            room_id: "!r:s",
            sender: "@a:s",
            event_id: "$e",
            body: "two\nlines \\ here",
            encrypted: true,
            sender_verified: false,
        };
        let line = event.line().map(|l| l.to_string());
        assert_eq!(
            line.as_deref(),
            Some("message !r:s @a:s $e e2e two\\nlines \\\\ here")
        );
    }

    #[test]
    fn delivery_and_joins_print_their_ids_and_a_sync_prints_nothing() {
        let delivered = UiEvent::Delivered {
            local_id: 7,
            room_id: "!r:s",
            event_id: "$e",
        };
        assert_eq!(
            delivered.line().map(|l| l.to_string()).as_deref(),
            Some("delivered 7 !r:s $e")
        );
        let joined = UiEvent::Joined { room_id: "!r:s" };
        assert_eq!(
            joined.line().map(|l| l.to_string()).as_deref(),
            Some("joined !r:s")
        );
        assert!(UiEvent::Synced.line().is_none());
    }
}
