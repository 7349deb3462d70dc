//! The views of a `/sync` response and the events in it: rooms, timelines, to-device events and
//! encrypted contents, and the id the server gives a sent event.

use super::{
    Binary, Elements, Entries, Located, MAX_ROOM_EVENTS, MAX_ROOMS, MAX_SMALL_MAP,
    MAX_TO_DEVICE_EVENTS, MAX_USERS, Map, Texts, Value, ViewError, root_map, texts,
};
use crate::TableVersion;
use crate::ids::{EVENT_SIGIL, Id, ROOM_SIGIL};

/// Iterator over the events of a bounded list.
#[derive(Debug, Clone)]
pub struct Events<'a>(Option<Elements<'a>>);

impl<'a> Iterator for Events<'a> {
    type Item = Result<Event<'a>, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.0.as_mut()?.located()?;
        Some(item.and_then(Located::map).map(Event))
    }
}

fn events<'a>(list: Option<Map<'a>>, capacity: u64) -> Result<Events<'a>, ViewError> {
    let array = match list {
        Some(list) => list.optional_array("events")?,
        None => None,
    };
    Ok(Events(array.map(|a| a.bounded(capacity)).transpose()?))
}

/// The field of a stub: an event the gateway left out because it alone is larger than the
/// client's Response-Capacity (CoAP option 258) carries this field, its encoded size in bytes,
/// beside the event's `type`, `sender`, `event_id` and `state_key` (PROFILE.md section 9).
pub const TOO_LARGE_FIELD: &str = "jeton.too_large";

/// A Matrix event (timeline, state, stripped invite state or to-device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a>(pub Map<'a>);

impl<'a> Event<'a> {
    /// `type`.
    pub fn event_type(&self) -> Result<&'a str, ViewError> {
        self.0.required("type")?.text()
    }

    /// `sender`.
    pub fn sender(&self) -> Result<&'a str, ViewError> {
        self.0.required("sender")?.text()
    }

    /// `event_id` (absent in to-device and stripped state events); [`Id::as_text`] gives its text.
    pub fn event_id(&self) -> Result<Option<Id<'a>>, ViewError> {
        self.0
            .located("event_id")?
            .map(|id| id.id(EVENT_SIGIL))
            .transpose()
    }

    /// `state_key`, present only in state events.
    pub fn state_key(&self) -> Result<Option<&'a str>, ViewError> {
        self.0.optional_text("state_key")
    }

    /// `origin_server_ts` in milliseconds.
    pub fn origin_server_ts(&self) -> Result<Option<i64>, ViewError> {
        self.0
            .located("origin_server_ts")?
            .map(Located::integer)
            .transpose()
    }

    /// `content`; an absent one reads as empty (a sync filter's `event_fields` that selects
    /// fields inside `content` makes Synapse leave `content` out of an event that has none of them).
    pub fn content(&self) -> Result<Map<'a>, ViewError> {
        match self.0.located("content")? {
            Some(content) => content.map(),
            None => Ok(Map {
                input: &[0xa0],
                first: 1,
                len: 0,
                version: self.0.version,
            }),
        }
    }

    /// The content as `m.room.encrypted`, if the event is of that type.
    pub fn encrypted(&self) -> Result<Option<EncryptedContent<'a>>, ViewError> {
        if self.event_type()? != "m.room.encrypted" {
            return Ok(None);
        }
        Ok(Some(EncryptedContent(self.content()?)))
    }
}

/// The content of an `m.room.encrypted` event (Megolm or Olm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedContent<'a>(pub Map<'a>);

/// The Olm algorithm name.
pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";
/// The Megolm algorithm name.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

impl<'a> EncryptedContent<'a> {
    /// `algorithm`.
    pub fn algorithm(&self) -> Result<&'a str, ViewError> {
        self.0.required("algorithm")?.text()
    }

    /// `sender_key` (required for Olm, deprecated for Megolm).
    pub fn sender_key(&self) -> Result<Option<Binary<'a>>, ViewError> {
        self.0
            .located("sender_key")?
            .map(Located::binary)
            .transpose()
    }

    /// Megolm: the session id.
    pub fn session_id(&self) -> Result<Binary<'a>, ViewError> {
        self.0.required("session_id")?.binary()
    }

    /// Megolm: the ciphertext (a single binary value).
    pub fn megolm_ciphertext(&self) -> Result<Binary<'a>, ViewError> {
        self.0.required("ciphertext")?.binary()
    }

    /// Olm: the message for the recipient whose Curve25519 key is `recipient_key` (unpadded base64, as
    /// the map key is text): its type (0 pre-key, 1 normal) and body.
    pub fn olm_message_for(
        &self,
        recipient_key: &str,
    ) -> Result<Option<(i64, Binary<'a>)>, ViewError> {
        let recipients = self.0.required("ciphertext")?.map()?;
        let Some(message) = recipients.optional_map(recipient_key)? else {
            return Ok(None);
        };
        let message_type = message.required("type")?.integer()?;
        let body = message.required("body")?.binary()?;
        Ok(Some((message_type, body)))
    }
}

