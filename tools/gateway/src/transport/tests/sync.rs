//! Sync positions, capacity and confirmation (PROFILE.md section 9): the gateway long-polls only
//! from what the client confirmed, cuts bodies to its Response-Capacity, keeps observing through
//! homeserver outages, and never answers a block of a sync with another sync.

use super::*;
use crate::profile::option::{CBOR_TABLE_VERSION, RESPONSE_CAPACITY};

const CAPACITY: u64 = 4000;

/// A v2 CBOR sync request as jeton-core makes it: from `since`, with Observe `observe`,
/// Response-Capacity `capacity` and Block2 `block`.
fn sync_request(
    mid: u16,
    since: Option<&str>,
    observe: Option<u64>,
    capacity: Option<u64>,
    block: Option<u32>,
) -> Packet {
    let mut p = request(MessageType::Confirmable, 1, mid, b"tok", &["v"]);
    if let Some(observe) = observe {
        p.add_option(CoapOption::Observe, message::encode_uint(observe));
    }
    if let Some(since) = since {
        p.add_option(CoapOption::UriQuery, format!("since={since}").into_bytes());
    }
    p.add_option(CoapOption::Accept, vec![60]);
    p.add_option(CoapOption::Unknown(CBOR_TABLE_VERSION), vec![2]);
    if let Some(capacity) = capacity {
        let value = message::encode_uint(capacity);
        p.add_option(CoapOption::Unknown(RESPONSE_CAPACITY), value);
    }
    if let Some(num) = block {
        let value = BlockValue {
            num,
            more: false,
            szx: 6,
        };
        p.add_option(CoapOption::Block2, message::block_option(value));
    }
    p
}

/// What the gateway sent and asked for, collected over a test.
#[derive(Default)]
struct Seen {
    upstream: Vec<String>,
}

impl Seen {
    fn note(&mut self, actions: &[Action]) {
        self.upstream
            .extend(forwards(actions).into_iter().map(|(_, r)| r.path_and_query));
    }
}

/// The whole body that `first` begins, its later blocks fetched with the options of
/// `since`; the homeserver is asked nothing meanwhile.
fn whole_body(h: &mut Harness, first: &Packet, since: Option<&str>, mid: &mut u16) -> Value {
    let mut body = first.payload.clone();
    let mut more = block2(first).is_some_and(|b| b.more);
    let mut num = 1;
    while more {
        *mid += 1;
        let actions = h.feed(&sync_request(*mid, since, None, Some(CAPACITY), Some(num)));
        assert!(forwards(&actions).is_empty(), "a block fetch goes nowhere");
        let reply = sent(&actions).remove(0);
        assert_eq!(code_of(&reply), "2.05");
        body.extend_from_slice(&reply.payload);
        more = block2(&reply).is_some_and(|b| b.more);
        num += 1;
    }
    assert!(body.len() <= CAPACITY as usize, "{} bytes", body.len());
    profile::cbor_to_json(&body, TableVersion::V2).unwrap()
}

fn ack(mid: u16) -> Packet {
    message::build(MessageType::Acknowledgement, 0, mid, &[])
}

fn message_event(n: usize, len: usize) -> Value {
    serde_json::json!({"type": "m.room.message", "sender": "@a:s", "event_id": format!("$e{n}:s"),
                       "content": {"msgtype": "m.text", "body": "x".repeat(len)}})
}

