//! Zero-copy, bounded views of the profile's CBOR, for what a token reads.
//!
//! A view borrows the received bytes and decodes only what is asked for: no allocator, no copies.
//! [`Map`], [`Array`] and [`Value`] read any profile CBOR (integer keys of the negotiated
//! [`TableVersion`], text keys, binary fields as byte strings or base64 text); the typed views on top
//! ([`SyncResponse`], [`Event`], [`EncryptedContent`], [`KeysQueryResponse`], [`KeysClaimResponse`],
//! [`KeysUploadResponse`], [`SendEventResponse`]) name the fields a token uses.
//!
//! Bounds: every list a typed view hands out has a capacity (the `MAX_*` constants); a longer list is
//! [`ViewError::CapacityExceeded`] before anything of it is read, so a token sizes its own state from the
//! same constants. Malformed bytes are an error value with their offset, never a panic; the same
//! restrictions as the transcoder apply (no tags, no indefinite lengths, no floats).

use minicbor::Decoder;
use minicbor::data::Type;

use crate::TableVersion;
pub use crate::ids::Id;
use crate::ids::{EVENT_SIGIL, HASH_LEN, ROOM_SIGIL};
use crate::keys::{key_for_name, name_for_key};
use crate::values::value_for_simple;

/// Most to-device events one sync response may carry.
pub const MAX_TO_DEVICE_EVENTS: u64 = 32;
/// Most joined or invited rooms one sync response may carry.
pub const MAX_ROOMS: u64 = 16;
/// Most events in one room's timeline, state or invite state.
pub const MAX_ROOM_EVENTS: u64 = 64;
/// Most users in `device_lists.changed` / `left`, and in other user lists.
pub const MAX_USERS: u64 = 64;
/// Most devices (or keys) listed for one user.
pub const MAX_DEVICES_PER_USER: u64 = 16;
/// Most entries of a small map a token reads (counts, key ids, ciphertext recipients).
pub const MAX_SMALL_MAP: u64 = 16;

/// Why a view could not read what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewError {
    /// The bytes at this offset are not CBOR the profile allows (truncated, tag, float, indefinite
    /// length, invalid UTF-8, a length beyond the input, an unknown integer key).
    Malformed {
        /// Byte offset of the offending item.
        offset: usize,
    },
    /// The item at this offset has another type than the field needs.
    WrongType {
        /// Byte offset of the offending item.
        offset: usize,
    },
    /// A required field is absent.
    Missing {
        /// The field's JSON name.
        field: &'static str,
    },
    /// A list is longer than the view's capacity.
    CapacityExceeded {
        /// The capacity (one of the `MAX_*` constants).
        capacity: u64,
    },
}

impl core::fmt::Display for ViewError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed { offset } => {
                write!(f, "the CBOR is malformed or not allowed (at byte {offset})")
            }
            Self::WrongType { offset } => {
                write!(f, "the field has an unexpected type (at byte {offset})")
            }
            Self::Missing { field } => write!(f, "the required field {field} is absent"),
            Self::CapacityExceeded { capacity } => {
                write!(f, "a list is longer than the capacity of {capacity}")
            }
        }
    }
}

impl core::error::Error for ViewError {}

