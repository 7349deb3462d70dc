//! The memory budget and who may hold block-wise state (issue 15): Block1 uploads and stored
//! bodies only for authenticated peers; a full budget refuses new plain peers, Block1 blocks
//! and observations, never a token on the link; everything counted is given back.

use super::*;
use crate::transport::budget::{OBSERVER_CHARGE, PEER_CHARGE};

const UPLOAD: &[&str] = &["_matrix", "client", "v3", "keys", "upload"];

/// Block `num` of an upload of 1024-byte blocks to [`UPLOAD`].
fn block1(mid: u16, num: u32, more: bool) -> Packet {
    let mut p = request(MessageType::Confirmable, 2, mid, &[mid as u8], UPLOAD);
    let block = BlockValue { num, more, szx: 6 };
    p.add_option(CoapOption::Block1, message::block_option(block));
    p.payload = vec![b' '; 1024];
    p
}

/// A sync registration (Observe 0) answered by the homeserver: the answer to the client and
/// the long-poll started, if any.
fn observe(h: &mut Harness, mid: u16) -> (Packet, Vec<(ForwardId, UpstreamRequest)>) {
    let mut p = request(MessageType::Confirmable, 1, mid, b"obs", SYNC);
    p.add_option(CoapOption::Observe, vec![]);
    let f = forwards(&h.feed(&p));
    let actions = h.upstream(f[0].0, 200, &batch("s1"));
    (sent(&actions).remove(0), forwards(&actions))
}

fn errcode(p: &Packet) -> String {
    let body: Value = serde_json::from_slice(&p.payload).unwrap();
    body["errcode"].as_str().unwrap_or_default().to_owned()
}

fn max_age(p: &Packet) -> Option<&Vec<u8>> {
    p.get_first_option(CoapOption::MaxAge)
}

#[test]
fn an_unauthenticated_block1_block_gets_4_01_and_nothing_is_kept() {
    let mut h = Harness::anonymous(Limits::default());
    let reply = sent(&h.feed(&block1(1, 0, true))).remove(0);
    assert_eq!(code_of(&reply), "4.01");
    assert_eq!(errcode(&reply), "M_MISSING_TOKEN");
    assert_eq!(
        h.core.memory_held(),
        PEER_CHARGE,
        "the peer only, no upload"
    );
    // The next block finds nothing: the first was not kept.
    h.sign_in();
    assert_eq!(code_of(&sent(&h.feed(&block1(2, 1, true)))[0]), "4.08");
    // With an access token presented, the same upload is taken.
    assert_eq!(code_of(&sent(&h.feed(&block1(3, 0, true)))[0]), "2.31");
    assert_eq!(h.core.memory_held(), PEER_CHARGE + 1024);
}

#[test]
fn a_large_answer_to_an_unauthenticated_peer_is_not_stored() {
    let mut h = Harness::anonymous(Limits::default());
    let body = serde_json::json!({"pad": "p".repeat(2500)}).to_string();
    let f = forwards(&h.feed(&get(1, PLAIN)));
    let first = sent(&h.upstream(f[0].0, 200, &body)).remove(0);
    assert!(block2(&first).unwrap().more);
    assert_eq!(h.core.memory_held(), PEER_CHARGE, "the body is not stored");
    // Block 1 is fetched again from the homeserver.
    let mut p = get(2, PLAIN);
    let block = BlockValue {
        num: 1,
        more: false,
        szx: 6,
    };
    p.add_option(CoapOption::Block2, message::block_option(block));
    let again = forwards(&h.feed(&p));
    assert_eq!(again.len(), 1, "fetched again, not served from memory");
    let second = sent(&h.upstream(again[0].0, 200, &body)).remove(0);
    assert_eq!(second.payload, body.as_bytes()[1024..2048]);
    assert_eq!(h.core.memory_held(), PEER_CHARGE);
}

#[test]
fn a_full_budget_refuses_a_new_plain_peer_with_5_03_max_age_30() {
    let mut h = Harness::anonymous(Limits {
        memory_budget: 2 * PEER_CHARGE,
        ..Limits::default()
    });
    let mut codes = Vec::new();
    for port in 0..3u16 {
        h.peer = PeerId::Address(SocketAddr::from(([127, 0, 0, 1], 3000 + port)));
        let actions = h.feed(&get(1, PLAIN));
        if !forwards(&actions).is_empty() {
            codes.push("forwarded".to_owned());
            continue;
        }
        let reply = sent(&actions).remove(0);
        assert_eq!(max_age(&reply), Some(&vec![30]));
        codes.push(code_of(&reply));
    }
    assert_eq!(codes[..2], ["forwarded", "forwarded"]);
    assert_eq!(codes[2], "5.03", "the third peer finds the budget full");
    assert_eq!(h.core.peer_count(), 2, "and gets no state");
    assert!(h.core.memory_held() <= 2 * PEER_CHARGE);
}

