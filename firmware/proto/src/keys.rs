//! The CBOR integer key tables: which JSON object keys travel as small integers.
//!
//! A map key that has an integer in the negotiated table is encoded as that unsigned integer; every other
//! key stays a text string. Version 1 is MSC3079 Appendix A (keys 1-104); version 2 appends keys
//! 105-187 and never renumbers. All keys are below 256, so each encodes in at most two bytes.

use crate::TableVersion;

/// The highest integer key of MSC3079 version 1.
pub const LAST_V1_KEY: u16 = 104;

/// The highest integer key of jeton version 2.
pub const LAST_V2_KEY: u16 = 187;

/// Every integer key with its JSON name, in key order: keys `1..=LAST_V1_KEY` are MSC3079 v1, the rest are v2.
///
/// Key `n` is entry `n - 1`. The lookups below read [`NAMES`] and [`NAME_ENDS`], built from this
/// table at compile time: a device keeps two bytes a key instead of a key, a pointer and a length.
pub const CBOR_KEYS: [(u16, &str); 187] = [
    // MSC3079 v1, Appendix A (keys 1-104). Never change these.
    (1, "event_id"),
    (2, "type"),
    (3, "content"),
    (4, "state_key"),
    (5, "room_id"),
    (6, "sender"),
    (7, "user_id"),
    (8, "origin_server_ts"),
    (9, "unsigned"),
    (10, "prev_content"),
    (11, "state"),
    (12, "timeline"),
    (13, "events"),
    (14, "limited"),
    (15, "prev_batch"),
    (16, "transaction_id"),
    (17, "age"),
    (18, "redacted_because"),
    (19, "next_batch"),
    (20, "presence"),
    (21, "avatar_url"),
    (22, "account_data"),
    (23, "rooms"),
    (24, "join"),
    (25, "membership"),
    (26, "displayname"),
    (27, "body"),
    (28, "msgtype"),
    (29, "format"),
    (30, "formatted_body"),
    (31, "ephemeral"),
    (32, "invite_state"),
    (33, "leave"),
    (34, "third_party_invite"),
    (35, "is_direct"),
    (36, "hashes"),
    (37, "signatures"),
    (38, "depth"),
    (39, "prev_events"),
    (40, "prev_state"),
    (41, "auth_events"),
    (42, "origin"),
    (43, "creator"),
    (44, "join_rule"),
    (45, "history_visibility"),
    (46, "ban"),
    (47, "events_default"),
    (48, "kick"),
    (49, "redact"),
    (50, "state_default"),
    (51, "users"),
    (52, "users_default"),
    (53, "reason"),
    (54, "visibility"),
    (55, "room_alias_name"),
    (56, "name"),
    (57, "topic"),
    (58, "invite"),
    (59, "invite_3pid"),
    (60, "room_version"),
    (61, "creation_content"),
    (62, "initial_state"),
    (63, "preset"),
    (64, "servers"),
    (65, "identifier"),
    (66, "user"),
    (67, "medium"),
    (68, "address"),
    (69, "password"),
    (70, "token"),
    (71, "device_id"),
    (72, "initial_device_display_name"),
    (73, "access_token"),
    (74, "home_server"),
    (75, "well_known"),
    (76, "base_url"),
    (77, "device_lists"),
    (78, "to_device"),
    (79, "peek"),
    (80, "last_seen_ip"),
    (81, "display_name"),
    (82, "typing"),
    (83, "last_seen_ts"),
    (84, "algorithm"),
    (85, "sender_key"),
    (86, "session_id"),
    (87, "ciphertext"),
    (88, "one_time_keys"),
    (89, "timeout"),
    (90, "recent_rooms"),
    (91, "chunk"),
    (92, "m.fully_read"),
    (93, "device_keys"),
    (94, "failures"),
    (95, "device_display_name"),
    (96, "prev_sender"),
    (97, "replaces_state"),
    (98, "changed"),
    (99, "unstable_features"),
    (100, "versions"),
    (101, "devices"),
    (102, "errcode"),
    (103, "error"),
    (104, "room_alias"),
    // jeton v2, append-only from 105: the E2EE, sync, filter and login traffic of a token.
    (105, "device_one_time_keys_count"),
    (106, "device_unused_fallback_key_types"),
    (107, "org.matrix.msc2732.device_unused_fallback_key_types"),
    (108, "one_time_key_counts"),
    (109, "fallback_keys"),
    (110, "fallback"),
    (111, "signed_curve25519"),
    (112, "curve25519"),
    (113, "ed25519"),
    (114, "keys"),
    (115, "algorithms"),
    (116, "usage"),
    (117, "master_keys"),
    (118, "self_signing_keys"),
    (119, "user_signing_keys"),
    (120, "key"),
    (121, "session_key"),
    (122, "chain_index"),
    (123, "sender_device"),
    (124, "recipient"),
    (125, "recipient_keys"),
    (126, "sender_claimed_keys"),
    (127, "sender_claimed_ed25519_key"),
    (128, "forwarding_curve25519_key_chain"),
    (129, "mac"),
    (130, "messages"),
    (131, "left"),
    (132, "knock"),
    (133, "m.relates_to"),
    (134, "rel_type"),
    (135, "m.in_reply_to"),
    (136, "m.new_content"),
    (137, "m.mentions"),
    (138, "user_ids"),
    (139, "m.relations"),
    (140, "redacts"),
    (141, "rotation_period_ms"),
    (142, "rotation_period_msgs"),
    (143, "unread_notifications"),
    (144, "notification_count"),
    (145, "highlight_count"),
    (146, "summary"),
    (147, "m.heroes"),
    (148, "m.joined_member_count"),
    (149, "m.invited_member_count"),
    (150, "filter"),
    (151, "filter_id"),
    (152, "limit"),
    (153, "types"),
    (154, "not_types"),
    (155, "lazy_load_members"),
    (156, "include_leave"),
    (157, "event_fields"),
    (158, "from"),
    (159, "to"),
    (160, "start"),
    (161, "end"),
    (162, "expires_in_ms"),
    (163, "refresh_token"),
    (164, "m.homeserver"),
    (165, "username"),
    (166, "auth"),
    (167, "session"),
    (168, "flows"),
    (169, "stages"),
    (170, "params"),
    (171, "completed"),
    (172, "inhibit_login"),
    (173, "retry_after_ms"),
    (174, "soft_logout"),
    (175, "code"),
    (176, "request_id"),
    (177, "requesting_device_id"),
    (178, "action"),
    (179, "methods"),
    (180, "from_device"),
    (181, "timestamp"),
    (182, "method"),
    (183, "commitment"),
    (184, "key_agreement_protocols"),
    (185, "message_authentication_codes"),
    (186, "short_authentication_string"),
    (187, "third_party_signed"),
];

