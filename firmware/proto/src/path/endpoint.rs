//! The short-path enums a token sends requests to, named after what they do.
//!
//! Each name is the enum of its template in [`COAP_PATHS`], looked up when the crate compiles
//! ([`enum_of`]): the names are not a second table, and a name whose template the table lacks
//! does not compile. A request's Uri-Path is the enum followed by the template's parameters,
//! left to right:
//!
//! ```
//! use jeton_proto::path::endpoint;
//! // PUT /_matrix/client/v3/sendToDevice/m.room.encrypted/txn1 as Uri-Path options:
//! let path = [endpoint::SEND_TO_DEVICE, "m.room.encrypted", "txn1"];
//! assert_eq!(path[0], "x");
//! ```

use super::COAP_PATHS;

/// `POST /_matrix/client/v3/login`.
pub const LOGIN: &str = enum_of("/_matrix/client/v3/login");
/// `POST /_matrix/client/v3/user/{userId}/filter`.
pub const FILTER: &str = enum_of("/_matrix/client/v3/user/{userId}/filter");
/// `GET /_matrix/client/v3/sync` (observed, or long-polled).
pub const SYNC: &str = enum_of("/_matrix/client/v3/sync");
/// `POST /_matrix/client/v3/keys/upload`.
pub const KEYS_UPLOAD: &str = enum_of("/_matrix/client/v3/keys/upload");
/// `POST /_matrix/client/v3/keys/query`.
pub const KEYS_QUERY: &str = enum_of("/_matrix/client/v3/keys/query");
/// `POST /_matrix/client/v3/keys/claim`.
pub const KEYS_CLAIM: &str = enum_of("/_matrix/client/v3/keys/claim");
/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`.
pub const SEND_TO_DEVICE: &str = enum_of("/_matrix/client/v3/sendToDevice/{eventType}/{txnId}");
/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`.
pub const SEND: &str = enum_of("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}");
/// `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.encrypted/{txnId}`: [`SEND`] with the event
/// type implied, 17 bytes fewer on every encrypted send.
pub const SEND_ENCRYPTED: &str =
    enum_of("/_matrix/client/v3/rooms/{roomId}/send/m.room.encrypted/{txnId}");
/// `POST /_matrix/client/v3/rooms/{roomId}/join`.
pub const JOIN: &str = enum_of("/_matrix/client/v3/rooms/{roomId}/join");
/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`.
pub const ROOM_EVENT: &str = enum_of("/_matrix/client/v3/rooms/{roomId}/event/{eventId}");
/// `GET /_matrix/client/v3/rooms/{roomId}/messages` (a gap of a `limited` timeline, page by page).
pub const ROOM_MESSAGES: &str = enum_of("/_matrix/client/v3/rooms/{roomId}/messages");
/// `POST /_matrix/client/v3/keys/device_signing/upload` (the user's cross-signing keys).
pub const KEYS_DEVICE_SIGNING_UPLOAD: &str =
    enum_of("/_matrix/client/v3/keys/device_signing/upload");
/// `POST /_matrix/client/v3/keys/signatures/upload` (cross-signing signatures).
pub const KEYS_SIGNATURES_UPLOAD: &str = enum_of("/_matrix/client/v3/keys/signatures/upload");
/// `POST /_matrix/media/v3/upload`.
pub const MEDIA_UPLOAD: &str = enum_of("/_matrix/media/v3/upload");
/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
pub const MEDIA_DOWNLOAD: &str =
    enum_of("/_matrix/client/v1/media/download/{serverName}/{mediaId}");
/// `GET /_matrix/client/v1/media/config`.
pub const MEDIA_CONFIG: &str = enum_of("/_matrix/client/v1/media/config");

/// The enum of `template` in [`COAP_PATHS`], for constants: evaluated when the crate compiles,
/// where a template the table lacks stops the build.
pub const fn enum_of(template: &str) -> &'static str {
    let mut rest: &[(&'static str, &'static str)] = &COAP_PATHS;
    while let [(code, known), tail @ ..] = rest {
        if same(known.as_bytes(), template.as_bytes()) {
            return code;
        }
        rest = tail;
    }
    // Only reached in constant evaluation of a template the table lacks: a compile error.
    #[allow(clippy::panic)]
    {
        panic!("the path table has no such template")
    }
}

/// Byte-wise equality, for [`enum_of`] (`==` on slices is not a `const fn`).
const fn same(a: &[u8], b: &[u8]) -> bool {
    let (mut a, mut b) = (a, b);
    loop {
        match (a, b) {
            ([], []) => return true,
            ([x, a_rest @ ..], [y, b_rest @ ..]) if *x == *y => {
                a = a_rest;
                b = b_rest;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TableVersion;
    use crate::path::expand;

    #[test]
    fn enum_of_finds_the_enum_of_every_template_in_the_table() {
        for (code, template) in COAP_PATHS {
            assert_eq!(enum_of(template), code, "{template}");
        }
    }

    #[test]
    #[should_panic(expected = "no such template")]
    fn a_template_the_table_lacks_has_no_enum() {
        enum_of("/_matrix/client/v3/rooms/{roomId}/leave/now");
    }

    #[test]
    fn short_paths_built_from_the_names_expand_to_the_full_paths() {
        for (short, full) in [
            (format!("/{KEYS_QUERY}"), "/_matrix/client/v3/keys/query"),
            (
                format!("/{JOIN}/!r:s"),
                "/_matrix/client/v3/rooms/!r:s/join",
            ),
            (
                format!("/{SEND_ENCRYPTED}/!r:s/t1"),
                "/_matrix/client/v3/rooms/!r:s/send/m.room.encrypted/t1",
            ),
        ] {
            let mut expanded = String::new();
            expand(&short, TableVersion::V2, &mut expanded).unwrap();
            assert_eq!(expanded, full);
        }
    }
}
