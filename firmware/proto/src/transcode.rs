//! JSON <-> CBOR transcoding of any Matrix JSON (feature `json`), as the gateway and the CLI need it.
//!
//! The CBOR is canonical (RFC 8949 section 4.2.1): definite lengths, shortest integer and length
//! encodings, and map keys sorted by their encoded bytes, so integer keys come before text keys and
//! shorter text keys before longer ones. Object keys that the negotiated table knows become integers
//! ([`crate::keys`]); under version 2, string values at binary field paths that are canonical unpadded
//! base64 become byte strings ([`crate::binary`]), and other string values of the well-known value table
//! become one simple value each ([`crate::values`]).
//!
//! Matrix JSON has no floats and no integers beyond ±(2^53-1) (canonical JSON); both are rejected in
//! either direction. The decoder accepts any well-formed CBOR of the JSON data model (it need not be
//! canonical), but rejects tags, indefinite lengths, floats, `undefined` and simple values the table does
//! not define (under v1: all but `false`/`true`/`null`),
//! invalid UTF-8, lengths beyond the input, nesting deeper than [`MAX_DEPTH`], unknown integer keys,
//! duplicate keys, and byte strings outside the binary fields. If a map holds the same key as text and as
//! integer, the text one wins (MSC3079). Every error says at which byte of the input it was found.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};
use serde_json::{Map, Number, Value};

use crate::TableVersion;
use crate::binary::is_binary_field;
use crate::ids::{EVENT_SIGIL, HASH_LEN, ROOM_SECTIONS, ROOM_SIGIL, TEXT_LEN, hash_text};
use crate::keys::{key_for_name, name_for_key};
use crate::values::{simple_for_value, value_for_simple};

/// The deepest nesting of arrays and objects either direction accepts (the root counts as depth 1).
pub const MAX_DEPTH: usize = 32;

/// The largest integer magnitude Matrix JSON allows: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// What went wrong while transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranscodeErrorKind {
    /// A floating-point number; Matrix JSON has none.
    Float,
    /// An integer beyond ±(2^53-1).
    IntegerOutOfRange,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The input ends inside a value.
    Truncated,
    /// A declared length is larger than the rest of the input.
    LengthBeyondInput,
    /// An indefinite-length string, array or map.
    IndefiniteLength,
    /// A CBOR tag.
    Tag,
    /// `undefined` or another simple value that JSON cannot hold.
    UnsupportedSimpleValue,
    /// A text string that is not UTF-8.
    InvalidUtf8,
    /// A map key that is neither a text string nor an unsigned integer.
    InvalidMapKey,
    /// An integer map key the negotiated table does not define.
    UnknownIntegerKey,
    /// The same key twice in one map (in the same form).
    DuplicateKey,
    /// A byte string where the profile expects text (outside the v2 binary fields).
    UnexpectedByteString,
    /// Bytes after the end of the top-level value.
    TrailingBytes,
    /// Bytes that are not CBOR (a reserved header or a stray `break`).
    Malformed,
}

/// Where an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Byte offset in the CBOR input.
    CborOffset(usize),
    /// Index of the offending value in the JSON document, counting every value (objects, arrays and
    /// scalars, the root being 0) in document order, object members in the order serde_json keeps them.
    JsonValue(usize),
}

/// A transcoding failure: what and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeError {
    kind: TranscodeErrorKind,
    location: Location,
}

impl TranscodeError {
    fn at_byte(kind: TranscodeErrorKind, offset: usize) -> Self {
        Self {
            kind,
            location: Location::CborOffset(offset),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> TranscodeErrorKind {
        self.kind
    }

    /// Where it went wrong.
    pub fn location(&self) -> Location {
        self.location
    }
}

impl core::fmt::Display for TranscodeErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Float => "floating-point numbers are not allowed in Matrix JSON",
            Self::IntegerOutOfRange => "the integer is outside the range ±(2^53-1)",
            Self::TooDeep => "arrays and objects nest deeper than 32 levels",
            Self::Truncated => "the input ends inside a CBOR value",
            Self::LengthBeyondInput => "a declared length is larger than the rest of the input",
            Self::IndefiniteLength => "indefinite-length CBOR items are not allowed",
            Self::Tag => "CBOR tags are not allowed",
            Self::UnsupportedSimpleValue => "the CBOR simple value has no JSON equivalent",
            Self::InvalidUtf8 => "the text string is not valid UTF-8",
            Self::InvalidMapKey => "a map key is neither a text string nor an unsigned integer",
            Self::UnknownIntegerKey => "the integer map key is not in the negotiated table",
            Self::DuplicateKey => "the map holds the same key twice",
            Self::UnexpectedByteString => "a byte string appears outside the binary fields",
            Self::TrailingBytes => "bytes follow the end of the CBOR value",
            Self::Malformed => "the bytes are not well-formed CBOR",
        })
    }
}

impl core::fmt::Display for TranscodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.location {
            Location::CborOffset(offset) => write!(f, "{} (at byte {offset})", self.kind),
            Location::JsonValue(index) => write!(f, "{} (at JSON value #{index})", self.kind),
        }
    }
}

impl core::error::Error for TranscodeError {}

/// Encodes Matrix JSON as canonical CBOR with the integer keys (and, under v2, the binary fields) of
/// `version`.
pub fn json_to_cbor(value: &Value, version: TableVersion) -> Result<Vec<u8>, TranscodeError> {
    let mut encoder = JsonEncoder {
        version,
        path: Vec::new(),
        values_seen: 0,
        out: Encoder::new(Vec::new()),
    };
    encoder.value(value, 1)?;
    Ok(encoder.out.into_writer())
}

