//! The v2 table of well-known text values: algorithm names, event types, membership states and key
//! algorithms that Matrix bodies repeat verbatim, each replaced on the wire by one CBOR simple value.
//!
//! In the spirit of draft-ietf-cbor-packed's shared items, entry `i` travels as the simple value
//! [`simple_for_index`]`(i)`: entries 0-19 as the one-byte simple values 0-19 (`e0`-`f3`), later entries as
//! the two-byte simple values 32-255 (`f8 20`-`f8 ff`). Simple values are major type 7, so a coded value
//! never collides with an integer (major types 0/1), a text string (3) or `false`/`true`/`null` (simple
//! values 20-22, which stay what they are). The table is append-only: an index once given never changes.
//!
//! Only values are coded, never map keys, and only under v2; a value at a binary field path that is
//! canonical base64 becomes a byte string first (section 3.1 of PROFILE.md), so the two never compete.

/// Every well-known value, in table order (index = position). Append only.
pub static WELL_KNOWN_VALUES: [&str; 30] = [
    // 0-19: one byte each (simple values 0-19). The token's busiest values first.
    "m.room.encrypted",
    "m.megolm.v1.aes-sha2",
    "m.olm.v1.curve25519-aes-sha2",
    "m.room.message",
    "m.room.member",
    "m.room.encryption",
    "m.room_key",
    "m.text",
    "join",
    "invite",
    "leave",
    "signed_curve25519",
    "curve25519",
    "ed25519",
    "m.room.create",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.name",
    "ban",
    // 20 and up: two bytes each (simple values 32 and up).
    "knock",
    "m.notice",
    "m.room_key_request",
    "m.forwarded_room_key",
    "m.dummy",
    "m.room.redaction",
    "m.room.topic",
    "shared",
    "private_chat",
    "public_chat",
];

/// How many table entries take the one-byte simple values 0-19.
const ONE_BYTE_ENTRIES: usize = 20;

/// The first two-byte simple value (RFC 8949 section 3.3: 24-31 are reserved, so `f8` starts at 32).
const FIRST_TWO_BYTE_SIMPLE: usize = 32;

/// The CBOR simple value that carries table entry `index`, if the table has one there.
pub fn simple_for_index(index: usize) -> Option<u8> {
    if index >= WELL_KNOWN_VALUES.len() {
        return None;
    }
    let simple = if index < ONE_BYTE_ENTRIES {
        index
    } else {
        index - ONE_BYTE_ENTRIES + FIRST_TWO_BYTE_SIMPLE
    };
    u8::try_from(simple).ok()
}

/// The simple value that stands for `text`, if `text` is a well-known value.
pub fn simple_for_value(text: &str) -> Option<u8> {
    WELL_KNOWN_VALUES
        .iter()
        .position(|known| *known == text)
        .and_then(simple_for_index)
}

/// The text that simple value `simple` stands for, if the table defines it (never for 20-31).
pub fn value_for_simple(simple: u8) -> Option<&'static str> {
    let simple = usize::from(simple);
    let index = match simple {
        0..ONE_BYTE_ENTRIES => simple,
        FIRST_TWO_BYTE_SIMPLE.. => simple - FIRST_TWO_BYTE_SIMPLE + ONE_BYTE_ENTRIES,
        _ => return None,
    };
    WELL_KNOWN_VALUES.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_maps_both_ways_and_is_unique() {
        for (index, text) in WELL_KNOWN_VALUES.iter().enumerate() {
            let simple = simple_for_index(index).unwrap();
            assert!(
                !(20..32).contains(&simple),
                "{text}: false/true/null/undefined/reserved"
            );
            assert_eq!(value_for_simple(simple), Some(*text));
            assert_eq!(simple_for_value(text), Some(simple));
            assert_eq!(WELL_KNOWN_VALUES.iter().filter(|t| *t == text).count(), 1);
        }
    }

    #[test]
    fn simple_values_outside_the_table_are_not_values() {
        for simple in 20..32 {
            assert_eq!(value_for_simple(simple), None);
        }
        let after = simple_for_index(WELL_KNOWN_VALUES.len() - 1).unwrap() + 1;
        assert_eq!(value_for_simple(after), None);
        assert_eq!(value_for_simple(255), None);
        assert_eq!(simple_for_value("m.room.encrypted "), None);
        assert_eq!(simple_for_value("JOIN"), None);
    }
}
