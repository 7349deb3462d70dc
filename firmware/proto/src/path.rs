//! The CoAP path table: Matrix Client-Server API paths <-> MSC3079 short paths.
//!
//! A short path is `/<enum>/<param1>/<param2>...`: the enum names a path template of the table and the
//! parameters are the template's `{...}` segments, left to right (MSC3079 Appendix B). Version 1 has the 57
//! MSC3079 enums (`0`-`9`, `A`-`Z`, `a`-`u`) for the `r0` API. Version 2 appends, never renumbering,
//! the `/v3/` paths: the five busiest take the free one-character enums `v`-`z`, the `/v3/` twin of every
//! other `r0` path is `3` followed by its v1 enum, and five `/v3/` paths that v1 lacks take `3v`-`3z`.
//! One v2 template has a literal where `w` has a parameter: `we` is `w` with the event type
//! `m.room.encrypted` implied. Compression picks the matching template with the fewest parameters, so
//! such a path always gets the shorter form. The media paths (upload, authenticated download, config) take
//! `M` + a letter: `Mu`, `Md`, `Mc`.
//!
//! Paths are percent-encoded (RFC 3986). Parameters are decoded and re-encoded canonically, encoding only
//! what a path segment cannot hold as it is: every byte except RFC 3986's `pchar` (the unreserved
//! characters `A-Z a-z 0-9 - . _ ~`, the sub-delimiters `! $ & ' ( ) * + , ; =`, `:` and `@`) becomes
//! `%XX` (upper-case hex), so `!room:server` stays `!room:server` and `$ev/1` is `$ev%2F1`, as in
//! MSC3079's own example. A path that matches no template passes through unchanged, and so does a short
//! path whose first segment is not an enum. A query string (`?...`) is kept as it is. [`expand_segments`],
//! the gateway's way from CoAP options to the URL it sends a homeserver, escapes every byte but the
//! unreserved ones, as a careful HTTP client does (a homeserver decodes both forms alike).

use core::fmt::Write;

pub mod endpoint;

use crate::TableVersion;

/// How many entries of [`COAP_PATHS`] MSC3079 version 1 defines.
pub const V1_PATH_COUNT: usize = 57;