/// One decoded CBOR item; arrays and maps are views over their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer (the profile keeps them within ±(2^53-1)).
    Integer(i64),
    /// A text string, or a v2 well-known value ([`crate::values`]) resolved to the `'static` text it
    /// stands for, so a reader never sees the difference.
    Text(&'a str),
    /// A byte string (a v2 binary field).
    Bytes(&'a [u8]),
    /// An array.
    Array(Array<'a>),
    /// A map.
    Map(Map<'a>),
}

/// A binary field as it arrived: bytes under v2, or base64 text (v1, or a v2 value that was not
/// canonical base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary<'a> {
    /// The binary data itself.
    Bytes(&'a [u8]),
    /// The base64 text Matrix JSON uses.
    Base64(&'a str),
}

/// A CBOR array of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Array<'a> {
    input: &'a [u8],
    /// Offset of the first element.
    first: usize,
    len: u64,
    version: TableVersion,
}

/// A CBOR map of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Map<'a> {
    input: &'a [u8],
    /// Offset of the first key.
    first: usize,
    len: u64,
    version: TableVersion,
}

fn malformed(offset: usize) -> ViewError {
    ViewError::Malformed { offset }
}

/// Reads an item header at `at`: (major type, argument, header size).
fn head(input: &[u8], at: usize) -> Result<(u8, u64, usize), ViewError> {
    let initial = *input.get(at).ok_or(malformed(at))?;
    let size = match initial & 0x1f {
        info @ 0..=23 => return Ok((initial >> 5, u64::from(info), 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return Err(malformed(at)),
    };
    let argument = input.get(at + 1..at + 1 + size).ok_or(malformed(at))?;
    let value = argument
        .iter()
        .fold(0u64, |acc, byte| acc << 8 | u64::from(*byte));
    Ok((initial >> 5, value, 1 + size))
}

/// The offset just after the item at `at`, without recursion: counts the items still to pass.
fn skip(input: &[u8], at: usize, version: TableVersion) -> Result<usize, ViewError> {
    let mut pos = at;
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let (major, argument, size) = head(input, pos)?;
        let remaining = (input.len() - pos - size) as u64;
        match major {
            0 | 1 | 7 => {
                // Floats and simple values other than false/true/null and (v2) the well-known values
                // are not profile CBOR.
                if major == 7
                    && !(size == 1 && (20..=22).contains(&argument))
                    && well_known_value(input, pos, version).is_none()
                {
                    return Err(malformed(pos));
                }
                pos += size;
            }
            2 | 3 => {
                if argument > remaining {
                    return Err(malformed(pos));
                }
                pos += size + argument as usize;
            }
            4 | 5 => {
                let items = if major == 4 {
                    argument
                } else {
                    argument.saturating_mul(2)
                };
                if items > remaining {
                    return Err(malformed(pos));
                }
                pending += items;
                pos += size;
            }
            _ => return Err(malformed(pos)),
        }
    }
    Ok(pos)
}

/// The text of the v2 well-known value at `at`, if the item there is one in its canonical form: one
/// byte for simple values below 24, `f8 xx` (xx >= 32) above.
fn well_known_value(input: &[u8], at: usize, version: TableVersion) -> Option<&'static str> {
    if version != TableVersion::V2 {
        return None;
    }
    let simple = match *input.get(at)? {
        initial @ 0xe0..=0xf3 => initial & 0x1f,
        0xf8 => *input.get(at + 1).filter(|simple| **simple >= 32)?,
        _ => return None,
    };
    value_for_simple(simple)
}

/// Reads the item at `at` and returns it with the offset after it.
fn read(input: &[u8], at: usize, version: TableVersion) -> Result<(Value<'_>, usize), ViewError> {
    let end = skip(input, at, version)?;
    let mut decoder = Decoder::new(input);
    decoder.set_position(at);
    let datatype = decoder.datatype().map_err(|_| malformed(at))?;
    let bad = |_| malformed(at);
    let value = match datatype {
        Type::Null => Value::Null,
        Type::Bool => Value::Bool(decoder.bool().map_err(bad)?),
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64 => {
            let n = decoder.i64().map_err(bad)?;
            if n.unsigned_abs() > (1 << 53) - 1 {
                return Err(malformed(at));
            }
            Value::Integer(n)
        }
        Type::String => Value::Text(decoder.str().map_err(bad)?),
        // `skip` accepted it, so it is a well-known value of v2: the text it stands for.
        Type::Simple => Value::Text(well_known_value(input, at, version).ok_or(malformed(at))?),
        Type::Bytes => Value::Bytes(decoder.bytes().map_err(bad)?),
        Type::Array => {
            let len = decoder.array().map_err(bad)?.ok_or(malformed(at))?;
            Value::Array(Array {
                input,
                first: decoder.position(),
                len,
                version,
            })
        }
        Type::Map => {
            let len = decoder.map().map_err(bad)?.ok_or(malformed(at))?;
            Value::Map(Map {
                input,
                first: decoder.position(),
                len,
                version,
            })
        }
        _ => return Err(malformed(at)),
    };
    Ok((value, end))
}

impl<'a> Value<'a> {
    /// Reads one profile CBOR item filling all of `input`.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        let (value, end) = read(input, 0, version)?;
        if end != input.len() {
            return Err(malformed(end));
        }
        Ok(value)
    }
}

/// A value together with its offset, for typed accessors that report where a type was wrong.
#[derive(Debug, Clone, Copy)]
struct Located<'a> {
    value: Value<'a>,
    offset: usize,
}

