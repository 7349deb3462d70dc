//! The wire profile as the gateway sees it: option numbers, table versions, path expansion
//! and JSON <-> CBOR transcoding.
//!
//! This module is the only place that names the profile implementation, so the rest of the
//! gateway does not care whether it comes from `jeton-proto` or elsewhere.
//!
//! TEMPORARY: until `jeton-proto` lands its tables, this is a thin stand-in with string keys
//! only and full paths only. It is replaced by re-exports of `jeton-proto` before release.

use serde_json::Value;

/// CoAP option carrying the access token (MSC3079), sticky per peer.
pub const OPTION_ACCESS_TOKEN: u16 = 256;
/// CoAP option carrying the CBOR table version (MSC3079).
pub const OPTION_TABLE_VERSION: u16 = 257;
/// Content-Format `application/cbor`.
pub const CONTENT_FORMAT_CBOR: u16 = 60;
/// Content-Format `application/json`.
pub const CONTENT_FORMAT_JSON: u16 = 50;

/// Which integer-key and path table a request uses (value of option 257).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableVersion {
    /// MSC3079 v1.
    V1 = 1,
    /// jeton v2: binary fields, extra keys, v3 paths.
    V2 = 2,
}

impl TableVersion {
    /// The version an option-257 value names, if any.
    pub fn from_option(value: u64) -> Option<Self> {
        match value {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

/// A path or body could not be translated by the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileError {
    /// The Uri-Path could not be expanded.
    Path(String),
    /// The body could not be transcoded.
    Transcode(String),
}

impl core::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Path(why) => write!(f, "the request path is not valid: {why}"),
            Self::Transcode(why) => write!(f, "the body could not be transcoded: {why}"),
        }
    }
}

impl std::error::Error for ProfileError {}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'@')
    .remove(b':')
    .remove(b'+')
    .remove(b'=');

/// CoAP Uri-Path segments (unescaped) -> the full percent-encoded HTTP path.
pub fn expand_segments<'a>(
    segments: impl IntoIterator<Item = &'a str>,
    _version: TableVersion,
) -> Result<String, ProfileError> {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// JSON -> CBOR with the integer keys of `version`.
pub fn json_to_cbor(value: &Value, _version: TableVersion) -> Result<Vec<u8>, ProfileError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| ProfileError::Transcode(e.to_string()))?;
    Ok(out)
}

/// CBOR with the integer keys of `version` -> JSON.
pub fn cbor_to_json(bytes: &[u8], _version: TableVersion) -> Result<Value, ProfileError> {
    ciborium::from_reader(bytes).map_err(|e| ProfileError::Transcode(e.to_string()))
}