/// Every path enum with its template, in table order: the first [`V1_PATH_COUNT`] are MSC3079 v1.
pub static COAP_PATHS: [(&str, &str); 122] = [
    // MSC3079 v1, Appendix B (57 enums). Never change these.
    ("0", "/_matrix/client/versions"),
    ("1", "/_matrix/client/r0/login"),
    ("2", "/_matrix/client/r0/capabilities"),
    ("3", "/_matrix/client/r0/logout"),
    ("4", "/_matrix/client/r0/register"),
    ("5", "/_matrix/client/r0/user/{userId}/filter"),
    ("6", "/_matrix/client/r0/user/{userId}/filter/{filterId}"),
    ("7", "/_matrix/client/r0/sync"),
    (
        "8",
        "/_matrix/client/r0/rooms/{roomId}/state/{eventType}/{stateKey}",
    ),
    (
        "9",
        "/_matrix/client/r0/rooms/{roomId}/send/{eventType}/{txnId}",
    ),
    ("A", "/_matrix/client/r0/rooms/{roomId}/event/{eventId}"),
    ("B", "/_matrix/client/r0/rooms/{roomId}/state"),
    ("C", "/_matrix/client/r0/rooms/{roomId}/members"),
    ("D", "/_matrix/client/r0/rooms/{roomId}/joined_members"),
    ("E", "/_matrix/client/r0/rooms/{roomId}/messages"),
    (
        "F",
        "/_matrix/client/r0/rooms/{roomId}/redact/{eventId}/{txnId}",
    ),
    ("G", "/_matrix/client/r0/createRoom"),
    ("H", "/_matrix/client/r0/directory/room/{roomAlias}"),
    ("I", "/_matrix/client/r0/joined_rooms"),
    ("J", "/_matrix/client/r0/rooms/{roomId}/invite"),
    ("K", "/_matrix/client/r0/rooms/{roomId}/join"),
    ("L", "/_matrix/client/r0/join/{roomIdOrAlias}"),
    ("M", "/_matrix/client/r0/rooms/{roomId}/leave"),
    ("N", "/_matrix/client/r0/rooms/{roomId}/forget"),
    ("O", "/_matrix/client/r0/rooms/{roomId}/kick"),
    ("P", "/_matrix/client/r0/rooms/{roomId}/ban"),
    ("Q", "/_matrix/client/r0/rooms/{roomId}/unban"),
    ("R", "/_matrix/client/r0/directory/list/room/{roomId}"),
    ("S", "/_matrix/client/r0/publicRooms"),
    ("T", "/_matrix/client/r0/user_directory/search"),
    ("U", "/_matrix/client/r0/profile/{userId}/displayname"),
    ("V", "/_matrix/client/r0/profile/{userId}/avatar_url"),
    ("W", "/_matrix/client/r0/profile/{userId}"),
    ("X", "/_matrix/client/r0/voip/turnServer"),
    ("Y", "/_matrix/client/r0/rooms/{roomId}/typing/{userId}"),
    (
        "Z",
        "/_matrix/client/r0/rooms/{roomId}/receipt/{receiptType}/{eventId}",
    ),
    ("a", "/_matrix/client/r0/rooms/{roomId}/read_markers"),
    ("b", "/_matrix/client/r0/presence/{userId}/status"),
    ("c", "/_matrix/client/r0/sendToDevice/{eventType}/{txnId}"),
    ("d", "/_matrix/client/r0/devices"),
    ("e", "/_matrix/client/r0/devices/{deviceId}"),
    ("f", "/_matrix/client/r0/delete_devices"),
    ("g", "/_matrix/client/r0/keys/upload"),
    ("h", "/_matrix/client/r0/keys/query"),
    ("i", "/_matrix/client/r0/keys/claim"),
    ("j", "/_matrix/client/r0/keys/changes"),
    ("k", "/_matrix/client/r0/pushers"),
    ("l", "/_matrix/client/r0/pushers/set"),
    ("m", "/_matrix/client/r0/notifications"),
    ("n", "/_matrix/client/r0/pushrules/"),
    ("o", "/_matrix/client/r0/search"),
    ("p", "/_matrix/client/r0/user/{userId}/rooms/{roomId}/tags"),
    (
        "q",
        "/_matrix/client/r0/user/{userId}/rooms/{roomId}/tags/{tag}",
    ),
    ("r", "/_matrix/client/r0/user/{userId}/account_data/{type}"),
    (
        "s",
        "/_matrix/client/r0/user/{userId}/rooms/{roomId}/account_data/{type}",
    ),
    ("t", "/_matrix/client/r0/rooms/{roomId}/context/{eventId}"),
    ("u", "/_matrix/client/r0/rooms/{roomId}/report/{eventId}"),
    // jeton v2, append-only: the busiest /v3/ paths of a token get the five free one-character enums ...
    ("v", "/_matrix/client/v3/sync"),
    (
        "w",
        "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
    ),
    ("x", "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}"),
    ("y", "/_matrix/client/v3/keys/claim"),
    ("z", "/_matrix/client/v3/keys/upload"),
    // ... every other r0 path of v1 has its /v3/ twin at "3" + the v1 enum ...
    ("31", "/_matrix/client/v3/login"),
    ("32", "/_matrix/client/v3/capabilities"),
    ("33", "/_matrix/client/v3/logout"),
    ("34", "/_matrix/client/v3/register"),
    ("35", "/_matrix/client/v3/user/{userId}/filter"),
    ("36", "/_matrix/client/v3/user/{userId}/filter/{filterId}"),
    (
        "38",
        "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
    ),
    ("3A", "/_matrix/client/v3/rooms/{roomId}/event/{eventId}"),
    ("3B", "/_matrix/client/v3/rooms/{roomId}/state"),
    ("3C", "/_matrix/client/v3/rooms/{roomId}/members"),
    ("3D", "/_matrix/client/v3/rooms/{roomId}/joined_members"),
    ("3E", "/_matrix/client/v3/rooms/{roomId}/messages"),
    (
        "3F",
        "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}",
    ),
    ("3G", "/_matrix/client/v3/createRoom"),
    ("3H", "/_matrix/client/v3/directory/room/{roomAlias}"),
    ("3I", "/_matrix/client/v3/joined_rooms"),
    ("3J", "/_matrix/client/v3/rooms/{roomId}/invite"),
    ("3K", "/_matrix/client/v3/rooms/{roomId}/join"),
    ("3L", "/_matrix/client/v3/join/{roomIdOrAlias}"),
    ("3M", "/_matrix/client/v3/rooms/{roomId}/leave"),
    ("3N", "/_matrix/client/v3/rooms/{roomId}/forget"),
    ("3O", "/_matrix/client/v3/rooms/{roomId}/kick"),
    ("3P", "/_matrix/client/v3/rooms/{roomId}/ban"),
    ("3Q", "/_matrix/client/v3/rooms/{roomId}/unban"),
    ("3R", "/_matrix/client/v3/directory/list/room/{roomId}"),
    ("3S", "/_matrix/client/v3/publicRooms"),
    ("3T", "/_matrix/client/v3/user_directory/search"),
    ("3U", "/_matrix/client/v3/profile/{userId}/displayname"),
    ("3V", "/_matrix/client/v3/profile/{userId}/avatar_url"),
    ("3W", "/_matrix/client/v3/profile/{userId}"),
    ("3X", "/_matrix/client/v3/voip/turnServer"),
    ("3Y", "/_matrix/client/v3/rooms/{roomId}/typing/{userId}"),
    (
        "3Z",
        "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}",
    ),
    ("3a", "/_matrix/client/v3/rooms/{roomId}/read_markers"),
    ("3b", "/_matrix/client/v3/presence/{userId}/status"),
    ("3d", "/_matrix/client/v3/devices"),
    ("3e", "/_matrix/client/v3/devices/{deviceId}"),
    ("3f", "/_matrix/client/v3/delete_devices"),
    ("3h", "/_matrix/client/v3/keys/query"),
    ("3j", "/_matrix/client/v3/keys/changes"),
    ("3k", "/_matrix/client/v3/pushers"),
    ("3l", "/_matrix/client/v3/pushers/set"),
    ("3m", "/_matrix/client/v3/notifications"),
    ("3n", "/_matrix/client/v3/pushrules/"),
    ("3o", "/_matrix/client/v3/search"),
    ("3p", "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags"),
    (
        "3q",
        "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}",
    ),
    ("3r", "/_matrix/client/v3/user/{userId}/account_data/{type}"),
    (
        "3s",
        "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
    ),
    ("3t", "/_matrix/client/v3/rooms/{roomId}/context/{eventId}"),
    ("3u", "/_matrix/client/v3/rooms/{roomId}/report/{eventId}"),
    // ... and the /v3/ paths v1 lacks take the free "3" + one-character codes.
    ("3v", "/_matrix/client/v3/rooms/{roomId}/state/{eventType}"),
    ("3w", "/_matrix/client/v3/account/whoami"),
    ("3x", "/_matrix/client/v3/logout/all"),
    ("3y", "/_matrix/client/v3/keys/signatures/upload"),
    ("3z", "/_matrix/client/v3/keys/device_signing/upload"),
    // A token's one busy path with a fixed event type: sending an encrypted room event. The type is
    // implied by the enum, which saves the 17-byte `m.room.encrypted` Uri-Path option on every send.
    (
        "we",
        "/_matrix/client/v3/rooms/{roomId}/send/m.room.encrypted/{txnId}",
    ),
    // Media (encrypted attachments): `M` + a letter, so the media family stays together. Their bodies are
    // raw bytes, never CBOR (PROFILE.md section 7).
    ("Mu", "/_matrix/media/v3/upload"),
    (
        "Md",
        "/_matrix/client/v1/media/download/{serverName}/{mediaId}",
    ),
    ("Mc", "/_matrix/client/v1/media/config"),
];

