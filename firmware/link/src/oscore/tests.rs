//! RFC 8613 appendix C vectors, round trips, tampering, replay and sequence persistence.

use proptest::prelude::*;

use super::*;
use crate::message::{OptionList, decode_options, encode_options};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const MASTER_SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const MASTER_SALT: &str = "9e7ca92223786340";

/// A CoAP datagram split into its UDP framing (header + token, kept verbatim) and the
/// message OSCORE works on; a test-only codec for the RFC's example messages.
fn split_datagram(datagram: &[u8]) -> (Vec<u8>, Message<'_>) {
    let token_len = usize::from(datagram[0] & 0x0F);
    let framing = datagram[..4 + token_len].to_vec();
    let mut options = OptionList::new();
    let payload = decode_options(&datagram[4 + token_len..], &mut options).unwrap();
    let message = Message {
        code: datagram[1],
        options,
        payload,
    };
    (framing, message)
}

fn join_datagram(framing: &[u8], message: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    let mut at = 0;
    put(&mut out, &mut at, framing).unwrap();
    out[1] = message.code;
    encode_options(message.options.iter(), &mut out, &mut at).unwrap();
    if !message.payload.is_empty() {
        put(&mut out, &mut at, &[0xFF]).unwrap();
        put(&mut out, &mut at, message.payload).unwrap();
    }
    out.truncate(at);
    out
}

fn c1_client() -> SecurityContext {
    SecurityContext::derive(&hex(MASTER_SECRET), &hex(MASTER_SALT), &[], &[0x01]).unwrap()
}

fn c1_server() -> SecurityContext {
    SecurityContext::derive(&hex(MASTER_SECRET), &hex(MASTER_SALT), &[0x01], &[]).unwrap()
}

/// RFC 8613 C.1 and C.2: keys and Common IV, both roles, with and without a salt.
#[test]
fn key_derivation_matches_rfc8613_c1_and_c2() {
    let client = c1_client();
    assert_eq!(
        client.sender_key.to_vec(),
        hex("f0910ed7295e6ad4b54fc793154302ff")
    );
    assert_eq!(
        client.recipient_key.to_vec(),
        hex("ffb14e093c94c9cac9471648b4f98710")
    );
    assert_eq!(client.common_iv.to_vec(), hex("4622d4dd6d944168eefb54987c"));
    let server = c1_server();
    assert_eq!(server.sender_key, client.recipient_key);
    assert_eq!(server.recipient_key, client.sender_key);

    let c2 = SecurityContext::derive(&hex(MASTER_SECRET), &[], &[0x00], &[0x01]).unwrap();
    assert_eq!(
        c2.sender_key.to_vec(),
        hex("321b26943253c7ffb6003b0b64d74041")
    );
    assert_eq!(
        c2.recipient_key.to_vec(),
        hex("e57b5635815177cd679ab4bcec9d7dda")
    );
    assert_eq!(c2.common_iv.to_vec(), hex("be35ae297d2dace910c52e99f9"));
    // C.2's nonces for Partial IV 0.
    let piv0 = PartialIv::from_sequence(0);
    assert_eq!(
        c2.nonce(&Id::new(&[0]).unwrap(), &piv0).to_vec(),
        hex("bf35ae297d2dace910c52e99f9")
    );
    assert_eq!(
        c2.nonce(&Id::new(&[1]).unwrap(), &piv0).to_vec(),
        hex("bf35ae297d2dace810c52e99f9")
    );
}

/// RFC 8613 C.4 (client with an empty sender id) and C.5 (sender id 0x00), sequence 20.
#[test]
fn protected_requests_match_rfc8613_c4_and_c5() {
    let cases = [
        (
            c1_client(),
            "44015d1f00003974396c6f63616c686f737483747631",
            "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e",
        ),
        (
            SecurityContext::derive(&hex(MASTER_SECRET), &[], &[0x00], &[0x01]).unwrap(),
            "440171c30000b932396c6f63616c686f737483747631",
            "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
        ),
    ];
    for (mut client, plain, protected) in cases {
        client.set_sequence(20);
        let plain = hex(plain);
        let (framing, request) = split_datagram(&plain);
        let mut buf = [0u8; 128];
        let (outer, binding) = client.protect_request(&request, &mut buf).unwrap();
        assert_eq!(join_datagram(&framing, &outer), hex(protected));
        assert_eq!(binding.piv.sequence(), 20);
        assert_eq!(client.next_sequence(), 21);
    }
}