/// Iterator over the rooms of a sync section: the room id and the room's map.
#[derive(Debug, Clone)]
pub struct Rooms<'a>(Option<Entries<'a>>);

impl<'a> Iterator for Rooms<'a> {
    /// The room id ([`Id::as_text`] gives its text) and the room.
    type Item = Result<(Id<'a>, Room<'a>), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.0.as_mut()?.entry()?;
        Some(entry.and_then(|entry| {
            let id = match entry.hash {
                Some(hash) => Id::Hash {
                    sigil: ROOM_SIGIL,
                    hash,
                },
                None => Id::Text(entry.name),
            };
            Ok((id, Room(entry.value.map()?)))
        }))
    }
}

/// The rooms of a membership section, whose keys are room ids.
fn rooms(section: Option<Map<'_>>) -> Result<Rooms<'_>, ViewError> {
    let entries = section.map(|s| s.bounded(MAX_ROOMS)).transpose()?;
    Ok(Rooms(entries.map(|entries| Entries {
        room_keys: true,
        ..entries
    })))
}

/// One room of a sync response (joined or invited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room<'a>(pub Map<'a>);

impl<'a> Room<'a> {
    /// `timeline.events` (joined rooms), at most [`MAX_ROOM_EVENTS`].
    pub fn timeline_events(&self) -> Result<Events<'a>, ViewError> {
        events(self.0.optional_map("timeline")?, MAX_ROOM_EVENTS)
    }

    /// `state.events` (joined rooms), at most [`MAX_ROOM_EVENTS`].
    pub fn state_events(&self) -> Result<Events<'a>, ViewError> {
        events(self.0.optional_map("state")?, MAX_ROOM_EVENTS)
    }

    /// `invite_state.events` (invited rooms), at most [`MAX_ROOM_EVENTS`].
    pub fn invite_state_events(&self) -> Result<Events<'a>, ViewError> {
        events(self.0.optional_map("invite_state")?, MAX_ROOM_EVENTS)
    }

    /// `timeline.limited`: whether the server left events out (a gap).
    pub fn timeline_limited(&self) -> Result<bool, ViewError> {
        match self.timeline_member("limited")? {
            None => Ok(false),
            Some(Located {
                value: Value::Bool(limited),
                ..
            }) => Ok(limited),
            Some(other) => Err(other.wrong()),
        }
    }

    /// `timeline.prev_batch`: the position before the timeline's first event, from which the
    /// events a `limited` timeline left out are fetched (`GET /rooms/{roomId}/messages`).
    pub fn timeline_prev_batch(&self) -> Result<Option<&'a str>, ViewError> {
        match self.timeline_member("prev_batch")? {
            None => Ok(None),
            Some(Located {
                value: Value::Text(position),
                ..
            }) => Ok(Some(position)),
            Some(other) => Err(other.wrong()),
        }
    }

    /// Member `name` of `timeline`, if both are there.
    fn timeline_member(&self, name: &str) -> Result<Option<Located<'a>>, ViewError> {
        match self.0.optional_map("timeline")? {
            Some(timeline) => timeline.located(name),
            None => Ok(None),
        }
    }
}

/// The subset of a `/sync` response a token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncResponse<'a>(pub Map<'a>);