struct JsonEncoder<'v> {
    version: TableVersion,
    path: Vec<&'v str>,
    values_seen: usize,
    out: Encoder<Vec<u8>>,
}

/// The bytes of `value` if it is canonical unpadded standard base64 (so that re-encoding gives the
/// same text), else `None`.
fn canonical_base64(value: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD_NO_PAD.decode(value).ok()?;
    (STANDARD_NO_PAD.encode(&bytes) == value).then_some(bytes)
}

/// The hash of `value` if it is a canonical hashed identifier with `sigil` (section 3.5 of
/// PROFILE.md): the sigil and 43 characters of unpadded URL-safe base64 that encode 32 bytes and
/// that those bytes encode again.
fn canonical_hashed_id(value: &str, sigil: u8) -> Option<[u8; HASH_LEN]> {
    let encoded = value.strip_prefix(char::from(sigil))?;
    let hash: [u8; HASH_LEN] = URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()?;
    (URL_SAFE_NO_PAD.encode(hash) == encoded).then_some(hash)
}

/// Whether the object at `path` is a sync response's membership section, whose keys are room ids.
fn is_room_section<S: AsRef<str>>(path: &[S]) -> bool {
    matches!(path, [rooms, section] if rooms.as_ref() == "rooms"
        && ROOM_SECTIONS.contains(&section.as_ref()))
}

/// Whether a value at `path` is an event id.
fn is_event_id_field<S: AsRef<str>>(path: &[S]) -> bool {
    path.last().is_some_and(|name| name.as_ref() == "event_id")
}

/// The text form of a hashed identifier's hash.
fn hashed_id_text(sigil: u8, hash: &[u8; HASH_LEN]) -> String {
    hash_text(sigil, hash, &mut [0; TEXT_LEN]).into()
}

/// The canonical CBOR encoding of a map key under `version`, which is also its sort key. Under v2
/// a room id key of a sync membership section (`room_keys`) that is a hashed id is a byte string.
pub(crate) fn encoded_key(name: &str, version: TableVersion, room_keys: bool) -> Vec<u8> {
    let mut key = Encoder::new(Vec::with_capacity(name.len() + 2));
    let room_hash = (room_keys && version == TableVersion::V2)
        .then(|| canonical_hashed_id(name, ROOM_SIGIL))
        .flatten();
    // Writing into a Vec cannot fail.
    let _ = match (key_for_name(name, version), room_hash) {
        (Some(integer), _) => key.u16(integer),
        (None, Some(hash)) => key.bytes(&hash),
        (None, None) => key.str(name),
    };
    key.into_writer()
}

impl<'v> JsonEncoder<'v> {
    fn error(&self, kind: TranscodeErrorKind, index: usize) -> TranscodeError {
        TranscodeError {
            kind,
            location: Location::JsonValue(index),
        }
    }

    fn value(&mut self, value: &'v Value, depth: usize) -> Result<(), TranscodeError> {
        let index = self.values_seen;
        self.values_seen += 1;
        // Writing into a Vec cannot fail, so the encoder results carry no information.
        let out = &mut self.out;
        match value {
            Value::Null => {
                let _ = out.null();
            }
            Value::Bool(b) => {
                let _ = out.bool(*b);
            }
            Value::Number(number) => self.number(number, index)?,
            Value::String(text) => self.string(text),
            Value::Array(items) => self.array(items, depth, index)?,
            Value::Object(members) => self.object(members, depth, index)?,
        }
        Ok(())
    }

    /// An integer within ±(2^53-1); anything else is an error.
    fn number(&mut self, number: &Number, index: usize) -> Result<(), TranscodeError> {
        let out = &mut self.out;
        if let Some(n) = number.as_u64() {
            if n > MAX_SAFE_INTEGER {
                return Err(self.error(TranscodeErrorKind::IntegerOutOfRange, index));
            }
            let _ = out.u64(n);
        } else if let Some(n) = number.as_i64() {
            if n.unsigned_abs() > MAX_SAFE_INTEGER {
                return Err(self.error(TranscodeErrorKind::IntegerOutOfRange, index));
            }
            let _ = out.i64(n);
        } else {
            return Err(self.error(TranscodeErrorKind::Float, index));
        }
        Ok(())
    }

    /// A string: under v2, a binary field's bytes, a hashed event id's hash or a well-known value
    /// where it is one of them; else the text.
    fn string(&mut self, text: &str) {
        let binary = match self.version {
            TableVersion::V2 if is_binary_field(&self.path) => canonical_base64(text),
            TableVersion::V2 if is_event_id_field(&self.path) => {
                canonical_hashed_id(text, EVENT_SIGIL).map(Vec::from)
            }
            _ => None,
        };
        let well_known = match self.version {
            TableVersion::V2 if binary.is_none() => simple_for_value(text),
            _ => None,
        };
        let out = &mut self.out;
        match (binary, well_known) {
            (Some(bytes), _) => {
                let _ = out.bytes(&bytes);
            }
            (None, Some(simple)) => {
                let _ = out.simple(simple);
            }
            (None, None) => {
                let _ = out.str(text);
            }
        }
    }

    /// An array, its items at `depth + 1`.
    fn array(
        &mut self,
        items: &'v [Value],
        depth: usize,
        index: usize,
    ) -> Result<(), TranscodeError> {
        if depth > MAX_DEPTH {
            return Err(self.error(TranscodeErrorKind::TooDeep, index));
        }
        let _ = self.out.array(items.len() as u64);
        for item in items {
            self.value(item, depth + 1)?;
        }
        Ok(())
    }