#[test]
fn a_full_budget_refuses_a_block1_block_with_5_03_max_age_1() {
    let mut h = Harness::new(Limits {
        memory_budget: PEER_CHARGE + 1024 + 512,
        ..Limits::default()
    });
    assert_eq!(code_of(&sent(&h.feed(&block1(1, 0, true)))[0]), "2.31");
    let reply = sent(&h.feed(&block1(2, 1, true))).remove(0);
    assert_eq!(code_of(&reply), "5.03");
    assert_eq!(max_age(&reply), Some(&vec![1]));
    assert_eq!(h.core.memory_held(), PEER_CHARGE + 1024);
    // Operators see both in the metrics.
    assert_eq!(
        h.core.metrics.memory_held.get(),
        (PEER_CHARGE + 1024) as i64
    );
    assert_eq!(h.core.metrics.memory_refusals.get(), 1);
}

#[test]
fn a_full_budget_answers_an_observe_registration_without_observe() {
    let mut h = Harness::new(Limits {
        memory_budget: PEER_CHARGE + OBSERVER_CHARGE - 1,
        ..Limits::default()
    });
    let (reply, polls) = observe(&mut h, 1);
    assert_eq!(code_of(&reply), "2.05");
    assert!(reply.get_first_option(CoapOption::Observe).is_none());
    assert!(polls.is_empty(), "no long-poll for an observer not kept");
    assert_eq!(h.core.observer_count(), 0);
    // With room, the same registration is an observation.
    let mut h = Harness::new(Limits {
        memory_budget: PEER_CHARGE + OBSERVER_CHARGE,
        ..Limits::default()
    });
    let (reply, polls) = observe(&mut h, 1);
    assert!(reply.get_first_option(CoapOption::Observe).is_some());
    assert_eq!(polls.len(), 1);
    assert_eq!(h.core.memory_held(), PEER_CHARGE + OBSERVER_CHARGE);
}

#[test]
fn a_token_on_the_link_is_counted_but_never_refused() {
    let budget = 1024;
    let mut h = Harness::anonymous(Limits {
        memory_budget: budget,
        ..Limits::default()
    });
    h.peer = PeerId::Context(1);
    for num in 0..4 {
        let reply = sent(&h.feed(&block1(10 + num as u16, num, true))).remove(0);
        assert_eq!(code_of(&reply), "2.31", "block {num}");
    }
    let (reply, polls) = observe(&mut h, 20);
    assert!(reply.get_first_option(CoapOption::Observe).is_some());
    assert_eq!(polls.len(), 1);
    let held = h.core.memory_held();
    assert_eq!(held, PEER_CHARGE + 4 * 1024 + OBSERVER_CHARGE);
    assert!(held > budget, "counted beyond the budget");
    // A plain peer meanwhile finds the budget full.
    h.peer = PeerId::Address(PEER.parse::<SocketAddr>().unwrap());
    assert_eq!(code_of(&sent(&h.feed(&get(30, PLAIN)))[0]), "5.03");
}

#[test]
fn the_budget_returns_to_zero_once_transfers_end_and_expire() {
    let mut h = Harness::new(Limits::default());
    // An upload that finishes: the last block and the answer are kept for a repeat.
    assert_eq!(code_of(&sent(&h.feed(&block1(1, 0, true)))[0]), "2.31");
    let mut last = block1(2, 1, false);
    last.payload = br#"{"one_time_keys":{}}"#.to_vec();
    let f = forwards(&h.feed(&last));
    h.upstream(f[0].0, 200, r#"{"one_time_key_counts":{}}"#);
    assert!(h.core.memory_held() > PEER_CHARGE, "the finished upload");
    // An upload left unfinished (the same request: the finished one makes way), a body
    // stored for Block2, an observer.
    assert_eq!(code_of(&sent(&h.feed(&block1(3, 0, true)))[0]), "2.31");
    let body = serde_json::json!({"next_batch": "s9", "pad": "p".repeat(2500)}).to_string();
    let f = forwards(&h.feed(&get(4, PLAIN)));
    h.upstream(f[0].0, 200, &body);
    let (_, polls) = observe(&mut h, 5);
    let held = h.core.memory_held();
    assert_eq!(held, PEER_CHARGE + OBSERVER_CHARGE + 1024 + body.len());
    // The client ends its observation (a GET without Observe); the rest expires.
    let f = forwards(&h.feed(&get(6, SYNC)));
    h.upstream(f[0].0, 200, &batch("s2"));
    drop(polls);
    h.advance(Duration::from_secs(61));
    assert_eq!(h.core.memory_held(), PEER_CHARGE, "the transfers expired");
    h.advance(Duration::from_secs(300));
    assert_eq!(h.core.peer_count(), 0);
    assert_eq!(h.core.memory_held(), 0);
}
