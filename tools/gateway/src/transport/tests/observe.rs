//! Observations: notifications of new sync batches, their end, re-registration and large
//! notifications fetched by Block2.

use super::*;

#[test]
fn observe_pushes_each_new_batch_and_waits_for_the_ack() {
    let mut h = Harness::new(Limits::default());
    let (reply, poll) = register(&mut h, 1, b"obs");
    assert_eq!(reply.get_observe_value().unwrap().unwrap(), 2);
    assert_eq!(h.core.observer_count(), 1);

    // Nothing new (same next_batch): poll again silently.
    let quiet = h.upstream(poll, 200, r#"{"next_batch":"s1"}"#);
    assert!(sent(&quiet).is_empty());
    let poll = forwards(&quiet)[0].0;

    let actions = h.upstream(poll, 200, &batch("s2"));
    let n = sent(&actions).remove(0);
    assert!(
        forwards(&actions).is_empty(),
        "no new poll before the client acknowledges"
    );
    assert_eq!(n.header.get_type(), MessageType::Confirmable);
    assert_eq!(n.get_token(), b"obs");
    assert_eq!(n.get_observe_value().unwrap().unwrap(), 3);
    let ack = message::build(MessageType::Acknowledgement, 0, n.header.message_id, &[]);
    let next = forwards(&h.feed(&ack));
    assert_eq!(
        next[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s2&timeout=30000"
    );

    // RST to the next notification ends the observation.
    let n2 = sent(&h.upstream(next[0].0, 200, &batch("s3"))).remove(0);
    assert_eq!(n2.get_observe_value().unwrap().unwrap(), 4);
    let rst = message::build(MessageType::Reset, 0, n2.header.message_id, &[]);
    h.feed(&rst);
    assert_eq!(h.core.observer_count(), 0);
}

#[test]
fn observe_ends_on_get_without_observe_and_on_unacked_notifications() {
    let mut h = Harness::new(Limits::default());
    let (_, poll) = register(&mut h, 1, b"a");
    let actions = h.feed(&request(MessageType::Confirmable, 1, 5, b"a", SYNC));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Cancel { id } if *id == poll))
    );
    assert_eq!(h.core.observer_count(), 0);

    let (_, poll) = register(&mut h, 20, b"b");
    sent(&h.upstream(poll, 200, &batch("s2")));
    for _ in 0..60 {
        h.advance(Duration::from_secs(2));
    }
    assert_eq!(
        h.core.observer_count(),
        0,
        "a client that never acknowledges is dropped"
    );
}

#[test]
fn re_registration_replaces_the_observer_and_resumes_from_the_clients_since() {
    let mut h = Harness::new(Limits::default());
    let (_, first_poll) = register(&mut h, 1, b"re");
    // The client re-registers (same token) with the since it last processed.
    let mut p = request(MessageType::Confirmable, 1, 2, b"re", SYNC);
    p.add_option(CoapOption::Observe, vec![]);
    p.add_option(CoapOption::UriQuery, b"since=s7".to_vec());
    let f = forwards(&h.feed(&p));
    assert_eq!(f[0].1.path_and_query, "/_matrix/client/v3/sync?since=s7");
    let actions = h.upstream(f[0].0, 200, &batch("s8"));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Cancel { id } if *id == first_poll))
    );
    assert_eq!(
        forwards(&actions)[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s8&timeout=30000"
    );
    assert_eq!(h.core.observer_count(), 1);
}

#[test]
fn large_notification_is_fetched_by_block2_as_pushed() {
    let mut h = Harness::new(Limits::default());
    let (_, poll) = register(&mut h, 1, b"big");
    let body = serde_json::json!({"next_batch": "s2", "pad": "q".repeat(1500)}).to_string();
    let n = sent(&h.upstream(poll, 200, &body)).remove(0);
    assert!(block2(&n).unwrap().more);
    assert!(n.get_observe_value().is_some());
    // The client fetches block 1 with the registration's options minus Observe.
    let mut p = request(MessageType::Confirmable, 1, 50, b"f", SYNC);
    p.add_option(CoapOption::UriQuery, b"since=s0".to_vec());
    p.add_option(
        CoapOption::Block2,
        message::block_option(BlockValue {
            num: 1,
            more: false,
            szx: 6,
        }),
    );
    let actions = h.feed(&p);
    assert!(forwards(&actions).is_empty());
    let rest = &sent(&actions)[0];
    assert_eq!(
        [n.payload.clone(), rest.payload.clone()].concat(),
        body.as_bytes()
    );
    assert_eq!(
        h.core.observer_count(),
        1,
        "a block fetch is not a deregistration"
    );
}