// Every key must stay a CBOR integer of at most two bytes.
const _: () = assert!(LAST_V2_KEY < 256);

/// The length of all names back to back.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build, never the device"
)]
const NAMES_LEN: usize = {
    let mut len = 0;
    let mut index = 0;
    while index < CBOR_KEYS.len() {
        len += CBOR_KEYS[index].1.len();
        index += 1;
    }
    len
};

/// The names of [`CBOR_KEYS`] back to back, in key order.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build, never the device"
)]
const NAME_BYTES: [u8; NAMES_LEN] = {
    let mut bytes = [0; NAMES_LEN];
    let mut at = 0;
    let mut index = 0;
    while index < CBOR_KEYS.len() {
        let name = CBOR_KEYS[index].1.as_bytes();
        let mut byte = 0;
        while byte < name.len() {
            bytes[at] = name[byte];
            at += 1;
            byte += 1;
        }
        index += 1;
    }
    bytes
};

/// [`NAME_BYTES`] as text (names are ASCII, so every end is a character boundary).
static NAMES: &str = match core::str::from_utf8(&NAME_BYTES) {
    Ok(names) => names,
    Err(_) => "",
};
const _: () = assert!(NAMES.len() == NAMES_LEN && NAMES_LEN <= u16::MAX as usize);

/// Where the name of key `n` ends in [`NAMES`] (entry `n - 1`; it starts where key `n - 1`'s ends).
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build, never the device"
)]
static NAME_ENDS: [u16; CBOR_KEYS.len()] = {
    let mut ends = [0; CBOR_KEYS.len()];
    let mut end = 0;
    let mut index = 0;
    while index < CBOR_KEYS.len() {
        assert!(
            CBOR_KEYS[index].0 as usize == index + 1,
            "keys are dense, from 1"
        );
        end += CBOR_KEYS[index].1.len();
        ends[index] = end as u16;
        index += 1;
    }
    ends
};