    /// An object, its members sorted by their encoded keys.
    fn object(
        &mut self,
        members: &'v Map<String, Value>,
        depth: usize,
        index: usize,
    ) -> Result<(), TranscodeError> {
        if depth > MAX_DEPTH {
            return Err(self.error(TranscodeErrorKind::TooDeep, index));
        }
        let _ = self.out.map(members.len() as u64);
        let room_keys = is_room_section(&self.path);
        let mut sorted: Vec<(Vec<u8>, &'v String, &'v Value)> = members
            .iter()
            .map(|(name, value)| (encoded_key(name, self.version, room_keys), name, value))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, name, value) in sorted {
            self.out.writer_mut().extend_from_slice(&key);
            self.path.push(name);
            let result = self.value(value, depth + 1);
            self.path.pop();
            result?;
        }
        Ok(())
    }
}

/// Decodes CBOR of the profile (integer keys of `version`, v2 binary fields as byte strings) into Matrix
/// JSON. Exactly one value must fill `bytes`.
pub fn cbor_to_json(bytes: &[u8], version: TableVersion) -> Result<Value, TranscodeError> {
    let mut decoder = CborDecoder {
        version,
        path: Vec::new(),
        input: Decoder::new(bytes),
    };
    let value = decoder.value(1)?;
    let end = decoder.input.position();
    if end != bytes.len() {
        return Err(TranscodeError::at_byte(
            TranscodeErrorKind::TrailingBytes,
            end,
        ));
    }
    Ok(value)
}

struct CborDecoder<'b> {
    version: TableVersion,
    path: Vec<Cow<'b, str>>,
    input: Decoder<'b>,
}

