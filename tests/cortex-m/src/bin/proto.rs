//! Size probe for jeton-proto without its `json` feature, as a token uses it: the key and
//! path tables, the path codec, the typed views of what the token reads (sync, send, keys
//! responses) and the writers of what it sends (Megolm send, Olm sendToDevice, keys
//! upload/claim/query).
#![no_std]
#![no_main]

use cortex_m_rt::entry;

jeton_cortex_m::panic_handler!(quiet);
use jeton_cortex_m::keep;
use jeton_proto::view::{
    KeysClaimResponse, KeysQueryResponse, KeysUploadResponse, SendEventResponse, SyncResponse,
};
use jeton_proto::write::{self, DeviceKeysUpload, OlmToDevice, SignedKeyUpload, Signer};
use jeton_proto::{TableVersion, keys, path};

static INPUT: [u8; 64] = [0; 64];

fn read_sync(input: &[u8], version: TableVersion) -> usize {
    let mut seen = 0;
    let Ok(sync) = SyncResponse::parse(input, version) else {
        return 0;
    };
    seen += sync.next_batch().map_or(0, str::len);
    for event in sync.to_device_events().into_iter().flatten().flatten() {
        seen += event.event_type().map_or(0, str::len);
        if let Ok(Some(enc)) = event.encrypted() {
            seen += enc.algorithm().map_or(0, str::len);
        }
    }
    for list in [sync.device_lists_changed(), sync.device_lists_left()] {
        seen += list.into_iter().flatten().flatten().count();
    }
    seen += sync.one_time_keys_count("signed_curve25519").unwrap_or(0) as usize;
    seen += sync
        .unused_fallback_key_types()
        .ok()
        .flatten()
        .into_iter()
        .flatten()
        .count();
    for rooms in [sync.joined_rooms(), sync.invited_rooms()] {
        for (room_id, room) in rooms.into_iter().flatten().flatten() {
            seen += room_id.as_text(&mut [0; jeton_proto::ids::TEXT_LEN]).len();
            for event in room.timeline_events().into_iter().flatten().flatten() {
                seen += event.sender().map_or(0, str::len);
                if let Ok(Some(enc)) = event.encrypted() {
                    seen += enc.session_id().is_ok() as usize;
                    seen += enc.megolm_ciphertext().is_ok() as usize;
                }
            }
            seen += room.state_events().into_iter().flatten().flatten().count();
            seen += room
                .invite_state_events()
                .into_iter()
                .flatten()
                .flatten()
                .count();
        }
    }
    seen
}

fn read_responses(input: &[u8], version: TableVersion) -> usize {
    let mut seen = 0;
    if let Ok(r) = SendEventResponse::parse(input, version) {
        seen += r.event_id().map_or(0, |id| {
            id.as_text(&mut [0; jeton_proto::ids::TEXT_LEN]).len()
        });
    }
    if let Ok(r) = KeysUploadResponse::parse(input, version) {
        seen += r.one_time_key_count("signed_curve25519").unwrap_or(0) as usize;
    }
    if let Ok(r) = KeysClaimResponse::parse(input, version) {
        seen += r.one_time_key("@u:s", "D").is_ok() as usize;
    }
    if let Ok(r) = KeysQueryResponse::parse(input, version) {
        for (id, device) in r.devices("@u:s").into_iter().flatten().flatten() {
            seen += id.len() + device.key("ed25519:D").is_ok() as usize;
        }
    }
    seen
}

fn write_requests(out: &mut [u8]) -> usize {
    let b = keep(&[7u8; 32][..]);
    let signer = Signer {
        user_id: keep("@u:s"),
        device_id: keep("D"),
    };
    let key = SignedKeyUpload {
        key_id: keep("AAAAAQ"),
        key: b,
        signature: b,
    };
    let device = DeviceKeysUpload {
        curve25519: b,
        ed25519: b,
        signature: b,
    };
    let olm = OlmToDevice {
        user_id: "@u:s",
        device_id: "D",
        recipient_key: "k",
        message_type: 0,
        body: b,
    };
    let mut n = 0;
    n += write::megolm_send_body(out, Some(b), b, None).unwrap_or(0);
    n += write::olm_send_to_device_body(out, b, &olm).unwrap_or(0);
    n += write::keys_upload_body(out, &signer, Some(&device), &[key], Some(&key)).unwrap_or(0);
    n += write::keys_claim_body(out, "@u:s", "D", 10_000).unwrap_or(0);
    n += write::keys_query_body(out, &["@u:s"], 10_000).unwrap_or(0);
    n
}

#[entry]
fn main() -> ! {
    loop {
        let version = if keep(true) {
            TableVersion::V2
        } else {
            TableVersion::V1
        };
        let input = keep(&INPUT[..]);
        keep(read_sync(input, version));
        keep(read_responses(input, version));
        let mut out = [0u8; 512];
        keep(write_requests(&mut out));
        keep(&out);
        let mut short: heapless::String<256> = heapless::String::new();
        let _ = path::compress(keep("/_matrix/client/v3/sync"), version, &mut short);
        let mut full: heapless::String<256> = heapless::String::new();
        let _ = path::expand(keep(short.as_str()), version, &mut full);
        let _ = path::expand_segments(
            keep(["9", "!r:s", "m.room.encrypted", "t"]),
            version,
            &mut full,
        );
        keep(keys::key_for_name(keep("ciphertext"), version));
        keep(keys::name_for_key(keep(87), version));
        keep(full);
    }
}
