//! Splitting a `/sync` response into parts that each fit the client's Response-Capacity (CoAP
//! option 258, PROFILE.md section 9), as the gateway does it (feature `json`).
//!
//! Every part is a sync response of its own. The members of the original go out in this order:
//! to-device events, then device lists and one-time-key counts, then the other root members, then
//! the rooms (a room's summary and state before its timeline, its ephemeral events, account data
//! and unread counts after). Lists of events (and of `device_lists` users) are cut between items,
//! never reordered; a timeline's `limited` and `prev_batch` go with its first event. Every part but
//! the last carries the intermediate position the caller names as `next_batch`; the last carries
//! the homeserver's. An event larger than an otherwise empty part is replaced, in place, by a stub
//! naming it ([`TOO_LARGE_FIELD`]).
//!
//! Sizes are those of the canonical CBOR of the negotiated table version. A part is not encoded
//! again for every event it takes: each item is encoded once on its own, and what it adds to a
//! part (its key, the keys and heads of the containers it creates, the growth of the heads it
//! lengthens) is computed from the part's tree. An item encoded on its own is never smaller than in
//! place (in place, more base64 may become bytes, never less), so the sum bounds the part's size.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::TableVersion;
use crate::ids::ROOM_SECTIONS;
use crate::transcode::{
    SYNC_MEMBERS_KEPT_WHEN_EMPTY, TranscodeError, encoded_key, json_to_cbor, prune_sync_response,
};
use crate::view::TOO_LARGE_FIELD;

/// The smallest Response-Capacity a gateway serves: room for the position, a room's keys and the
/// stub of an event (whose texts [`split_sync_response`] cuts to [`STUB_TEXT_MAX`] bytes).
pub const MIN_RESPONSE_CAPACITY: usize = 1024;

/// The longest text a stub copies from the event it replaces (cut at a character boundary).
pub const STUB_TEXT_MAX: usize = 100;

/// The root members that go first, in this order; `rooms` goes last.
const ROOT_FIRST: [&str; 5] = [
    "to_device",
    "device_lists",
    "device_one_time_keys_count",
    "device_unused_fallback_key_types",
    "org.matrix.msc2732.device_unused_fallback_key_types",
];

/// The members of a room that go before the others, and those that go after them.
const ROOM_FIRST: [&str; 4] = ["summary", "state", "invite_state", "knock_state"];
const ROOM_LAST: [&str; 5] = [
    "timeline",
    "ephemeral",
    "account_data",
    "unread_notifications",
    "unread_thread_notifications",
];

/// The fields a stub copies from the event it replaces.
const STUB_FIELDS: [&str; 4] = ["type", "sender", "event_id", "state_key"];

/// Why a sync response could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SplitError {
    /// The body is not a sync response: no `next_batch` text.
    NotASync,
    /// Even a part holding one stub (or one member that is not an event) is larger than the
    /// capacity.
    CapacityTooSmall {
        /// The client's capacity in bytes.
        capacity: usize,
    },
    /// The response does not transcode (see [`crate::transcode`]).
    Transcode(TranscodeError),
}

impl core::fmt::Display for SplitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotASync => f.write_str("the body is not a sync response (it has no next_batch)"),
            Self::CapacityTooSmall { capacity } => write!(
                f,
                "a member of the sync response does not fit the client's capacity of {capacity} bytes even alone"
            ),
            Self::Transcode(why) => write!(f, "the sync response does not transcode: {why}"),
        }
    }
}

impl core::error::Error for SplitError {}

impl From<TranscodeError> for SplitError {
    fn from(why: TranscodeError) -> Self {
        Self::Transcode(why)
    }
}

/// An event replaced by a stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stubbed {
    /// Its `type`, if it had one.
    pub event_type: Option<String>,
    /// Its `sender`, if it had one.
    pub sender: Option<String>,
    /// Its encoded size in bytes.
    pub size: usize,
}

/// A sync response as parts that each fit the capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncParts {
    /// The parts, in the order the client must get them: sync responses, each with its
    /// `next_batch`.
    pub parts: Vec<Value>,
    /// The events replaced by stubs.
    pub stubbed: Vec<Stubbed>,
}