impl<'a> Located<'a> {
    fn wrong(&self) -> ViewError {
        ViewError::WrongType {
            offset: self.offset,
        }
    }

    fn text(self) -> Result<&'a str, ViewError> {
        match self.value {
            Value::Text(text) => Ok(text),
            _ => Err(self.wrong()),
        }
    }

    fn integer(self) -> Result<i64, ViewError> {
        match self.value {
            Value::Integer(n) => Ok(n),
            _ => Err(self.wrong()),
        }
    }

    fn map(self) -> Result<Map<'a>, ViewError> {
        match self.value {
            Value::Map(map) => Ok(map),
            _ => Err(self.wrong()),
        }
    }

    fn array(self) -> Result<Array<'a>, ViewError> {
        match self.value {
            Value::Array(array) => Ok(array),
            _ => Err(self.wrong()),
        }
    }

    /// A hashed identifier with `sigil` (v2: its 32 bytes, [`crate::ids`]) or an identifier's text.
    fn id(self, sigil: u8) -> Result<Id<'a>, ViewError> {
        match self.value {
            Value::Text(text) => Ok(Id::Text(text)),
            Value::Bytes(bytes) => <&[u8; HASH_LEN]>::try_from(bytes)
                .map(|hash| Id::Hash { sigil, hash })
                .map_err(|_| self.wrong()),
            _ => Err(self.wrong()),
        }
    }

    fn binary(self) -> Result<Binary<'a>, ViewError> {
        match self.value {
            Value::Bytes(bytes) => Ok(Binary::Bytes(bytes)),
            Value::Text(text) => Ok(Binary::Base64(text)),
            _ => Err(self.wrong()),
        }
    }
}

/// Iterator over the elements of an [`Array`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    array: Array<'a>,
    next: usize,
    left: u64,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Value<'a>, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.located().map(|item| item.map(|located| located.value))
    }
}

impl<'a> Elements<'a> {
    fn located(&mut self) -> Option<Result<Located<'a>, ViewError>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let offset = self.next;
        match read(self.array.input, offset, self.array.version) {
            Ok((value, end)) => {
                self.next = end;
                Some(Ok(Located { value, offset }))
            }
            Err(error) => {
                self.left = 0;
                Some(Err(error))
            }
        }
    }
}

impl<'a> Array<'a> {
    /// The number of elements.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in order.
    pub fn iter(&self) -> Elements<'a> {
        Elements {
            array: *self,
            next: self.first,
            left: self.len,
        }
    }

    fn bounded(&self, capacity: u64) -> Result<Elements<'a>, ViewError> {
        if self.len > capacity {
            return Err(ViewError::CapacityExceeded { capacity });
        }
        Ok(self.iter())
    }
}

/// Iterator over the entries of a [`Map`]: the key's JSON name (integer keys resolved) and the value.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    map: Map<'a>,
    next: usize,
    left: u64,
    /// Whether the keys are room ids, which v2 may send as 32-byte hashes ([`crate::ids`]).
    room_keys: bool,
}

/// One map entry: the key's JSON name, whether it was written as text, the value and where it is.
/// A room id key sent as its hash has the name `""` and the hash in `hash`.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    name: &'a str,
    hash: Option<&'a [u8; HASH_LEN]>,
    text_key: bool,
    value: Located<'a>,
}

