//! Media (files) over CoAP: which paths carry raw bytes rather than Matrix JSON, the CoAP
//! Content-Format <-> HTTP `Content-Type` mapping for them, and the media configuration the
//! gateway passes on (PROFILE.md section 7).
//!
//! A media body is never transcoded: an encrypted attachment is ciphertext, and even a plain
//! JSON file must come back byte for byte.

use serde_json::Value;

use crate::profile::{CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, CONTENT_FORMAT_TEXT};

/// The media endpoints the gateway treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRoute {
    /// `POST /_matrix/media/v3/upload`: the request body is the file.
    Upload,
    /// `GET /_matrix/client/v1/media/download/...` (and the deprecated unauthenticated
    /// `/_matrix/media/v3/download/...`): the success body is the file.
    Download,
    /// `GET /_matrix/client/v1/media/config` (or `/_matrix/media/v3/config`): the upload limit.
    Config,
}

impl MediaRoute {
    /// The media endpoint of a full, percent-encoded HTTP path (without query), if any.
    pub fn of_path(path: &str) -> Option<Self> {
        let rest = path
            .strip_prefix("/_matrix/client/v1/media/")
            .or_else(|| path.strip_prefix("/_matrix/media/v3/"))?;
        match rest.split('/').next() {
            Some("upload") if rest == "upload" => Some(Self::Upload),
            Some("download") => Some(Self::Download),
            Some("config") if rest == "config" => Some(Self::Config),
            _ => None,
        }
    }
}

/// The Uri-Query a client may use to name a type the Content-Format registry lacks; the gateway
/// consumes it (it is not a Matrix parameter).
pub const CONTENT_TYPE_QUERY: &str = "content_type";

/// Content-Formats (RFC 7252 section 12.3 registry) whose media type a file may have.
const CONTENT_FORMATS: [(u16, &str); 8] = [
    (CONTENT_FORMAT_TEXT, "text/plain; charset=utf-8"),
    (21, "image/gif"),
    (22, "image/jpeg"),
    (23, "image/png"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (CONTENT_FORMAT_JSON, "application/json"),
    (CONTENT_FORMAT_CBOR, "application/cbor"),
];

/// Content-Format of a file whose type has no entry.
pub const OCTET_STREAM: u16 = 42;

/// The HTTP media type of a Content-Format, if the gateway knows it.
pub fn media_type(content_format: u16) -> Option<&'static str> {
    CONTENT_FORMATS
        .iter()
        .find(|(number, _)| *number == content_format)
        .map(|(_, name)| *name)
}

/// The Content-Format of an HTTP `Content-Type` value (parameters other than a UTF-8 charset
/// on `text/plain` ignored); `application/octet-stream` for a type the registry lacks.
pub fn content_format(content_type: &str) -> u16 {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    CONTENT_FORMATS
        .iter()
        .find(|(_, name)| name.split(';').next() == Some(essence.as_str()))
        .map_or(OCTET_STREAM, |(number, _)| *number)
}

/// Lowers the `m.upload.size` of a media configuration body to `limit` when the gateway's
/// limit is the smaller one, so a client learns what will go through end to end.
pub fn clamp_upload_size(config: &mut Value, limit: usize) {
    let Some(map) = config.as_object_mut() else {
        return;
    };
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let homeserver = map.get("m.upload.size").and_then(Value::as_u64);
    if homeserver.is_none_or(|size| size > limit) {
        map.insert("m.upload.size".to_owned(), Value::from(limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_paths_are_recognised_and_others_are_not() {
        for (path, route) in [
            ("/_matrix/media/v3/upload", Some(MediaRoute::Upload)),
            (
                "/_matrix/client/v1/media/download/example.org/AbC",
                Some(MediaRoute::Download),
            ),
            (
                "/_matrix/client/v1/media/download/example.org/AbC/name.txt",
                Some(MediaRoute::Download),
            ),
            (
                "/_matrix/media/v3/download/example.org/AbC",
                Some(MediaRoute::Download),
            ),
            ("/_matrix/client/v1/media/config", Some(MediaRoute::Config)),
            ("/_matrix/media/v3/config", Some(MediaRoute::Config)),
            ("/_matrix/client/v1/media/thumbnail/example.org/AbC", None),
            ("/_matrix/media/v3/upload/example.org/AbC", None),
            ("/_matrix/client/v3/sync", None),
        ] {
            assert_eq!(MediaRoute::of_path(path), route, "{path}");
        }
    }

    #[test]
    fn content_formats_map_both_ways() {
        assert_eq!(media_type(42), Some("application/octet-stream"));
        assert_eq!(media_type(0), Some("text/plain; charset=utf-8"));
        assert_eq!(media_type(9999), None);
        for (number, name) in CONTENT_FORMATS {
            assert_eq!(content_format(name), number, "{name}");
        }
        assert_eq!(content_format("Image/PNG"), 23);
        assert_eq!(content_format("text/plain;charset=UTF-8"), 0);
        assert_eq!(content_format("audio/ogg"), OCTET_STREAM);
        assert_eq!(content_format(""), OCTET_STREAM);
    }

    #[test]
    fn the_upload_limit_is_the_smaller_of_homeserver_and_gateway() {
        let mut config = serde_json::json!({"m.upload.size": 52_428_800});
        clamp_upload_size(&mut config, 16 * 1024 * 1024);
        assert_eq!(config["m.upload.size"], 16 * 1024 * 1024);
        let mut config = serde_json::json!({"m.upload.size": 1000});
        clamp_upload_size(&mut config, 16 * 1024 * 1024);
        assert_eq!(config["m.upload.size"], 1000);
        // A homeserver that states no limit: the gateway's is the only one.
        let mut config = serde_json::json!({});
        clamp_upload_size(&mut config, 4096);
        assert_eq!(config["m.upload.size"], 4096);
    }
}