/// Splits `response` into sync responses whose canonical CBOR under `version` is at most
/// `capacity` bytes each. Part `i` (from 1) of `k` carries `position(i)` as `next_batch` for
/// `i < k`; the last carries the response's own. A response that fits is the one part.
///
/// Give it a v2 response pruned without a `since` (so that every `prev_batch` stays: a part after
/// the first is read against an intermediate position, not the request's `since`); the first
/// part may then be pruned with the request's `since`, which only makes it smaller.
pub fn split_sync_response(
    response: &Value,
    version: TableVersion,
    capacity: usize,
    position: impl Fn(usize) -> String,
) -> Result<SyncParts, SplitError> {
    let Value::Object(root) = response else {
        return Err(SplitError::NotASync);
    };
    let Some(Value::String(last)) = root.get("next_batch") else {
        return Err(SplitError::NotASync);
    };
    if json_to_cbor(response, version)?.len() <= capacity {
        return Ok(SyncParts {
            parts: alloc::vec![response.clone()],
            stubbed: Vec::new(),
        });
    }
    let mut walker = Walker::default();
    walker.object(&mut Vec::new(), root);
    let mut packer = Packer {
        version,
        capacity,
        last_len: last.len(),
        position: &position,
        parts: Vec::new(),
        current: Part::new(version, position(1).len().max(last.len()))?,
        stubbed: Vec::new(),
    };
    for unit in walker.units {
        packer.add(unit)?;
    }
    Ok(packer.finish(last))
}

/// Whether a sync response carries nothing a client acts on: pruned (PROFILE.md section 3.4),
/// nothing is left but `next_batch` and the key counts that are always there
/// (`device_one_time_keys_count`, `device_unused_fallback_key_types`).
pub fn carries_nothing(response: &Value) -> bool {
    let Value::Object(root) = response else {
        return false;
    };
    let mut rest = Map::new();
    for (name, value) in root {
        if name != "next_batch" && !SYNC_MEMBERS_KEPT_WHEN_EMPTY.contains(&name.as_str()) {
            rest.insert(name.clone(), value.clone());
        }
    }
    let mut rest = Value::Object(rest);
    prune_sync_response(&mut rest, None);
    rest.as_object().is_some_and(Map::is_empty)
}

/// One step of a path from the root of a sync response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'v> {
    /// The member of an object.
    Key(&'v str),
    /// A new last item of an array.
    Push,
}

/// A value and where it goes.
#[derive(Debug, Clone)]
struct Piece<'v> {
    path: Vec<Step<'v>>,
    value: Cow<'v, Value>,
}

/// What goes into one part together: one item, with the members glued to it.
#[derive(Debug)]
struct Unit<'v> {
    pieces: Vec<Piece<'v>>,
    /// The last piece is an event, which a stub may replace.
    event: bool,
}

/// The units of a sync response, in the order of the module documentation.
#[derive(Debug, Default)]
struct Walker<'v> {
    units: Vec<Unit<'v>>,
}

impl<'v> Walker<'v> {
    fn value(&mut self, path: &mut Vec<Step<'v>>, value: &'v Value) {
        match value {
            Value::Object(members) if !members.is_empty() => self.object(path, members),
            Value::Array(items) if !items.is_empty() && is_list(path) => {
                let event = path.last() == Some(&Step::Key("events"));
                for item in items {
                    let mut at = path.clone();
                    at.push(Step::Push);
                    self.units.push(Unit {
                        pieces: alloc::vec![piece(at, item)],
                        event,
                    });
                }
            }
            _ => self.units.push(Unit {
                pieces: alloc::vec![piece(path.clone(), value)],
                event: false,
            }),
        }
    }