/// RFC 8613 C.6: the server side of C.4 decrypts to the original request.
#[test]
fn server_unprotects_the_rfc8613_c4_request() {
    let mut server = c1_server();
    let protected = hex("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e");
    let (_, outer) = split_datagram(&protected);
    assert_eq!(OscoreOption::kid_of(&outer).unwrap(), Some(&[][..]));
    let mut buf = [0u8; 128];
    let inner = server.unprotect_request(&outer, &mut buf).unwrap();
    let expected = hex("44015d1f00003974396c6f63616c686f737483747631");
    let (_, expected) = split_datagram(&expected);
    assert_eq!(inner.message, expected);
    assert_eq!(inner.freshness, Freshness::Fresh);
    let mut again = [0u8; 128];
    assert_eq!(
        server.unprotect_request(&outer, &mut again).unwrap_err(),
        OscoreError::Replay
    );
}

/// RFC 8613 C.7 (response reusing the request nonce) and C.8 (with its own Partial IV 0).
#[test]
fn protected_responses_match_rfc8613_c7_and_c8() {
    let binding = RequestBinding {
        kid: Id::new(&[]).unwrap(),
        piv: PartialIv::from_sequence(20),
    };
    let plain = hex("64455d1f00003974ff48656c6c6f20576f726c6421");
    let (framing, response) = split_datagram(&plain);
    for (own_piv, expected) in [
        (
            false,
            "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106",
        ),
        (
            true,
            "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e",
        ),
    ] {
        let mut server = c1_server();
        let mut buf = [0u8; 128];
        let outer = server
            .protect_response(&binding, &response, own_piv, &mut buf)
            .unwrap();
        let wire = join_datagram(&framing, &outer);
        assert_eq!(wire, hex(expected));

        let mut client = c1_client();
        let (_, outer) = split_datagram(&wire);
        let mut plain_buf = [0u8; 128];
        let inner = client
            .unprotect_response(&binding, &outer, &mut plain_buf)
            .unwrap();
        assert_eq!(inner, response);
    }
}

fn pair() -> (SecurityContext, SecurityContext) {
    let secret = [7u8; 16];
    let salt = [9u8; 8];
    (
        SecurityContext::derive(&secret, &salt, &[0x2A], &[0x11]).unwrap(),
        SecurityContext::derive(&secret, &salt, &[0x11], &[0x2A]).unwrap(),
    )
}

fn sample_request() -> Message<'static> {
    Message {
        code: 0x02,
        options: OptionList::from_sorted(&[
            (3, b"gw.example"),
            (11, b"_matrix"),
            (11, b"client"),
            (12, &[60]),
            (256, b"syt_access_token"),
        ])
        .unwrap(),
        payload: b"\xA1\x01\x62hi",
    }
}

#[test]
fn outer_message_hides_class_e_options_and_keeps_uri_host() {
    let (mut client, mut server) = pair();
    let request = sample_request();
    let mut buf = [0u8; 256];
    let (outer, _) = client.protect_request(&request, &mut buf).unwrap();
    let numbers: Vec<u16> = outer.options.iter().map(|(n, _)| n).collect();
    assert_eq!(numbers, [3, OSCORE_OPTION]);
    assert_eq!(outer.code, 0x02);
    let mut plain = [0u8; 256];
    let inner = server.unprotect_request(&outer, &mut plain).unwrap();
    assert_eq!(inner.message, request);
}

