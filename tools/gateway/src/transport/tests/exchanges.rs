//! Message-layer exchanges: duplicates, piggybacked and separate responses, and what the
//! sweep forgets.

use super::*;

#[test]
fn con_request_is_forwarded_once_and_duplicates_get_the_cached_response() {
    let mut h = Harness::new(Limits::default());
    let req = get(7, &["_matrix", "client", "versions"]);
    let actions = h.feed(&req);
    let f = forwards(&actions);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1.path_and_query, "/_matrix/client/versions");
    let reply = sent(&h.upstream(f[0].0, 200, r#"{"versions":["v1.11"]}"#));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].header.get_type(), MessageType::Acknowledgement);
    assert_eq!(reply[0].header.message_id, 7);
    assert_eq!(reply[0].get_token(), req.get_token());
    assert_eq!(code_of(&reply[0]), "2.05");
    let body: Value = serde_json::from_slice(&reply[0].payload).unwrap();
    assert_eq!(body["m.low_bandwidth"]["coap_enum_version"], 1);

    let again = h.feed(&req);
    assert!(
        forwards(&again).is_empty(),
        "a retransmission is never forwarded twice"
    );
    assert_eq!(sent(&again), reply);
}

#[test]
fn slow_upstream_gets_empty_ack_then_separate_con_response() {
    let mut h = Harness::new(Limits::default());
    let req = get(9, SYNC);
    let f = forwards(&h.feed(&req));
    let ack = sent(&h.advance(Duration::from_millis(1001)));
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack[0].header.code, MessageClass::Empty);
    // The client retransmits anyway (ACK lost): empty ACK again, still not forwarded.
    let dup = h.feed(&req);
    assert!(forwards(&dup).is_empty());
    assert_eq!(sent(&dup)[0].header.code, MessageClass::Empty);

    let response = sent(&h.upstream(f[0].0, 200, r#"{"next_batch":"s1"}"#));
    assert_eq!(response[0].header.get_type(), MessageType::Confirmable);
    assert_ne!(response[0].header.message_id, 9);
    assert_eq!(response[0].get_token(), req.get_token());
    // Unacknowledged: retransmitted 4 times with growing gaps, then given up.
    let mut retransmissions = 0;
    for _ in 0..60 {
        retransmissions += sent(&h.advance(Duration::from_secs(2))).len();
    }
    assert_eq!(retransmissions, 4);
    assert_eq!(h.core.unacknowledged_responses(), 0);
}

#[test]
fn acknowledged_separate_response_is_not_retransmitted() {
    let mut h = Harness::new(Limits::default());
    let f = forwards(&h.feed(&get(3, SYNC)));
    h.advance(Duration::from_millis(1500));
    let response = sent(&h.upstream(f[0].0, 200, "{}"));
    let ack = message::build(
        MessageType::Acknowledgement,
        0,
        response[0].header.message_id,
        &[],
    );
    assert!(h.feed(&ack).is_empty());
    assert!(sent(&h.advance(Duration::from_secs(10))).is_empty());
}

#[test]
fn idle_peers_and_old_exchanges_are_forgotten() {
    let mut h = Harness::new(Limits::default());
    let f = forwards(&h.feed(&get(1, PLAIN)));
    h.upstream(f[0].0, 200, "{}");
    assert_eq!(h.core.peer_count(), 1);
    for _ in 0..60 {
        h.advance(Duration::from_secs(5));
    }
    assert_eq!(h.core.peer_count(), 0);
}