/// The length an item header at `at` declares (for strings, arrays and maps), and the header's size.
fn declared_length(input: &[u8], at: usize) -> Result<(u64, usize), TranscodeErrorKind> {
    let initial = *input.get(at).ok_or(TranscodeErrorKind::Truncated)?;
    let size = match initial & 0x1f {
        info @ 0..=23 => return Ok((u64::from(info), 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Err(TranscodeErrorKind::IndefiniteLength),
        _ => return Err(TranscodeErrorKind::Malformed),
    };
    let argument = input
        .get(at + 1..at + 1 + size)
        .ok_or(TranscodeErrorKind::Truncated)?;
    let length = argument
        .iter()
        .fold(0u64, |acc, byte| acc << 8 | u64::from(*byte));
    Ok((length, 1 + size))
}

/// Maps a minicbor error for the item at `at`: the input ending early, or else `otherwise` (the one
/// thing the caller's checks left for minicbor to find).
fn decoder_failure(
    error: minicbor::decode::Error,
    otherwise: TranscodeErrorKind,
    at: usize,
) -> TranscodeError {
    let kind = if error.is_end_of_input() {
        TranscodeErrorKind::Truncated
    } else {
        otherwise
    };
    TranscodeError::at_byte(kind, at)
}

impl<'b> CborDecoder<'b> {
    /// Reads the header of a string, array or map at the current position and checks that what it
    /// declares (`min_bytes_per_unit` bytes for each unit of length) fits in the rest of the input.
    fn checked_length(&self, min_bytes_per_unit: u64) -> Result<u64, TranscodeError> {
        let at = self.input.position();
        let input = self.input.input();
        let (length, header) =
            declared_length(input, at).map_err(|kind| TranscodeError::at_byte(kind, at))?;
        let remaining = input.len().saturating_sub(at + header) as u64;
        if length.saturating_mul(min_bytes_per_unit) > remaining {
            return Err(TranscodeError::at_byte(
                TranscodeErrorKind::LengthBeyondInput,
                at,
            ));
        }
        Ok(length)
    }

    fn value(&mut self, depth: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let at = self.input.position();
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        // Any decoder error after the checks below is the input ending early or being malformed.
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        let datatype = self.input.datatype().map_err(failed)?;
        match datatype {
            Type::Null => {
                self.input.null().map_err(failed)?;
                Ok(Value::Null)
            }
            Type::Bool => Ok(Value::Bool(self.input.bool().map_err(failed)?)),
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => self.unsigned(at),
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => self.signed(at),
            Type::F16 | Type::F32 | Type::F64 => fail(Kind::Float),
            Type::Simple if self.version == TableVersion::V2 => self.well_known_value(at),
            Type::Undefined | Type::Simple => fail(Kind::UnsupportedSimpleValue),
            Type::Tag => fail(Kind::Tag),
            Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
                fail(Kind::IndefiniteLength)
            }
            Type::Break | Type::Unknown(_) => fail(Kind::Malformed),
            Type::String => {
                self.checked_length(1)?;
                let text = self
                    .input
                    .str()
                    .map_err(|error| decoder_failure(error, Kind::InvalidUtf8, at))?;
                Ok(Value::String(text.into()))
            }
            // A binary field wins over an event id, as it does when encoding (`keys.event_id`).
            Type::Bytes
                if self.version == TableVersion::V2
                    && is_event_id_field(&self.path)
                    && !is_binary_field(&self.path) =>
            {
                self.hashed_event_id(at)
            }
            Type::Bytes => self.binary(at),
            Type::Array => self.array(depth, at),
            Type::Map => self.map(depth, at),
        }
    }

    /// An unsigned integer at `at`, up to 2^53-1.
    fn unsigned(&mut self, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        let n = self.input.u64().map_err(failed)?;
        if n > MAX_SAFE_INTEGER {
            return Err(TranscodeError::at_byte(Kind::IntegerOutOfRange, at));
        }
        Ok(Value::from(n))
    }

    /// A negative integer at `at`, down to -(2^53-1).
    fn signed(&mut self, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        let n = i128::from(self.input.int().map_err(failed)?);
        if n.unsigned_abs() > u128::from(MAX_SAFE_INTEGER) {
            return Err(TranscodeError::at_byte(Kind::IntegerOutOfRange, at));
        }
        // In range, so it fits an i64.
        Ok(Value::from(n as i64))
    }

    /// A simple value at `at` under v2: the well-known value it stands for, as text.
    fn well_known_value(&mut self, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        let two_bytes = self.input.input().get(at) == Some(&0xf8);
        let simple = self.input.simple().map_err(failed)?;
        // `f8` with a value below 32 is not well-formed CBOR (RFC 8949 section 3.3).
        if two_bytes && simple < 32 {
            return fail(Kind::Malformed);
        }
        match value_for_simple(simple) {
            Some(text) => Ok(Value::String(text.into())),
            None => fail(Kind::UnsupportedSimpleValue),
        }
    }

    /// A byte string at `at` where an event id goes (v2): the hashed id's text.
    fn hashed_event_id(&mut self, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        self.checked_length(1)?;
        let bytes = self.input.bytes().map_err(failed)?;
        match <&[u8; HASH_LEN]>::try_from(bytes) {
            Ok(hash) => Ok(Value::String(hashed_id_text(EVENT_SIGIL, hash))),
            Err(_) => fail(Kind::UnexpectedByteString),
        }
    }

    /// A byte string at `at`: a binary field's bytes (v2) as their base64 text.
    fn binary(&mut self, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        if self.version != TableVersion::V2 || !is_binary_field(&self.path) {
            return fail(Kind::UnexpectedByteString);
        }
        self.checked_length(1)?;
        let bytes = self.input.bytes().map_err(failed)?;
        Ok(Value::String(STANDARD_NO_PAD.encode(bytes)))
    }

    /// An array at `at`, its items at `depth + 1`.
    fn array(&mut self, depth: usize, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        if depth > MAX_DEPTH {
            return fail(Kind::TooDeep);
        }
        let length = self.checked_length(1)?;
        self.input.array().map_err(failed)?;
        let mut items = Vec::new();
        for _ in 0..length {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    /// A map at `at`, its values at `depth + 1`.
    fn map(&mut self, depth: usize, at: usize) -> Result<Value, TranscodeError> {
        use TranscodeErrorKind as Kind;
        let fail = |kind| Err(TranscodeError::at_byte(kind, at));
        let failed = |error| decoder_failure(error, Kind::Malformed, at);
        if depth > MAX_DEPTH {
            return fail(Kind::TooDeep);
        }
        let length = self.checked_length(2)?;
        self.input.map().map_err(failed)?;
        self.map_entries(length, depth)
    }

    fn map_key(&mut self, room_keys: bool) -> Result<(Cow<'b, str>, bool), TranscodeError> {
        use TranscodeErrorKind as Kind;
        let at = self.input.position();
        let failed = |error| decoder_failure(error, Kind::InvalidUtf8, at);
        match self.input.datatype().map_err(failed)? {
            Type::String => {
                self.checked_length(1)?;
                Ok((self.input.str().map_err(failed)?.into(), true))
            }
            // A room id of a sync membership section, as its hash (v2): it counts as text.
            Type::Bytes if room_keys && self.version == TableVersion::V2 => {
                self.checked_length(1)?;
                let bytes = self.input.bytes().map_err(failed)?;
                match <&[u8; HASH_LEN]>::try_from(bytes) {
                    Ok(hash) => Ok((hashed_id_text(ROOM_SIGIL, hash).into(), true)),
                    Err(_) => Err(TranscodeError::at_byte(Kind::InvalidMapKey, at)),
                }
            }
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                let key = self.input.u64().map_err(failed)?;
                match name_for_key(key, self.version) {
                    Some(name) => Ok((name.into(), false)),
                    None => Err(TranscodeError::at_byte(Kind::UnknownIntegerKey, at)),
                }
            }
            Type::StringIndef => Err(TranscodeError::at_byte(Kind::IndefiniteLength, at)),
            _ => Err(TranscodeError::at_byte(Kind::InvalidMapKey, at)),
        }
    }

    fn map_entries(&mut self, length: u64, depth: usize) -> Result<Value, TranscodeError> {
        let mut members = Map::new();
        // Whether each key so far was written as text (true) or as an integer (false).
        let mut key_was_text: BTreeMap<Cow<'b, str>, bool> = BTreeMap::new();
        let room_keys = is_room_section(&self.path);
        for _ in 0..length {
            let at = self.input.position();
            let (name, is_text) = self.map_key(room_keys)?;
            self.path.push(name.clone());
            let value = self.value(depth + 1);
            self.path.pop();
            let value = value?;
            match key_was_text.insert(name.clone(), is_text) {
                None => {}
                Some(earlier) if earlier == is_text => {
                    return Err(TranscodeError::at_byte(
                        TranscodeErrorKind::DuplicateKey,
                        at,
                    ));
                }
                // The text form wins over the integer form, in whichever order they come.
                Some(true) => {
                    key_was_text.insert(name, true);
                    continue;
                }
                Some(false) => {}
            }
            members.insert(name.into(), value);
        }
        Ok(Value::Object(members))
    }
}

/// Members of a `/sync` response that mean "nothing" by their presence alone, so they stay even when
/// empty: an empty `device_unused_fallback_key_types` says "upload a fallback key", its absence says
/// "this server has no fallback keys"; `device_one_time_keys_count` is kept for the same kind of reason.
pub(crate) const SYNC_MEMBERS_KEPT_WHEN_EMPTY: [&str; 3] = [
    "device_one_time_keys_count",
    "device_unused_fallback_key_types",
    "org.matrix.msc2732.device_unused_fallback_key_types",
];

/// The v2 rule for `/sync` responses (PROFILE.md section 3.3): drops what carries nothing, because
/// Matrix sync treats an absent member as empty. Removed, bottom-up: members whose value is an empty
/// object or array, zero `notification_count` / `highlight_count` under `unread_notifications`, and a
/// timeline's `limited: false`, and a timeline's `prev_batch` when it equals `since`, the `since` of
/// the request this response answers (a client that knows its `since` reads an absent `prev_batch` as
/// it; a gap, `limited: true`, gets a `prev_batch` of its own, which stays).
/// Never touched: anything inside an array (the events travel exactly as the homeserver sent them), a
/// room's entry under `rooms.join` / `invite` / `leave` / `knock` (its presence is the membership) and the
/// members of [`SYNC_MEMBERS_KEPT_WHEN_EMPTY`].
pub fn prune_sync_response(response: &mut Value, since: Option<&str>) {
    if let Value::Object(members) = response {
        prune_members(members, SyncLevel::Root, since);
    }
}

/// Where in a sync response an object sits, as far as pruning cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncLevel {
    Root,
    Rooms,
    RoomsByMembership,
    Room,
    Timeline,
    UnreadCounts,
    Other,
}

fn prune_members(members: &mut Map<String, Value>, level: SyncLevel, since: Option<&str>) {
    for (name, value) in members.iter_mut() {
        let inner = match (level, name.as_str()) {
            (SyncLevel::Root, "rooms") => SyncLevel::Rooms,
            (SyncLevel::Rooms, _) => SyncLevel::RoomsByMembership,
            (SyncLevel::RoomsByMembership, _) => SyncLevel::Room,
            (SyncLevel::Room, "unread_notifications") => SyncLevel::UnreadCounts,
            (SyncLevel::Room, "timeline") => SyncLevel::Timeline,
            _ => SyncLevel::Other,
        };
        if let Value::Object(children) = value {
            prune_members(children, inner, since);
        }
    }
    members.retain(|name, value| {
        let kept_anyway = level == SyncLevel::RoomsByMembership
            || (level == SyncLevel::Root && SYNC_MEMBERS_KEPT_WHEN_EMPTY.contains(&name.as_str()));
        let zero_count = level == SyncLevel::UnreadCounts
            && matches!(name.as_str(), "notification_count" | "highlight_count")
            && value.as_u64() == Some(0);
        let not_limited =
            level == SyncLevel::Timeline && name == "limited" && value.as_bool() == Some(false);
        let known_prev_batch = level == SyncLevel::Timeline
            && name == "prev_batch"
            && since.is_some()
            && value.as_str() == since;
        let empty = match value {
            Value::Object(children) => children.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        };
        kept_anyway || !(zero_count || not_limited || known_prev_batch || empty)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use TableVersion::{V1, V2};
    use TranscodeErrorKind as Kind;
    use serde_json::json;

    /// MSC3079's own test object and its canonical CBOR, as the proposal gives them.
    const HELLO_WORLD_JSON: &str = r#"{"type":"m.room.message","content":{"msgtype":"m.text","body":"Hello World"},"sender":"@alice:localhost","room_id":"!foo:localhost","unsigned":{"bool_value":true,"null_value":null}}"#;
    const HELLO_WORLD_CBOR: &str = "a5026e6d2e726f6f6d2e6d65737361676503a2181b6b48656c6c6f20576f726c64181c666d2e74657874056e21666f6f3a6c6f63616c686f7374067040616c6963653a6c6f63616c686f737409a26a626f6f6c5f76616c7565f56a6e756c6c5f76616c7565f6";

    #[test]
    fn sync_pruning_drops_what_carries_nothing_and_keeps_what_does() {
        // The shape Synapse 1.x sends for an incremental sync delivering one event.
        let event =
            json!({"type": "m.room.encrypted", "content": {}, "unsigned": {}, "event_id": "$e"});
        let mut sync = json!({
            "next_batch": "s2",
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
            "rooms": {"join": {
                "!busy:s": {
                    "account_data": {"events": []},
                    "ephemeral": {"events": []},
                    "state": {"events": []},
                    "summary": {},
                    "timeline": {"events": [event], "limited": false, "prev_batch": "p1"},
                    "unread_notifications": {"notification_count": 0, "highlight_count": 2},
                    "unread_thread_notifications": {}
                },
                "!quiet:s": {"unread_notifications": {"notification_count": 0, "highlight_count": 0}},
                "!gap:s": {"timeline": {"events": [], "limited": true}}
            }, "invite": {}, "leave": {}, "knock": {}}
        });
        prune_sync_response(&mut sync, None);
        assert_eq!(
            sync,
            json!({
                "next_batch": "s2",
                "device_one_time_keys_count": {},
                "device_unused_fallback_key_types": [],
                "rooms": {"join": {
                    "!busy:s": {
                        "timeline": {"events": [event], "prev_batch": "p1"},
                        "unread_notifications": {"highlight_count": 2}
                    },
                    "!quiet:s": {},
                    "!gap:s": {"timeline": {"limited": true}}
                }}
            })
        );
        // Not a sync response object: untouched.
        let mut other = json!([{}, []]);
        prune_sync_response(&mut other, Some("s1"));
        assert_eq!(other, json!([{}, []]));
    }

    #[test]
    fn a_prev_batch_equal_to_the_requests_since_is_left_out() {
        // Synapse answers an incremental sync without a gap with prev_batch = since.
        let mut sync = json!({"next_batch": "s9_1", "rooms": {"join": {
            "!a:s": {"timeline": {"events": [{"type": "x"}], "prev_batch": "s8_1"}},
            "!gap:s": {"timeline": {"events": [{"type": "x"}], "limited": true, "prev_batch": "s5_1"}}
        }}});
        let mut initial = sync.clone();
        prune_sync_response(&mut sync, Some("s8_1"));
        assert_eq!(
            sync,
            json!({"next_batch": "s9_1", "rooms": {"join": {
                "!a:s": {"timeline": {"events": [{"type": "x"}]}},
                "!gap:s": {"timeline": {"events": [{"type": "x"}], "limited": true, "prev_batch": "s5_1"}}
            }}})
        );
        // Without a since (an initial sync) every prev_batch stays.
        let before = initial.clone();
        prune_sync_response(&mut initial, None);
        assert_eq!(initial, before);
    }

    #[test]
    fn hashed_event_and_room_ids_are_32_bytes_under_v2_and_come_back_as_the_same_text() {
        // Ids as Synapse made them (room version 12 room id, event id of the bench's send).
        let room = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
        let event = "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c";
        let sync = json!({"rooms": {"join": {room: {"timeline": {"events": [
            {"event_id": event, "content": {"m.relates_to": {"event_id": event}}}
        ]}}, "!old:server": {}}}});
        let v2 = json_to_cbor(&sync, V2).unwrap();
        let hash = URL_SAFE_NO_PAD.decode(&room[1..]).unwrap();
        let event_hash = URL_SAFE_NO_PAD.decode(&event[1..]).unwrap();
        let as_bytes = |h: &[u8]| format!("5820{}", hex::encode(h));
        let hex_v2 = hex::encode(&v2);
        // The room id key is a byte string (sorted before the text key), the event ids too.
        assert!(hex_v2.starts_with(&format!("a117a11818a2{}", as_bytes(&hash))));
        assert_eq!(hex_v2.matches(&as_bytes(&event_hash)).count(), 2);
        assert_eq!(cbor_to_json(&v2, V2).unwrap(), sync);
        // v1 keeps the text.
        assert!(!hex::encode(json_to_cbor(&sync, V1).unwrap()).contains(&as_bytes(&hash)));
        // The send response: 34 bytes of id instead of 46.
        let response = json!({"event_id": event});
        assert_eq!(json_to_cbor(&response, V2).unwrap().len(), 1 + 1 + 34);
        assert_eq!(json_to_cbor(&response, V1).unwrap().len(), 1 + 1 + 46);
    }

    #[test]
    fn ids_that_are_not_canonical_hashes_stay_text() {
        for id in [
            "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5d", // non-zero trailing bits
            "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN/OOgASJZaB5c", // standard, not URL-safe, base64
            "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c=", // padded
            "$tooshort",
            "!Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c", // a room id where an event id goes
            "$abc:example.org",                             // room version 1-2 event id
        ] {
            let json = json!({"event_id": id});
            let v2 = json_to_cbor(&json, V2).unwrap();
            assert_eq!(v2, json_to_cbor(&json, V1).unwrap(), "{id}");
            assert_eq!(cbor_to_json(&v2, V2).unwrap(), json);
        }
        let sync = json!({"rooms": {"join": {"$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c": {}}}});
        assert_eq!(
            json_to_cbor(&sync, V2).unwrap(),
            json_to_cbor(&sync, V1).unwrap()
        );
    }

    #[test]
    fn a_binary_field_named_event_id_reads_back_as_the_binary_field_it_was_written_as() {
        // `keys.*` is binary and `event_id` names an event id: the binary field wins both ways.
        for json in [
            json!({"keys": {"event_id": ""}}),
            json!({"keys": {"event_id": "q83v"}}),
        ] {
            let v2 = json_to_cbor(&json, V2).unwrap();
            assert_eq!(cbor_to_json(&v2, V2).unwrap(), json);
        }
    }

    #[test]
    fn byte_string_ids_are_accepted_only_where_ids_go_and_only_as_32_bytes() {
        let hash = format!("5820{}", "ab".repeat(32));
        // {1: h'..'} is an event id; under v1 it is an error.
        let event = hex::decode(format!("a101{hash}")).unwrap();
        assert!(
            cbor_to_json(&event, V2).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .starts_with('$')
        );
        assert_eq!(
            cbor_to_json(&event, V1).unwrap_err().kind(),
            Kind::UnexpectedByteString
        );
        // 31 bytes is not a hash.
        assert_eq!(
            decode_error(&format!("a101581f{}", "ab".repeat(31)), V2),
            at(Kind::UnexpectedByteString, 2)
        );
        // A byte string key outside rooms.<membership>, or of the wrong length, is an error.
        assert_eq!(
            decode_error(&format!("a1{hash}00"), V2),
            at(Kind::InvalidMapKey, 1)
        );
        assert_eq!(
            decode_error(&format!("a117a11818a1581f{}a0", "ab".repeat(31)), V2),
            at(Kind::InvalidMapKey, 6)
        );
        let room = hex::decode(format!("a117a11818a1{hash}a0")).unwrap();
        let json = cbor_to_json(&room, V2).unwrap();
        let (id, _) = json["rooms"]["join"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(id.len(), 44);
        assert!(id.starts_with('!'));
        assert_eq!(
            cbor_to_json(&room, V1).unwrap_err().kind(),
            Kind::InvalidMapKey
        );
    }

    fn decode_error(hex_input: &str, version: TableVersion) -> TranscodeError {
        cbor_to_json(&hex::decode(hex_input).unwrap(), version).unwrap_err()
    }

    fn at(kind: Kind, offset: usize) -> TranscodeError {
        TranscodeError::at_byte(kind, offset)
    }

    #[test]
    fn msc3079_hello_world_encodes_byte_for_byte_and_back() {
        let json: Value = serde_json::from_str(HELLO_WORLD_JSON).unwrap();
        let cbor = json_to_cbor(&json, V1).unwrap();
        assert_eq!(hex::encode(&cbor), HELLO_WORLD_CBOR);
        assert_eq!(cbor_to_json(&cbor, V1).unwrap(), json);
        // v2 differs only in the two well-known values: "m.room.message" is simple(3) (`e3`),
        // "m.text" simple(7) (`e7`).
        let v2 = HELLO_WORLD_CBOR
            .replacen("6e6d2e726f6f6d2e6d657373616765", "e3", 1)
            .replacen("666d2e74657874", "e7", 1);
        let cbor = json_to_cbor(&json, V2).unwrap();
        assert_eq!(hex::encode(&cbor), v2);
        assert_eq!(cbor_to_json(&cbor, V2).unwrap(), json);
        // The text form is still valid v2, and reads the same.
        let text_form = hex::decode(HELLO_WORLD_CBOR).unwrap();
        assert_eq!(cbor_to_json(&text_form, V2).unwrap(), json);
    }

    #[test]
    fn well_known_values_are_simple_values_under_v2_only_and_never_keys() {
        let json = json!({"membership": "join", "join": "join", "n": 8, "m.room.encrypted": ["m.room.encrypted", "m.room.encrypted2", "Join", ""]});
        let v2 = json_to_cbor(&json, V2).unwrap();
        // {25: simple(8), 24: simple(8), "n": 8, "m.room.encrypted": [simple(0), "m.room.encrypted2", "Join", ""]}
        assert_eq!(
            hex::encode(&v2),
            concat!(
                "a4",
                "1818e8",                              // join: "join"
                "1819e8",                              // membership: "join"
                "616e08",                              // "n": 8
                "706d2e726f6f6d2e656e63727970746564",  // "m.room.encrypted" (a text key)
                "84e0",                                // [simple(0),
                "716d2e726f6f6d2e656e637279707465643", // "m.room.encrypted2",
                "2644a6f696e60",                       // "Join", ""]
            )
        );
        assert_eq!(cbor_to_json(&v2, V2).unwrap(), json);
        let v1 = json_to_cbor(&json, V1).unwrap();
        assert!(!v1.iter().any(|b| (0xe0..=0xf3).contains(b)));
        assert_eq!(cbor_to_json(&v1, V1).unwrap(), json);
        // Under v1 a coded value means nothing.
        assert_eq!(decode_error("e0", V1), at(Kind::UnsupportedSimpleValue, 0));
        // Simple values the table does not define, and non-canonical two-byte forms, are errors.
        assert_eq!(
            decode_error("f8ff", V2),
            at(Kind::UnsupportedSimpleValue, 0)
        );
        assert_eq!(decode_error("f7", V2), at(Kind::UnsupportedSimpleValue, 0));
        assert_eq!(decode_error("f805", V2), at(Kind::Malformed, 0));
        assert_eq!(decode_error("f814", V2), at(Kind::Malformed, 0));
        assert_eq!(
            cbor_to_json(&hex::decode("f820").unwrap(), V2).unwrap(),
            json!("knock")
        );
        assert_eq!(
            cbor_to_json(&hex::decode("f4").unwrap(), V2).unwrap(),
            json!(false)
        );
        // A coded value is never a key.
        assert_eq!(decode_error("a1e001", V2), at(Kind::InvalidMapKey, 1));
    }

    #[test]
    fn integer_keys_sort_before_text_keys_and_short_text_before_long() {
        let json = json!({"zz": 1, "b": 2, "type": 3, "event_id": 4});
        // 01 (event_id), 02 (type), "b", "zz".
        assert_eq!(
            hex::encode(json_to_cbor(&json, V1).unwrap()),
            "a401040203616202627a7a01"
        );
    }

    #[test]
    fn text_key_wins_over_the_same_key_as_integer() {
        // {2: "int", "type": "text"} and {"type": "text", 2: "int"}.
        for input in [
            "a20263696e7464747970656474657874",
            "a2647479706564746578740263696e74",
        ] {
            let json = cbor_to_json(&hex::decode(input).unwrap(), V1).unwrap();
            assert_eq!(json, json!({"type": "text"}), "{input}");
        }
    }

    #[test]
    fn megolm_fields_travel_as_bytes_under_v2_only_and_come_back_as_the_same_text() {
        let content = json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEhAA0T9gbB6oYvx9NYRAUgs",
            "session_id": "ZFD6+OmV7fG7MgQUZDePVMvlXUo/UYyV9xu6dPa2hm4",
            "body": "AwgAEhAA0T9gbB6oYvx9NYRAUgs",
        });
        let v1 = json_to_cbor(&content, V1).unwrap();
        let v2 = json_to_cbor(&content, V2).unwrap();
        assert!(v2.len() < v1.len());
        // The body key is not a binary field: it stays text even though it looks like base64.
        let body_text = b"\x18\x1b\x78\x1bAwgAEhAA0T9gbB6oYvx9NYRAUgs";
        assert!(v2.windows(body_text.len()).any(|w| w == body_text));
        let ciphertext = STANDARD_NO_PAD
            .decode("AwgAEhAA0T9gbB6oYvx9NYRAUgs")
            .unwrap();
        let mut as_bytes = vec![0x40 | ciphertext.len() as u8];
        as_bytes.extend_from_slice(&ciphertext);
        assert!(v2.windows(as_bytes.len()).any(|w| w == as_bytes));
        assert_eq!(cbor_to_json(&v1, V1).unwrap(), content);
        assert_eq!(cbor_to_json(&v2, V2).unwrap(), content);
        // The algorithm is a well-known value (simple(1), `e1`), which v1 does not know.
        assert!(v2.windows(3).any(|w| w == b"\x18\x54\xe1"));
        assert_eq!(
            cbor_to_json(&v2, V1).unwrap_err().kind(),
            Kind::UnsupportedSimpleValue
        );
    }

    #[test]
    fn values_that_are_not_canonical_unpadded_base64_stay_text() {
        for text in [
            "AwgAEhAA0T9gbB6oYvx9NYRAUg==",                // padded
            "ZFD6-OmV7fG7MgQUZDePVMvlXUo_UYyV9xu6dPa2hm4", // URL-safe alphabet
            "not base64!",
            "AwgAEhAA0T9gbB6oYvx9NYRAUgt", // non-zero trailing bits
            "A",
        ] {
            let json = json!({"session_id": text});
            let cbor = json_to_cbor(&json, V2).unwrap();
            let mut as_text = Encoder::new(Vec::new());
            as_text.map(1).unwrap().u8(86).unwrap().str(text).unwrap();
            assert_eq!(cbor, as_text.into_writer(), "{text}");
            assert_eq!(cbor_to_json(&cbor, V2).unwrap(), json);
        }
    }

    #[test]
    fn floats_and_unsafe_integers_are_rejected_on_encode() {
        let cases = [
            (json!({"age": 1.5}), Kind::Float, 1),
            (
                json!([1, 2, 9007199254740992u64]),
                Kind::IntegerOutOfRange,
                3,
            ),
            (
                json!({"a": [-9007199254740992i64]}),
                Kind::IntegerOutOfRange,
                2,
            ),
        ];
        for (json, kind, index) in cases {
            let error = json_to_cbor(&json, V1).unwrap_err();
            assert_eq!(
                (error.kind(), error.location()),
                (kind, Location::JsonValue(index))
            );
        }
        assert!(json_to_cbor(&json!([9007199254740991u64, -9007199254740991i64]), V1).is_ok());
    }

    #[test]
    fn nesting_limit_applies_both_ways() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let cbor = json_to_cbor(&deep, V1).unwrap();
        assert_eq!(cbor_to_json(&cbor, V1).unwrap(), deep);
        let deeper = json!([deep]);
        assert_eq!(json_to_cbor(&deeper, V1).unwrap_err().kind(), Kind::TooDeep);
        let mut cbor = vec![0x81; MAX_DEPTH + 1];
        cbor.push(0x01);
        assert_eq!(cbor_to_json(&cbor, V1), Err(at(Kind::TooDeep, MAX_DEPTH)));
    }

    #[test]
    fn malformed_cbor_is_an_error_with_its_offset() {
        let cases = [
            ("", at(Kind::Truncated, 0)),
            ("a1026261", at(Kind::LengthBeyondInput, 2)), // text longer than the input
            ("a10278ff61", at(Kind::LengthBeyondInput, 2)),
            ("a102", at(Kind::LengthBeyondInput, 0)), // value missing
            ("a1021a0001", at(Kind::Truncated, 2)),
            ("9b00000000ffffffff", at(Kind::LengthBeyondInput, 0)),
            ("bf0201ff", at(Kind::IndefiniteLength, 0)),
            ("a1027f6161ff", at(Kind::IndefiniteLength, 2)),
            ("9f01ff", at(Kind::IndefiniteLength, 0)),
            ("a102fb3ff8000000000000", at(Kind::Float, 2)),
            ("a102f93c00", at(Kind::Float, 2)),
            ("c11a514b67b0", at(Kind::Tag, 0)),
            ("f7", at(Kind::UnsupportedSimpleValue, 0)),
            ("a10262c328", at(Kind::InvalidUtf8, 2)), // invalid UTF-8
            ("a162c32801", at(Kind::InvalidUtf8, 1)), // invalid UTF-8 key
            ("a1f401", at(Kind::InvalidMapKey, 1)),   // bool key
            ("a12001", at(Kind::InvalidMapKey, 1)),   // negative key
            ("a1186901", at(Kind::UnknownIntegerKey, 1)), // 105 is v2 only
            ("a202010202", at(Kind::DuplicateKey, 3)),
            ("a1021b0020000000000000", at(Kind::IntegerOutOfRange, 2)),
            ("3b0020000000000000", at(Kind::IntegerOutOfRange, 0)),
            ("a1024100", at(Kind::UnexpectedByteString, 2)),
            ("0101", at(Kind::TrailingBytes, 1)),
            ("ff", at(Kind::Malformed, 0)),
            ("1c", at(Kind::Malformed, 0)),
            ("19ff", at(Kind::Truncated, 0)),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_error(input, V1), expected, "{input}");
        }
        assert_eq!(
            cbor_to_json(&hex::decode("a1186901").unwrap(), V2).unwrap(),
            json!({"device_one_time_keys_count": 1})
        );
        assert!(cbor_to_json(&hex::decode("1b001fffffffffffff").unwrap(), V1).is_ok());
    }

    #[test]
    fn errors_read_as_sentences_with_their_place() {
        assert_eq!(
            at(Kind::Tag, 7).to_string(),
            "CBOR tags are not allowed (at byte 7)"
        );
        let float = json_to_cbor(&json!({"x": 0.5}), V1).unwrap_err();
        assert_eq!(
            float.to_string(),
            "floating-point numbers are not allowed in Matrix JSON (at JSON value #1)"
        );
    }
}