#[test]
fn observe_is_inner_and_outer_and_makes_the_request_a_fetch() {
    let (mut client, mut server) = pair();
    let request = Message {
        code: 0x01,
        options: OptionList::from_sorted(&[(6, &[]), (11, b"sync")]).unwrap(),
        payload: &[],
    };
    let mut buf = [0u8; 256];
    let (outer, binding) = client.protect_request(&request, &mut buf).unwrap();
    assert_eq!(outer.code, 0x05);
    assert_eq!(outer.options.get(6), Some(&[][..]));
    let mut plain = [0u8; 256];
    let inner = server.unprotect_request(&outer, &mut plain).unwrap();
    assert_eq!(inner.message, request);

    // Two notifications: the first may reuse the request nonce, the second must not.
    let notification = Message {
        code: 0x45,
        options: OptionList::from_sorted(&[(6, &[2])]).unwrap(),
        payload: b"batch",
    };
    let mut first = [0u8; 64];
    let mut second = [0u8; 64];
    let n1 = server
        .protect_response(&inner.binding, &notification, false, &mut first)
        .unwrap();
    let n2 = server
        .protect_response(&inner.binding, &notification, true, &mut second)
        .unwrap();
    assert_eq!(n1.code, 0x45);
    assert_ne!(n1.payload, n2.payload, "distinct nonces");
    for outer in [n1, n2] {
        let mut out = [0u8; 64];
        let got = client
            .unprotect_response(&binding, &outer, &mut out)
            .unwrap();
        assert_eq!(got, notification);
    }
}

/// Flips one bit of the OSCORE option value or of the ciphertext and tag, then unprotects.
fn tampered_request_is_rejected(bit: usize) -> Result<(), TestCaseError> {
    let (mut client, mut server) = pair();
    let request = sample_request();
    let mut buf = [0u8; 256];
    let (outer, _) = client.protect_request(&request, &mut buf).unwrap();
    let option = outer.options.get(OSCORE_OPTION).unwrap().to_vec();
    let mut protected: Vec<u8> = option.iter().chain(outer.payload).copied().collect();
    let bit = bit % (protected.len() * 8);
    protected[bit / 8] ^= 1 << (bit % 8);
    let (option, payload) = protected.split_at(option.len());
    let mut options = OptionList::new();
    options.push(3, b"gw.example").unwrap();
    options.push(OSCORE_OPTION, option).unwrap();
    let tampered = Message {
        code: outer.code,
        options,
        payload,
    };
    let mut plain = [0u8; 256];
    let result = server.unprotect_request(&tampered, &mut plain);
    prop_assert!(result.is_err(), "bit {bit} accepted");
    Ok(())
}

/// The same for a response, whose OSCORE option is empty: only ciphertext and tag.
fn tampered_response_is_rejected(bit: usize) -> Result<(), TestCaseError> {
    let (mut client, mut server) = pair();
    let mut buf = [0u8; 256];
    let (outer, binding) = client.protect_request(&sample_request(), &mut buf).unwrap();
    let mut plain = [0u8; 256];
    let inner = server.unprotect_request(&outer, &mut plain).unwrap();
    let response = Message {
        code: 0x45,
        options: OptionList::from_sorted(&[(12, &[60])]).unwrap(),
        payload: b"{\"ok\":1}",
    };
    let mut resp_buf = [0u8; 128];
    let outer = server
        .protect_response(&inner.binding, &response, false, &mut resp_buf)
        .unwrap();
    let mut payload = outer.payload.to_vec();
    let bit = bit % (payload.len() * 8);
    payload[bit / 8] ^= 1 << (bit % 8);
    let tampered = Message {
        payload: &payload,
        ..outer
    };
    let mut out = [0u8; 128];
    prop_assert_eq!(
        client.unprotect_response(&binding, &tampered, &mut out),
        Err(OscoreError::AuthenticationFailed)
    );
    Ok(())
}

proptest! {
    #[test]
    fn every_flipped_bit_of_a_protected_request_is_rejected(bit in 0usize..4096) {
        tampered_request_is_rejected(bit)?;
    }

    #[test]
    fn every_flipped_bit_of_a_protected_response_is_rejected(bit in 0usize..4096) {
        tampered_response_is_rejected(bit)?;
    }

    #[test]
    fn unprotect_never_panics_on_arbitrary_input(option in proptest::collection::vec(any::<u8>(), 0..16),
                                                 payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (_, mut server) = pair();
        let mut options = OptionList::new();
        options.push(OSCORE_OPTION, &option).unwrap();
        let outer = Message { code: 0x02, options, payload: &payload };
        let mut out = [0u8; 64];
        prop_assert!(server.unprotect_request(&outer, &mut out).is_err());
    }
}