impl<'a> Entries<'a> {
    fn entry(&mut self) -> Option<Result<Entry<'a>, ViewError>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = self.read_entry();
        if result.is_err() {
            self.left = 0;
        }
        Some(result)
    }

    fn read_entry(&mut self) -> Result<Entry<'a>, ViewError> {
        let at = self.next;
        // A well-known value (major type 7) reads as text, but is never a key.
        if self
            .map
            .input
            .get(at)
            .is_some_and(|initial| initial >> 5 == 7)
        {
            return Err(malformed(at));
        }
        let (key, after_key) = read(self.map.input, at, self.map.version)?;
        let mut hash = None;
        let (name, text_key) = match key {
            Value::Text(name) => (name, true),
            Value::Integer(n) => {
                let name = u64::try_from(n)
                    .ok()
                    .and_then(|n| name_for_key(n, self.map.version))
                    .ok_or(malformed(at))?;
                (name, false)
            }
            Value::Bytes(bytes) if self.room_keys && self.map.version == TableVersion::V2 => {
                hash = Some(<&[u8; HASH_LEN]>::try_from(bytes).map_err(|_| malformed(at))?);
                ("", true)
            }
            _ => return Err(malformed(at)),
        };
        let (value, end) = read(self.map.input, after_key, self.map.version)?;
        self.next = end;
        Ok(Entry {
            name,
            hash,
            text_key,
            value: Located {
                value,
                offset: after_key,
            },
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a str, Value<'a>), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.entry()
            .map(|entry| entry.map(|entry| (entry.name, entry.value.value)))
    }
}

impl<'a> Map<'a> {
    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries in wire order, integer keys resolved to their JSON names.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            map: *self,
            next: self.first,
            left: self.len,
            room_keys: false,
        }
    }

    fn bounded(&self, capacity: u64) -> Result<Entries<'a>, ViewError> {
        if self.len > capacity {
            return Err(ViewError::CapacityExceeded { capacity });
        }
        Ok(self.entries())
    }

    fn located(&self, name: &str) -> Result<Option<Located<'a>>, ViewError> {
        // Integer-keyed fields are found without comparing text; a text key of the same name wins.
        let integer_known = key_for_name(name, self.version).is_some();
        let mut found = None;
        let mut entries = self.entries();
        while let Some(entry) = entries.entry() {
            let entry = entry?;
            if entry.name == name {
                if entry.text_key || !integer_known {
                    return Ok(Some(entry.value));
                }
                found = Some(entry.value);
            }
        }
        Ok(found)
    }

    /// The value of field `name`, if present (text key wins over integer key, as MSC3079 says).
    pub fn get(&self, name: &str) -> Result<Option<Value<'a>>, ViewError> {
        Ok(self.located(name)?.map(|located| located.value))
    }

    fn required(&self, field: &'static str) -> Result<Located<'a>, ViewError> {
        self.located(field)?.ok_or(ViewError::Missing { field })
    }

    fn optional_text(&self, field: &str) -> Result<Option<&'a str>, ViewError> {
        self.located(field)?.map(Located::text).transpose()
    }

    fn optional_map(&self, field: &str) -> Result<Option<Map<'a>>, ViewError> {
        self.located(field)?.map(Located::map).transpose()
    }

    fn optional_array(&self, field: &str) -> Result<Option<Array<'a>>, ViewError> {
        self.located(field)?.map(Located::array).transpose()
    }

    fn path_map(&self, path: &[&str]) -> Result<Option<Map<'a>>, ViewError> {
        let mut map = *self;
        for field in path {
            match map.optional_map(field)? {
                Some(inner) => map = inner,
                None => return Ok(None),
            }
        }
        Ok(Some(map))
    }
}

/// Iterator over text elements of a bounded list (user ids, algorithm names).
#[derive(Debug, Clone)]
pub struct Texts<'a>(Option<Elements<'a>>);

impl<'a> Iterator for Texts<'a> {
    type Item = Result<&'a str, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.0.as_mut()?.located()?;
        Some(item.and_then(Located::text))
    }
}

fn texts<'a>(array: Option<Array<'a>>, capacity: u64) -> Result<Texts<'a>, ViewError> {
    Ok(Texts(array.map(|a| a.bounded(capacity)).transpose()?))
}

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