/// Why a path could not be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` at this byte offset is not followed by two hex digits.
    InvalidPercentEncoding {
        /// Byte offset of the `%` in the input.
        offset: usize,
    },
    /// A short path names a known enum but carries the wrong number of parameters.
    ParameterCount {
        /// Parameters the enum's template has.
        expected: usize,
        /// Parameters the short path carries.
        found: usize,
    },
    /// The output writer refused the text.
    Output,
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotAbsolute => write!(f, "the path does not start with '/' (at byte 0)"),
            Self::InvalidPercentEncoding { offset } => {
                write!(
                    f,
                    "'%' is not followed by two hex digits (at byte {offset})"
                )
            }
            Self::ParameterCount { expected, found } => write!(
                f,
                "the path enum takes {expected} parameter(s) but the short path has {found}"
            ),
            Self::Output => write!(f, "the output buffer refused the path"),
        }
    }
}

impl core::error::Error for PathError {}

impl From<core::fmt::Error> for PathError {
    fn from(_: core::fmt::Error) -> Self {
        Self::Output
    }
}

/// The entries of the table that `version` defines.
pub fn table(version: TableVersion) -> &'static [(&'static str, &'static str)] {
    match version {
        TableVersion::V1 => COAP_PATHS.get(..V1_PATH_COUNT).unwrap_or(&[]),
        TableVersion::V2 => &COAP_PATHS,
    }
}