/// Exhaustively, not just sampled: every bit of one request and one response.
#[test]
fn all_bits_of_one_request_and_response_are_covered() {
    for bit in 0..(13 + 8 + 40) * 8 {
        tampered_request_is_rejected(bit).unwrap();
        tampered_response_is_rejected(bit).unwrap();
    }
}

#[test]
fn replayed_and_reordered_requests_follow_the_window() {
    let (mut client, mut server) = pair();
    let request = sample_request();
    let mut wires = Vec::new();
    for _ in 0..3 {
        let mut buf = [0u8; 256];
        let (outer, _) = client.protect_request(&request, &mut buf).unwrap();
        let option = outer.options.get(OSCORE_OPTION).unwrap().to_vec();
        wires.push((option, outer.payload.to_vec()));
    }
    let deliver = |server: &mut SecurityContext, i: usize| {
        let (option, payload) = &wires[i];
        let mut options = OptionList::new();
        options.push(OSCORE_OPTION, option).unwrap();
        let outer = Message {
            code: 0x02,
            options,
            payload,
        };
        let mut out = [0u8; 256];
        server.unprotect_request(&outer, &mut out).map(|_| ())
    };
    deliver(&mut server, 2).unwrap();
    deliver(&mut server, 0).unwrap();
    assert_eq!(deliver(&mut server, 2), Err(OscoreError::Replay));
    assert_eq!(deliver(&mut server, 0), Err(OscoreError::Replay));
    deliver(&mut server, 1).unwrap();
    assert_eq!(deliver(&mut server, 1), Err(OscoreError::Replay));
}

#[test]
fn wrong_kid_is_another_context() {
    let (mut client, _) = pair();
    let (_, mut other_server) = {
        let secret = [7u8; 16];
        let salt = [9u8; 8];
        (
            (),
            SecurityContext::derive(&secret, &salt, &[0x11], &[0x2B]).unwrap(),
        )
    };
    let mut buf = [0u8; 256];
    let (outer, _) = client.protect_request(&sample_request(), &mut buf).unwrap();
    let mut out = [0u8; 256];
    assert_eq!(
        other_server
            .unprotect_request(&outer, &mut out)
            .unwrap_err(),
        OscoreError::WrongContext
    );
}

/// A token that restarts at random points (power cuts between any two steps) never uses a
/// sequence number twice: the numbers it puts on the wire are recorded across 20 restarts.
#[test]
fn persisted_sequence_never_repeats_across_restarts() {
    let (client, _) = pair();
    let record = client.to_record();
    let mut client = client.with_persisted_sequence();
    let mut stored_mark: u64 = 0;
    let mut seen = std::collections::HashSet::new();
    let mut sends_per_life = [
        3usize, 70, 0, 1, 200, 31, 32, 33, 64, 65, 5, 128, 2, 7, 99, 1, 0, 40, 63, 17,
    ];
    for (life, sends) in sends_per_life.iter_mut().enumerate() {
        for _ in 0..*sends {
            if let Some(mark) = client.sequence_to_persist() {
                stored_mark = mark; // the durable write
                client.sequence_persisted(mark);
            }
            let mut buf = [0u8; 256];
            let (_, binding) = client.protect_request(&sample_request(), &mut buf).unwrap();
            assert!(
                seen.insert(binding.piv.sequence()),
                "sequence {} reused in life {life}",
                binding.piv.sequence()
            );
        }
        // Power cut: only the record and the mark survive.
        client = SecurityContext::restore(&record, stored_mark, [life as u8; ECHO_LEN]).unwrap();
        // Without a fresh mark it refuses to send.
        let mut buf = [0u8; 256];
        assert_eq!(
            client
                .protect_request(&sample_request(), &mut buf)
                .unwrap_err(),
            OscoreError::SequenceNotPersisted
        );
    }
    assert_eq!(seen.len(), sends_per_life.iter().sum::<usize>());
}

