//! Incoming calls: the calls ringing on the token, from their invite to their end, and the
//! person's `decline`.
//!
//! The token carries no media: a call rings ([`UiEvent::CallIncoming`]) and the person may
//! decline it; answering is left to another device. Two kinds ring:
//!
//! - legacy VoIP calls (the spec's VoIP module): an `m.call.invite` from another user, with no
//!   `invitee` or the token's user as invitee, rings for its `lifetime` counted from its
//!   arrival less its `unsigned.age` (an invite already past it does not ring);
//! - MatrixRTC ring notifications (MSC4075, Element Call): `m.call.notify` with
//!   `notify_type: ring`, and `org.matrix.msc4075.rtc.notification` or `m.rtc.notification`
//!   with `notification_type: ring`, ring for their `lifetime` ([`RTC_RING_MS`] when they
//!   name none). Their call id is the event's `call_id`, or the event id when it has none.
//!
//! A call rings until the first of ([`UiEvent::CallEnded`] says which, [`CallEnd`]): the
//! caller's `m.call.hangup`; an `m.call.answer`, `m.call.reject` or `m.call.hangup` from
//! another device of the token's user, or the caller's `m.call.select_answer` (someone else
//! took it); the person's decline; the end of its lifetime (the token wakes for it through
//! [`Token::poll_timeout`](super::Token::poll_timeout)); the token leaving the room.
//!
//! A decline answers a legacy call through the outbox (so it survives retries and power cuts
//! like a message): `m.call.reject` with `call_id`, `party_id` (the token's device id) and
//! `version: "1"` to an invite of version 1 or later, or `m.call.hangup` with
//! `reason: user_hangup` and `version: 0` to a version 0 invite; encrypted in an encrypted
//! room. Declining a MatrixRTC ring only silences the token: MSC4075's decline is not sent.
//!
//! The table ([`super::lifecycles`]) holds [`MAX_RINGING_CALLS`] calls in RAM only (a power
//! cut silences them); a call that finds it full does not ring and is reported as skipped
//! ([`Limit::RingingCalls`]). The mentions of a MatrixRTC notification are not read: every
//! ring in a room the token is in rings.

use core::fmt;

use heapless::String;
use jeton_proto::view::{Map, Value};

use super::*;
use crate::json::{JsonObject, JsonValue};

/// How long a MatrixRTC ring that names no lifetime rings.
pub const RTC_RING_MS: u64 = 30_000;
/// The longest a call rings, whatever lifetime its invite names: a stranger in a room cannot
/// keep the token ringing.
pub const MAX_RING_MS: u64 = 120_000;

/// A call id (`call_id` of a legacy call, or what identifies a MatrixRTC ring).
pub type CallId = String<MAX_CALL_ID_LEN>;

/// The marker of an outbox entry that answers a call: then `r` (reject) or `h` (hangup) and
/// the call id ([`super::outbox`]).
pub(super) const ANSWER_MARKER: char = '\u{2}';

/// Why a call stopped ringing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEnd {
    /// The caller hung up.
    HungUp,
    /// Another device of the token's user answered, or the caller chose another answer.
    AnsweredElsewhere,
    /// Another device of the token's user declined it.
    DeclinedElsewhere,
    /// The person declined it on the token.
    Declined,
    /// Its lifetime ran out.
    Expired,
    /// The token left the room.
    Left,
}

impl fmt::Display for CallEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallEnd::HungUp => "hung-up",
            CallEnd::AnsweredElsewhere => "answered-elsewhere",
            CallEnd::DeclinedElsewhere => "declined-elsewhere",
            CallEnd::Declined => "declined",
            CallEnd::Expired => "expired",
            CallEnd::Left => "left",
        })
    }
}

/// What a call event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Invite,
    Hangup,
    Answer,
    SelectAnswer,
    Reject,
    /// A MatrixRTC notification; `type_field` names its ring/notify field.
    Rtc {
        type_field: &'static str,
    },
}