/// The body's top-level map.
fn root_map(input: &[u8], version: TableVersion) -> Result<Map<'_>, ViewError> {
    match Value::parse(input, version)? {
        Value::Map(map) => Ok(map),
        _ => Err(ViewError::WrongType { offset: 0 }),
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

/// The response to `keys/upload`: `one_time_key_counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUploadResponse<'a>(pub Map<'a>);

impl<'a> KeysUploadResponse<'a> {
    /// Views a keys/upload response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// How many one-time keys of `algorithm` the server holds for the device (absent = 0).
    pub fn one_time_key_count(&self, algorithm: &str) -> Result<i64, ViewError> {
        let Some(counts) = self.0.optional_map("one_time_key_counts")? else {
            return Ok(0);
        };
        counts.bounded(MAX_SMALL_MAP)?;
        counts.located(algorithm)?.map_or(Ok(0), Located::integer)
    }
}

/// A signed key object: `{key, signatures}` of a one-time or fallback key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedKey<'a> {
    /// The key id, e.g. `signed_curve25519:AAAAHg`.
    pub key_id: &'a str,
    /// The Curve25519 public key.
    pub key: Binary<'a>,
    /// The signed object, for the caller to check `signatures.<user>.ed25519:<device>` over its
    /// canonical JSON.
    pub object: Map<'a>,
}

impl<'a> SignedKey<'a> {
    /// The signature by `user_id`'s key `ed25519:<device_id>`, given as `key_name`.
    pub fn signature(
        &self,
        user_id: &str,
        key_name: &str,
    ) -> Result<Option<Binary<'a>>, ViewError> {
        signature(self.object, user_id, key_name)
    }
}

fn signature<'a>(
    object: Map<'a>,
    user_id: &str,
    key_name: &str,
) -> Result<Option<Binary<'a>>, ViewError> {
    let Some(by_user) = object.path_map(&["signatures", user_id])? else {
        return Ok(None);
    };
    by_user.bounded(MAX_DEVICES_PER_USER)?;
    by_user.located(key_name)?.map(Located::binary).transpose()
}

/// The response to `keys/claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysClaimResponse<'a>(pub Map<'a>);

impl<'a> KeysClaimResponse<'a> {
    /// Views a keys/claim response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// The one-time key claimed for `user_id`'s device `device_id`, if the server had one.
    pub fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<SignedKey<'a>>, ViewError> {
        let Some(keys) = self.0.path_map(&["one_time_keys", user_id, device_id])? else {
            return Ok(None);
        };
        let mut entries = keys.bounded(MAX_SMALL_MAP)?;
        let Some(entry) = entries.entry() else {
            return Ok(None);
        };
        let entry = entry?;
        let object = entry.value.map()?;
        Ok(Some(SignedKey {
            key_id: entry.name,
            key: object.required("key")?.binary()?,
            object,
        }))
    }
}

/// One device's keys from a `keys/query` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKeys<'a>(pub Map<'a>);

impl<'a> DeviceKeys<'a> {
    /// `user_id`.
    pub fn user_id(&self) -> Result<&'a str, ViewError> {
        self.0.required("user_id")?.text()
    }

    /// `device_id`.
    pub fn device_id(&self) -> Result<&'a str, ViewError> {
        self.0.required("device_id")?.text()
    }

    /// `keys.<key_name>`, e.g. `curve25519:DEVICEID`.
    pub fn key(&self, key_name: &str) -> Result<Option<Binary<'a>>, ViewError> {
        let Some(keys) = self.0.optional_map("keys")? else {
            return Ok(None);
        };
        keys.bounded(MAX_SMALL_MAP)?;
        keys.located(key_name)?.map(Located::binary).transpose()
    }

    /// The signature by `user_id`'s key `key_name` (e.g. `ed25519:DEVICEID`).
    pub fn signature(
        &self,
        user_id: &str,
        key_name: &str,
    ) -> Result<Option<Binary<'a>>, ViewError> {
        signature(self.0, user_id, key_name)
    }
}

/// Iterator over the devices of one user in a `keys/query` response.
#[derive(Debug, Clone)]
pub struct Devices<'a>(Option<Entries<'a>>);

impl<'a> Iterator for Devices<'a> {
    type Item = Result<(&'a str, DeviceKeys<'a>), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.0.as_mut()?.entry()?;
        Some(entry.and_then(|entry| Ok((entry.name, DeviceKeys(entry.value.map()?)))))
    }
}

/// The response to `keys/query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysQueryResponse<'a>(pub Map<'a>);