/// The template that short-path enum `code` names under `version`.
pub fn template_for_enum(code: &str, version: TableVersion) -> Option<&'static str> {
    table(version)
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, template)| *template)
}

/// The enum of `template` (written exactly as in the table, e.g. `/_matrix/client/v3/sync`) under `version`.
pub fn enum_for_template(template: &str, version: TableVersion) -> Option<&'static str> {
    table(version)
        .iter()
        .find(|(_, known)| *known == template)
        .map(|(code, _)| *code)
}

fn is_parameter(template_segment: &str) -> bool {
    template_segment.starts_with('{')
}

fn parameter_count(template: &str) -> usize {
    template.split('/').filter(|s| is_parameter(s)).count()
}

fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(at) => path.split_at(at),
        None => (path, ""),
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The upper-case hex digit of a nibble (`nibble` < 16).
fn hex_digit(nibble: u8) -> char {
    char::from(if nibble < 10 {
        b'0' + nibble
    } else {
        b'A' + nibble - 10
    })
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether RFC 3986 lets `byte` stand for itself in a path segment (`pchar`): the unreserved
/// characters, the sub-delimiters, `:` and `@`.
fn is_segment_char(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Writes `bytes` percent-encoded: the bytes `keep` accepts as they are, every other byte as `%XX`.
fn write_encoded(
    bytes: impl IntoIterator<Item = u8>,
    keep: fn(u8) -> bool,
    out: &mut impl Write,
) -> core::fmt::Result {
    for byte in bytes {
        if keep(byte) {
            out.write_char(char::from(byte))?;
        } else {
            // Written by hand rather than with `write!`: core's integer formatting costs flash on a token.
            out.write_char('%')?;
            out.write_char(hex_digit(byte >> 4))?;
            out.write_char(hex_digit(byte & 0x0f))?;
        }
    }
    Ok(())
}

/// The bytes a percent-encoded segment stands for; `offset` is the segment's offset in the whole input,
/// for the error.
struct PercentDecoded<'a> {
    text: &'a [u8],
    at: usize,
    offset: usize,
}

impl Iterator for PercentDecoded<'_> {
    type Item = Result<u8, PathError>;

    fn next(&mut self) -> Option<Self::Item> {
        let byte = *self.text.get(self.at)?;
        if byte != b'%' {
            self.at += 1;
            return Some(Ok(byte));
        }
        let high = self.text.get(self.at + 1).copied().and_then(hex_value);
        let low = self.text.get(self.at + 2).copied().and_then(hex_value);
        match (high, low) {
            (Some(high), Some(low)) => {
                self.at += 3;
                Some(Ok(high << 4 | low))
            }
            _ => {
                let offset = self.offset + self.at;
                self.at = self.text.len();
                Some(Err(PathError::InvalidPercentEncoding { offset }))
            }
        }
    }
}

fn percent_decoded(segment: &str, offset: usize) -> PercentDecoded<'_> {
    PercentDecoded {
        text: segment.as_bytes(),
        at: 0,
        offset,
    }
}

/// Checks that a percent-encoded segment is well formed, so nothing is written for a bad path.
fn check_encoding(segment: &str, offset: usize) -> Result<(), PathError> {
    percent_decoded(segment, offset).try_for_each(|byte| byte.map(drop))
}

/// Writes a percent-encoded segment in canonical encoding (only what a segment cannot hold escaped).
fn write_recoded(segment: &str, offset: usize, out: &mut impl Write) -> Result<(), PathError> {
    check_encoding(segment, offset)?;
    write_encoded(
        percent_decoded(segment, offset).flatten(),
        is_segment_char,
        out,
    )?;
    Ok(())
}

/// Segments of an absolute path with their byte offsets (the leading empty segment before `/` skipped).
fn segments_with_offsets(path: &str) -> impl Iterator<Item = (usize, &str)> + Clone {
    path.split('/').scan(0usize, |offset, segment| {
        let at = *offset;
        *offset += segment.len() + 1;
        Some((at, segment))
    })
}

fn matches(template: &str, path: &str) -> bool {
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if is_parameter(w) || w == g => {}
            _ => return false,
        }
    }
}

