//! Per-peer sticky profile state of jeton v2 (PROFILE.md section 1.1): the room ids a peer named
//! in full, so that later requests may name a room by a short handle, and the deprecated Megolm
//! sender fields (`sender_key`, `device_id`) of its encrypted sends, so that later sends may leave
//! them out. Like the sticky access token (option 256) it belongs to, this state is bounded, held
//! per peer, and forgotten when the peer's access token changes; a room handle the gateway cannot
//! resolve is answered 4.12 and the request made again in full.

use std::collections::VecDeque;

use jeton_proto::TableVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// 4.12 Precondition Failed: the request names a room by a handle the gateway cannot resolve for
/// this peer; the client sends it again with the room id.
pub const STICKY_STATE_MISSING: u8 = 0x8c;

/// Room ids kept per peer (twice a token's room capacity, so a token's rooms fit with room to
/// spare); the least recently named goes first.
pub const MAX_ROOMS_PER_PEER: usize = 32;

/// The first character of a room handle (a room id starts with `!`, so the two never mix).
pub const HANDLE_SIGIL: char = '~';

/// The fewest room id characters (after the `!`) a handle carries: 11 base64 characters are 66
/// bits, so no one can make a room whose id starts like another's.
pub const MIN_HANDLE_CHARS: usize = 11;

/// The path of an encrypted room event send, after expansion, whose body may leave out the
/// deprecated Megolm sender fields.
const ENCRYPTED_SEND: [&str; 4] = ["_matrix", "client", "v3", "rooms"];

/// Why a request cannot be completed from the sticky state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StickyError {
    /// A room handle that names no room, or more than one, of those the peer named in full.
    UnknownRoomHandle,
}

impl core::fmt::Display for StickyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::UnknownRoomHandle => {
                "The room handle names no room this peer named in full; send the room id."
            }
        })
    }
}

impl std::error::Error for StickyError {}

/// The deprecated Megolm sender fields of a peer's last encrypted send that carried them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MegolmSender {
    sender_key: Value,
    device_id: Value,
}

/// One peer's sticky profile state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StickyState {
    /// Room ids the peer named in full, least recently named first.
    rooms: VecDeque<String>,
    megolm_sender: Option<MegolmSender>,
    /// The Megolm session id of the last encrypted send to each room that carried one, least
    /// recently sent first.
    megolm_sessions: VecDeque<(String, Value)>,
    /// The record last handed out by [`Self::changed_record`].
    #[serde(skip)]
    recorded: Vec<u8>,
}

impl StickyState {
    /// Forgets everything: the peer's access token changed.
    pub fn clear(&mut self) {
        self.rooms.clear();
        self.megolm_sender = None;
        self.megolm_sessions.clear();
    }