/// The kind of the event of type `event_type`, if it is one the calls read.
pub(super) fn kind_of(event_type: &str) -> Option<Kind> {
    if !cfg!(feature = "calls") {
        // Without the feature no event is a call's, and everything that handles one is
        // left out of the image.
        return None;
    }
    Some(match event_type {
        "m.call.invite" => Kind::Invite,
        "m.call.hangup" => Kind::Hangup,
        "m.call.answer" => Kind::Answer,
        "m.call.select_answer" => Kind::SelectAnswer,
        "m.call.reject" => Kind::Reject,
        "m.call.notify" => Kind::Rtc {
            type_field: "notify_type",
        },
        "org.matrix.msc4075.rtc.notification" | "m.rtc.notification" => Kind::Rtc {
            type_field: "notification_type",
        },
        _ => return None,
    })
}

/// How a decline answers the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// `m.call.reject`, version "1" (an invite of version 1 or later).
    Reject,
    /// `m.call.hangup` with `user_hangup`, version 0.
    Hangup,
    /// Nothing is sent (a MatrixRTC ring).
    Silence,
}

/// The fields of a call event's content, from the CBOR of a sync or a decrypted JSON payload.
pub(super) trait CallFields<'a> {
    /// The text member `name`.
    fn text(&self, name: &str) -> Option<&'a str>;
    /// The integer member `name`.
    fn integer(&self, name: &str) -> Option<i64>;
}

impl<'a> CallFields<'a> for Map<'a> {
    fn text(&self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            Ok(Some(Value::Text(text))) => Some(text),
            _ => None,
        }
    }
    fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Ok(Some(Value::Integer(n))) => Some(n),
            _ => None,
        }
    }
}

impl<'a> CallFields<'a> for JsonObject<'a> {
    fn text(&self, name: &str) -> Option<&'a str> {
        self.string(name)?.plain()
    }
    fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            JsonValue::Other(raw) => decimal(raw),
            _ => None,
        }
    }
}

/// A JSON number that is a non-negative integer (a lifetime, a version), without
/// `core::str::parse`'s general code on the device.
fn decimal(raw: &[u8]) -> Option<i64> {
    if raw.is_empty() || raw.len() > 15 {
        return None;
    }
    raw.iter().try_fold(0i64, |n, digit| {
        digit
            .is_ascii_digit()
            .then(|| n * 10 + i64::from(digit - b'0'))
    })
}

/// A call event as the calls read it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Signal<'a> {
    pub(super) kind: Kind,
    /// Its call id (the event id for a MatrixRTC ring without one).
    pub(super) call_id: &'a str,
    /// How long it rings, for an invite or a ring (`None`: it does not ring).
    pub(super) lifetime_ms: Option<u64>,
    /// The user a legacy invite is for, if it names one.
    pub(super) invitee: Option<&'a str>,
    /// How a decline answers it.
    pub(super) reply: Reply,
}

/// Reads the content of a call event of `kind` (`event_id`: its id); a legacy event without
/// a `call_id` is malformed.
pub(super) fn read_signal<'a>(
    kind: Kind,
    content: &dyn CallFields<'a>,
    event_id: &'a str,
) -> Result<Signal<'a>, TokenError> {
    let malformed =
        TokenError::Malformed(jeton_proto::view::ViewError::Missing { field: "call_id" });
    let lifetime = content
        .integer("lifetime")
        .and_then(|n| u64::try_from(n).ok());
    let (call_id, lifetime_ms, reply) = match kind {
        Kind::Rtc { type_field } => {
            let call_id = content.text("call_id").filter(|id| !id.is_empty());
            let rings = content.text(type_field) == Some("ring");
            let lifetime = rings.then(|| lifetime.unwrap_or(RTC_RING_MS));
            (call_id.unwrap_or(event_id), lifetime, Reply::Silence)
        }
        _ => {
            let call_id = content.text("call_id").ok_or(malformed)?;
            // Version 0 is the integer 0 (or, from some clients, the text "0"); "1" and
            // later are texts.
            let legacy = match content.integer("version") {
                Some(version) => version < 1,
                None => content.text("version").is_none_or(|v| v == "0"),
            };
            let reply = if legacy { Reply::Hangup } else { Reply::Reject };
            let lifetime = (kind == Kind::Invite).then_some(lifetime.unwrap_or(0));
            (call_id, lifetime, reply)
        }
    };
    Ok(Signal {
        kind,
        call_id,
        lifetime_ms,
        invitee: content.text("invitee"),
        reply,
    })
}