/// Compresses a full, percent-encoded HTTP path (with or without a query) into its short path under
/// `version`: `/_matrix/client/r0/rooms/!r:s/send/m.room.message/t1` becomes
/// `/9/!r:s/m.room.message/t1`. A path no template matches is written unchanged.
pub fn compress(full: &str, version: TableVersion, out: &mut impl Write) -> Result<(), PathError> {
    if !full.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let (path, query) = split_query(full);
    // The fewest parameters wins (the first on a tie): `we` (event type implied) over `w`.
    let Some((code, template)) = table(version)
        .iter()
        .filter(|(_, template)| matches(template, path))
        .min_by_key(|(_, template)| parameter_count(template))
    else {
        out.write_str(full)?;
        return Ok(());
    };
    let parameters = || {
        template
            .split('/')
            .zip(segments_with_offsets(path))
            .filter(|(wanted, _)| is_parameter(wanted))
            .map(|(_, given)| given)
    };
    for (offset, segment) in parameters() {
        check_encoding(segment, offset)?;
    }
    out.write_char('/')?;
    out.write_str(code)?;
    for (offset, segment) in parameters() {
        out.write_char('/')?;
        write_recoded(segment, offset, out)?;
    }
    out.write_str(query)?;
    Ok(())
}

/// Expands a short path (percent-encoded, with or without a query) into the full HTTP path under
/// `version`. A short path whose first segment is not an enum of `version` is written unchanged.
pub fn expand(short: &str, version: TableVersion, out: &mut impl Write) -> Result<(), PathError> {
    if !short.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let (path, query) = split_query(short);
    let mut segments = segments_with_offsets(path).skip(1);
    let Some(template) = segments
        .next()
        .and_then(|(_, code)| template_for_enum(code, version))
    else {
        out.write_str(short)?;
        return Ok(());
    };
    let expected = parameter_count(template);
    let found = segments.clone().count();
    if expected != found {
        return Err(PathError::ParameterCount { expected, found });
    }
    for (offset, segment) in segments.clone() {
        check_encoding(segment, offset)?;
    }
    for (index, part) in template.split('/').enumerate() {
        if index > 0 {
            out.write_char('/')?;
        }
        if is_parameter(part) {
            if let Some((offset, segment)) = segments.next() {
                write_recoded(segment, offset, out)?;
            }
        } else {
            out.write_str(part)?;
        }
    }
    out.write_str(query)?;
    Ok(())
}

