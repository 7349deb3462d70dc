//! The little JSON the token handles itself: Matrix canonical JSON for signing, and a
//! bounded reader of the JSON plaintexts inside Olm and Megolm messages.
//!
//! Matrix signs objects over their [canonical JSON] (keys sorted by code point, no
//! insignificant whitespace, UTF-8, minimal escapes), and encrypts JSON event payloads.
//! Everything else the token exchanges is CBOR (`jeton-proto`), but these two cannot be:
//! a signature covers JSON bytes, and the payload is opaque to the gateway. This module
//! owns both directions, without an allocator:
//!
//! - [`JsonWriter`] writes into a caller's buffer; [`write_canonical`] writes the canonical
//!   JSON of a received CBOR object (a peer's device keys, a claimed one-time key) so its
//!   signature can be checked, turning v2 byte strings back into unpadded base64.
//! - [`JsonObject`] reads an object without copying, validating the whole text first.
//!
//! [canonical JSON]: https://spec.matrix.org/latest/appendices/#canonical-json

use core::fmt;

use jeton_proto::view::{Map, Value};

/// Most keys of one object [`write_canonical`] sorts.
pub const MAX_CANONICAL_KEYS: usize = 16;
/// Deepest nesting [`write_canonical`] and [`JsonObject::parse`] accept.
pub const MAX_DEPTH: usize = 8;

/// Why JSON could not be written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// The output buffer is full.
    BufferTooSmall,
    /// The input is not JSON this module reads (or nests deeper than [`MAX_DEPTH`]).
    Malformed,
    /// An object has more keys than [`MAX_CANONICAL_KEYS`], or a CBOR value has no JSON form.
    Unsupported,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonError::BufferTooSmall => "the JSON does not fit in the buffer",
            JsonError::Malformed => "the JSON is malformed",
            JsonError::Unsupported => "the object cannot be written as canonical JSON here",
        })
    }
}

impl core::error::Error for JsonError {}

/// Writes JSON into a buffer; every method fails with [`JsonError::BufferTooSmall`] when
/// the buffer is full.
#[derive(Debug)]
pub struct JsonWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> JsonWriter<'b> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        JsonWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The JSON written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Appends bytes as they are (punctuation, or text known to need no escaping).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<&mut Self, JsonError> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(JsonError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(self)
    }

    /// A string with canonical escaping: `"` and `\`, the short escapes for control
    /// characters that have one, `\u00xx` for the others; everything else as UTF-8.
    pub fn string(&mut self, text: &str) -> Result<&mut Self, JsonError> {
        self.raw(b"\"")?;
        self.string_body(text)?;
        self.raw(b"\"")
    }

    /// A string made of several parts, escaped as one.
    pub fn string_parts(&mut self, parts: &[&str]) -> Result<&mut Self, JsonError> {
        self.raw(b"\"")?;
        for part in parts {
            self.string_body(part)?;
        }
        self.raw(b"\"")
    }

    fn string_body(&mut self, text: &str) -> Result<(), JsonError> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = text.as_bytes();
        let mut start = 0;
        for (at, byte) in bytes.iter().enumerate() {
            let escape: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            self.raw(bytes.get(start..at).unwrap_or_default())?;
            if escape.is_empty() {
                let hex = |n: u8| HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0');
                self.raw(&[b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(*byte)])?;
            } else {
                self.raw(escape)?;
            }
            start = at + 1;
        }
        self.raw(bytes.get(start..).unwrap_or_default())?;
        Ok(())
    }

    /// Bytes as a string of unpadded standard base64, as Matrix writes keys and signatures.
    pub fn base64(&mut self, bytes: &[u8]) -> Result<&mut Self, JsonError> {
        self.raw(b"\"")?;
        let encoded = jeton_olm::base64::encoded_len(bytes.len());
        let end = self.len + encoded;
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(JsonError::BufferTooSmall)?;
        jeton_olm::base64::encode(bytes, out).map_err(|_| JsonError::BufferTooSmall)?;
        self.len = end;
        self.raw(b"\"")
    }

    /// An integer.
    pub fn integer(&mut self, value: i64) -> Result<&mut Self, JsonError> {
        if value < 0 {
            self.raw(b"-")?;
        }
        let mut digits = [0u8; 20];
        let mut n = value.unsigned_abs();
        let mut at = digits.len();
        loop {
            at -= 1;
            if let Some(d) = digits.get_mut(at) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.raw(digits.get(at..).unwrap_or_default())
    }
}

/// Writes the canonical JSON of a CBOR `object`, leaving out its top-level keys named in
/// `skip` (Matrix signs objects without `signatures` and `unsigned`). Byte strings become
/// unpadded base64, as the JSON they were transcoded from had them.
pub fn write_canonical(
    out: &mut JsonWriter<'_>,
    object: Map<'_>,
    skip: &[&str],
) -> Result<(), JsonError> {
    write_map(out, object, skip, 0)
}

