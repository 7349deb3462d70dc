//! The token's capacities, the bounded ids they make, and the helpers that fill those bounds.
//!
//! Every table of the token has a compile-time capacity here; running into one is
//! [`TokenError::LimitReached`] naming the [`Limit`], never a panic or a silent loss.

use core::fmt;

use heapless::String;

use super::TokenError;

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
/// Olm sessions kept per device: its newest ones.
pub const MAX_OLM_PER_DEVICE: usize = 2;
/// The least time between two Olm sessions the token starts to unwedge one device (the spec
/// asks for at most one an hour).
pub const UNWEDGE_INTERVAL_MS: u64 = 3_600_000;
/// Inbound Megolm sessions (room keys received), on flash with a small index in RAM.
pub const MAX_INBOUND_SESSIONS: usize = 32;
/// Inbound Megolm sessions one sending device is sure to keep once the table is full: beyond
/// it, its sessions are the first to make way, so that one peer cannot push out the others.
pub const MAX_INBOUND_PER_SENDER: usize = 8;
/// Room keys waiting for their room, their sender's membership or their sender's device keys
/// (on flash).
pub const MAX_PENDING_ROOM_KEYS: usize = 4;
/// Room keys one sender may have waiting.
pub const MAX_PENDING_PER_SENDER: usize = 2;
/// Syncs a waiting room key outlives before it is refused.
pub const PENDING_KEY_SYNCS: u8 = 4;
/// Syncs a member's room key waits for the answer about its sender's devices: every part of a
/// split sync counts as one.
pub const MEMBER_DEVICE_WAIT_SYNCS: u8 = 16;
/// Encrypted events waiting for a room key that is being verified, fetched again once it is:
/// room for a burst of messages that arrives with the key, before the sender's devices are
/// known.
pub const MAX_RETRY_EVENTS: usize = 8;
/// Gaps of `limited` timelines back-filled at once (one per room at most).
pub const MAX_BACKFILLS: usize = 2;
/// Events asked for per `/messages` page of a back-fill; a page too large for the response
/// buffer is asked for again with half as many.
pub const BACKFILL_PAGE_EVENTS: u8 = 5;
/// Pages a back-fill walks back into a gap: at most this many times
/// [`BACKFILL_PAGE_EVENTS`] earlier events are fetched, and the person is told of the rest.
pub const BACKFILL_PAGES: u8 = 4;
/// Back-fill requests that may fail in a row before the gap is given up (and the person told).
pub const BACKFILL_FAILURES: u8 = 5;
/// Message indexes above an inbound session's low-water mark tracked one by one; an index
/// under the mark is refused as a replay. Larger than the spec's 100 messages per session, so
/// that a session within the spec's rotation never loses an index to the mark.
pub const REPLAY_WINDOW: usize = 128;
/// Recent messages per inbound session remembered by event id, so that one delivered again
/// (after a power cut, or by a gateway that restarted) is skipped rather than called a replay.
pub const REDELIVERY_MEMORY: usize = 16;
/// Devices removed from the table remembered by their keys, so that a device id that comes
/// back with other keys is refused as changed.
pub const MAX_REMOVED_DEVICES: usize = 8;
/// The longest rotation period a room's `m.room.encryption` may set (the spec's week).
pub const MAX_ROTATION_MS: u64 = 604_800_000;
/// The most messages per outbound session a room's `m.room.encryption` may set (the spec's
/// 100).
pub const MAX_ROTATION_MSGS: u32 = 100;
/// `m.room_key.withheld` notices remembered; a new one pushes out the oldest.
pub const MAX_WITHHELD_NOTICES: usize = 4;
/// Longest message text, in bytes of UTF-8.
pub const MAX_MESSAGE_LEN: usize = 512;
/// Longest event content an outbox entry holds as written JSON (a file's, made when its
/// upload ends): a text's size; with the `voice` feature, twice that, for a voice message's
/// waveform (the room a text's escaping may take, which the Megolm buffer already has).
#[cfg(not(feature = "voice"))]
pub const MAX_CONTENT_LEN: usize = MAX_MESSAGE_LEN;
/// Longest event content an outbox entry holds as written JSON (a file's, made when its
/// upload ends): twice a text's, for a voice message's waveform (the room a text's escaping
/// may take, which the Megolm buffer already has).
#[cfg(feature = "voice")]
pub const MAX_CONTENT_LEN: usize = 2 * MAX_MESSAGE_LEN;
const _: () = assert!(MAX_CONTENT_LEN <= 2 * MAX_MESSAGE_LEN);
/// Messages waiting to be acknowledged by the homeserver.
pub const OUTBOX_DEPTH: usize = 4;
/// Invites waiting for the user's decision.
pub const MAX_INVITES: usize = 2;
/// Calls ringing at once ([`UiEvent::CallIncoming`](super::UiEvent::CallIncoming)).
pub const MAX_RINGING_CALLS: usize = 2;
/// Longest call id the token keeps (a longer one does not ring).
pub const MAX_CALL_ID_LEN: usize = 64;
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
/// Events and to-device messages remembered as taken in, so that a copy delivered again (a
/// gateway that restarted in the middle of a split sync) is skipped.
pub const RECENT_ITEMS: usize = 32;

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
    /// [`MAX_RINGING_CALLS`].
    RingingCalls,
    /// An id longer than [`MAX_ID_LEN`], [`MAX_DEVICE_ID_LEN`], [`MAX_ACCESS_TOKEN_LEN`],
    /// [`MAX_CALL_ID_LEN`] or [`MAX_CURSOR_LEN`].
    IdLength,
    /// [`MAX_MESSAGE_LEN`] (or [`MAX_CONTENT_LEN`] for a file's event).
    MessageLength,
    /// A password longer than a cross-signing bootstrap takes (128 bytes).
    #[cfg(feature = "cross-signing")]
    PasswordLength,
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
            Limit::PendingRoomKeys => "room keys awaiting their room or sender",
            Limit::Outbox => "unsent messages",
            Limit::Invites => "pending invites",
            Limit::RingingCalls => "calls ringing at once",
            Limit::IdLength => "identifier length",
            Limit::MessageLength => "message length",
            #[cfg(feature = "cross-signing")]
            Limit::PasswordLength => "password length",
        })
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