    /// The Uri-Path segments with every room handle replaced by its room id, recording the room
    /// ids named in full. Only the `{roomId}` parameters of short (enum) paths of `version` 2 are
    /// looked at; anything else is returned as it is.
    pub fn resolve_rooms<'s>(
        &mut self,
        segments: &[&'s str],
        version: TableVersion,
    ) -> Result<Vec<std::borrow::Cow<'s, str>>, StickyError> {
        let mut out: Vec<std::borrow::Cow<'s, str>> =
            segments.iter().map(|s| (*s).into()).collect();
        if version != TableVersion::V2 {
            return Ok(out);
        }
        let Some(index) = segments
            .first()
            .and_then(|e| room_param_segment(e, version))
        else {
            return Ok(out);
        };
        let Some(segment) = out.get_mut(index) else {
            return Ok(out);
        };
        if let Some(handle) = segment.strip_prefix(HANDLE_SIGIL) {
            let room = self.room_for(handle)?;
            *segment = room.into();
        } else if segment.starts_with('!') {
            self.remember_room(segment);
        }
        Ok(out)
    }

    fn room_for(&mut self, handle: &str) -> Result<String, StickyError> {
        if handle.len() < MIN_HANDLE_CHARS {
            return Err(StickyError::UnknownRoomHandle);
        }
        let mut matching = self
            .rooms
            .iter()
            .enumerate()
            .filter(|(_, room)| room.get(1..).is_some_and(|id| id.starts_with(handle)));
        let (Some((index, _)), None) = (matching.next(), matching.next()) else {
            return Err(StickyError::UnknownRoomHandle);
        };
        let room = self
            .rooms
            .remove(index)
            .ok_or(StickyError::UnknownRoomHandle)?;
        self.rooms.push_back(room.clone());
        Ok(room)
    }

    fn remember_room(&mut self, room: &str) {
        self.rooms.retain(|known| known != room);
        if self.rooms.len() >= MAX_ROOMS_PER_PEER {
            self.rooms.pop_front();
        }
        self.rooms.push_back(room.to_owned());
    }

    /// For a v2 encrypted send (`path` expanded) with a Megolm body: keeps the sender fields
    /// it carries, or fills in the kept ones (if any) when it carries neither. A body without
    /// them and nothing kept goes as it is: a client may leave the deprecated fields out for good.
    /// The same for the room's `session_id`, kept per room.
    pub fn megolm_send(&mut self, path: &str, body: &mut Value, version: TableVersion) {
        if version != TableVersion::V2 {
            return;
        }
        let Some(room) = encrypted_send_room(path) else {
            return;
        };
        let Value::Object(content) = body else {
            return;
        };
        if content.get("algorithm").and_then(Value::as_str) != Some("m.megolm.v1.aes-sha2") {
            return;
        }
        match (content.get("sender_key"), content.get("device_id")) {
            (Some(sender_key), Some(device_id)) => {
                self.megolm_sender = Some(MegolmSender {
                    sender_key: sender_key.clone(),
                    device_id: device_id.clone(),
                });
            }
            (None, None) => {
                if let Some(sender) = &self.megolm_sender {
                    content.insert("sender_key".into(), sender.sender_key.clone());
                    content.insert("device_id".into(), sender.device_id.clone());
                }
            }
            // One without the other: forwarded as the client wrote it.
            _ => {}
        }
        let kept = self.megolm_sessions.iter().position(|(r, _)| r == room);
        let kept = kept.and_then(|i| self.megolm_sessions.remove(i));
        match (content.get("session_id"), kept) {
            (Some(session_id), _) => {
                let session_id = session_id.clone();
                self.remember_session(room, session_id);
            }
            (None, Some((_, session_id))) => {
                content.insert("session_id".into(), session_id.clone());
                self.remember_session(room, session_id);
            }
            (None, None) => {}
        }
    }

    fn remember_session(&mut self, room: &str, session_id: Value) {
        if self.megolm_sessions.len() >= MAX_ROOMS_PER_PEER {
            self.megolm_sessions.pop_front();
        }
        self.megolm_sessions
            .push_back((room.to_owned(), session_id));
    }
}

impl StickyState {
    /// The state as a record to store (JSON), when it changed since the last one handed out.
    pub fn changed_record(&mut self) -> Option<Vec<u8>> {
        let record = serde_json::to_vec(&*self).ok()?;
        if record == self.recorded {
            return None;
        }
        self.recorded.clone_from(&record);
        Some(record)
    }

    /// The state a [`Self::changed_record`] stored; `None` for a record it cannot read.
    pub fn from_record(record: &[u8]) -> Option<Self> {
        let mut state: Self = serde_json::from_slice(record).ok()?;
        state.recorded = record.to_vec();
        Some(state)
    }

    /// [`StickyState::megolm_send`] for a JSON body as bytes: the body to forward.
    pub fn megolm_send_json(
        &mut self,
        path: &str,
        json: Vec<u8>,
        version: TableVersion,
    ) -> Vec<u8> {
        if version != TableVersion::V2 || !is_encrypted_send(path) {
            return json;
        }
        let Ok(mut body) = serde_json::from_slice::<Value>(&json) else {
            return json;
        };
        let before = body.clone();
        self.megolm_send(path, &mut body, version);
        if body == before {
            return json;
        }
        body.to_string().into_bytes()
    }
}

