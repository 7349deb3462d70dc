//! What the person reads: the events of a room's timeline, shown as messages.
//!
//! An `m.room.message` of type `m.text` is shown as it is; an `m.room.encrypted` one is
//! decrypted with its room key ([`super::room_keys`]) and shown with whether its sending
//! device was verified, or reported as [`UiEvent::Undecryptable`] with the reason; a
//! decrypted event that carries an encrypted file starts its download ([`super::transfer`]).
//! An event whose key was pending comes back through `GET /rooms/{roomId}/event/{eventId}`
//! once the key is decided. The token's own messages echoed by sync are skipped, not shown.
//! Call events, plain or decrypted, go to [`super::calls`].
//! Events a `limited` timeline left out come the same way, through [`super::backfill`].

use jeton_proto::TableVersion;
use jeton_proto::ids::{Id, TEXT_LEN};
use jeton_proto::view::{Event, Value};

use super::calls::{self, CallFields};
use super::room_keys::Megolm;
use super::*;
use crate::json::JsonObject;

/// An event id's text (v2 may send it as its hash), or `""` for an event without one.
fn id_text<'t>(id: Option<Id<'t>>, out: &'t mut [u8; TEXT_LEN]) -> &'t str {
    match id {
        Some(id) => id.as_text(out),
        None => "",
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// An event of `room_id`'s timeline.
    pub(super) fn on_timeline_event(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let event_type = event.event_type()?;
        if let Some(kind) = calls::kind_of(event_type) {
            let mut text = [0; TEXT_LEN];
            let event_id = id_text(event.event_id()?, &mut text);
            let signal = calls::read_signal(kind, &event.content()?, event_id)?;
            let age = age_of(event);
            return self.on_call_signal(room_id, event.sender()?, &signal, age, now);
        }
        match event_type {
            "m.room.encrypted" => self.on_megolm_event(room_id, event, now),
            "m.room.message" if event.state_key()?.is_none() => {
                let content = event.content()?;
                if let (Some(Value::Text("m.text")), Some(Value::Text(body))) =
                    (content.get("msgtype")?, content.get("body")?)
                {
                    let mut text = [0; TEXT_LEN];
                    self.env.ui.event(&UiEvent::Message {
                        room_id,
                        sender: event.sender()?,
                        event_id: id_text(event.event_id()?, &mut text),
                        body,
                        encrypted: false,
                        sender_verified: false,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// An event fetched again once its key was decided.
    pub(super) fn on_fetched_event(&mut self, body: &[u8], now: Instant) -> Result<(), TokenError> {
        let Value::Map(map) = Value::parse(body, TableVersion::V2)? else {
            return Ok(());
        };
        let Some(Value::Text(room_id)) = map.get("room_id")? else {
            return Ok(());
        };
        let event = Event(map);
        let room: RoomId = bounded(room_id)?;
        self.on_megolm_event(&room, &event, now)
    }

    /// An encrypted event: decrypted and shown, or reported.
    fn on_megolm_event(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let sender = event.sender()?;
        let mut text = [0; TEXT_LEN];
        let event_id = id_text(event.event_id()?, &mut text);
        let Some(content) = event.encrypted()? else {
            return Ok(());
        };
        let shown = Shown {
            room_id,
            sender,
            event_id,
            age_ms: age_of(event),
            now,
        };
        match self.decrypt_megolm(room_id, sender, event_id, content)? {
            Megolm::Decrypted {
                plaintext_len,
                sender_verified,
            } => self.show_decrypted(&shown, plaintext_len, sender_verified),
            Megolm::Undecryptable(reason) => {
                self.undecryptable(&shown, reason);
                Ok(())
            }
            Megolm::Ignored => Ok(()),
        }
    }

    /// Tells the person that the event cannot be shown, and why.
    fn undecryptable(&mut self, shown: &Shown<'_>, reason: UndecryptableReason) {
        self.env.ui.event(&UiEvent::Undecryptable {
            room_id: shown.room_id,
            sender: shown.sender,
            event_id: shown.event_id,
            reason,
        });
    }

    /// Shows the decrypted event in `work` (`plaintext_len` bytes, from a device verified by
    /// SAS or not): a text, or the start of a file's download. Both buffers are wiped after.
    /// Out of line, so that its buffers are not under the decryption's stack.
    #[inline(never)]
    fn show_decrypted(
        &mut self,
        shown: &Shown<'_>,
        plaintext_len: usize,
        sender_verified: bool,
    ) -> Result<(), TokenError> {
        let room_id = shown.room_id;
        // The shown text is unescaped into the record buffer, free again after the session's
        // save.
        let text = self
            .env
            .flash
            .scratch
            .get_mut(..MAX_MESSAGE_LEN * 2)
            .unwrap_or_default();
        let plaintext = self.env.work.get(..plaintext_len).unwrap_or_default();
        if let Some(kind) = JsonObject::parse(plaintext)
            .ok()
            .and_then(|p| calls::kind_of(p.string("type")?.plain()?))
        {
            let result = self.show_call(shown, kind, plaintext_len);
            self.env.work.fill(0);
            return result;
        }
        let carries_file = JsonObject::parse(plaintext)
            .ok()
            .filter(|p| p.string("room_id").and_then(|r| r.plain()) == Some(room_id))
            .and_then(|payload| payload.object("content"))
            .is_some_and(|content| content.object("file").is_some());
        if carries_file {
            return self.show_file(shown, plaintext_len);
        }
        let body = JsonObject::parse(plaintext).ok().and_then(|payload| {
            let room_ok = payload.string("room_id").and_then(|r| r.plain()) == Some(room_id);
            let content = payload.object("content")?;
            let body = content.string("body")?.unescape(text).ok()?;
            Some((room_ok, body))
        });
        match body {
            None => self.undecryptable(shown, UndecryptableReason::Malformed),
            Some((false, _)) => self.undecryptable(shown, UndecryptableReason::WrongRoom),
            Some((true, body)) => self.env.ui.event(&UiEvent::Message {
                room_id,
                sender: shown.sender,
                event_id: shown.event_id,
                body,
                encrypted: true,
                sender_verified,
            }),
        }
        self.env.work.fill(0);
        self.env.flash.scratch.fill(0);
        Ok(())
    }

    /// A decrypted call event of `kind` in `work`: to the calls, if it names this room.
    fn show_call(
        &mut self,
        shown: &Shown<'_>,
        kind: calls::Kind,
        plaintext_len: usize,
    ) -> Result<(), TokenError> {
        let plaintext = self.env.work.get(..plaintext_len).unwrap_or_default();
        let payload = JsonObject::parse(plaintext)?;
        if payload.string("room_id").and_then(|r| r.plain()) != Some(shown.room_id) {
            self.undecryptable(shown, UndecryptableReason::WrongRoom);
            return Ok(());
        }
        let Some(content) = payload.object("content") else {
            self.undecryptable(shown, UndecryptableReason::Malformed);
            return Ok(());
        };
        let signal = calls::read_signal(kind, &content, shown.event_id)?;
        // The signal borrows `work`: copied out of it for the calls, which may queue an answer.
        let call_id: calls::CallId = bounded(signal.call_id)?;
        let invitee: Option<UserId> = signal.invitee.map(bounded).transpose()?;
        let signal = calls::Signal {
            call_id: &call_id,
            invitee: invitee.as_deref(),
            ..signal
        };
        self.on_call_signal(
            shown.room_id,
            shown.sender,
            &signal,
            shown.age_ms,
            shown.now,
        )
    }

    /// A decrypted event in `work` that carries a file: its download starts. Its description
    /// is read from a copy, as the download needs `work`.
    fn show_file(&mut self, shown: &Shown<'_>, plaintext_len: usize) -> Result<(), TokenError> {
        let plaintext = self.env.work.get(..plaintext_len).unwrap_or_default();
        let mut copy = [0u8; WORK_BYTES];
        let len = plaintext.len();
        if let Some(to) = copy.get_mut(..len) {
            to.copy_from_slice(plaintext);
        }
        self.env.work.fill(0);
        let content = JsonObject::parse(copy.get(..len).unwrap_or_default())
            .ok()
            .and_then(|payload| payload.object("content"));
        let is_file = content.is_some_and(|c| self.on_file_event(shown.room_id, shown.sender, &c));
        copy.fill(0);
        if !is_file {
            self.undecryptable(shown, UndecryptableReason::Malformed);
        }
        Ok(())
    }
}

/// The event being shown.
struct Shown<'a> {
    room_id: &'a str,
    sender: &'a str,
    event_id: &'a str,
    /// Its `unsigned.age` (0 without one).
    age_ms: u64,
    /// When it arrived.
    now: Instant,
}

/// The `unsigned.age` of `event`: how old it was when the homeserver sent it (0 without one).
fn age_of(event: &Event<'_>) -> u64 {
    match event.0.get("unsigned") {
        Ok(Some(Value::Map(unsigned))) => unsigned
            .integer("age")
            .and_then(|age| u64::try_from(age).ok())
            .unwrap_or(0),
        _ => 0,
    }
}