impl<'a> SyncResponse<'a> {
    /// Views a sync response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// `next_batch`: the token for the next sync.
    pub fn next_batch(&self) -> Result<&'a str, ViewError> {
        self.0.required("next_batch")?.text()
    }

    /// `to_device.events`, at most [`MAX_TO_DEVICE_EVENTS`].
    pub fn to_device_events(&self) -> Result<Events<'a>, ViewError> {
        events(self.0.optional_map("to_device")?, MAX_TO_DEVICE_EVENTS)
    }

    /// `device_lists.changed`, at most [`MAX_USERS`].
    pub fn device_lists_changed(&self) -> Result<Texts<'a>, ViewError> {
        let lists = self.0.optional_map("device_lists")?;
        texts(
            lists
                .map(|l| l.optional_array("changed"))
                .transpose()?
                .flatten(),
            MAX_USERS,
        )
    }

    /// `device_lists.left`, at most [`MAX_USERS`].
    pub fn device_lists_left(&self) -> Result<Texts<'a>, ViewError> {
        let lists = self.0.optional_map("device_lists")?;
        texts(
            lists
                .map(|l| l.optional_array("left"))
                .transpose()?
                .flatten(),
            MAX_USERS,
        )
    }

    /// `device_one_time_keys_count.<algorithm>`; absent counts as 0, as the spec says.
    pub fn one_time_keys_count(&self, algorithm: &str) -> Result<i64, ViewError> {
        let Some(counts) = self.0.optional_map("device_one_time_keys_count")? else {
            return Ok(0);
        };
        counts.bounded(MAX_SMALL_MAP)?;
        counts.located(algorithm)?.map_or(Ok(0), Located::integer)
    }

    /// `device_unused_fallback_key_types`; `None` if the server did not send it.
    pub fn unused_fallback_key_types(&self) -> Result<Option<Texts<'a>>, ViewError> {
        self.0
            .optional_array("device_unused_fallback_key_types")?
            .map(|types| texts(Some(types), MAX_SMALL_MAP))
            .transpose()
    }

    /// `rooms.join`, at most [`MAX_ROOMS`].
    pub fn joined_rooms(&self) -> Result<Rooms<'a>, ViewError> {
        rooms(self.0.path_map(&["rooms", "join"])?)
    }

    /// `rooms.invite`, at most [`MAX_ROOMS`].
    pub fn invited_rooms(&self) -> Result<Rooms<'a>, ViewError> {
        rooms(self.0.path_map(&["rooms", "invite"])?)
    }

    /// `rooms.leave` (the rooms the user left, or was removed from), at most [`MAX_ROOMS`].
    pub fn left_rooms(&self) -> Result<Rooms<'a>, ViewError> {
        rooms(self.0.path_map(&["rooms", "leave"])?)
    }
}

/// The response to sending an event: `event_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendEventResponse<'a>(pub Map<'a>);

