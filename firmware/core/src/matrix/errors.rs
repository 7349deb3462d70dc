//! What can go wrong: the token's errors, why a command was refused, and why a message or a
//! key was not accepted.

use core::fmt;

use crate::coap::{ExchangeError, RequestError};
use crate::json::JsonError;
use crate::store::StoreError;
use jeton_olm::DecryptionError;
use jeton_proto::view::ViewError;
use jeton_proto::write::WriteError;

use super::Limit;

/// Something went wrong inside the token; reported as [`UiEvent::Error`](super::UiEvent::Error) or returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The store failed.
    Store(StoreError),
    /// A stored record could not be read (damaged, or sealed with another storage key).
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
    #[cfg(feature = "link")]
    Link(crate::link::LinkError),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Store(e) => write!(f, "storage failed: {e}"),
            TokenError::CorruptRecord(id) => write!(
                f,
                "stored record {id:#06x} is unreadable (damaged, or sealed with another storage key)"
            ),
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
            #[cfg(feature = "link")]
            TokenError::Link(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for TokenError {}

#[cfg(feature = "link")]
impl From<crate::link::LinkError> for TokenError {
    fn from(e: crate::link::LinkError) -> Self {
        TokenError::Link(e)
    }
}

/// What a link that cannot fail ([`crate::link::PlainLink`]) reports.
impl From<core::convert::Infallible> for TokenError {
    fn from(never: core::convert::Infallible) -> Self {
        match never {}
    }
}

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
    /// No call rings (with that call id).
    NoSuchCall,
    /// A cross-signing bootstrap is already under way.
    #[cfg(feature = "cross-signing")]
    CrossSigningInProgress,
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
            CommandError::NoSuchCall => f.write_str("no call rings with that call id"),
            #[cfg(feature = "cross-signing")]
            CommandError::CrossSigningInProgress => {
                f.write_str("cross-signing is already being set up: wait for its answer")
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
    /// The sender's device said it keeps the room key from this device (`m.room_key.withheld`).
    Withheld(WithheldCode),
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
            Self::Withheld(code) => write!(f, "the room key was withheld: {code}"),
        }
    }
}

/// Why a sender's device keeps a room key from this device: the `code` of its
/// `m.room_key.withheld`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WithheldCode {
    /// `m.blacklisted`: the sender blocked this device.
    Blacklisted,
    /// `m.unverified`: the sender shares keys only with devices it trusts, and this is not one yet.
    Unverified,
    /// `m.unauthorised`: this device may not have the key (it was not in the room then).
    Unauthorised,
    /// `m.unavailable`: asked for the key, the sender's device does not have it.
    Unavailable,
    /// `m.no_olm`: the sender's device could set up no Olm session with this one.
    NoOlm,
    /// A code the spec does not define.
    Other,
}

impl WithheldCode {
    /// The code of `m.room_key.withheld`'s `code` field.
    pub fn from_code(code: &str) -> Self {
        match code {
            "m.blacklisted" => Self::Blacklisted,
            "m.unverified" => Self::Unverified,
            "m.unauthorised" => Self::Unauthorised,
            "m.unavailable" => Self::Unavailable,
            "m.no_olm" => Self::NoOlm,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for WithheldCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blacklisted => "the sender's device has blocked this device (blacklisted)",
            Self::Unverified => "the sender's device does not trust this device yet (unverified)",
            Self::Unauthorised => {
                "this device may not have the key, as it was not in the room then (unauthorised)"
            }
            Self::Unavailable => "the sender's device does not have the key (unavailable)",
            Self::NoOlm => {
                "the sender's device could not open an encrypted channel to this device (no_olm)"
            }
            Self::Other => "the sender's device gave a reason the token does not know",
        })
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
    /// The key is for a room the token is not in (nor joining, nor invited to).
    NotInRoom,
    /// The sender is not a member of the key's room.
    NotAMember,
    /// Too many room keys wait for their room or sender; this one made way for another.
    Crowded,
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
            Self::NotInRoom => f.write_str("the token is not in that room"),
            Self::NotAMember => f.write_str("the sender is not a member of that room"),
            Self::Crowded => f.write_str("too many room keys wait for their room or sender"),
        }
    }
}