/// The names of keys `1..=last`, in key order.
fn names_up_to(last: u16) -> impl Iterator<Item = &'static str> {
    let mut start = 0;
    NAME_ENDS.iter().take(usize::from(last)).map(move |&end| {
        let name = NAMES.get(start..usize::from(end)).unwrap_or_default();
        start = usize::from(end);
        name
    })
}

/// The highest integer key `version` defines.
pub const fn last_key(version: TableVersion) -> u16 {
    match version {
        TableVersion::V1 => LAST_V1_KEY,
        TableVersion::V2 => LAST_V2_KEY,
    }
}

/// The integer key for JSON key `name` under `version`, or `None` if `name` stays a text key.
pub fn key_for_name(name: &str, version: TableVersion) -> Option<u16> {
    let index = names_up_to(last_key(version)).position(|known| known == name)?;
    u16::try_from(index + 1).ok()
}

/// The JSON key name of integer key `key` under `version`, or `None` if the version does not define it.
pub fn name_for_key(key: u64, version: TableVersion) -> Option<&'static str> {
    if key == 0 || key > u64::from(last_key(version)) {
        return None;
    }
    let index = usize::try_from(key - 1).ok()?;
    let end = usize::from(*NAME_ENDS.get(index)?);
    let start = match index.checked_sub(1) {
        Some(previous) => usize::from(*NAME_ENDS.get(previous)?),
        None => 0,
    };
    NAMES.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_table_matches_msc3079_appendix_a() {
        let tsv = include_str!("../tables/cbor-keys-v1.tsv");
        let mut rows = 0;
        for line in tsv.lines().skip(1) {
            let (key, name) = line.split_once('\t').unwrap();
            let key: u64 = key.parse().unwrap();
            assert_eq!(name_for_key(key, TableVersion::V1), Some(name), "key {key}");
            assert_eq!(
                name_for_key(key, TableVersion::V2),
                Some(name),
                "key {key} under v2"
            );
            assert_eq!(
                key_for_name(name, TableVersion::V1),
                Some(key as u16),
                "name {name}"
            );
            rows += 1;
        }
        assert_eq!(rows, usize::from(LAST_V1_KEY));
    }

    #[test]
    fn keys_are_dense_and_names_unique() {
        for (index, (key, name)) in CBOR_KEYS.iter().enumerate() {
            assert_eq!(usize::from(*key), index + 1);
            assert_eq!(
                CBOR_KEYS.iter().filter(|(_, n)| n == name).count(),
                1,
                "{name}"
            );
        }
        assert_eq!(CBOR_KEYS.len(), usize::from(LAST_V2_KEY));
    }

    #[test]
    fn every_entry_maps_both_ways_in_the_versions_that_define_it() {
        for (key, name) in CBOR_KEYS {
            assert_eq!(key_for_name(name, TableVersion::V2), Some(key));
            assert_eq!(name_for_key(u64::from(key), TableVersion::V2), Some(name));
            if key > LAST_V1_KEY {
                assert_eq!(
                    key_for_name(name, TableVersion::V1),
                    None,
                    "{name} is not v1"
                );
                assert_eq!(name_for_key(u64::from(key), TableVersion::V1), None);
            }
        }
        assert_eq!(name_for_key(0, TableVersion::V2), None);
        assert_eq!(
            name_for_key(u64::from(LAST_V2_KEY) + 1, TableVersion::V2),
            None
        );
        assert_eq!(key_for_name("no_such_key", TableVersion::V2), None);
    }

    #[test]
    fn v2_covers_the_e2ee_keys_of_the_issue() {
        for name in [
            "device_one_time_keys_count",
            "device_unused_fallback_key_types",
            "fallback_keys",
            "signed_curve25519",
            "keys",
            "session_key",
            "chain_index",
            "sender_device",
            "recipient",
            "recipient_keys",
            "m.relates_to",
            "rotation_period_ms",
            "rotation_period_msgs",
            "messages",
            "device_lists",
            "left",
        ] {
            assert!(key_for_name(name, TableVersion::V2).is_some(), "{name}");
        }
    }
}