fn write_value(out: &mut JsonWriter<'_>, value: Value<'_>, depth: usize) -> Result<(), JsonError> {
    match value {
        Value::Null => out.raw(b"null").map(drop),
        Value::Bool(true) => out.raw(b"true").map(drop),
        Value::Bool(false) => out.raw(b"false").map(drop),
        Value::Integer(n) => out.integer(n).map(drop),
        Value::Text(text) => out.string(text).map(drop),
        Value::Bytes(bytes) => out.base64(bytes).map(drop),
        Value::Array(array) => {
            if depth >= MAX_DEPTH {
                return Err(JsonError::Unsupported);
            }
            out.raw(b"[")?;
            for (at, element) in array.iter().enumerate() {
                if at > 0 {
                    out.raw(b",")?;
                }
                write_value(out, element.map_err(|_| JsonError::Malformed)?, depth + 1)?;
            }
            out.raw(b"]").map(drop)
        }
        Value::Map(map) => write_map(out, map, &[], depth),
    }
}

fn write_map(
    out: &mut JsonWriter<'_>,
    map: Map<'_>,
    skip: &[&str],
    depth: usize,
) -> Result<(), JsonError> {
    if depth >= MAX_DEPTH {
        return Err(JsonError::Unsupported);
    }
    let mut entries: heapless::Vec<(&str, Value<'_>), MAX_CANONICAL_KEYS> = heapless::Vec::new();
    for entry in map.entries() {
        let (name, value) = entry.map_err(|_| JsonError::Malformed)?;
        if skip.contains(&name) {
            continue;
        }
        entries
            .push((name, value))
            .map_err(|_| JsonError::Unsupported)?;
    }
    // Code-point order is byte order in UTF-8. Insertion sort: at most
    // MAX_CANONICAL_KEYS entries, and a fraction of the flash of the library sort.
    for sorted in 1..entries.len() {
        let mut at = sorted;
        while at > 0 {
            let (Some(before), Some(current)) = (entries.get(at - 1), entries.get(at)) else {
                break;
            };
            if before.0.as_bytes() <= current.0.as_bytes() {
                break;
            }
            entries.swap(at - 1, at);
            at -= 1;
        }
    }
    out.raw(b"{")?;
    for (at, (name, value)) in entries.iter().enumerate() {
        if at > 0 {
            out.raw(b",")?;
        }
        out.string(name)?.raw(b":")?;
        write_value(out, *value, depth + 1)?;
    }
    out.raw(b"}").map(drop)
}

/// A JSON object read in place. [`JsonObject::parse`] validated the whole text, so the
/// accessors only fail on wrong types.
#[derive(Clone, Copy, Debug)]
pub struct JsonObject<'a> {
    /// From `{` to its `}`.
    text: &'a [u8],
}

/// A value of a [`JsonObject`] member.
#[derive(Clone, Copy, Debug)]
pub enum JsonValue<'a> {
    /// A string, still escaped.
    String(JsonStr<'a>),
    /// An object.
    Object(JsonObject<'a>),
    /// A number, boolean, null or array, as its text.
    Other(&'a [u8]),
}

/// A JSON string between its quotes, still escaped.
#[derive(Clone, Copy, Debug)]
pub struct JsonStr<'a>(&'a [u8]);

fn whitespace(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        at += 1;
    }
    at
}

/// The offset after the string starting (at its quote) at `at`.
fn skip_string(text: &[u8], at: usize) -> Result<usize, JsonError> {
    if text.get(at) != Some(&b'"') {
        return Err(JsonError::Malformed);
    }
    let mut pos = at + 1;
    loop {
        match text.get(pos) {
            None => return Err(JsonError::Malformed),
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => pos += 2,
            Some(0..=0x1f) => return Err(JsonError::Malformed),
            Some(_) => pos += 1,
        }
    }
}

/// The offset after the value at `at` (no leading whitespace).
fn skip_value(text: &[u8], at: usize, depth: usize) -> Result<usize, JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError::Malformed);
    }
    match text.get(at) {
        Some(b'"') => skip_string(text, at),
        Some(open @ (b'{' | b'[')) => {
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut pos = whitespace(text, at + 1);
            if text.get(pos) == Some(&close) {
                return Ok(pos + 1);
            }
            loop {
                if *open == b'{' {
                    pos = whitespace(text, skip_string(text, pos)?);
                    if text.get(pos) != Some(&b':') {
                        return Err(JsonError::Malformed);
                    }
                    pos = whitespace(text, pos + 1);
                }
                pos = whitespace(text, skip_value(text, pos, depth + 1)?);
                match text.get(pos) {
                    Some(b',') => pos = whitespace(text, pos + 1),
                    Some(c) if *c == close => return Ok(pos + 1),
                    _ => return Err(JsonError::Malformed),
                }
            }
        }
        Some(b't') if text.get(at..at + 4) == Some(b"true") => Ok(at + 4),
        Some(b'f') if text.get(at..at + 5) == Some(b"false") => Ok(at + 5),
        Some(b'n') if text.get(at..at + 4) == Some(b"null") => Ok(at + 4),
        Some(b'-' | b'0'..=b'9') => {
            let mut pos = at + 1;
            while matches!(
                text.get(pos),
                Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            ) {
                pos += 1;
            }
            Ok(pos)
        }
        _ => Err(JsonError::Malformed),
    }
}

