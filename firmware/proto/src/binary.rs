//! Binary fields: which JSON string values travel as CBOR byte strings under table version 2.
//!
//! Matrix JSON carries binary data (ciphertexts, Curve25519 and Ed25519 keys, signatures, Megolm session
//! ids, MACs, hashes) as unpadded standard base64 text, a third larger than the data. Under version 2 such a
//! value travels as a CBOR byte string holding the decoded bytes. Which values are binary is decided by the
//! value's *field path*, never by looking at the text: [`BINARY_FIELDS`] lists path suffixes, and a string
//! value is binary when the names of the object keys leading to it (array levels are transparent) end with
//! one of them. `*` stands for any single key.
//!
//! The way back must restore the very same text, so an encoder only converts a value that is canonical
//! unpadded standard base64 (decoding and re-encoding gives the same text). Anything else at a binary path
//! (padded, URL-safe, not base64 at all) stays a text string, which a decoder accepts at any path.
//! A byte string is accepted only at a binary path; anywhere else it is an error.
//!
//! Suffixes rather than absolute paths let one table serve every document: the same Megolm `ciphertext`
//! sits at the top of a send-event body, at `content.ciphertext` of an event, and at
//! `rooms.join.*.timeline.events.content.ciphertext` of a sync response.

/// Path suffixes of the binary fields, `*` matching any single object key. Append-only within version 2.
pub static BINARY_FIELDS: [&[&str]; 18] = [
    // m.room.encrypted, Megolm: content.ciphertext is a string.
    &["ciphertext"],
    // m.room.encrypted, Olm: content.ciphertext.<recipient curve25519 key>.body.
    &["ciphertext", "*", "body"],
    &["session_id"],
    &["sender_key"],
    // m.room_key / m.forwarded_room_key (inside Olm plaintext) and key backups.
    &["session_key"],
    &["signatures", "*", "*"],
    // device_keys.keys.<algorithm>:<device>, cross-signing keys, Olm plaintext keys.ed25519.
    &["keys", "*"],
    &["recipient_keys", "*"],
    &["sender_claimed_keys", "*"],
    // keys/upload: one_time_keys.<algorithm>:<key id> is a string (curve25519) or {key, signatures}.
    &["one_time_keys", "*"],
    &["one_time_keys", "*", "key"],
    // keys/claim response: one_time_keys.<user>.<device>.<algorithm>:<key id>.
    &["one_time_keys", "*", "*", "*"],
    &["one_time_keys", "*", "*", "*", "key"],
    &["fallback_keys", "*"],
    &["fallback_keys", "*", "key"],
    // Verification (m.key.verification.mac) and event hashes.
    &["mac"],
    &["mac", "*"],
    &["hashes", "*"],
];

/// Whether a string value reached through the object keys `path` (outermost first, array levels left
/// out) is a binary field under version 2.
pub fn is_binary_field<S: AsRef<str>>(path: &[S]) -> bool {
    BINARY_FIELDS.iter().any(|suffix| ends_with(path, suffix))
}

fn ends_with<S: AsRef<str>>(path: &[S], suffix: &[&str]) -> bool {
    let Some(skip) = path.len().checked_sub(suffix.len()) else {
        return false;
    };
    path.iter()
        .skip(skip)
        .zip(suffix)
        .all(|(key, wanted)| *wanted == "*" || key.as_ref() == *wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megolm_and_olm_ciphertexts_are_binary_wherever_the_event_sits() {
        assert!(is_binary_field(&["ciphertext"]));
        assert!(is_binary_field(&["content", "ciphertext"]));
        assert!(is_binary_field(&[
            "rooms",
            "join",
            "!r:s",
            "timeline",
            "events",
            "content",
            "ciphertext"
        ]));
        assert!(is_binary_field(&["content", "ciphertext", "KEY", "body"]));
        assert!(is_binary_field(&[
            "messages",
            "@u:s",
            "DEV",
            "ciphertext",
            "KEY",
            "body"
        ]));
    }

    #[test]
    fn ordinary_fields_are_text() {
        assert!(!is_binary_field(&["content", "body"]));
        assert!(!is_binary_field(&["ciphertext", "KEY", "type"]));
        assert!(!is_binary_field(&["keys"]));
        assert!(!is_binary_field::<&str>(&[]));
        assert!(!is_binary_field(&[
            "device_one_time_keys_count",
            "signed_curve25519"
        ]));
        // keys/claim request: one_time_keys.<user>.<device> names an algorithm, not a key.
        assert!(!is_binary_field(&["one_time_keys", "@u:s", "DEV"]));
    }

    #[test]
    fn keys_and_signatures_are_binary() {
        assert!(is_binary_field(&["device_keys", "keys", "curve25519:DEV"]));
        assert!(is_binary_field(&[
            "device_keys",
            "signatures",
            "@u:s",
            "ed25519:DEV"
        ]));
        assert!(is_binary_field(&[
            "one_time_keys",
            "signed_curve25519:AAAAAQ",
            "key"
        ]));
        assert!(is_binary_field(&[
            "one_time_keys",
            "@u:s",
            "DEV",
            "signed_curve25519:AAAAAQ",
            "key"
        ]));
        assert!(is_binary_field(&[
            "fallback_keys",
            "signed_curve25519:AAAAAg",
            "key"
        ]));
    }
}