impl<'a> KeysQueryResponse<'a> {
    /// Views a keys/query response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// The devices of `user_id`, at most [`MAX_DEVICES_PER_USER`].
    pub fn devices(&self, user_id: &str) -> Result<Devices<'a>, ViewError> {
        let devices = self.0.path_map(&["device_keys", user_id])?;
        Ok(Devices(
            devices
                .map(|d| d.bounded(MAX_DEVICES_PER_USER))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::json_to_cbor;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde_json::{Value as Json, json};

    fn fixture(name: &str) -> Json {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fuzz/proto/corpus/transcoder")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn bytes_of(binary: Binary<'_>) -> Vec<u8> {
        match binary {
            Binary::Bytes(bytes) => bytes.to_vec(),
            Binary::Base64(text) => STANDARD_NO_PAD.decode(text).unwrap(),
        }
    }

    fn base64_at(json: &Json, pointer: &str) -> Vec<u8> {
        STANDARD_NO_PAD
            .decode(json.pointer(pointer).unwrap().as_str().unwrap())
            .unwrap()
    }

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
    fn keys_views_read_claim_query_and_upload_responses() {
        let version = TableVersion::V2;
        let claim_json = fixture("keys_claim_response.json");
        let claim_cbor = json_to_cbor(&claim_json, version).unwrap();
        let claim = KeysClaimResponse::parse(&claim_cbor, version).unwrap();
        let key = claim
            .one_time_key("@bob:localhost", "BOBDEVICE1")
            .unwrap()
            .unwrap();
        assert_eq!(key.key_id, "signed_curve25519:AAAAHg");
        let base = "/one_time_keys/@bob:localhost/BOBDEVICE1/signed_curve25519:AAAAHg";
        assert_eq!(
            bytes_of(key.key),
            base64_at(&claim_json, &format!("{base}/key"))
        );
        let signature = key
            .signature("@bob:localhost", "ed25519:BOBDEVICE1")
            .unwrap()
            .unwrap();
        assert_eq!(
            bytes_of(signature),
            base64_at(
                &claim_json,
                &format!("{base}/signatures/@bob:localhost/ed25519:BOBDEVICE1")
            )
        );
        assert_eq!(claim.one_time_key("@bob:localhost", "OTHER").unwrap(), None);

        let query_json = fixture("keys_query_response.json");
        let query_cbor = json_to_cbor(&query_json, version).unwrap();
        let query = KeysQueryResponse::parse(&query_cbor, version).unwrap();
        let devices: Vec<_> = query
            .devices("@bob:localhost")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(devices.len(), 1);
        let (device_id, keys) = devices[0];
        assert_eq!(device_id, "BOBDEVICE1");
        assert_eq!(keys.user_id().unwrap(), "@bob:localhost");
        assert_eq!(keys.device_id().unwrap(), "BOBDEVICE1");
        let base = "/device_keys/@bob:localhost/BOBDEVICE1";
        assert_eq!(
            bytes_of(keys.key("curve25519:BOBDEVICE1").unwrap().unwrap()),
            base64_at(&query_json, &format!("{base}/keys/curve25519:BOBDEVICE1"))
        );
        assert!(
            keys.signature("@bob:localhost", "ed25519:BOBDEVICE1")
                .unwrap()
                .is_some()
        );
        assert_eq!(query.devices("@nobody:localhost").unwrap().count(), 0);

        let upload_cbor = json_to_cbor(&fixture("keys_upload_response.json"), version).unwrap();
        let upload = KeysUploadResponse::parse(&upload_cbor, version).unwrap();
        assert_eq!(upload.one_time_key_count("signed_curve25519").unwrap(), 50);

        let sent = json_to_cbor(&json!({"event_id": "$abc"}), version).unwrap();
        assert_eq!(
            SendEventResponse::parse(&sent, version)
                .unwrap()
                .event_id()
                .unwrap(),
            Id::Text("$abc")
        );
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

    #[test]
    fn well_known_values_read_as_their_text_under_v2_only() {
        let event = json!({"type": "m.room.member", "sender": "@a:s", "state_key": "@a:s",
            "content": {"membership": "join"}, "event_id": "$e"});
        let cbor = json_to_cbor(&event, TableVersion::V2).unwrap();
        // `type` 02 and `membership` 18 19 are coded: simple(4) `e4` and simple(8) `e8`.
        assert!(cbor.windows(2).any(|w| w == [0x02, 0xe4]));
        assert!(cbor.windows(3).any(|w| w == [0x18, 0x19, 0xe8]));
        let map = Value::parse(&cbor, TableVersion::V2).unwrap();
        let Value::Map(map) = map else {
            panic!("not a map")
        };
        let event = Event(map);
        let event_type = event.event_type().unwrap();
        assert_eq!(event_type, "m.room.member");
        // The text is the table's own `&'static str`, not something in the received bytes.
        assert!(core::ptr::eq(
            event_type,
            crate::values::WELL_KNOWN_VALUES[4]
        ));
        let Some(Value::Map(content)) = map.get("content").unwrap() else {
            panic!("no content")
        };
        assert_eq!(
            content.get("membership").unwrap(),
            Some(Value::Text("join"))
        );
        // Under v1 the same bytes are not profile CBOR.
        assert!(matches!(
            Value::parse(&cbor, TableVersion::V1),
            Err(ViewError::Malformed { .. })
        ));
        // Undefined simple values and the non-canonical two-byte form are malformed under v2 too.
        for bad in [&[0xf8, 0xff][..], &[0xf8, 0x05], &[0xf7]] {
            assert!(Value::parse(bad, TableVersion::V2).is_err(), "{bad:02x?}");
        }
        // A coded value is never a map key: {simple(0): 1}.
        let Ok(Value::Map(coded_key)) = Value::parse(&[0xa1, 0xe0, 0x01], TableVersion::V2) else {
            panic!("the map header reads")
        };
        assert_eq!(
            coded_key.entries().next(),
            Some(Err(ViewError::Malformed { offset: 1 }))
        );
    }

    #[test]
    fn missing_fields_wrong_types_and_malformed_bytes_are_errors() {
        let v = TableVersion::V2;
        let cbor = json_to_cbor(&json!({"next_batch": 5}), v).unwrap();
        let sync = SyncResponse::parse(&cbor, v).unwrap();
        assert_eq!(sync.next_batch(), Err(ViewError::WrongType { offset: 2 }));
        let empty = SyncResponse::parse(&[0xa0], v).unwrap();
        assert_eq!(
            empty.next_batch(),
            Err(ViewError::Missing {
                field: "next_batch"
            })
        );
        assert_eq!(empty.to_device_events().unwrap().count(), 0);
        assert_eq!(empty.joined_rooms().unwrap().count(), 0);
        for (input, offset) in [
            (&[0xa1, 0x13, 0x62, 0x61][..], 2), // text longer than the input
            (&[0xbf, 0xff][..], 0),             // indefinite map
            (&[0xa1, 0x13, 0xc1, 0x00][..], 2), // tag
            (&[0xa1, 0x13, 0xf9, 0x00, 0x14][..], 2), // half float
            (&[0xa1, 0x13, 0x61][..], 2),       // truncated
            (&[0xa0, 0x00][..], 1),             // trailing byte
        ] {
            assert_eq!(
                SyncResponse::parse(input, v),
                Err(ViewError::Malformed { offset }),
                "{input:x?}"
            );
        }
        // Invalid UTF-8 is found when the field is read.
        let sync = SyncResponse::parse(&[0xa1, 0x13, 0x61, 0xff], v).unwrap();
        assert_eq!(sync.next_batch(), Err(ViewError::Malformed { offset: 2 }));
    }

    #[test]
    fn text_key_wins_over_integer_key() {
        // {19: "int", "next_batch": "text"}
        let mut cbor = vec![0xa2, 0x13, 0x63];
        cbor.extend_from_slice(b"int");
        cbor.push(0x6a);
        cbor.extend_from_slice(b"next_batch");
        cbor.push(0x64);
        cbor.extend_from_slice(b"text");
        let sync = SyncResponse::parse(&cbor, TableVersion::V1).unwrap();
        assert_eq!(sync.next_batch().unwrap(), "text");
    }
}