    /// The members of an object in order; with a list of events, the other members go with its
    /// first event (a timeline's `limited` and `prev_batch` describe where it starts).
    fn object(&mut self, path: &mut Vec<Step<'v>>, members: &'v Map<String, Value>) {
        let ordered = ordered_members(path, members);
        let events = members
            .get("events")
            .filter(|e| e.as_array().is_some_and(|e| !e.is_empty()));
        if let Some(events) = events.filter(|_| !path.is_empty()) {
            let glued: Vec<Piece<'v>> = ordered
                .iter()
                .filter(|(name, _)| *name != "events")
                .map(|(name, value)| {
                    let mut at = path.clone();
                    at.push(Step::Key(name));
                    piece(at, value)
                })
                .collect();
            let first = self.units.len();
            path.push(Step::Key("events"));
            self.value(path, events);
            path.pop();
            if let Some(unit) = self.units.get_mut(first) {
                unit.pieces.splice(0..0, glued);
            }
            return;
        }
        for (name, value) in ordered {
            path.push(Step::Key(name));
            self.value(path, value);
            path.pop();
        }
    }
}

fn piece<'v>(path: Vec<Step<'v>>, value: &'v Value) -> Piece<'v> {
    Piece {
        path,
        value: Cow::Borrowed(value),
    }
}

/// Whether the array at `path` is cut between items: a list of events, or the users of
/// `device_lists`.
fn is_list(path: &[Step<'_>]) -> bool {
    matches!(
        path,
        [.., Step::Key("events")] | [Step::Key("device_lists"), Step::Key("changed" | "left")]
    )
}

/// The members of the object at `path` in the order they go out; the root's `next_batch` is left
/// out (every part gets its own).
fn ordered_members<'v>(
    path: &[Step<'v>],
    members: &'v Map<String, Value>,
) -> Vec<(&'v str, &'v Value)> {
    let (first, last): (&[&str], &[&str]) = match path {
        [] => (&ROOT_FIRST, &["rooms"]),
        [Step::Key("rooms")] => (&["join", "invite", "knock", "leave"], &[]),
        [Step::Key("rooms"), Step::Key(_), Step::Key(_)] => (&ROOM_FIRST, &ROOM_LAST),
        _ => (&[], &[]),
    };
    let named = |names: &[&str]| -> Vec<(&'v str, &'v Value)> {
        names
            .iter()
            .filter_map(|name| members.get_key_value(*name))
            .map(|(name, value)| (name.as_str(), value))
            .collect()
    };
    let mut ordered = named(first);
    ordered.extend(
        members
            .iter()
            .map(|(name, value)| (name.as_str(), value))
            .filter(|(name, _)| {
                let root_position = path.is_empty() && *name == "next_batch";
                !(first.contains(name) || last.contains(name) || root_position)
            }),
    );
    ordered.extend(named(last));
    ordered
}

/// A part being filled: its body and a bound of its encoded size.
#[derive(Debug)]
struct Part {
    body: Map<String, Value>,
    size: usize,
    /// Nothing but `next_batch` yet.
    empty: bool,
}

impl Part {
    /// A part holding only a `next_batch` of `position_len` bytes, the room its position needs.
    fn new(version: TableVersion, position_len: usize) -> Result<Self, SplitError> {
        let mut body = Map::new();
        let placeholder: String = core::iter::repeat_n('x', position_len).collect();
        body.insert("next_batch".into(), Value::String(placeholder));
        let size = json_to_cbor(&Value::Object(body.clone()), version)?.len();
        Ok(Self {
            body,
            size,
            empty: true,
        })
    }
}

struct Packer<'p, F> {
    version: TableVersion,
    capacity: usize,
    last_len: usize,
    position: &'p F,
    parts: Vec<Part>,
    current: Part,
    stubbed: Vec<Stubbed>,
}