/// Expands CoAP Uri-Path segments (already unescaped, as CoAP carries them) into the full percent-encoded
/// HTTP path under `version`, every byte but the unreserved characters escaped (the URL a gateway sends a
/// homeserver). If the first segment is not an enum, the segments are joined as they are (each
/// percent-encoded); no segments at all give `/`.
pub fn expand_segments<'a>(
    segments: impl IntoIterator<Item = &'a str>,
    version: TableVersion,
    out: &mut impl Write,
) -> Result<(), PathError> {
    let mut segments = segments.into_iter().peekable();
    let template = segments
        .peek()
        .and_then(|code| template_for_enum(code, version));
    let Some(template) = template else {
        let mut any = false;
        for segment in segments {
            out.write_char('/')?;
            write_encoded(segment.bytes(), is_unreserved, out)?;
            any = true;
        }
        if !any {
            out.write_char('/')?;
        }
        return Ok(());
    };
    segments.next();
    // Without an allocator the segments cannot be collected, and the iterator may not be cloneable:
    // parameters are counted while written, and a surplus is counted after the template.
    let expected = parameter_count(template);
    let mut found = 0usize;
    let mut counted = segments.by_ref().inspect(|_| found += 1);
    let mut short_of_parameters = false;
    for (index, part) in template.split('/').enumerate() {
        if index > 0 {
            out.write_char('/')?;
        }
        if is_parameter(part) {
            match counted.next() {
                Some(parameter) => write_encoded(parameter.bytes(), is_unreserved, out)?,
                None => short_of_parameters = true,
            }
        } else {
            out.write_str(part)?;
        }
    }
    counted.for_each(drop);
    if short_of_parameters || found != expected {
        return Err(PathError::ParameterCount { expected, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TableVersion::{V1, V2};

    fn compressed(full: &str, version: TableVersion) -> Result<String, PathError> {
        let mut out = String::new();
        compress(full, version, &mut out).map(|()| out)
    }

    fn expanded(short: &str, version: TableVersion) -> Result<String, PathError> {
        let mut out = String::new();
        expand(short, version, &mut out).map(|()| out)
    }

    fn expanded_segments(segments: &[&str], version: TableVersion) -> Result<String, PathError> {
        let mut out = String::new();
        expand_segments(segments.iter().copied(), version, &mut out).map(|()| out)
    }

    /// Fills a template's parameters with `p0`, `p1`, ... .
    fn instance(template: &str) -> (String, Vec<String>) {
        let mut parameters = Vec::new();
        let full = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    parameters.push(format!("p{}", parameters.len()));
                    parameters.last().unwrap().clone()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        (full, parameters)
    }

    #[test]
    fn v1_table_matches_msc3079_appendix_b() {
        let tsv = include_str!("../tables/coap-paths-v1.tsv");
        let rows: Vec<_> = tsv
            .lines()
            .skip(1)
            .map(|line| line.split_once('\t').unwrap())
            .collect();
        assert_eq!(rows.len(), V1_PATH_COUNT);
        assert_eq!(table(V1).len(), V1_PATH_COUNT);
        for ((code, template), row) in table(V1).iter().zip(&rows) {
            assert_eq!((*code, *template), *row);
            assert_eq!(template_for_enum(code, V1), Some(*template));
            assert_eq!(template_for_enum(code, V2), Some(*template), "v2 keeps v1");
        }
    }

    #[test]
    fn every_table_entry_maps_both_ways() {
        for version in [V1, V2] {
            for (code, template) in table(version) {
                let (full, parameters) = instance(template);
                let mut short = format!("/{code}");
                for parameter in &parameters {
                    short.push('/');
                    short.push_str(parameter);
                }
                assert_eq!(compressed(&full, version).unwrap(), short, "{template}");
                assert_eq!(expanded(&short, version).unwrap(), full, "{code}");
                let segments: Vec<&str> = short.split('/').skip(1).collect();
                assert_eq!(expanded_segments(&segments, version).unwrap(), full);
                assert_eq!(enum_for_template(template, version), Some(*code));
            }
        }
    }

    #[test]
    fn enums_and_templates_are_unique_and_v2_paths_are_v3_or_media() {
        for (index, (code, template)) in COAP_PATHS.iter().enumerate() {
            assert_eq!(
                COAP_PATHS.iter().filter(|(c, _)| c == code).count(),
                1,
                "{code}"
            );
            assert_eq!(COAP_PATHS.iter().filter(|(_, t)| t == template).count(), 1);
            assert!(code.bytes().all(is_unreserved), "{code} needs no escaping");
            if index >= V1_PATH_COUNT {
                let media = code.starts_with('M');
                assert_eq!(
                    media,
                    template.starts_with("/_matrix/media/v3/")
                        || template.starts_with("/_matrix/client/v1/media/"),
                    "{code} {template}"
                );
                assert!(
                    media || template.starts_with("/_matrix/client/v3/"),
                    "{template}"
                );
                assert!(code.len() <= 2);
            }
        }
    }

    #[test]
    fn an_encrypted_send_takes_the_enum_with_the_type_implied() {
        let full = "/_matrix/client/v3/rooms/!r:s/send/m.room.encrypted/t1";
        assert_eq!(compressed(full, V2).unwrap(), "/we/!r:s/t1");
        // The general form still means the same request, so an older client keeps working.
        assert_eq!(expanded("/w/!r:s/m.room.encrypted/t1", V2).unwrap(), full);
        assert_eq!(expanded("/we/%21r%3As/t1", V2).unwrap(), full);
        assert_eq!(
            expanded_segments(&["we", "!r:s", "t1"], V2).unwrap(),
            "/_matrix/client/v3/rooms/%21r%3As/send/m.room.encrypted/t1"
        );
        // Unknown to v1: forwarded as it is.
        assert_eq!(expanded("/we/%21r%3As/t1", V1).unwrap(), "/we/%21r%3As/t1");
        // A different event type, or an encoded variant of the literal, keeps the general enum.
        assert_eq!(
            compressed("/_matrix/client/v3/rooms/r/send/m.room.encrypted2/t", V2).unwrap(),
            "/w/r/m.room.encrypted2/t"
        );
        assert_eq!(
            expanded("/we/r", V2),
            Err(PathError::ParameterCount {
                expected: 2,
                found: 1
            })
        );
    }

    #[test]
    fn media_paths_take_the_m_enums() {
        assert_eq!(
            compressed("/_matrix/media/v3/upload?filename=a%20b.txt", V2).unwrap(),
            "/Mu?filename=a%20b.txt"
        );
        assert_eq!(
            expanded_segments(&["Md", "example.org", "AbC123"], V2).unwrap(),
            "/_matrix/client/v1/media/download/example.org/AbC123"
        );
        assert_eq!(
            compressed("/_matrix/client/v1/media/config", V2).unwrap(),
            "/Mc"
        );
        // The unauthenticated v3 download is deprecated: no enum, forwarded as it is.
        let legacy = "/_matrix/media/v3/download/example.org/AbC123";
        assert_eq!(compressed(legacy, V2).unwrap(), legacy);
    }

    #[test]
    fn v2_paths_are_unknown_to_v1_and_pass_through() {
        let full = "/_matrix/client/v3/sync?since=s72594_4483_1934&timeout=30000";
        assert_eq!(
            compressed(full, V2).unwrap(),
            "/v?since=s72594_4483_1934&timeout=30000"
        );
        assert_eq!(compressed(full, V1).unwrap(), full);
        assert_eq!(expanded("/v?timeout=0", V1).unwrap(), "/v?timeout=0");
        assert_eq!(
            expanded("/v?timeout=0", V2).unwrap(),
            "/_matrix/client/v3/sync?timeout=0"
        );
    }

    #[test]
    fn msc3079s_own_example_compresses_to_the_msc_short_path() {
        // MSC3079's example: `!`, `:` and `$` may stand in a path segment as they are (RFC 3986
        // `pchar`), so the short path keeps them.
        let full = "/_matrix/client/r0/rooms/!7mqP7DYBUOmwAweF:localhost/send/m.room.message/$.AAABeH6obLU";
        let short = "/9/!7mqP7DYBUOmwAweF:localhost/m.room.message/$.AAABeH6obLU";
        assert_eq!(compressed(full, V1).unwrap(), short);
        assert_eq!(compressed(full, V2).unwrap(), short);
        assert_eq!(expanded(short, V1).unwrap(), full);
    }

    #[test]
    fn only_what_a_path_segment_cannot_hold_is_percent_encoded() {
        let full = "/_matrix/client/v3/rooms/!room:server/send/m.room.message/txn1";
        let short = "/w/!room:server/m.room.message/txn1";
        assert_eq!(compressed(full, V2).unwrap(), short);
        assert_eq!(expanded(short, V2).unwrap(), full);
        // Escapes of characters a segment can hold are dropped, in both directions.
        assert_eq!(
            compressed(
                "/_matrix/client/r0/rooms/%21room%3Aserver/send/m.room.encrypted/txn1",
                V1
            )
            .unwrap(),
            "/9/!room:server/m.room.encrypted/txn1"
        );
        assert_eq!(
            expanded("/w/%21room%3Aserver/m.room.message/txn1", V2).unwrap(),
            full
        );
        // An event id with `$` and `/`, a `%`, a space and non-ASCII text (UTF-8 bytes): `/`, `%`,
        // the space and the non-ASCII bytes must be escaped, `$` need not.
        let full = "/_matrix/client/v3/rooms/!r:s/redact/$ev%2Fent/t%25x%20y";
        assert_eq!(
            compressed(full, V2).unwrap(),
            "/3F/!r:s/$ev%2Fent/t%25x%20y"
        );
        assert_eq!(
            expanded("/3F/!r:s/%24ev%2Fent/t%25x%20y", V2).unwrap(),
            full
        );
        assert_eq!(
            compressed("/_matrix/client/r0/rooms/!r:s/state/m.room.name/ünï", V1).unwrap(),
            "/8/!r:s/m.room.name/%C3%BCn%C3%AF"
        );
        // Every sub-delimiter, `:` and `@` stay; `?` and `#` (which would end the path) do not.
        assert_eq!(
            compressed("/_matrix/client/v3/rooms/!a$&'()*+,;=:@b/join", V2).unwrap(),
            "/3K/!a$&'()*+,;=:@b"
        );
        assert_eq!(
            compressed("/_matrix/client/v3/rooms/%3F%23/join", V2).unwrap(),
            "/3K/%3F%23"
        );
    }

    #[test]
    fn the_gateway_escapes_all_but_the_unreserved_characters_for_the_homeserver() {
        assert_eq!(
            expanded_segments(&["3F", "!r:s", "$ev/ent", "t%x"], V2).unwrap(),
            "/_matrix/client/v3/rooms/%21r%3As/redact/%24ev%2Fent/t%25x"
        );
        assert_eq!(
            expanded_segments(&["8", "!r:s", "m.room.name", "ünï"], V1).unwrap(),
            "/_matrix/client/r0/rooms/%21r%3As/state/m.room.name/%C3%BCn%C3%AF"
        );
    }

    #[test]
    fn empty_state_key_survives() {
        let full = "/_matrix/client/v3/rooms/!r:s/state/m.room.name/";
        assert_eq!(compressed(full, V2).unwrap(), "/38/!r:s/m.room.name/");
        assert_eq!(expanded("/38/%21r%3As/m.room.name/", V2).unwrap(), full);
    }

    #[test]
    fn unknown_paths_pass_through_unchanged() {
        for path in [
            "/_matrix/client/v3/rooms/!r:s/unknown_thing",
            "/_matrix/media/v3/config",
            "/_matrix/client/v1/media/thumbnail/s/m",
            "/",
            "/_matrix/client/r0/sync/extra",
            "/%zz",
        ] {
            assert_eq!(compressed(path, V2).unwrap(), path);
            assert_eq!(expanded(path, V2).unwrap(), path);
        }
        assert_eq!(
            expanded_segments(&["_matrix", "client", "v1", "media", "config"], V2).unwrap(),
            "/_matrix/client/v1/media/config"
        );
        assert_eq!(
            expanded_segments(&["Mc"], V1).unwrap(),
            "/Mc",
            "media enums are v2 only"
        );
        assert_eq!(expanded_segments(&[], V2).unwrap(), "/");
    }

    #[test]
    fn bad_input_is_an_error_with_its_offset() {
        assert_eq!(compressed("sync", V1), Err(PathError::NotAbsolute));
        assert_eq!(expanded("v", V2), Err(PathError::NotAbsolute));
        assert_eq!(
            compressed("/_matrix/client/r0/rooms/!r%4/join", V1),
            Err(PathError::InvalidPercentEncoding { offset: 27 })
        );
        assert_eq!(
            expanded("/K/%G1", V1),
            Err(PathError::InvalidPercentEncoding { offset: 3 })
        );
        assert_eq!(
            expanded("/9/room/type", V1),
            Err(PathError::ParameterCount {
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            expanded_segments(&["7", "extra"], V1),
            Err(PathError::ParameterCount {
                expected: 0,
                found: 1
            })
        );
        assert_eq!(
            expanded_segments(&["K"], V1),
            Err(PathError::ParameterCount {
                expected: 1,
                found: 0
            })
        );
    }

    /// Percent-encodes every byte except the unreserved characters, as a careful HTTP client would.
    fn encode_all(text: &str) -> String {
        let mut out = String::new();
        write_encoded(text.bytes(), is_unreserved, &mut out).unwrap();
        out
    }

    /// Percent-encodes only what a path segment cannot hold.
    fn encode_segment(text: &str) -> String {
        let mut out = String::new();
        write_encoded(text.bytes(), is_segment_char, &mut out).unwrap();
        out
    }

    proptest::proptest! {
        #[test]
        fn any_parameters_survive_compress_and_expand(
            index in 0..COAP_PATHS.len(),
            parameters in proptest::collection::vec("\\PC{0,12}|[!:$/%@#?&+ ]{1,4}", 3),
        ) {
            let (code, template) = COAP_PATHS[index];
            let raw: Vec<&str> = parameters
                .iter()
                .take(parameter_count(template))
                .map(String::as_str)
                .collect();
            let full_with = |encode: fn(&str) -> String| -> String {
                let mut given = raw.iter();
                template
                    .split('/')
                    .map(|segment| {
                        if is_parameter(segment) {
                            encode(given.next().unwrap())
                        } else {
                            segment.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let all = full_with(encode_all);
            let minimal = full_with(encode_segment);
            let short = compressed(&all, V2).unwrap();
            let mut expected_short = format!("/{code}");
            for parameter in &raw {
                expected_short.push('/');
                expected_short.push_str(&encode_segment(parameter));
            }
            proptest::prop_assert_eq!(&short, &expected_short);
            proptest::prop_assert_eq!(compressed(&minimal, V2).unwrap(), short.clone());
            proptest::prop_assert_eq!(expanded(&short, V2).unwrap(), minimal);
            let segments: Vec<&str> = std::iter::once(code).chain(raw.iter().copied()).collect();
            proptest::prop_assert_eq!(expanded_segments(&segments, V2).unwrap(), all);
        }
    }
}
