//! Replays the corpus of `tests/fuzz/gateway/corpus/link_datagrams` through the link fuzz
//! target's checks (EDHOC and OSCORE decoding on the gateway side).
//!
//! The seeds: a real EDHOC message_1 and message_3 over CoAP and a real protected request
//! from jeton-link's fixed test handshake, plain requests with and without option 256, and
//! truncations; written by `write_seed_corpus` below
//! (`cargo test -p jeton-gateway --test fuzz_corpus_link -- --ignored`).

use std::path::PathBuf;

include!("../../../tests/fuzz/gateway/link_checks.rs");

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/gateway/corpus/link_datagrams")
}

#[test]
fn link_datagrams_corpus_replays() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the seed corpus is missing");
    for file in files {
        check_link_datagrams(&std::fs::read(&file).unwrap());
    }
}

fn coap(code: u8, mid: u16, options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut packet = coap_lite::Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(coap_lite::MessageType::Confirmable);
    packet.header.code = coap_lite::MessageClass::from(code);
    packet.header.message_id = mid;
    packet.set_token(vec![0x42]);
    for (number, value) in options {
        packet.add_option(coap_lite::CoapOption::from(*number), value.to_vec());
    }
    packet.payload = payload.to_vec();
    packet.to_bytes().unwrap()
}

#[test]
#[ignore = "writes the seed corpus; run on purpose"]
fn write_seed_corpus() {
    let (_initiator, m1) = jeton_link::Initiator::start([3; 32]).unwrap();
    let edhoc: &[(u16, &[u8])] = &[(11, b".well-known"), (11, b"edhoc")];
    let message_1 = coap(0x02, 1, edhoc, &[&[0xF5][..], m1.as_bytes()].concat());
    let message_3 = coap(0x02, 2, edhoc, &[0x00, 0x48, 1, 2, 3, 4, 5, 6, 7, 8]);
    let protected = coap(0x02, 3, &[(9, &[0x09, 0x00, 0x00])], &[0x5A; 13]);
    let combined = coap(
        0x02,
        4,
        &[(9, &[0x09, 0x00, 0x00]), (21, &[])],
        &[0x48, 1, 2, 3, 4, 5, 6, 7, 8, 0x5A, 0x5B],
    );
    let plain_token = coap(0x01, 5, &[(11, b"sync"), (256, b"syt_x")], &[]);
    let plain = coap(0x01, 6, &[(11, b"versions")], &[]);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("edhoc_message_1", message_1.clone()),
        (
            "edhoc_then_message_3",
            [&message_1[..], LINK_SEPARATOR, &message_3].concat(),
        ),
        ("protected_request", protected),
        (
            "combined_request",
            [&message_1[..], LINK_SEPARATOR, &combined].concat(),
        ),
        ("plain_with_access_token", plain_token),
        ("plain", plain),
        ("truncated", message_1[..9].to_vec()),
    ];
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(corpus().join(name), bytes).unwrap();
    }
}