fn to_device_event(sender: &str, len: usize) -> Value {
    serde_json::json!({"type": "m.room.encrypted", "sender": sender,
                       "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "pad": "p".repeat(len)}})
}

fn sync_body(next_batch: &str, to_device: Vec<Value>, timeline: Vec<Value>) -> String {
    let mut body = serde_json::json!({"next_batch": next_batch});
    if !to_device.is_empty() {
        body["to_device"] = serde_json::json!({ "events": to_device });
    }
    if !timeline.is_empty() {
        body["rooms"] = serde_json::json!({"join": {"!r:s": {"timeline": {"events": timeline}}}});
    }
    body.to_string()
}

fn timeline_ids(body: &Value) -> Vec<String> {
    body["rooms"]["join"]["!r:s"]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Registers with capacity from `since`; the homeserver answers with nothing new, so the
/// observer long-polls from `since` at once. Returns the poll's id.
fn register_quietly(h: &mut Harness, seen: &mut Seen, since: &str) -> ForwardId {
    register_answered(h, seen, since, &format!(r#"{{"next_batch":"{since}"}}"#))
}

/// Registers with capacity from `since`; the homeserver answers `answer`, which carries
/// nothing new. Returns the poll's id.
fn register_answered(h: &mut Harness, seen: &mut Seen, since: &str, answer: &str) -> ForwardId {
    let f = forwards(&h.feed(&sync_request(1, Some(since), Some(0), Some(CAPACITY), None)));
    let actions = h.upstream(f[0].0, 200, answer);
    seen.note(&actions);
    let reply = sent(&actions).remove(0);
    assert!(reply.get_observe_value().is_some());
    let body = profile::cbor_to_json(&reply.payload, TableVersion::V2).unwrap();
    assert_eq!(body["next_batch"], since, "nothing new: the position stays");
    let poll = forwards(&actions);
    assert_eq!(
        poll[0].1.path_and_query,
        format!("/_matrix/client/v3/sync?since={since}&timeout=30000")
    );
    poll[0].0
}

#[test]
fn a_notification_acked_without_being_confirmed_does_not_move_the_position() {
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    // The registration's answer carries a to-device event: it waits for the client.
    let f = forwards(&h.feed(&sync_request(1, Some("s0"), Some(0), Some(CAPACITY), None)));
    let td = vec![to_device_event("@b:s", 100)];
    let actions = h.upstream(f[0].0, 200, &sync_body("s1", td, vec![]));
    seen.note(&actions);
    let reply = sent(&actions).remove(0);
    assert!(reply.get_observe_value().is_some());
    let body = profile::cbor_to_json(&reply.payload, TableVersion::V2).unwrap();
    assert_eq!(body["next_batch"], "s1");
    assert!(
        forwards(&actions).is_empty(),
        "no long-poll from s1 before the client confirms it"
    );

    // The client stored it and re-registers from s1: answered here, the long-poll starts.
    let actions = h.feed(&sync_request(2, Some("s1"), Some(0), Some(CAPACITY), None));
    seen.note(&actions);
    let reply = sent(&actions).remove(0);
    assert_eq!(code_of(&reply), "2.05");
    assert!(reply.get_observe_value().unwrap().unwrap() > 2);
    let body = profile::cbor_to_json(&reply.payload, TableVersion::V2).unwrap();
    assert_eq!(body, serde_json::json!({"next_batch": "s1"}));
    let poll = forwards(&actions);
    assert_eq!(poll.len(), 1, "the registration itself is not forwarded");
    assert_eq!(
        poll[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s1&timeout=30000"
    );

    // A notification in one datagram: its ACK confirms it.
    let actions = h.upstream(
        poll[0].0,
        200,
        &sync_body("s2", vec![to_device_event("@b:s", 50)], vec![]),
    );
    let n = sent(&actions).remove(0);
    assert!(block2(&n).is_none());
    let next = forwards(&h.feed(&ack(n.header.message_id)));
    assert_eq!(
        next[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s2&timeout=30000"
    );

    // A notification in several blocks: the ACK of its first block confirms nothing.
    let big = vec![message_event(1, 1500)];
    let n = sent(&h.upstream(next[0].0, 200, &sync_body("s3", vec![], big))).remove(0);
    assert!(block2(&n).unwrap().more);
    let actions = h.feed(&ack(n.header.message_id));
    assert!(forwards(&actions).is_empty() && sent(&actions).is_empty());
    // The client could not store it and registers again from its own position, s2.
    let actions = h.feed(&sync_request(3, Some("s2"), Some(0), Some(CAPACITY), None));
    seen.note(&actions);
    assert_eq!(
        forwards(&actions)[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s2"
    );
    assert!(
        seen.upstream.iter().all(|p| !p.contains("since=s3")),
        "the homeserver never heard of the unconfirmed s3: {:?}",
        seen.upstream
    );
}

#[test]
fn a_5_kb_to_device_event_becomes_a_stub_and_the_rest_of_the_batch_arrives() {
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let to_device = vec![
        to_device_event("@b:s", 100),
        to_device_event("@stranger:s", 5000),
        to_device_event("@c:s", 100),
    ];
    let timeline = vec![message_event(1, 20)];
    let actions = h.upstream(poll, 200, &sync_body("s1", to_device, timeline));
    let n = sent(&actions).remove(0);
    let mut mid = 100;
    let body = whole_body(&mut h, &n, Some("s0"), &mut mid);
    let events = body["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["sender"], "@b:s");
    assert_eq!(events[2]["sender"], "@c:s");
    let stub = events[1].as_object().unwrap();
    assert_eq!(stub["type"], "m.room.encrypted");
    assert_eq!(stub["sender"], "@stranger:s");
    assert!(stub["jeton.too_large"].as_u64().unwrap() > 5000);
    assert!(!stub.contains_key("content"));
    assert_eq!(timeline_ids(&body), ["$e1:s"]);
    assert_eq!(body["next_batch"], "s1");
}

#[test]
fn a_70_kb_to_device_event_is_a_stub_and_the_token_is_not_wedged() {
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let to_device = vec![
        to_device_event("@stranger:s", 70_000),
        to_device_event("@b:s", 100),
    ];
    let n = sent(&h.upstream(poll, 200, &sync_body("s1", to_device, vec![]))).remove(0);
    let mut mid = 100;
    let body = whole_body(&mut h, &n, Some("s0"), &mut mid);
    let events = body["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "one notification carries both");
    assert_eq!(events[0]["sender"], "@stranger:s");
    assert!(events[0]["jeton.too_large"].as_u64().unwrap() > 70_000);
    assert_eq!(events[1]["sender"], "@b:s");
    assert_eq!(body["next_batch"], "s1");
    // The token stored it and moves on: the long-poll goes on from s1.
    mid += 1;
    let actions = h.feed(&sync_request(
        mid,
        Some("s1"),
        Some(0),
        Some(CAPACITY),
        None,
    ));
    assert_eq!(
        forwards(&actions)[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s1&timeout=30000"
    );
}

#[test]
fn a_notification_that_never_arrives_is_fetched_again_from_the_confirmed_position() {
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let to_device = vec![to_device_event("@b:s", 100)];
    let n = sent(&h.upstream(poll, 200, &sync_body("s1", to_device, vec![]))).remove(0);
    assert!(block2(&n).is_none(), "one datagram, confirmed by its ACK");
    // Every transmission is lost: the observation ends without moving past s0.
    for _ in 0..60 {
        let actions = h.advance(Duration::from_secs(2));
        seen.note(&actions);
    }
    assert_eq!(h.core.observer_count(), 0);
    // The token, silent too long, registers again from its own position: s0, and gets s1.
    let actions = h.feed(&sync_request(7, Some("s0"), Some(0), Some(CAPACITY), None));
    seen.note(&actions);
    assert_eq!(
        forwards(&actions)[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s0"
    );
    assert!(
        seen.upstream.iter().all(|p| !p.contains("since=s1")),
        "the homeserver never heard of the lost s1: {:?}",
        seen.upstream
    );
}

#[test]
fn a_12_kb_sync_arrives_in_parts_each_only_after_the_one_before_is_confirmed() {
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let timeline: Vec<Value> = (0..40).map(|n| message_event(n, 300)).collect();
    let whole = sync_body("s9", vec![to_device_event("@b:s", 200)], timeline);
    assert!(whole.len() > 12_000);
    let actions = h.upstream(poll, 200, &whole);
    seen.note(&actions);
    let n = sent(&actions).remove(0);
    let mut mid = 100;
    let part = whole_body(&mut h, &n, Some("s0"), &mut mid);
    assert_eq!(part["to_device"]["events"][0]["sender"], "@b:s");
    let mut ids = timeline_ids(&part);
    let mut position = part["next_batch"].as_str().unwrap().to_owned();
    assert!(position.starts_with("s0~"), "{position}");
    let actions = h.feed(&ack(n.header.message_id));
    assert!(forwards(&actions).is_empty() && sent(&actions).is_empty());
    let mut parts = 1;
    while position != "s9" {
        // Nothing comes unasked, however long the client takes.
        let idle = h.advance(Duration::from_secs(20));
        assert!(sent(&idle).is_empty() && forwards(&idle).is_empty());
        // The client stored the part and registers from its position: the next part.
        mid += 1;
        let actions = h.feed(&sync_request(
            mid,
            Some(&position),
            Some(0),
            Some(CAPACITY),
            None,
        ));
        seen.note(&actions);
        assert!(
            forwards(&actions).is_empty(),
            "parts come from the gateway's memory"
        );
        let reply = sent(&actions).remove(0);
        assert!(reply.get_observe_value().is_some());
        let part = whole_body(&mut h, &reply, Some(&position), &mut mid);
        ids.extend(timeline_ids(&part));
        position = part["next_batch"].as_str().unwrap().to_owned();
        parts += 1;
    }
    assert!(parts >= 4, "{parts} parts");
    let want: Vec<String> = (0..40).map(|n| format!("$e{n}:s")).collect();
    assert_eq!(ids, want, "every event once, in order");
    // The last part confirmed: the long-poll goes on from the homeserver's position.
    mid += 1;
    let actions = h.feed(&sync_request(
        mid,
        Some("s9"),
        Some(0),
        Some(CAPACITY),
        None,
    ));
    seen.note(&actions);
    assert_eq!(
        forwards(&actions)[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s9&timeout=30000"
    );
    let polls: Vec<&String> = seen
        .upstream
        .iter()
        .filter(|p| p.contains("timeout"))
        .collect();
    assert_eq!(
        polls,
        [
            "/_matrix/client/v3/sync?since=s0&timeout=30000",
            "/_matrix/client/v3/sync?since=s9&timeout=30000"
        ],
        "never a poll past an unconfirmed position"
    );
}

#[test]
fn a_restart_mid_split_redelivers_from_the_start() {
    let timeline: Vec<Value> = (0..40).map(|n| message_event(n, 300)).collect();
    let whole = sync_body("s9", vec![], timeline);
    let mut h = Harness::new(Limits::default());
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let n = sent(&h.upstream(poll, 200, &whole)).remove(0);
    let mut mid = 100;
    let part = whole_body(&mut h, &n, Some("s0"), &mut mid);
    let position = part["next_batch"].as_str().unwrap().to_owned();
    let first_ids = timeline_ids(&part);

    // The gateway restarts: it knows nothing of the split.
    let mut h = Harness::new(Limits::default());
    let f = forwards(&h.feed(&sync_request(
        1,
        Some(&position),
        Some(0),
        Some(CAPACITY),
        None,
    )));
    assert_eq!(
        f[0].1.path_and_query, "/_matrix/client/v3/sync?since=s0",
        "an intermediate position never reaches the homeserver"
    );
    let reply = sent(&h.upstream(f[0].0, 200, &whole)).remove(0);
    let again = whole_body(&mut h, &reply, Some(&position), &mut mid);
    assert_eq!(
        timeline_ids(&again),
        first_ids,
        "from the start again: duplicates, no loss"
    );

    // A long-poll (no Observe) from an intermediate position the gateway holds: the next part.
    let next = again["next_batch"].as_str().unwrap().to_owned();
    let actions = h.feed(&sync_request(50, Some(&next), None, Some(CAPACITY), None));
    assert!(forwards(&actions).is_empty());
    let reply = sent(&actions).remove(0);
    let second = whole_body(&mut h, &reply, Some(&next), &mut mid);
    assert_eq!(
        timeline_ids(&second).first().unwrap(),
        &format!("$e{}:s", first_ids.len())
    );
}

#[test]
fn an_upstream_outage_keeps_the_observation_and_polls_again_within_the_retry_cap() {
    let mut h = Harness::new(Limits::default());
    let (_, mut poll) = register(&mut h, 1, b"o");
    let failures = [
        UpstreamOutcome::Unreachable,
        UpstreamOutcome::Timeout,
        status(503),
        status(502),
        UpstreamOutcome::Unreachable,
        UpstreamOutcome::Unreachable,
        status(500),
    ];
    let mut waits = Vec::new();
    for outcome in failures {
        let actions = h.core.on_upstream(poll, outcome, h.now);
        assert!(sent(&actions).is_empty(), "nothing to tell the client yet");
        assert_eq!(h.core.observer_count(), 1);
        let mut waited = 0;
        poll = loop {
            waited += 1;
            assert!(waited <= 10, "a retry within 10 s");
            let again = forwards(&h.advance(Duration::from_secs(1)));
            if let Some((id, request)) = again.first() {
                assert_eq!(
                    request.path_and_query,
                    "/_matrix/client/v3/sync?since=s1&timeout=30000"
                );
                break *id;
            }
        };
        waits.push(waited);
    }
    assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
    // The homeserver is back: the first poll after the outage brings the batch.
    let n = sent(&h.upstream(poll, 200, &batch("s2"))).remove(0);
    assert_eq!(n.header.get_type(), MessageType::Confirmable);
    assert!(n.get_observe_value().is_some());
    // A homeserver error that is not transient still ends the observation.
    let next = forwards(&h.feed(&ack(n.header.message_id)));
    let last = sent(&h.upstream(next[0].0, 401, r#"{"errcode":"M_UNKNOWN_TOKEN"}"#)).remove(0);
    assert_eq!(code_of(&last), "4.01");
    assert_eq!(h.core.observer_count(), 0);
}

fn status(code: u16) -> UpstreamOutcome {
    UpstreamOutcome::Response(UpstreamResponse {
        status: code,
        retry_after: None,
        body: br#"{"errcode":"M_UNKNOWN"}"#.to_vec(),
        content_type: Some("application/json".into()),
    })
}

#[test]
fn quiet_polls_are_not_pushed_and_polled_past_until_the_keepalive_whose_ack_moves_the_position() {
    let mut h = Harness::new(Limits {
        observe_keepalive: Duration::from_secs(60),
        ..Limits::default()
    });
    let mut seen = Seen::default();
    // The homeserver's position moved (other users' traffic) with nothing for this client.
    let poll = register_answered(&mut h, &mut seen, "s0", r#"{"next_batch":"s0_5"}"#);
    h.advance(Duration::from_secs(30));
    let actions = h.upstream(
        poll,
        200,
        r#"{"next_batch":"s1","device_one_time_keys_count":{"signed_curve25519":50}}"#,
    );
    assert!(sent(&actions).is_empty(), "nothing new is not pushed");
    // The client loses nothing between s0 and s1: the next poll waits from s1, or a homeserver
    // that answers a poll from s0 at once would be asked again and again.
    let poll = forwards(&actions);
    assert_eq!(
        poll[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s1&timeout=30000"
    );
    h.advance(Duration::from_secs(31));
    let actions = h.upstream(poll[0].0, 200, r#"{"next_batch":"s2"}"#);
    let keepalive = sent(&actions).remove(0);
    assert_eq!(keepalive.header.get_type(), MessageType::Confirmable);
    let body = profile::cbor_to_json(&keepalive.payload, TableVersion::V2).unwrap();
    assert_eq!(body["next_batch"], "s2");
    let next = forwards(&h.feed(&ack(keepalive.header.message_id)));
    assert_eq!(
        next[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s2&timeout=30000"
    );
}

#[test]
fn a_body_never_confirmed_ends_the_observation_after_the_keepalive_interval() {
    let mut h = Harness::new(Limits {
        observe_keepalive: Duration::from_secs(60),
        ..Limits::default()
    });
    let mut seen = Seen::default();
    let poll = register_quietly(&mut h, &mut seen, "s0");
    let big = vec![message_event(1, 1500)];
    let n = sent(&h.upstream(poll, 200, &sync_body("s1", vec![], big))).remove(0);
    h.feed(&ack(n.header.message_id));
    h.advance(Duration::from_secs(59));
    assert_eq!(h.core.observer_count(), 1);
    let actions = h.advance(Duration::from_secs(2));
    assert!(sent(&actions).is_empty() && forwards(&actions).is_empty());
    assert_eq!(h.core.observer_count(), 0);
}

#[test]
fn a_deregistration_is_answered_here_and_a_lost_block_of_a_sync_is_never_a_new_sync() {
    let mut h = Harness::new(Limits::default());
    let (_, poll) = register(&mut h, 1, b"big");
    let body = serde_json::json!({"next_batch": "s2", "pad": "q".repeat(1500)}).to_string();
    let n = sent(&h.upstream(poll, 200, &body)).remove(0);
    assert!(block2(&n).unwrap().more);
    h.feed(&ack(n.header.message_id));
    // The client cancels its observation (GET with Observe 1, the registration's options).
    let mut cancel = request(MessageType::Confirmable, 1, 60, b"big", SYNC);
    cancel.add_option(CoapOption::Observe, vec![1]);
    cancel.add_option(CoapOption::UriQuery, b"since=s0".to_vec());
    let actions = h.feed(&cancel);
    assert!(
        forwards(&actions).is_empty(),
        "a deregistration is not a sync"
    );
    let reply = sent(&actions).remove(0);
    assert_eq!(code_of(&reply), "2.05");
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(answer, serde_json::json!({"next_batch": "s0"}));
    assert_eq!(h.core.observer_count(), 0);
    // Then it fetches the rest of the notification it was reading: the very body pushed.
    let fetch = |mid: u16| {
        let mut p = request(MessageType::Confirmable, 1, mid, b"f", SYNC);
        p.add_option(CoapOption::UriQuery, b"since=s0".to_vec());
        let value = BlockValue {
            num: 1,
            more: false,
            szx: 6,
        };
        p.add_option(CoapOption::Block2, message::block_option(value));
        p
    };
    let actions = h.feed(&fetch(61));
    assert!(forwards(&actions).is_empty());
    let rest = sent(&actions).remove(0);
    assert_eq!([n.payload.clone(), rest.payload].concat(), body.as_bytes());
    // Once the stored body is gone, a later block is 4.08, never a fresh sync.
    h.advance(Duration::from_secs(61));
    let actions = h.feed(&fetch(62));
    assert!(forwards(&actions).is_empty(), "no sync from an old since");
    assert_eq!(code_of(&sent(&actions)[0]), "4.08");
}

#[test]
fn a_response_capacity_below_the_minimum_is_refused_with_a_reason() {
    let mut h = Harness::new(Limits::default());
    let actions = h.feed(&sync_request(1, Some("s0"), Some(0), Some(500), None));
    assert!(forwards(&actions).is_empty());
    let reply = sent(&actions).remove(0);
    assert_eq!(code_of(&reply), "4.00");
    let body = profile::cbor_to_json(&reply.payload, TableVersion::V2).unwrap();
    assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");
}

#[test]
fn a_raw_json_filter_in_uri_query_is_percent_encoded_once() {
    let mut h = Harness::new(Limits::default());
    let mut p = request(MessageType::Confirmable, 1, 1, b"q", SYNC);
    p.add_option(
        CoapOption::UriQuery,
        br#"filter={"room":{"timeline":{"limit":1}}}"#.to_vec(),
    );
    let f = forwards(&h.feed(&p));
    assert_eq!(
        f[0].1.path_and_query,
        "/_matrix/client/v3/sync?filter=%7B%22room%22:%7B%22timeline%22:%7B%22limit%22:1%7D%7D%7D"
    );
    // A Uri-Query value is raw text (RFC 7252 section 6.5): a `%` in it is a percent sign.
    let mut p = request(MessageType::Confirmable, 1, 2, b"r", SYNC);
    p.add_option(CoapOption::UriQuery, b"filter=%7B%7D".to_vec());
    let f = forwards(&h.feed(&p));
    assert_eq!(
        f[0].1.path_and_query,
        "/_matrix/client/v3/sync?filter=%257B%257D"
    );
}
