// The properties the fuzz targets check, shared by the targets (`fuzz_targets/*.rs`) and by the
// corpus replay test of jeton-proto (`firmware/proto/tests/fuzz_corpus.rs`), which `include!` this file.

use jeton_proto::TableVersion;
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};

/// Any bytes from the air: decoding never panics, and whatever decodes re-encodes to canonical CBOR
/// that is a fixed point (decode, encode again: the same bytes and the same JSON).
pub fn check_decoder(data: &[u8]) {
    for version in [TableVersion::V1, TableVersion::V2] {
        let Ok(json) = cbor_to_json(data, version) else {
            continue;
        };
        let canonical = json_to_cbor(&json, version).expect("decoded JSON re-encodes");
        let again = cbor_to_json(&canonical, version).expect("canonical CBOR decodes");
        assert_eq!(again, json);
        assert_eq!(
            json_to_cbor(&again, version).expect("re-encodes"),
            canonical
        );
    }
}

/// Any JSON: both versions accept or reject it alike, round trips are the identity, and v2 is never
/// larger than v1.
pub fn check_transcoder(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match (
        json_to_cbor(&json, TableVersion::V1),
        json_to_cbor(&json, TableVersion::V2),
    ) {
        (Ok(v1), Ok(v2)) => {
            assert_eq!(
                cbor_to_json(&v1, TableVersion::V1).expect("v1 decodes"),
                json
            );
            assert_eq!(
                cbor_to_json(&v2, TableVersion::V2).expect("v2 decodes"),
                json
            );
            assert_eq!(
                cbor_to_json(&v1, TableVersion::V2).expect("v2 reads v1"),
                json
            );
            assert!(v2.len() <= v1.len(), "v2 {} > v1 {}", v2.len(), v1.len());
        }
        (Err(v1), Err(v2)) => assert_eq!(v1.kind(), v2.kind()),
        (v1, v2) => panic!("versions disagree: {v1:?} vs {v2:?}"),
    }
}

/// Any bytes from the air through the token's zero-copy views: every accessor returns a value or an
/// error, never panics, and the views never read more items than their capacities allow.
pub fn check_views(data: &[u8]) {
    use jeton_proto::view::{
        KeysClaimResponse, KeysQueryResponse, KeysUploadResponse, MAX_ROOM_EVENTS, MAX_ROOMS,
        MAX_TO_DEVICE_EVENTS, MAX_USERS, SyncResponse,
    };
    for version in [TableVersion::V1, TableVersion::V2] {
        if let Ok(sync) = SyncResponse::parse(data, version) {
            let _ = sync.next_batch();
            let _ = sync.one_time_keys_count("signed_curve25519");
            if let Ok(Some(types)) = sync.unused_fallback_key_types() {
                types.for_each(drop);
            }
            for users in [sync.device_lists_changed(), sync.device_lists_left()]
                .into_iter()
                .flatten()
            {
                assert!(users.count() as u64 <= MAX_USERS);
            }
            if let Ok(events) = sync.to_device_events() {
                let events: Vec<_> = events.collect();
                assert!(events.len() as u64 <= MAX_TO_DEVICE_EVENTS);
                for event in events.into_iter().flatten() {
                    let _ = (event.sender(), event.event_id(), event.state_key());
                    if let Ok(Some(content)) = event.encrypted() {
                        let _ = (content.algorithm(), content.sender_key());
                        let _ = content.olm_message_for("curve25519 key");
                    }
                }
            }
            for rooms in [sync.joined_rooms(), sync.invited_rooms()] {
                let Ok(rooms) = rooms else { continue };
                let rooms: Vec<_> = rooms.collect();
                assert!(rooms.len() as u64 <= MAX_ROOMS);
                for (_, room) in rooms.into_iter().flatten() {
                    let _ = room.timeline_limited();
                    for events in [
                        room.timeline_events(),
                        room.state_events(),
                        room.invite_state_events(),
                    ] {
                        let Ok(events) = events else { continue };
                        let events: Vec<_> = events.collect();
                        assert!(events.len() as u64 <= MAX_ROOM_EVENTS);
                        for event in events.into_iter().flatten() {
                            let _ = (
                                event.event_type(),
                                event.origin_server_ts(),
                                event.content(),
                            );
                            if let Ok(Some(content)) = event.encrypted() {
                                let _ = (content.session_id(), content.megolm_ciphertext());
                            }
                        }
                    }
                }
            }
        }
        if let Ok(claim) = KeysClaimResponse::parse(data, version)
            && let Ok(Some(key)) = claim.one_time_key("@bob:localhost", "BOBDEVICE1")
        {
            let _ = key.signature("@bob:localhost", "ed25519:BOBDEVICE1");
        }
        if let Ok(query) = KeysQueryResponse::parse(data, version)
            && let Ok(devices) = query.devices("@bob:localhost")
        {
            for (_, device) in devices.flatten() {
                let _ = (
                    device.user_id(),
                    device.device_id(),
                    device.key("curve25519:BOBDEVICE1"),
                );
                let _ = device.signature("@bob:localhost", "ed25519:BOBDEVICE1");
            }
        }
        if let Ok(upload) = KeysUploadResponse::parse(data, version) {
            let _ = upload.one_time_key_count("signed_curve25519");
        }
    }
}