impl<F: Fn(usize) -> String> Packer<'_, F> {
    /// Puts `unit` into the current part, or else a new one; an event too large for a part of
    /// its own becomes a stub first.
    fn add(&mut self, mut unit: Unit<'_>) -> Result<(), SplitError> {
        let mut sizes = self.sizes(&unit)?;
        if self.fits(&self.current, &unit, &sizes) {
            self.insert(unit, &sizes);
            return Ok(());
        }
        let next = self.parts.len() + 2;
        let fresh = Part::new(self.version, (self.position)(next).len().max(self.last_len))?;
        if !self.fits(&fresh, &unit, &sizes) {
            let event = match unit.pieces.last_mut() {
                Some(last) if unit.event => last,
                _ => {
                    return Err(SplitError::CapacityTooSmall {
                        capacity: self.capacity,
                    });
                }
            };
            let size = sizes.last().copied().unwrap_or_default();
            let (stub, stubbed) = stub(&event.value, size);
            event.value = Cow::Owned(stub);
            sizes = self.sizes(&unit)?;
            if !self.fits(&fresh, &unit, &sizes) {
                return Err(SplitError::CapacityTooSmall {
                    capacity: self.capacity,
                });
            }
            self.stubbed.push(stubbed);
        }
        if !self.fits(&self.current, &unit, &sizes) {
            self.parts
                .push(core::mem::replace(&mut self.current, fresh));
        }
        self.insert(unit, &sizes);
        Ok(())
    }

    /// The encoded size of each piece's value on its own.
    fn sizes(&self, unit: &Unit<'_>) -> Result<Vec<usize>, SplitError> {
        unit.pieces
            .iter()
            .map(|p| Ok(json_to_cbor(&p.value, self.version)?.len()))
            .collect()
    }

    /// Whether `unit` fits into `part`.
    fn fits(&self, part: &Part, unit: &Unit<'_>, sizes: &[usize]) -> bool {
        let added: usize = unit
            .pieces
            .iter()
            .zip(sizes)
            .map(|(p, size)| added_size(&part.body, &p.path, *size, self.version))
            .fold(0, usize::saturating_add);
        part.size.saturating_add(added) <= self.capacity
    }

    fn insert(&mut self, unit: Unit<'_>, sizes: &[usize]) {
        for (piece, size) in unit.pieces.into_iter().zip(sizes) {
            let added = added_size(&self.current.body, &piece.path, *size, self.version);
            self.current.size = self.current.size.saturating_add(added);
            insert_at(
                &mut self.current.body,
                &piece.path,
                piece.value.into_owned(),
            );
        }
        self.current.empty = false;
    }

    /// The parts with their positions.
    fn finish(mut self, last: &str) -> SyncParts {
        if !self.current.empty || self.parts.is_empty() {
            self.parts.push(self.current);
        }
        let count = self.parts.len();
        let parts = self
            .parts
            .into_iter()
            .enumerate()
            .map(|(i, mut part)| {
                let position = if i + 1 == count {
                    last.into()
                } else {
                    (self.position)(i + 1)
                };
                part.body
                    .insert("next_batch".into(), Value::String(position));
                Value::Object(part.body)
            })
            .collect();
        SyncParts {
            parts,
            stubbed: self.stubbed,
        }
    }
}

/// The stub that replaces `event`, whose encoding is `size` bytes.
fn stub(event: &Value, size: usize) -> (Value, Stubbed) {
    let mut stub = Map::new();
    for field in STUB_FIELDS {
        if let Some(Value::String(text)) = event.get(field) {
            stub.insert(field.into(), Value::String(cut(text).into()));
        }
    }
    stub.insert(TOO_LARGE_FIELD.into(), Value::from(size as u64));
    let text = |field: &str| {
        event
            .get(field)
            .and_then(Value::as_str)
            .map(|t| cut(t).into())
    };
    let stubbed = Stubbed {
        event_type: text("type"),
        sender: text("sender"),
        size,
    };
    (Value::Object(stub), stubbed)
}

/// `text` cut to at most [`STUB_TEXT_MAX`] bytes at a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(STUB_TEXT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The bytes of the head of a CBOR map or array of `len` items.
fn head(len: usize) -> usize {
    match len {
        0..24 => 1,
        24..256 => 2,
        256..65_536 => 3,
        _ if u32::try_from(len).is_ok() => 5,
        _ => 9,
    }
}

/// The bytes a container's head grows by when it takes one more item.
fn head_growth(len: usize) -> usize {
    head(len + 1) - head(len)
}