impl<'a> SendEventResponse<'a> {
    /// Views a send-event response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// The id the server gave the event; [`Id::as_text`] gives its text.
    pub fn event_id(&self) -> Result<Id<'a>, ViewError> {
        self.0.required("event_id")?.id(EVENT_SIGIL)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base64_at, bytes_of, fixture};
    use super::*;
    use crate::transcode::json_to_cbor;
    use serde_json::json;

    #[test]
    fn sync_response_view_reads_what_the_json_says_in_both_versions() {
        let json = fixture("sync_response.json");
        for version in [TableVersion::V1, TableVersion::V2] {
            let cbor = json_to_cbor(&json, version).unwrap();
            let sync = SyncResponse::parse(&cbor, version).unwrap();
            assert_eq!(sync.next_batch().unwrap(), json["next_batch"]);
            let changed: Vec<_> = sync
                .device_lists_changed()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(json!(changed), json["device_lists"]["changed"]);
            assert_eq!(sync.device_lists_left().unwrap().count(), 0);
            assert_eq!(sync.one_time_keys_count("signed_curve25519").unwrap(), 49);
            assert_eq!(sync.one_time_keys_count("curve25519").unwrap(), 0);
            let fallback: Vec<_> = sync
                .unused_fallback_key_types()
                .unwrap()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(fallback, ["signed_curve25519"]);

            let to_device: Vec<_> = sync
                .to_device_events()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(to_device.len(), 1);
            let olm = to_device[0].encrypted().unwrap().unwrap();
            assert_eq!(olm.algorithm().unwrap(), OLM_ALGORITHM);
            let content = &json["to_device"]["events"][0]["content"];
            let recipient = content["ciphertext"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap();
            let (message_type, body) = olm.olm_message_for(recipient).unwrap().unwrap();
            assert_eq!(message_type, 0);
            let pointer = format!("/to_device/events/0/content/ciphertext/{recipient}/body");
            assert_eq!(bytes_of(body), base64_at(&json, &pointer));
            assert_eq!(olm.olm_message_for("someone else").unwrap(), None);
            assert!(matches!(body, Binary::Bytes(_)) == (version == TableVersion::V2));

            let rooms: Vec<_> = sync.joined_rooms().unwrap().map(Result::unwrap).collect();
            assert_eq!(rooms.len(), 1);
            let (room_id, room) = rooms[0];
            let mut room_text = [0; crate::ids::TEXT_LEN];
            let room_id = room_id.as_text(&mut room_text);
            let room_json = &json["rooms"]["join"][room_id];
            assert!(!room.timeline_limited().unwrap());
            assert_eq!(
                room.timeline_prev_batch().unwrap(),
                room_json["timeline"]["prev_batch"].as_str()
            );
            let timeline: Vec<_> = room
                .timeline_events()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(timeline.len(), 1);
            let event = timeline[0];
            let mut event_text = [0; crate::ids::TEXT_LEN];
            assert_eq!(
                event
                    .event_id()
                    .unwrap()
                    .map(|id| id.as_text(&mut event_text)),
                room_json["timeline"]["events"][0]["event_id"].as_str()
            );
            assert_eq!(event.sender().unwrap(), "@alice:localhost");
            assert_eq!(event.origin_server_ts().unwrap(), Some(1764280000000));
            let megolm = event.encrypted().unwrap().unwrap();
            assert_eq!(megolm.algorithm().unwrap(), MEGOLM_ALGORITHM);
            let pointer = format!("/rooms/join/{room_id}/timeline/events/0/content/ciphertext");
            assert_eq!(
                bytes_of(megolm.megolm_ciphertext().unwrap()),
                base64_at(&json, &pointer)
            );
            assert_eq!(room.state_events().unwrap().count(), 0);

            let invited: Vec<_> = sync.invited_rooms().unwrap().map(Result::unwrap).collect();
            assert_eq!(invited.len(), 1);
            let stripped: Vec<_> = invited[0]
                .1
                .invite_state_events()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(stripped.len(), 2);
            assert_eq!(stripped[0].event_type().unwrap(), "m.room.member");
            assert_eq!(stripped[0].state_key().unwrap(), Some("@bob:localhost"));
            assert_eq!(stripped[0].encrypted().unwrap(), None);
        }
    }

    #[test]
    fn an_event_without_content_reads_as_empty_content() {
        // Synapse's answer to event_fields ["type", "content.body"] for an m.room.create event.
        let cbor = json_to_cbor(
            &json!({"type": "m.room.create", "event_id": "$e"}),
            TableVersion::V2,
        )
        .unwrap();
        let Value::Map(map) = Value::parse(&cbor, TableVersion::V2).unwrap() else {
            panic!("not a map");
        };
        let content = Event(map).content().unwrap();
        assert!(content.is_empty());
        assert_eq!(content.get("body").unwrap(), None);
        assert_eq!(content.entries().count(), 0);
    }

    #[test]
    fn hashed_room_and_event_ids_read_as_their_text_in_both_versions() {
        // A room version 12 room id and an event id, as Synapse made them.
        let room = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
        let event = "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c";
        let json = json!({"next_batch": "s1", "rooms": {"join": {room: {"timeline": {"events": [
            {"type": "m.room.encrypted", "sender": "@a:s", "event_id": event, "content": {}}
        ]}}, "!old:s": {}}, "invite": {room: {}}}});
        for version in [TableVersion::V1, TableVersion::V2] {
            let cbor = json_to_cbor(&json, version).unwrap();
            let sync = SyncResponse::parse(&cbor, version).unwrap();
            let mut texts = Vec::new();
            for entry in sync.joined_rooms().unwrap() {
                let (id, joined) = entry.unwrap();
                let text = id.as_text(&mut [0; crate::ids::TEXT_LEN]).to_owned();
                let hashed = version == TableVersion::V2 && text == room;
                assert_eq!(matches!(id, Id::Hash { .. }), hashed);
                texts.push(text);
                for e in joined.timeline_events().unwrap() {
                    let id = e.unwrap().event_id().unwrap().unwrap();
                    assert_eq!(id.as_text(&mut [0; crate::ids::TEXT_LEN]), event);
                }
            }
            texts.sort();
            assert_eq!(
                texts,
                ["!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI", "!old:s"]
            );
            let (invited, _) = sync.invited_rooms().unwrap().next().unwrap().unwrap();
            assert_eq!(invited.as_text(&mut [0; crate::ids::TEXT_LEN]), room);
            let sent = json_to_cbor(&json!({"event_id": event}), version).unwrap();
            let id = SendEventResponse::parse(&sent, version)
                .unwrap()
                .event_id()
                .unwrap();
            assert_eq!(id.as_text(&mut [0; crate::ids::TEXT_LEN]), event);
        }
        // A byte-string key anywhere else stays an error for the views.
        let bad = hex::decode(format!("a15820{}00", "ab".repeat(32))).unwrap();
        assert!(
            SyncResponse::parse(&bad, TableVersion::V2)
                .unwrap()
                .0
                .get("x")
                .is_err()
        );
    }

    #[test]
    fn lists_beyond_capacity_are_errors() {
        let users: Vec<String> = (0..=MAX_USERS).map(|i| format!("@u{i}:s")).collect();
        let json = json!({"next_batch": "s1", "device_lists": {"changed": users}});
        let cbor = json_to_cbor(&json, TableVersion::V2).unwrap();
        let sync = SyncResponse::parse(&cbor, TableVersion::V2).unwrap();
        assert_eq!(
            sync.device_lists_changed().unwrap_err(),
            ViewError::CapacityExceeded {
                capacity: MAX_USERS
            }
        );
    }
}