/// Which Uri-Path segment of a short path starting with `enum_segment` is its `{roomId}`.
fn room_param_segment(enum_segment: &str, version: TableVersion) -> Option<usize> {
    let (_, template) = jeton_proto::path::table(version)
        .iter()
        .find(|(code, _)| *code == enum_segment)?;
    template
        .split('/')
        .filter(|part| part.starts_with('{'))
        .position(|param| param == "{roomId}")
        .map(|position| position + 1)
}

/// The (percent-encoded) room id of `path` if it is
/// `/_matrix/client/v3/rooms/{roomId}/send/m.room.encrypted/{txnId}`.
fn encrypted_send_room(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [a, b, c, d, room, "send", "m.room.encrypted", _] if [*a, *b, *c, *d] == ENCRYPTED_SEND => {
            Some(room)
        }
        _ => None,
    }
}

fn is_encrypted_send(path: &str) -> bool {
    encrypted_send_room(path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TableVersion::{V1, V2};
    use serde_json::json;

    // A room version 12 room id, as Synapse made it.
    const ROOM: &str = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
    const SEND: &str = "/_matrix/client/v3/rooms/!r/send/m.room.encrypted/t1";

    fn resolved(state: &mut StickyState, segments: &[&str]) -> Result<Vec<String>, StickyError> {
        state
            .resolve_rooms(segments, V2)
            .map(|s| s.into_iter().map(|s| s.into_owned()).collect())
    }

    #[test]
    fn a_room_named_in_full_can_then_be_named_by_its_handle() {
        let mut state = StickyState::default();
        let handle = format!("~{}", &ROOM[1..12]);
        assert_eq!(
            resolved(&mut state, &["we", &handle, "t1"]),
            Err(StickyError::UnknownRoomHandle)
        );
        assert_eq!(
            resolved(&mut state, &["we", ROOM, "t1"]).unwrap(),
            ["we", ROOM, "t1"]
        );
        assert_eq!(
            resolved(&mut state, &["we", &handle, "t2"]).unwrap(),
            ["we", ROOM, "t2"]
        );
        // Any path with a {roomId} parameter, in its place: `38` is state/{eventType}/{stateKey}.
        assert_eq!(
            resolved(&mut state, &["38", &handle, "m.room.name", ""]).unwrap(),
            ["38", ROOM, "m.room.name", ""]
        );
        // `3r` (account_data of a user) has no room: the segment stays.
        assert_eq!(
            resolved(&mut state, &["3r", &handle, "x"]).unwrap(),
            ["3r", &handle, "x"]
        );
        // Too short a handle is refused even if it matches.
        assert_eq!(
            resolved(&mut state, &["we", &format!("~{}", &ROOM[1..8]), "t3"]),
            Err(StickyError::UnknownRoomHandle)
        );
        // Under v1 nothing is looked at.
        let same: Vec<_> = state.resolve_rooms(&["9", &handle], V1).unwrap();
        assert_eq!(same, ["9", handle.as_str()]);
        state.clear();
        assert!(resolved(&mut state, &["we", &handle, "t4"]).is_err());
    }

    #[test]
    fn an_ambiguous_handle_is_refused_and_old_rooms_are_forgotten() {
        let mut state = StickyState::default();
        let twin_a = "!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let twin_b = "!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB";
        resolved(&mut state, &["we", twin_a, "t"]).unwrap();
        resolved(&mut state, &["we", twin_b, "t"]).unwrap();
        assert_eq!(
            resolved(&mut state, &["we", "~AAAAAAAAAAA", "t"]),
            Err(StickyError::UnknownRoomHandle)
        );
        assert_eq!(
            resolved(&mut state, &["we", &format!("~{}", &twin_b[1..]), "t"]).unwrap()[1],
            twin_b
        );
        for i in 0..MAX_ROOMS_PER_PEER {
            resolved(
                &mut state,
                &["we", &format!("!room{i:02}xxxxxxxxxxxx:s"), "t"],
            )
            .unwrap();
        }
        assert!(resolved(&mut state, &["we", &format!("~{}", &twin_b[1..]), "t"]).is_err());
        assert!(resolved(&mut state, &["we", "~room31xxxxxxxx", "t"]).is_ok());
    }

    #[test]
    fn megolm_session_ids_are_kept_per_room() {
        let mut state = StickyState::default();
        let other = "/_matrix/client/v3/rooms/!other/send/m.room.encrypted/t1";
        let with = |session: &str| json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": session});
        let without = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA"});
        // Nothing kept: as written.
        let mut body = without.clone();
        state.megolm_send(SEND, &mut body, V2);
        assert_eq!(body, without);
        state.megolm_send(SEND, &mut with("c2Vz"), V2);
        state.megolm_send(other, &mut with("b3Ro"), V2);
        let mut body = without.clone();
        state.megolm_send(SEND, &mut body, V2);
        assert_eq!(body, with("c2Vz"));
        // A new session replaces the old one for that room only.
        state.megolm_send(SEND, &mut with("bmV3"), V2);
        for (path, session) in [(SEND, "bmV3"), (other, "b3Ro")] {
            let mut body = without.clone();
            state.megolm_send(path, &mut body, V2);
            assert_eq!(body, with(session));
        }
        state.clear();
        let mut body = without.clone();
        state.megolm_send(SEND, &mut body, V2);
        assert_eq!(body, without);
    }

    #[test]
    fn megolm_sender_fields_are_kept_and_filled_in() {
        let mut state = StickyState::default();
        let bare = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "c2Vz"});
        // Nothing kept yet: the body goes as it is.
        let mut first = bare.clone();
        state.megolm_send(SEND, &mut first, V2);
        assert_eq!(first, bare);
        let mut full = bare.clone();
        full["sender_key"] = json!("a2V5");
        full["device_id"] = json!("DEV");
        let sent = full.clone();
        state.megolm_send(SEND, &mut full, V2);
        assert_eq!(full, sent);
        let mut later = bare.clone();
        state.megolm_send(SEND, &mut later, V2);
        assert_eq!(later, sent);
        // Not an encrypted send, not Megolm, or v1: untouched.
        for (path, body, version) in [
            (
                "/_matrix/client/v3/rooms/!r/send/m.room.message/t",
                bare.clone(),
                V2,
            ),
            (
                SEND,
                json!({"algorithm": "m.olm.v1.curve25519-aes-sha2"}),
                V2,
            ),
            (SEND, bare.clone(), V1),
        ] {
            let mut body_after = body.clone();
            state.megolm_send(path, &mut body_after, version);
            assert_eq!(body_after, body);
        }
        state.clear();
        let mut after_clear = bare.clone();
        state.megolm_send(SEND, &mut after_clear, V2);
        assert_eq!(after_clear, bare);
    }

    #[test]
    fn a_record_brings_the_state_back_and_only_changes_make_one() {
        let mut state = StickyState::default();
        resolved(&mut state, &["we", ROOM, "t1"]).unwrap();
        let record = state.changed_record().expect("a new room is a change");
        assert_eq!(state.changed_record(), None, "nothing changed since");
        let mut back = StickyState::from_record(&record).unwrap();
        assert_eq!(back.changed_record(), None);
        let handle = format!("~{}", &ROOM[1..12]);
        assert_eq!(
            resolved(&mut back, &["we", &handle, "t2"]).unwrap(),
            ["we", ROOM, "t2"]
        );
        assert!(StickyState::from_record(b"not json").is_none());
    }
}