impl<'a> JsonObject<'a> {
    /// Reads `text`, which must be one JSON object (whitespace around it allowed).
    pub fn parse(text: &'a [u8]) -> Result<Self, JsonError> {
        let start = whitespace(text, 0);
        if text.get(start) != Some(&b'{') {
            return Err(JsonError::Malformed);
        }
        let end = skip_value(text, start, 0)?;
        if whitespace(text, end) != text.len() {
            return Err(JsonError::Malformed);
        }
        core::str::from_utf8(text).map_err(|_| JsonError::Malformed)?;
        Ok(JsonObject {
            text: text.get(start..end).unwrap_or_default(),
        })
    }

    /// The member `key` (compared with the key as written; keys with escapes never match).
    /// With a key given twice, the last one wins, as most JSON parsers do.
    pub fn get(&self, key: &str) -> Option<JsonValue<'a>> {
        let text = self.text;
        let mut pos = whitespace(text, 1);
        let mut found = None;
        while text.get(pos) == Some(&b'"') {
            let key_end = skip_string(text, pos).ok()?;
            let name = text.get(pos + 1..key_end - 1)?;
            let value_at = whitespace(text, whitespace(text, key_end) + 1);
            let value_end = skip_value(text, value_at, 0).ok()?;
            if name == key.as_bytes() {
                let raw = text.get(value_at..value_end)?;
                found = Some(match raw.first() {
                    Some(b'"') => JsonValue::String(JsonStr(raw.get(1..raw.len() - 1)?)),
                    Some(b'{') => JsonValue::Object(JsonObject { text: raw }),
                    _ => JsonValue::Other(raw),
                });
            }
            pos = whitespace(text, value_end);
            if text.get(pos) == Some(&b',') {
                pos = whitespace(text, pos + 1);
            }
        }
        found
    }

    /// The string member `key`.
    pub fn string(&self, key: &str) -> Option<JsonStr<'a>> {
        match self.get(key)? {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object member `key`.
    pub fn object(&self, key: &str) -> Option<JsonObject<'a>> {
        match self.get(key)? {
            JsonValue::Object(o) => Some(o),
            _ => None,
        }
    }
}

impl<'a> JsonStr<'a> {
    /// The string as written, if it has no escapes (ids, keys, algorithm names).
    pub fn plain(&self) -> Option<&'a str> {
        if self.0.contains(&b'\\') {
            return None;
        }
        core::str::from_utf8(self.0).ok()
    }

    /// Unescapes the string into `out`; returns the text written.
    pub fn unescape<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, JsonError> {
        let mut len = 0;
        let mut push = |bytes: &[u8], len: &mut usize| -> Result<(), JsonError> {
            let end = *len + bytes.len();
            out.get_mut(*len..end)
                .ok_or(JsonError::BufferTooSmall)?
                .copy_from_slice(bytes);
            *len = end;
            Ok(())
        };
        let text = self.0;
        let mut at = 0;
        while let Some(byte) = text.get(at) {
            if *byte != b'\\' {
                push(&[*byte], &mut len)?;
                at += 1;
                continue;
            }
            let simple = match text.get(at + 1) {
                Some(b'"') => b'"',
                Some(b'\\') => b'\\',
                Some(b'/') => b'/',
                Some(b'b') => 0x08,
                Some(b'f') => 0x0c,
                Some(b'n') => b'\n',
                Some(b'r') => b'\r',
                Some(b't') => b'\t',
                Some(b'u') => 0,
                _ => return Err(JsonError::Malformed),
            };
            if text.get(at + 1) != Some(&b'u') {
                push(&[simple], &mut len)?;
                at += 2;
                continue;
            }
            let mut code = hex4(text.get(at + 2..at + 6))?;
            at += 6;
            if (0xD800..0xDC00).contains(&code) {
                if text.get(at..at + 2) != Some(b"\\u") {
                    return Err(JsonError::Malformed);
                }
                let low = hex4(text.get(at + 2..at + 6))?;
                if !(0xDC00..0xE000).contains(&low) {
                    return Err(JsonError::Malformed);
                }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                at += 6;
            }
            let ch = char::from_u32(code).ok_or(JsonError::Malformed)?;
            let mut utf8 = [0u8; 4];
            push(ch.encode_utf8(&mut utf8).as_bytes(), &mut len)?;
        }
        let written = out.get(..len).unwrap_or_default();
        core::str::from_utf8(written).map_err(|_| JsonError::Malformed)
    }
}

