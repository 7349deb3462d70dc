//! Hashed identifiers: event ids and room ids that are a sigil and the unpadded URL-safe base64 of a
//! SHA-256 hash, which under table version 2 travel as their 32 raw bytes.
//!
//! Since room version 3 an event id is `$` followed by 43 characters of unpadded URL-safe base64 (the
//! reference hash of the event); since room version 12 a room id is `!` followed by the same kind of
//! hash (of the room's create event). Either costs 46 bytes as CBOR text, 34 as a byte string.
//! Where such an id may travel as bytes is decided by its place, never by looking at the text
//! (PROFILE.md section 3.5): the value of a field named `event_id` holds an event id, and the keys
//! of the maps under a sync response's `rooms.join` / `invite` / `leave` / `knock` are room ids. An
//! encoder converts only an id that is canonical (decoding the 43 characters and encoding the 32
//! bytes again gives the same text), so the text restored by a decoder is always the original.
//!
//! The token only ever reads such ids; [`Id::as_text`] writes the text form into a caller's buffer.

/// The length of the hash a hashed identifier carries.
pub const HASH_LEN: usize = 32;

/// The length of a hashed identifier as text: the sigil and 43 base64 characters.
pub const TEXT_LEN: usize = 44;

/// The sigil of event ids.
pub const EVENT_SIGIL: u8 = b'$';

/// The sigil of room ids.
pub const ROOM_SIGIL: u8 = b'!';

/// The membership sections of a sync response's `rooms` whose keys are room ids.
pub const ROOM_SECTIONS: [&str; 4] = ["join", "invite", "leave", "knock"];

/// An identifier as it arrived: text, or (v2) the hash of a hashed identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    /// The identifier's text, as Matrix JSON has it.
    Text(&'a str),
    /// The 32-byte hash of a hashed identifier with this sigil.
    Hash {
        /// `$` for an event id, `!` for a room id.
        sigil: u8,
        /// The hash.
        hash: &'a [u8; HASH_LEN],
    },
}

impl<'a> Id<'a> {
    /// The identifier's text: the text it arrived as, or the hash written into `out` as sigil and
    /// unpadded URL-safe base64.
    pub fn as_text<'b>(&self, out: &'b mut [u8; TEXT_LEN]) -> &'b str
    where
        'a: 'b,
    {
        match *self {
            Id::Text(text) => text,
            Id::Hash { sigil, hash } => hash_text(sigil, hash, out),
        }
    }
}

/// The unpadded URL-safe base64 alphabet (RFC 4648 section 5).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Writes `sigil` and the unpadded URL-safe base64 of `hash` into `out`, and returns it as text.
/// (Written out here rather than taken from a base64 crate: the token has no other use for URL-safe
/// base64, and these few lines keep jeton-proto inside its flash budget.)
pub fn hash_text<'b>(sigil: u8, hash: &[u8; HASH_LEN], out: &'b mut [u8; TEXT_LEN]) -> &'b str {
    let (first, rest) = out.split_at_mut(1);
    if let Some(slot) = first.first_mut() {
        *slot = sigil;
    }
    let mut chars = rest.iter_mut();
    let mut bits: u32 = 0;
    let mut pending = 0u32;
    for byte in hash {
        bits = bits << 8 | u32::from(*byte);
        pending += 8;
        while pending >= 6 {
            pending -= 6;
            if let (Some(slot), Some(c)) =
                (chars.next(), ALPHABET.get((bits >> pending) as usize & 63))
            {
                *slot = *c;
            }
        }
    }
    // 256 bits leave 4: the last character carries them in its high bits.
    if let (Some(slot), Some(c)) = (
        chars.next(),
        ALPHABET.get((bits << (6 - pending)) as usize & 63),
    ) {
        *slot = *c;
    }
    // A sigil that is not ASCII would not be UTF-8; the two sigils of this module are.
    core::str::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn text_is_sigil_and_unpadded_url_safe_base64() {
        // Event id from Synapse (room version 10) as the gateway tests saw it.
        let text = "$Lf6iibq6wE7s0drH8O2GJhPS1EQUCsN_OOgASJZaB5c";
        let hash: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&text[1..])
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = [0u8; TEXT_LEN];
        assert_eq!(hash_text(EVENT_SIGIL, &hash, &mut out), text);
        let id = Id::Hash {
            sigil: ROOM_SIGIL,
            hash: &[0xff; 32],
        };
        assert_eq!(
            id.as_text(&mut out),
            format!("!{}", URL_SAFE_NO_PAD.encode([0xff; 32]))
        );
        assert_eq!(Id::Text("!old:server").as_text(&mut out), "!old:server");
    }
}