/// The encoded key `name` of the object at `parent`.
fn key_len(name: &str, parent: &[Step<'_>], version: TableVersion) -> usize {
    let room_keys = matches!(parent, [Step::Key("rooms"), Step::Key(section)] if ROOM_SECTIONS.contains(section));
    encoded_key(name, version, room_keys).len()
}

/// A bound of the bytes a value of `size` bytes adds to a part at `path` (see the module
/// documentation). A value whose place is taken already (an empty room entry) adds nothing.
fn added_size(
    root: &Map<String, Value>,
    path: &[Step<'_>],
    size: usize,
    version: TableVersion,
) -> usize {
    let mut map = root;
    for (i, step) in path.iter().enumerate() {
        let (parent, rest) = path.split_at(i);
        let rest = rest.get(1..).unwrap_or_default();
        let Step::Key(name) = step else {
            return usize::MAX;
        };
        let Some(child) = map.get(*name) else {
            return head_growth(map.len())
                + key_len(name, parent, version)
                + chain(path, i + 1, size, version);
        };
        match (child, rest.first()) {
            (_, None) => return 0,
            (Value::Object(inner), Some(Step::Key(_))) => map = inner,
            (Value::Array(items), Some(Step::Push)) => return head_growth(items.len()) + size,
            _ => return usize::MAX,
        }
    }
    0
}

/// The bytes of the new containers from `path[from..]` down to a value of `size` bytes: each
/// holds one item (a one-byte head) and, for a map, its key.
fn chain(path: &[Step<'_>], from: usize, size: usize, version: TableVersion) -> usize {
    let mut total = size;
    for (j, step) in path.iter().enumerate().skip(from) {
        total += 1 + match step {
            Step::Key(name) => key_len(name, path.get(..j).unwrap_or_default(), version),
            Step::Push => 0,
        };
    }
    total
}

/// Puts `value` at `path`, making the objects and arrays on the way. A value whose place is taken
/// already stays as it is.
fn insert_at(map: &mut Map<String, Value>, path: &[Step<'_>], value: Value) {
    let Some((Step::Key(name), rest)) = path.split_first() else {
        return;
    };
    let Some(next) = rest.first() else {
        map.entry(*name).or_insert(value);
        return;
    };
    let child = map.entry(*name).or_insert_with(|| match next {
        Step::Push => Value::Array(Vec::new()),
        Step::Key(_) => Value::Object(Map::new()),
    });
    match (child, next) {
        (Value::Array(items), Step::Push) => items.push(value),
        (Value::Object(inner), Step::Key(_)) => insert_at(inner, rest, value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::cbor_to_json;
    use serde_json::json;

    fn size(value: &Value) -> usize {
        json_to_cbor(value, TableVersion::V2).unwrap().len()
    }

    fn position(i: usize) -> String {
        alloc::format!("s1~0000abcd.{i}")
    }

    fn message(n: usize, body_len: usize) -> Value {
        json!({"type": "m.room.message", "sender": "@a:s", "event_id": alloc::format!("$e{n}:s"),
               "content": {"msgtype": "m.text", "body": "x".repeat(body_len)}})
    }

    fn to_device(n: usize, len: usize) -> Value {
        json!({"type": "m.room.encrypted", "sender": alloc::format!("@u{n}:s"),
               "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "pad": "p".repeat(len)}})
    }

    /// Every item of the parts, in order: to-device events, then (room, timeline event id).
    fn items(parts: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        for part in parts {
            for e in part["to_device"]["events"].as_array().into_iter().flatten() {
                out.push(alloc::format!("td {}", e["sender"].as_str().unwrap()));
            }
            for (room, r) in part["rooms"]["join"].as_object().into_iter().flatten() {
                for e in r["timeline"]["events"].as_array().into_iter().flatten() {
                    out.push(alloc::format!("{room} {}", e["event_id"].as_str().unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn a_response_that_fits_is_one_part_as_it_was() {
        let sync = json!({"next_batch": "s2", "rooms": {"join": {"!r:s": {"timeline": {"events": [message(1, 10)]}}}}});
        let split = split_sync_response(&sync, TableVersion::V2, 1024, position).unwrap();
        assert_eq!(split.parts, alloc::vec![sync]);
        assert!(split.stubbed.is_empty());
    }

    #[test]
    fn a_large_sync_comes_in_parts_in_order_each_within_capacity() {
        let events: Vec<Value> = (0..40).map(|n| message(n, 300)).collect();
        let sync = json!({
            "next_batch": "s2",
            "to_device": {"events": [to_device(1, 300), to_device(2, 300)]},
            "device_lists": {"changed": ["@b:s"]},
            "device_one_time_keys_count": {"signed_curve25519": 50},
            "rooms": {"join": {
                "!r:s": {"state": {"events": [{"type": "m.room.member", "state_key": "@a:s", "sender": "@a:s", "content": {"membership": "join"}}]},
                         "timeline": {"events": events, "limited": true, "prev_batch": "p1"}},
                "!q:s": {}
            }}
        });
        assert!(size(&sync) > 12_000);
        let split = split_sync_response(&sync, TableVersion::V2, 4000, position).unwrap();
        let parts = &split.parts;
        assert!(parts.len() >= 4, "{}", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(size(part) <= 4000, "part {i}: {}", size(part));
            let want = if i + 1 == parts.len() {
                "s2".into()
            } else {
                position(i + 1)
            };
            assert_eq!(part["next_batch"], want.as_str());
        }
        // Nothing lost, nothing reordered, to-device first, state and the gap marker up front.
        let mut want = alloc::vec!["td @u1:s".to_owned(), "td @u2:s".to_owned()];
        want.extend((0..40).map(|n| alloc::format!("!r:s $e{n}:s")));
        assert_eq!(items(parts), want);
        assert_eq!(parts[0]["device_lists"]["changed"][0], "@b:s");
        let first_room = parts
            .iter()
            .find(|p| p["rooms"]["join"]["!r:s"].is_object())
            .unwrap();
        assert_eq!(
            first_room["rooms"]["join"]["!r:s"]["timeline"]["limited"],
            true
        );
        assert_eq!(
            first_room["rooms"]["join"]["!r:s"]["timeline"]["prev_batch"],
            "p1"
        );
        assert!(first_room["rooms"]["join"]["!r:s"]["state"]["events"].is_array());
        let later_timelines = parts
            .iter()
            .filter_map(|p| p["rooms"]["join"]["!r:s"]["timeline"].as_object())
            .skip(1);
        for timeline in later_timelines {
            assert!(!timeline.contains_key("limited") && !timeline.contains_key("prev_batch"));
        }
        let empty_room = parts
            .iter()
            .filter(|p| p["rooms"]["join"]["!q:s"].is_object());
        assert_eq!(empty_room.count(), 1, "an empty room entry is kept, once");
        // Each part is CBOR the client reads back.
        for part in parts {
            let bytes = json_to_cbor(part, TableVersion::V2).unwrap();
            assert_eq!(&cbor_to_json(&bytes, TableVersion::V2).unwrap(), part);
        }
    }

    #[test]
    fn an_event_too_large_alone_becomes_a_stub_and_the_rest_arrives() {
        let big = to_device(2, 5000);
        let big_size = size(&big);
        let sync = json!({
            "next_batch": "s2",
            "to_device": {"events": [to_device(1, 100), big, to_device(3, 100)]},
            "rooms": {"join": {"!r:s": {"timeline": {"events": [message(1, 20)]}}}}
        });
        let split = split_sync_response(&sync, TableVersion::V2, 4000, position).unwrap();
        assert_eq!(
            split.stubbed,
            alloc::vec![Stubbed {
                event_type: Some("m.room.encrypted".into()),
                sender: Some("@u2:s".into()),
                size: big_size,
            }]
        );
        assert_eq!(split.parts.len(), 1);
        let part = &split.parts[0];
        assert!(size(part) <= 4000);
        assert_eq!(
            part["to_device"]["events"][1],
            json!({"type": "m.room.encrypted", "sender": "@u2:s", "jeton.too_large": big_size})
        );
        assert_eq!(
            items(&split.parts),
            ["td @u1:s", "td @u2:s", "td @u3:s", "!r:s $e1:s"]
        );
        // A timeline event keeps its id in the stub.
        let sync = json!({"next_batch": "s2", "rooms": {"join": {"!r:s": {"timeline": {"events": [message(7, 6000)]}}}}});
        let split = split_sync_response(&sync, TableVersion::V2, 2000, position).unwrap();
        let stub = &split.parts[0]["rooms"]["join"]["!r:s"]["timeline"]["events"][0];
        assert_eq!(stub["event_id"], "$e7:s");
        assert_eq!(stub["type"], "m.room.message");
        assert!(stub[TOO_LARGE_FIELD].as_u64().unwrap() > 6000);
    }

    #[test]
    fn stub_texts_are_cut_and_a_capacity_too_small_is_an_error() {
        let long = "é".repeat(200);
        let event = json!({"type": long, "sender": "@a:s", "content": {"pad": "p".repeat(3000)}});
        let sync = json!({"next_batch": "s2", "to_device": {"events": [event]}});
        let split =
            split_sync_response(&sync, TableVersion::V2, MIN_RESPONSE_CAPACITY, position).unwrap();
        let stub_type = split.parts[0]["to_device"]["events"][0]["type"]
            .as_str()
            .unwrap();
        assert!(stub_type.len() <= STUB_TEXT_MAX && stub_type.chars().all(|c| c == 'é'));
        assert_eq!(
            split_sync_response(&sync, TableVersion::V2, 20, position),
            Err(SplitError::CapacityTooSmall { capacity: 20 })
        );
        assert_eq!(
            split_sync_response(&json!({"rooms": {}}), TableVersion::V2, 4000, position),
            Err(SplitError::NotASync)
        );
    }

    #[test]
    fn parts_are_within_capacity_for_many_shapes_and_sizes() {
        // Heads that grow (24 and 256 items), many rooms, v1 and v2, capacities near the edge.
        for version in [TableVersion::V1, TableVersion::V2] {
            for capacity in [1024, 1500, 2047, 4000] {
                let mut rooms = Map::new();
                for r in 0..30 {
                    let events: Vec<Value> =
                        (0..(r * 3)).map(|n| message(n, (n * 37) % 400)).collect();
                    rooms.insert(
                        alloc::format!("!room{r}:s"),
                        json!({"timeline": {"events": events}}),
                    );
                }
                let changed: Vec<Value> = (0..300)
                    .map(|n| json!(alloc::format!("@user{n}:s")))
                    .collect();
                let sync = json!({"next_batch": "s99_1_2", "device_lists": {"changed": changed},
                                  "to_device": {"events": (0..30).map(|n| to_device(n, 50)).collect::<Vec<_>>()},
                                  "rooms": {"join": rooms}});
                let split = split_sync_response(&sync, version, capacity, position).unwrap();
                let mut users = 0;
                for part in &split.parts {
                    let len = json_to_cbor(part, version).unwrap().len();
                    assert!(len <= capacity, "{version:?} {capacity}: {len}");
                    users += part["device_lists"]["changed"]
                        .as_array()
                        .map_or(0, Vec::len);
                }
                assert_eq!(users, 300);
                let timeline_events: usize = (0..30).map(|r| r * 3).sum();
                assert_eq!(items(&split.parts).len(), 30 + timeline_events);
                assert!(split.stubbed.is_empty());
            }
        }
    }

    #[test]
    fn a_sync_with_only_a_position_and_key_counts_carries_nothing() {
        let quiet = json!({"next_batch": "s3", "device_one_time_keys_count": {"signed_curve25519": 50},
                           "device_unused_fallback_key_types": [], "to_device": {"events": []},
                           "device_lists": {"changed": [], "left": []}, "rooms": {"join": {}, "invite": {}}});
        assert!(carries_nothing(&quiet));
        assert!(!carries_nothing(
            &json!({"next_batch": "s3", "rooms": {"join": {"!r:s": {}}}})
        ));
        assert!(!carries_nothing(
            &json!({"next_batch": "s3", "to_device": {"events": [{"type": "m.dummy"}]}})
        ));
        assert!(!carries_nothing(
            &json!({"next_batch": "s3", "device_lists": {"left": ["@b:s"]}})
        ));
        assert!(!carries_nothing(&json!(["not", "a", "sync"])));
    }
}