fn hex4(digits: Option<&[u8]>) -> Result<u32, JsonError> {
    let digits = digits.ok_or(JsonError::Malformed)?;
    digits.iter().try_fold(0u32, |acc, d| {
        let v = (*d as char).to_digit(16).ok_or(JsonError::Malformed)?;
        Ok(acc << 4 | v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jeton_proto::TableVersion;
    use jeton_proto::transcode::json_to_cbor;
    use proptest::prelude::*;
    use serde_json::json;

    /// serde_json with its default sorted maps and compact output is canonical JSON for
    /// integers and strings: the reference.
    fn reference(value: &serde_json::Value) -> String {
        serde_json::to_string(value).unwrap()
    }

    fn canonical_of(value: &serde_json::Value, skip: &[&str]) -> String {
        let cbor = json_to_cbor(value, TableVersion::V2).unwrap();
        let Value::Map(map) = Value::parse(&cbor, TableVersion::V2).unwrap() else {
            panic!("not a map")
        };
        let mut buf = [0u8; 2048];
        let mut w = JsonWriter::new(&mut buf);
        write_canonical(&mut w, map, skip).unwrap();
        String::from_utf8(w.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn canonical_json_of_device_keys_matches_the_reference_without_signatures() {
        // The shape of a keys/query device from the Matrix spec's example.
        let device = json!({
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "device_id": "JLAFKJWSCS",
            "keys": {
                "curve25519:JLAFKJWSCS": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
                "ed25519:JLAFKJWSCS": "lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI"
            },
            "signatures": {"@alice:example.com": {"ed25519:JLAFKJWSCS": "dSO80A01XiigH3uBiDVx/EjzaoycHcjq9lfQX0uWsqxl2giMIiSPR8a4d291W1ihKJL/a+myXS367WT6NAIcBA"}},
            "unsigned": {"device_display_name": "Alice's \"mobile\"\n phone"},
            "user_id": "@alice:example.com"
        });
        let mut expected = device.clone();
        expected.as_object_mut().unwrap().remove("signatures");
        expected.as_object_mut().unwrap().remove("unsigned");
        assert_eq!(
            canonical_of(&device, &["signatures", "unsigned"]),
            reference(&expected)
        );
        // With the escapes of the display name kept.
        assert_eq!(canonical_of(&device, &[]), reference(&device));
    }

    proptest! {
        #[test]
        fn canonical_strings_and_integers_match_the_reference(
            keys in proptest::collection::btree_map("[a-z\\x00-\\x1f\"\\\\é€😀]{0,8}", "\\PC{0,12}", 0..8),
            n in -(1i64 << 53) + 1..(1i64 << 53),
        ) {
            let mut object = serde_json::Map::new();
            for (k, v) in &keys {
                object.insert(k.clone(), json!(v));
            }
            object.insert("n".into(), json!(n));
            let value = serde_json::Value::Object(object);
            prop_assert_eq!(canonical_of(&value, &[]), reference(&value));
        }

        #[test]
        fn the_reader_unescapes_what_serde_json_escapes(text in "\\PC{0,40}|[\\x00-\\x1f\"\\\\/]{0,10}") {
            let doc = serde_json::to_vec(&json!({"a": {"b": text.clone()}, "n": [1, {"x": null}]})).unwrap();
            let object = JsonObject::parse(&doc).unwrap();
            let mut out = [0u8; 256];
            let read = object.object("a").unwrap().string("b").unwrap().unescape(&mut out).unwrap();
            prop_assert_eq!(read, text.as_str());
        }

        #[test]
        fn the_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(object) = JsonObject::parse(&bytes) {
                let _ = object.get("type");
            }
        }
    }

    #[test]
    fn the_reader_rejects_malformed_json_and_reads_escaped_surrogates() {
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"[1]",
            b"{\"a\":1} x",
            b"{\"a\" 1}",
            b"{\"a\":tru}",
        ] {
            assert_eq!(JsonObject::parse(bad).unwrap_err(), JsonError::Malformed);
        }
        let object = JsonObject::parse(br#" {"s":"\ud83d\ude00 \u00e9", "s":"last"} "#).unwrap();
        assert_eq!(object.string("s").unwrap().plain(), Some("last"));
        let object = JsonObject::parse(br#"{"s":"\ud83d\ude00 \u00e9"}"#).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(object.string("s").unwrap().unescape(&mut out), Ok("😀 é"));
        assert_eq!(
            object.string("s").unwrap().unescape(&mut [0u8; 3]),
            Err(JsonError::BufferTooSmall)
        );
    }
}
