//! The intake of a sync response: its parts taken in item by item, and the ring of what was
//! taken in recently.
//!
//! A sync is taken in item by item, in [`Core::apply_sync`]'s order: rooms and their state,
//! device lists and key counts first ([`crate::matrix::rooms`], [`crate::matrix::devices`],
//! [`crate::matrix::account`]), then to-device messages (room keys over Olm, verification), then
//! timelines ([`crate::matrix::timeline`]). A `limited` timeline after the first sync is a gap: the
//! homeserver left messages out, and [`crate::matrix::backfill`] fetches them. An
//! item that cannot be taken in (malformed, over a capacity) is skipped with
//! [`UiEvent::Skipped`] and the rest is taken in; only a failing store stops a sync, which is
//! then neither confirmed nor acknowledged. An item taken in recently (a gateway that restarted
//! in the middle of a split delivers its parts again) is skipped silently. The cursor moves
//! after everything the sync carried that could be stored was stored.

use sha2::{Digest, Sha256};

use jeton_proto::ids::TEXT_LEN;
use jeton_proto::view::{
    Elements, Event, Map, OLM_ALGORITHM, Room, SyncResponse, TOO_LARGE_FIELD, Value, ViewError,
};

use super::*;

/// Digests of the events and to-device messages taken in recently, oldest first out: what a
/// gateway that delivers a sync again (it restarted in the middle of a split) brings twice.
#[derive(Debug)]
pub(super) struct Recent {
    digests: [u32; RECENT_ITEMS],
    next: usize,
}

impl Recent {
    pub(super) const fn new() -> Self {
        Recent {
            digests: [0; RECENT_ITEMS],
            next: 0,
        }
    }

    fn contains(&self, digest: u32) -> bool {
        digest != 0 && self.digests.contains(&digest)
    }

    fn insert(&mut self, digest: u32) {
        if digest == 0 || self.contains(digest) {
            return;
        }
        if let Some(slot) = self.digests.get_mut(self.next) {
            *slot = digest;
        }
        self.next = (self.next + 1) % RECENT_ITEMS;
    }
}

/// SHA-256 of `parts`, each after its length, so that no parts read as others.
pub(in crate::matrix) fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u32).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// A 32-bit digest of `parts` (SHA-256, truncated; 0 is kept for "none").
pub(in crate::matrix) fn digest(parts: &[&[u8]]) -> u32 {
    let [a, b, c, d, ..] = hash_parts(parts);
    u32::from_be_bytes([a, b, c, d]).max(1)
}

/// The digest of timeline event `event_id` (0 for an event without one).
pub(in crate::matrix) fn event_digest(event_id: &str) -> u32 {
    if event_id.is_empty() {
        return 0;
    }
    digest(&[b"event", event_id.as_bytes()])
}

/// Whether `error` means that what an item carried could not be stored (the store failed):
/// the sync then stops, unconfirmed, to come again.
pub(super) fn is_storage_failure(error: &TokenError) -> bool {
    matches!(error, TokenError::Store(_) | TokenError::CorruptRecord(_))
}

/// The events of the list `name` of `parent` (absent: none), however many: a sync is taken in
/// item by item, so no list of it is refused for its length.
pub(in crate::matrix) fn events_of<'a>(
    parent: Option<Map<'a>>,
    name: &str,
) -> Result<impl Iterator<Item = Result<Event<'a>, ViewError>>, ViewError> {
    let list = match parent.map(|p| p.get(name)).transpose()?.flatten() {
        Some(Value::Map(list)) => list.get("events")?,
        None => None,
        Some(_) => return Err(ViewError::WrongType { offset: 0 }),
    };
    let elements: Option<Elements<'a>> = match list {
        Some(Value::Array(array)) => Some(array.iter()),
        None => None,
        Some(_) => return Err(ViewError::WrongType { offset: 0 }),
    };
    Ok(elements
        .into_iter()
        .flatten()
        .map(|element| match element? {
            Value::Map(map) => Ok(Event(map)),
            _ => Err(ViewError::WrongType { offset: 0 }),
        }))
}

/// The size a stub names, if `event` is one: an event the gateway left out because it alone
/// is larger than the token's capacity.
pub(in crate::matrix) fn stub_size(event: &Event<'_>) -> Result<Option<u64>, ViewError> {
    Ok(match event.0.get(TOO_LARGE_FIELD)? {
        Some(Value::Integer(size)) => Some(u64::try_from(size).unwrap_or(0)),
        _ => None,
    })
}

/// What an item of a sync is, for [`UiEvent::Skipped`].
#[derive(Clone, Copy)]
pub(in crate::matrix) struct Item<'a> {
    pub(in crate::matrix) kind: &'a str,
    pub(in crate::matrix) room_id: &'a str,
    pub(in crate::matrix) sender: &'a str,
    pub(in crate::matrix) id: &'a str,
}