#[test]
fn restored_server_asks_for_echo_once_then_accepts() {
    let (mut client, server) = pair();
    let record = server.to_record();
    let mut server = SecurityContext::restore(&record, 0, *b"chal-123").unwrap();
    let mut buf = [0u8; 256];
    let (outer, binding) = client.protect_request(&sample_request(), &mut buf).unwrap();
    let mut out = [0u8; 256];
    let first = server.unprotect_request(&outer, &mut out).unwrap();
    assert_eq!(first.freshness, Freshness::EchoRequired);
    let challenge = *server.echo_challenge().unwrap();
    let mark = server.sequence_to_persist().unwrap();
    server.sequence_persisted(mark);

    // 4.01 with the Echo option, protected with the server's own Partial IV.
    let unauthorized = Message {
        code: 0x81,
        options: OptionList::from_sorted(&[(ECHO_OPTION, &challenge)]).unwrap(),
        payload: &[],
    };
    let mut resp = [0u8; 64];
    let outer_resp = server
        .protect_response(&first.binding, &unauthorized, true, &mut resp)
        .unwrap();
    let mut resp_plain = [0u8; 64];
    let got = client
        .unprotect_response(&binding, &outer_resp, &mut resp_plain)
        .unwrap();
    let echo = got.options.get(ECHO_OPTION).unwrap().to_vec();

    let mut retry = sample_request();
    retry.options.insert(ECHO_OPTION, &echo).unwrap();
    let mut buf2 = [0u8; 256];
    let (outer2, _) = client.protect_request(&retry, &mut buf2).unwrap();
    let mut out2 = [0u8; 256];
    let second = server.unprotect_request(&outer2, &mut out2).unwrap();
    assert_eq!(second.freshness, Freshness::Fresh);
    assert_eq!(server.echo_challenge(), None);
}

#[test]
fn record_round_trips_and_debug_hides_keys() {
    let (client, _) = pair();
    let record = client.to_record();
    let restored =
        SecurityContext::restore(&ContextRecord::from_bytes(record.as_bytes()), 64, [0; 8])
            .unwrap();
    assert_eq!(restored.sender_key, client.sender_key);
    assert_eq!(restored.recipient_id(), client.recipient_id());
    let shown = format!("{client:?} {record:?}");
    let key_hex: String = client
        .sender_key
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!shown.contains(&key_hex));
    let mut bad = *record.as_bytes();
    bad[0] = 9;
    assert_eq!(
        SecurityContext::restore(&ContextRecord::from_bytes(&bad), 0, [0; 8]).unwrap_err(),
        OscoreError::MalformedRecord
    );
}

#[test]
fn protected_message_overhead_is_printed_and_within_16_bytes() {
    // The overhead OSCORE adds to a request and its response, as the token's first
    // requests of a context see it (sequence numbers below 256: a one-byte Partial IV).
    let (mut client, mut server) = pair();
    let request = sample_request();
    let mut buf = [0u8; 256];
    let (outer, _) = client.protect_request(&request, &mut buf).unwrap();
    let plain_len = join_datagram(&[0x40, 0, 0, 0], &request).len();
    let protected_len = join_datagram(&[0x40, 0, 0, 0], &outer).len();
    let request_overhead = protected_len - plain_len;
    let mut plain = [0u8; 256];
    let inner = server.unprotect_request(&outer, &mut plain).unwrap();
    let response = Message {
        code: 0x45,
        options: OptionList::from_sorted(&[(12, &[60])]).unwrap(),
        payload: b"{}",
    };
    let mut resp = [0u8; 64];
    let outer_resp = server
        .protect_response(&inner.binding, &response, false, &mut resp)
        .unwrap();
    let response_overhead = join_datagram(&[0x60, 0x45, 0, 0], &outer_resp).len()
        - join_datagram(&[0x60, 0x45, 0, 0], &response).len();
    println!("OSCORE overhead: request {request_overhead} B, response {response_overhead} B");
    assert!(request_overhead <= 16, "{request_overhead}");
    assert!(response_overhead <= 16, "{response_overhead}");
}