/// A call that rings.
#[derive(Clone, Debug)]
struct Ringing {
    room_slot: u8,
    reply: Reply,
    call_id: CallId,
    caller: UserId,
    ends_at: Instant,
    /// When it started ringing: a decline without a call id takes the newest.
    rang_at: Instant,
}

/// The calls that ring.
#[derive(Debug)]
pub(super) struct Calls {
    ringing: [Option<Ringing>; MAX_RINGING_CALLS],
}

impl Calls {
    /// None ringing.
    pub(super) const fn new() -> Self {
        Calls {
            ringing: [const { None }; MAX_RINGING_CALLS],
        }
    }

    /// When the next call stops ringing by itself.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.ringing.iter().flatten().map(|c| c.ends_at).min()
    }

    fn find(&self, room_slot: usize, call_id: &str) -> Option<usize> {
        self.ringing.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| usize::from(c.room_slot) == room_slot && c.call_id == call_id)
        })
    }

    /// The slot of the call named `call_id`, or of the newest when none is named.
    fn chosen(&self, call_id: Option<&str>) -> Option<usize> {
        self.ringing
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| Some((slot, c.as_ref()?)))
            .filter(|(_, c)| call_id.is_none_or(|id| c.call_id == id))
            .max_by_key(|(_, c)| c.rang_at)
            .map(|(slot, _)| slot)
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// A call event of `sender` in `room_id`, `age_ms` old on arrival.
    pub(super) fn on_call_signal(
        &mut self,
        room_id: &str,
        sender: &str,
        signal: &Signal<'_>,
        age_ms: u64,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(room_slot) = self.room_slot(room_id) else {
            return Ok(());
        };
        let own_user = self.login.as_ref().map(|l| l.user_id.as_str());
        let own = own_user == Some(sender);
        let ringing = self.calls.find(room_slot, signal.call_id);
        let end = match (signal.kind, ringing) {
            (Kind::Invite | Kind::Rtc { .. }, None) => {
                let for_someone_else = signal.invitee.is_some_and(|i| Some(i) != own_user);
                if own || for_someone_else {
                    return Ok(());
                }
                return self.ring(room_slot, sender, signal, age_ms, now);
            }
            (Kind::Hangup, Some(slot)) if self.is_caller(slot, sender) => CallEnd::HungUp,
            (Kind::Hangup | Kind::Reject, Some(_)) if own => CallEnd::DeclinedElsewhere,
            (Kind::Answer, Some(_)) if own => CallEnd::AnsweredElsewhere,
            (Kind::SelectAnswer, Some(slot)) if self.is_caller(slot, sender) => {
                CallEnd::AnsweredElsewhere
            }
            _ => return Ok(()),
        };
        if let Some(slot) = ringing {
            self.end_call(slot, end);
        }
        Ok(())
    }

    fn is_caller(&self, slot: usize, sender: &str) -> bool {
        self.calls
            .ringing
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.caller == sender)
    }

    /// Rings `signal` of `caller` in the room in `room_slot`, unless it already ran out.
    fn ring(
        &mut self,
        room_slot: usize,
        caller: &str,
        signal: &Signal<'_>,
        age_ms: u64,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(lifetime) = signal.lifetime_ms else {
            return Ok(());
        };
        let left = lifetime.min(MAX_RING_MS).saturating_sub(age_ms);
        if left == 0 {
            return Ok(());
        }
        let call = Ringing {
            room_slot: room_slot as u8,
            reply: signal.reply,
            call_id: bounded(signal.call_id)?,
            caller: bounded(caller)?,
            ends_at: now.plus_millis(left),
            rang_at: now,
        };
        let free = self.calls.ringing.iter_mut().find(|c| c.is_none());
        let Some(free) = free else {
            return Err(TokenError::LimitReached(Limit::RingingCalls));
        };
        let shown = free.insert(call);
        if let Some(room) = self.rooms.get(room_slot) {
            self.env.ui.event(&UiEvent::CallIncoming {
                room_id: &room.id,
                caller: &shown.caller,
                call_id: &shown.call_id,
            });
        }
        Ok(())
    }

    /// Stops the call in `slot` ringing, and tells the person why.
    fn end_call(&mut self, slot: usize, end: CallEnd) -> Option<Ringing> {
        let call = self.calls.ringing.get_mut(slot)?.take()?;
        if let Some(room) = self.rooms.get(usize::from(call.room_slot)) {
            self.env.ui.event(&UiEvent::CallEnded {
                room_id: &room.id,
                call_id: &call.call_id,
                end,
            });
        }
        Some(call)
    }

    /// Ends the calls whose lifetime ran out by `now`.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        for slot in 0..MAX_RINGING_CALLS {
            let due = self.calls.ringing.get(slot).and_then(Option::as_ref);
            if due.is_some_and(|c| now >= c.ends_at) {
                self.end_call(slot, CallEnd::Expired);
            }
        }
    }

    /// Ends the calls of rooms the token left (before their slots go).
    pub(super) fn end_calls_of_left_rooms(&mut self) {
        for slot in 0..MAX_RINGING_CALLS {
            let room = self.calls.ringing.get(slot).and_then(Option::as_ref);
            let room = room.and_then(|c| self.rooms.get(usize::from(c.room_slot)));
            if room.is_some_and(|r| r.left) {
                self.end_call(slot, CallEnd::Left);
            }
        }
    }

    /// Declines the call `call_id` (the newest ringing without one): its answer is queued in
    /// the outbox, then it stops ringing.
    pub(super) fn decline_call(&mut self, call_id: Option<&str>) -> Result<(), CommandError> {
        let slot = self.calls.chosen(call_id).ok_or(CommandError::NoSuchCall)?;
        let Some(call) = self.calls.ringing.get(slot).and_then(Option::as_ref) else {
            return Err(CommandError::NoSuchCall);
        };
        let kind = match call.reply {
            Reply::Reject => Some('r'),
            Reply::Hangup => Some('h'),
            Reply::Silence => None,
        };
        if let Some(kind) = kind {
            let room_id = self
                .rooms
                .get(usize::from(call.room_slot))
                .map(|r| r.id.clone())
                .ok_or(CommandError::UnknownRoom)?;
            let mut entry: String<{ MAX_CALL_ID_LEN + 8 }> = String::new();
            for c in [ANSWER_MARKER, kind] {
                entry
                    .push(c)
                    .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
            }
            entry
                .push_str(&call.call_id)
                .map_err(|_| TokenError::LimitReached(Limit::IdLength))?;
            self.enqueue_content(&room_id, &entry)?;
        }
        self.end_call(slot, CallEnd::Declined);
        Ok(())
    }
}