impl<'a> Item<'a> {
    /// An item of `kind` naming nothing more.
    pub(in crate::matrix) const fn of(kind: &'a str) -> Self {
        Item {
            kind,
            room_id: "",
            sender: "",
            id: "",
        }
    }

    /// An event of `kind` in `room_id` (empty for a to-device message): its sender and its id
    /// (its type for an event without one), as far as they can be read.
    pub(in crate::matrix) fn event(
        kind: &'a str,
        room_id: &'a str,
        event: &Event<'a>,
        id: &'a str,
    ) -> Self {
        let sender = event.sender().unwrap_or("");
        let id = if id.is_empty() {
            event.event_type().unwrap_or("")
        } else {
            id
        };
        Item {
            kind,
            room_id,
            sender,
            id,
        }
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// What became of an item of a sync: nothing to say, [`UiEvent::Skipped`], or a failing
    /// store, which stops the sync.
    pub(in crate::matrix) fn item(
        &mut self,
        item: Item<'_>,
        result: Result<(), TokenError>,
    ) -> Result<(), TokenError> {
        match result {
            Ok(()) => Ok(()),
            Err(error) if is_storage_failure(&error) => Err(error),
            Err(error) => {
                self.env.ui.event(&UiEvent::Skipped {
                    item: item.kind,
                    room_id: item.room_id,
                    sender: item.sender,
                    id: item.id,
                    error,
                });
                Ok(())
            }
        }
    }

    /// Invites, membership and encryption state, device list changes and key counts: what
    /// has to be in before the sync's room keys and messages. Out of line, so that its
    /// locals are not under the Olm decryption's stack.
    #[inline(never)]
    fn apply_rooms(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        let own_user = self
            .login
            .as_ref()
            .map(|l| l.user_id.clone())
            .unwrap_or_default();
        let invites = self.apply_invites(sync, &own_user);
        self.item(Item::of("invites"), invites)?;
        // Joined rooms: membership and encryption state first, so that room keys arriving
        // in this sync find their senders tracked.
        let joined = self.apply_joined_rooms(sync, &own_user);
        self.item(Item::of("rooms"), joined)?;
        let left = self.apply_left_rooms(sync);
        self.item(Item::of("left-rooms"), left)?;
        let changed = self.apply_device_lists(sync);
        self.item(Item::of("device-lists"), changed)?;
        if self.login.as_ref().is_some_and(|l| l.keys_uploaded) {
            let counts = self.account.on_key_counts(sync);
            self.item(Item::of("key-counts"), counts)?;
        }
        Ok(())
    }

    /// `device_lists`: the users the token tracks that are `changed` are queried again; those
    /// that `left` share no room with the token any more.
    fn apply_device_lists(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        let lists = match sync.0.get("device_lists")? {
            Some(Value::Map(lists)) => lists,
            _ => return Ok(()),
        };
        for list in ["changed", "left"] {
            let Some(Value::Array(users)) = lists.get(list)? else {
                continue;
            };
            for user in users.iter() {
                let result = match user {
                    Ok(Value::Text(user)) if list == "left" => self.on_user_left(user),
                    Ok(Value::Text(user)) => {
                        if self.devices.is_tracked(user) {
                            self.track(user);
                        }
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(error) => Err(error.into()),
                };
                self.item(Item::of("device-list"), result)?;
            }
        }
        Ok(())
    }

    /// What a sync carries, in the order it must be taken in, item by item.
    pub(super) fn apply_sync(
        &mut self,
        sync: &SyncResponse<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        self.apply_rooms(sync)?;
        let to_device = events_of(Some(sync.0), "to_device");
        match to_device {
            Ok(events) => {
                for event in events {
                    match event {
                        Ok(event) => {
                            let result = self.take_to_device(&event, now);
                            self.item(Item::event("to-device", "", &event, ""), result)?;
                        }
                        Err(error) => self.item(Item::of("to-device"), Err(error.into()))?,
                    }
                }
            }
            Err(error) => self.item(Item::of("to-device"), Err(error.into()))?,
        }
        // A list of rooms or a room that cannot be read was reported with the rooms' state.
        if let Ok(rooms) = sync.joined_rooms() {
            for (room_id, room) in rooms.map_while(Result::ok) {
                let mut text = [0; TEXT_LEN];
                let room_id = room_id.as_text(&mut text);
                self.take_timeline(room_id, &room, now)?;
            }
        }
        // The tables' leaving rules ([`super::lifecycles`]), then everything this sync carried
        // that could be stored is stored: the caller moves the cursor.
        self.tidy_after_sync()
    }

    /// A to-device message: a stub is shown, a duplicate skipped, the rest taken in.
    fn take_to_device(&mut self, event: &Event<'_>, now: Instant) -> Result<(), TokenError> {
        if let Some(size) = stub_size(event)? {
            self.show_stub("", event, "", size);
            return Ok(());
        }
        let digest = self.to_device_digest(event)?;
        if self.sync.recent.contains(digest) {
            return Ok(());
        }
        // Taken in, even if refused: a copy of it is not reported again.
        self.sync.recent.insert(digest);
        let sender = event.sender()?;
        let event_type = event.event_type()?;
        if let Some(content) = event.encrypted()?
            && content.algorithm()? == OLM_ALGORITHM
        {
            self.on_olm_event(sender, content, now)?;
        } else if event_type.starts_with("m.key.verification.") {
            self.on_verification_event(sender, event_type, event.content()?, now);
        } else if event_type == room_keys::WITHHELD_EVENT {
            self.on_room_key_withheld(sender, event.content()?);
        }
        Ok(())
    }

    /// A digest of to-device message `event`, the same for each copy of it: its sender, type,
    /// and the ciphertext for this device or its transaction id.
    fn to_device_digest(&self, event: &Event<'_>) -> Result<u32, TokenError> {
        let sender = event.sender()?;
        let event_type = event.event_type()?;
        let content = event.content()?;
        let mut body: &[u8] = &[];
        // Unencrypted, what tells one message from another: a verification's transaction, a
        // withheld notice's room, session and code.
        let mut fields: [&[u8]; 4] = [&[]; 4];
        if let Some(encrypted) = event.encrypted()?
            && let Ok(Some((_, message))) = encrypted.olm_message_for(&self.account.curve_b64)
        {
            body = match message {
                jeton_proto::view::Binary::Bytes(bytes) => bytes,
                jeton_proto::view::Binary::Base64(text) => text.as_bytes(),
            };
        } else {
            let names = ["transaction_id", "room_id", "session_id", "code"];
            for (field, name) in fields.iter_mut().zip(names) {
                if let Some(Value::Text(text)) = content.get(name)? {
                    *field = text.as_bytes();
                }
            }
        }
        let [txn, room, session, code] = fields;
        Ok(digest(&[
            b"to-device",
            sender.as_bytes(),
            event_type.as_bytes(),
            body,
            txn,
            room,
            session,
            code,
        ]))
    }

    /// The timeline of joined room `room_id` in a sync, shown event by event, unless the
    /// room's gap is being filled: the back-fill shows it then, after the earlier events.
    fn take_timeline(
        &mut self,
        room_id: &str,
        room: &Room<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(slot) = self.room_slot(room_id) else {
            // Not in the table (it was full: reported with the room's state).
            return Ok(());
        };
        if self.backfill.defers(slot) {
            return Ok(());
        }
        let events = events_of(Some(room.0), "timeline");
        match events {
            Ok(events) => {
                for event in events {
                    match event {
                        Ok(event) => self.take_timeline_event(room_id, &event, now)?,
                        Err(error) => {
                            let item = Item {
                                room_id,
                                ..Item::of("timeline")
                            };
                            self.item(item, Err(error.into()))?;
                        }
                    }
                }
                Ok(())
            }
            Err(error) => {
                let item = Item {
                    room_id,
                    ..Item::of("timeline")
                };
                self.item(item, Err(error.into()))
            }
        }
    }

    /// An event of room `room_id`: a stub is shown, a duplicate skipped, the rest shown
    /// ([`super::timeline`]).
    pub(in crate::matrix) fn take_timeline_event(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let mut text = [0; TEXT_LEN];
        let event_id = match event.event_id() {
            Ok(Some(id)) => id.as_text(&mut text),
            _ => "",
        };
        let result = self.take_timeline_event_inner(room_id, event, event_id, now);
        self.item(Item::event("timeline", room_id, event, event_id), result)
    }

    fn take_timeline_event_inner(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        event_id: &str,
        now: Instant,
    ) -> Result<(), TokenError> {
        if let Some(size) = stub_size(event)? {
            self.show_stub(room_id, event, event_id, size);
            return Ok(());
        }
        let digest = event_digest(event_id);
        if self.sync.recent.contains(digest) {
            return Ok(());
        }
        self.sync.recent.insert(digest);
        self.on_timeline_event(room_id, event, now)
    }

    /// Tells the person about the stub `event` (`event_id`) of `room_id` (empty for a
    /// to-device message): an event too large for the token, which it skips.
    pub(in crate::matrix) fn show_stub(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        event_id: &str,
        size: u64,
    ) {
        self.env.ui.event(&UiEvent::EventTooLarge {
            room_id,
            event_type: event.event_type().unwrap_or(""),
            sender: event.sender().unwrap_or(""),
            event_id,
            size,
        });
    }
}
