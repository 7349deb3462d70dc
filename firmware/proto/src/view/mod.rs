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
use crate::ids::HASH_LEN;
pub use crate::ids::Id;
use crate::keys::{key_for_name, name_for_key};
use crate::values::value_for_simple;

mod keys;
mod sync;

pub use keys::{
    DeviceKeys, Devices, KeysClaimResponse, KeysQueryResponse, KeysUploadResponse, SignedKey,
};
pub use sync::{
    EncryptedContent, Event, Events, MEGOLM_ALGORITHM, OLM_ALGORITHM, Room, Rooms,
    SendEventResponse, SyncResponse, TOO_LARGE_FIELD,
};

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

/// The body's top-level map.
fn root_map(input: &[u8], version: TableVersion) -> Result<Map<'_>, ViewError> {
    match Value::parse(input, version)? {
        Value::Map(map) => Ok(map),
        _ => Err(ViewError::WrongType { offset: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::json_to_cbor;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde_json::{Value as Json, json};
    pub(super) fn fixture(name: &str) -> Json {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fuzz/proto/corpus/transcoder")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub(super) fn bytes_of(binary: Binary<'_>) -> Vec<u8> {
        match binary {
            Binary::Bytes(bytes) => bytes.to_vec(),
            Binary::Base64(text) => STANDARD_NO_PAD.decode(text).unwrap(),
        }
    }

    pub(super) fn base64_at(json: &Json, pointer: &str) -> Vec<u8> {
        STANDARD_NO_PAD
            .decode(json.pointer(pointer).unwrap().as_str().unwrap())
            .unwrap()
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