/// The event type and call id of an outbox entry's `text` that answers a call.
pub(super) fn answer_of(text: &str) -> Option<(&'static str, Reply, &str)> {
    if !cfg!(feature = "calls") {
        // Nothing rings, so nothing is declined.
        return None;
    }
    let rest = text.strip_prefix(ANSWER_MARKER)?;
    let (event_type, reply) = match rest.as_bytes().first()? {
        b'r' => ("m.call.reject", Reply::Reject),
        b'h' => ("m.call.hangup", Reply::Hangup),
        _ => return None,
    };
    Some((event_type, reply, rest.get(1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_signal<'a>(event_type: &str, content: &'a str) -> Signal<'a> {
        let kind = kind_of(event_type).expect("a call event type");
        let content = JsonObject::parse(content.as_bytes()).expect("JSON");
        read_signal(kind, &content, "$event").expect("readable")
    }

    #[test]
    fn a_version_1_invite_is_declined_with_a_reject_and_rings_for_its_lifetime() {
        let signal = json_signal(
            "m.call.invite",
            r#"{"call_id":"c1","party_id":"p","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}"#,
        );
        assert_eq!(signal.call_id, "c1");
        assert_eq!(signal.lifetime_ms, Some(60_000));
        assert_eq!(signal.reply, Reply::Reject);
        assert_eq!(signal.invitee, None);
    }

    #[test]
    fn a_version_0_invite_is_declined_with_a_hangup() {
        let signal = json_signal(
            "m.call.invite",
            r#"{"call_id":"c0","version":0,"lifetime":30000}"#,
        );
        assert_eq!(signal.reply, Reply::Hangup);
        assert_eq!(signal.lifetime_ms, Some(30_000));
    }

    #[test]
    fn a_lifetime_that_is_not_a_whole_number_of_milliseconds_is_none() {
        for (raw, read) in [
            ("60000", Some(60_000)),
            ("0", Some(0)),
            ("-1", None),
            ("1.5", None),
        ] {
            let text = format!(r#"{{"lifetime":{raw}}}"#);
            let content = JsonObject::parse(text.as_bytes()).unwrap();
            assert_eq!(content.integer("lifetime"), read, "{raw}");
        }
    }

    #[test]
    fn an_invite_without_a_call_id_is_malformed() {
        let content = JsonObject::parse(br#"{"version":"1","lifetime":1}"#).unwrap();
        let read = read_signal(Kind::Invite, &content, "$e");
        assert!(matches!(read, Err(TokenError::Malformed(_))));
    }

    #[test]
    fn an_rtc_ring_rings_under_its_event_id_and_a_notify_does_not_ring() {
        let ring = json_signal(
            "org.matrix.msc4075.rtc.notification",
            r#"{"notification_type":"ring","lifetime":20000,"sender_ts":1}"#,
        );
        assert_eq!((ring.call_id, ring.lifetime_ms), ("$event", Some(20_000)));
        assert_eq!(ring.reply, Reply::Silence);
        let notify = json_signal(
            "m.call.notify",
            r#"{"call_id":"","notify_type":"notify","application":"m.call"}"#,
        );
        assert_eq!(notify.lifetime_ms, None);
        let ring = json_signal(
            "m.call.notify",
            r#"{"call_id":"room-call","notify_type":"ring","application":"m.call"}"#,
        );
        assert_eq!(
            (ring.call_id, ring.lifetime_ms),
            ("room-call", Some(RTC_RING_MS))
        );
    }

    #[test]
    fn an_answer_entry_names_its_event_type_and_call() {
        assert_eq!(
            answer_of("\u{2}rc1"),
            Some(("m.call.reject", Reply::Reject, "c1"))
        );
        assert_eq!(
            answer_of("\u{2}hc0"),
            Some(("m.call.hangup", Reply::Hangup, "c0"))
        );
        assert_eq!(answer_of("hello"), None);
    }

    #[test]
    fn the_end_of_a_call_is_one_word() {
        assert_eq!(CallEnd::HungUp.to_string(), "hung-up");
        assert_eq!(CallEnd::AnsweredElsewhere.to_string(), "answered-elsewhere");
        assert_eq!(CallEnd::Expired.to_string(), "expired");
    }
}
