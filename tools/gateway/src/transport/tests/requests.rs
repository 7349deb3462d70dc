//! Reading a request: the encoding it negotiates, its options, its access token and path, and
//! what a malformed or non-request message gets.

use super::*;

#[test]
fn a_v2_body_without_content_format_is_cbor_and_so_is_the_answer() {
    let mut h = Harness::new(Limits::default());
    let body = serde_json::json!({"filter_id": "x", "limit": 3});
    let post = |mid: u16, version: Option<u8>, payload: Vec<u8>| {
        let mut p = request(MessageType::Confirmable, 2, mid, &[mid as u8], &["3w"]);
        if let Some(v) = version {
            p.add_option(CoapOption::Unknown(257), vec![v]);
        }
        p.payload = payload;
        p
    };
    let f = forwards(&h.feed(&post(
        1,
        Some(2),
        profile::json_to_cbor(&body, TableVersion::V2).unwrap(),
    )));
    let forwarded: Value = serde_json::from_slice(f[0].1.json_body.as_ref().unwrap()).unwrap();
    assert_eq!(forwarded, body);
    let reply = &sent(&h.upstream(f[0].0, 200, r#"{"user_id":"@u:s"}"#))[0];
    assert_eq!(
        reply.get_first_option(CoapOption::ContentFormat),
        Some(&vec![CONTENT_FORMAT_CBOR as u8])
    );
    assert_eq!(
        profile::cbor_to_json(&reply.payload, TableVersion::V2).unwrap()["user_id"],
        "@u:s"
    );
    // Without option 257 (v1), a body without Content-Format is forwarded as it is (JSON).
    let json = br#"{"a":1}"#.to_vec();
    let f = forwards(&h.feed(&post(2, None, json.clone())));
    assert_eq!(f[0].1.json_body.as_deref(), Some(json.as_slice()));
}

#[test]
fn v2_room_handles_and_megolm_sender_fields_are_kept_with_the_access_token() {
    let mut h = Harness::new(Limits::default());
    let room = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
    let handle = format!("~{}", &room[1..12]);
    let megolm = serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "c2Vz"});
    let send = |mid: u16, room: &str, body: &Value, token: Option<&str>| {
        let mut p = request(
            MessageType::Confirmable,
            3,
            mid,
            &[mid as u8],
            &["we", room, "t"],
        );
        if let Some(token) = token {
            p.add_option(CoapOption::Unknown(256), token.as_bytes().to_vec());
        }
        // No Content-Format: under v2 a body is CBOR by default.
        p.add_option(CoapOption::Unknown(257), vec![2]);
        p.payload = profile::json_to_cbor(body, TableVersion::V2).unwrap();
        p
    };
    let forwarded_body = |f: &(ForwardId, UpstreamRequest)| -> Value {
        serde_json::from_slice(f.1.json_body.as_ref().unwrap()).unwrap()
    };
    // The room is not known yet: 4.12, nothing forwarded.
    let actions = h.feed(&send(1, &handle, &megolm, Some("tok1")));
    assert!(forwards(&actions).is_empty());
    assert_eq!(code_of(&sent(&actions)[0]), "4.12");
    // No sender fields kept yet: the body goes as the client wrote it.
    let f = forwards(&h.feed(&send(2, room, &megolm, None)));
    assert_eq!(forwarded_body(&f[0]), megolm);
    // In full once...
    let mut full = megolm.clone();
    full["sender_key"] = "a2V5".into();
    full["device_id"] = "DEV".into();
    let f = forwards(&h.feed(&send(3, room, &full, None)));
    assert_eq!(f.len(), 1);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/t",
        "%21Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI"
    );
    assert_eq!(f[0].1.path_and_query, path);
    assert_eq!(forwarded_body(&f[0]), full);
    // ...then by handle, without sender fields: forwarded as the full request.
    let f = forwards(&h.feed(&send(4, &handle, &megolm, None)));
    assert_eq!(f[0].1.path_and_query, path);
    assert_eq!(forwarded_body(&f[0]), full);
    // The same access token again keeps the state; another one drops it.
    let f = forwards(&h.feed(&send(5, &handle, &megolm, Some("tok1"))));
    assert_eq!(forwarded_body(&f[0]), full);
    let actions = h.feed(&send(6, &handle, &megolm, Some("tok2")));
    assert_eq!(code_of(&sent(&actions)[0]), "4.12");
}

#[test]
fn a_link_tokens_sticky_state_comes_back_after_a_restart() {
    let room = "!Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI";
    let handle = format!("~{}", &room[1..12]);
    let full = serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA",
        "session_id": "c2Vz", "sender_key": "a2V5", "device_id": "DEV"});
    let short = serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA"});
    // As the link delivers them: every request carries the context's bound access token.
    let send = |mid: u16, room: &str, body: &Value| {
        let mut p = request(
            MessageType::Confirmable,
            3,
            mid,
            &[mid as u8],
            &["we", room, "t"],
        );
        p.add_option(CoapOption::Unknown(256), b"tok1".to_vec());
        p.add_option(CoapOption::Unknown(257), vec![2]);
        p.payload = profile::json_to_cbor(body, TableVersion::V2).unwrap();
        p
    };
    let linked = |h: Harness| Harness {
        core: h.core.with_durable_sticky(),
        peer: PeerId::Context(7),
        ..h
    };
    let mut h = linked(Harness::new(Limits::default()));
    assert_eq!(forwards(&h.feed(&send(1, room, &full))).len(), 1);
    let [(context, record)] = h.core.take_sticky_changes().try_into().unwrap();
    assert_eq!(context, 7);
    assert!(h.core.take_sticky_changes().is_empty(), "handed out once");

    let mut h = linked(Harness::new(Limits::default()));
    h.core.restore_sticky(7, Some(b"tok1"), &record, h.now);
    let f = forwards(&h.feed(&send(2, &handle, &short)));
    assert_eq!(f.len(), 1, "the handle resolves: no 4.12");
    let body: Value = serde_json::from_slice(f[0].1.json_body.as_ref().unwrap()).unwrap();
    assert_eq!(
        body, full,
        "the sender fields and session id left out are filled in"
    );
}

#[test]
fn access_token_is_sticky_with_or_without_bearer() {
    let mut h = Harness::new(Limits::default());
    let mut first = get(1, &["_matrix", "client", "v3", "account", "whoami"]);
    first.add_option(CoapOption::Unknown(256), b"Bearer syt_secret".to_vec());
    let f1 = forwards(&h.feed(&first));
    assert_eq!(
        f1[0].1.access_token.as_ref().unwrap().expose(),
        "syt_secret"
    );
    let f2 = forwards(&h.feed(&get(2, &["_matrix", "client", "v3", "account", "whoami"])));
    assert_eq!(
        f2[0].1.access_token.as_ref().unwrap().expose(),
        "syt_secret"
    );
    let mut third = get(3, PLAIN);
    third.add_option(CoapOption::Unknown(256), b"other".to_vec());
    assert_eq!(
        forwards(&h.feed(&third))[0]
            .1
            .access_token
            .as_ref()
            .unwrap()
            .expose(),
        "other"
    );
}

#[test]
fn cbor_bodies_become_json_and_bad_cbor_is_refused_without_forwarding() {
    let mut h = Harness::new(Limits::default());
    let mut post = request(
        MessageType::Confirmable,
        2,
        1,
        &[1],
        &["_matrix", "client", "v3", "login"],
    );
    post.add_option(CoapOption::ContentFormat, vec![60]);
    post.payload = profile::json_to_cbor(
        &serde_json::json!({"type": "m.login.password"}),
        TableVersion::V1,
    )
    .unwrap();
    let f = forwards(&h.feed(&post));
    let body: Value = serde_json::from_slice(f[0].1.json_body.as_ref().unwrap()).unwrap();
    assert_eq!(body["type"], "m.login.password");

    let mut bad = request(
        MessageType::Confirmable,
        2,
        2,
        &[2],
        &["_matrix", "client", "v3", "login"],
    );
    bad.add_option(CoapOption::ContentFormat, vec![60]);
    bad.payload = vec![0xbf, 0x61];
    let actions = h.feed(&bad);
    assert!(forwards(&actions).is_empty());
    let reply = &sent(&actions)[0];
    assert_eq!(code_of(reply), "4.00");
    let err = profile::cbor_to_json(&reply.payload, TableVersion::V1).unwrap();
    assert_eq!(err["errcode"], "M_BAD_JSON");
    assert!(err["error"].as_str().unwrap().contains("CBOR"));
}

#[test]
fn unknown_critical_option_is_4_02_and_unknown_elective_is_ignored() {
    let mut h = Harness::new(Limits::default());
    let mut p = get(1, PLAIN);
    p.add_option(CoapOption::Unknown(2049), vec![1]);
    let actions = h.feed(&p);
    assert!(forwards(&actions).is_empty());
    assert_eq!(code_of(&sent(&actions)[0]), "4.02");
    let mut p = get(2, PLAIN);
    p.add_option(CoapOption::Unknown(2048), vec![1]);
    assert_eq!(forwards(&h.feed(&p)).len(), 1);
    let mut p = get(3, PLAIN);
    p.add_option(CoapOption::ProxyUri, b"coap://elsewhere/".to_vec());
    assert_eq!(code_of(&sent(&h.feed(&p))[0]), "5.05");
}

#[test]
fn malformed_con_gets_reset_and_malformed_non_is_dropped() {
    let mut h = Harness::new(Limits::default());
    let peer = h.peer;
    let rst = h
        .core
        .on_datagram(peer, &[0x40, 0x01, 0x12, 0x34, 0xf1], h.now);
    let rst = sent(&rst);
    assert_eq!(rst[0].header.get_type(), MessageType::Reset);
    assert_eq!(rst[0].header.message_id, 0x1234);
    assert!(
        h.core
            .on_datagram(peer, &[0x50, 0x01, 0x12, 0x34, 0xf1], h.now)
            .is_empty()
    );
    assert!(h.core.on_datagram(peer, &[0x01], h.now).is_empty());
    assert_eq!(h.core.metrics.malformed.get(), 3);
}

#[test]
fn non_request_gets_non_response() {
    let mut h = Harness::new(Limits::default());
    let p = request(MessageType::NonConfirmable, 1, 77, &[5], PLAIN);
    let f = forwards(&h.feed(&p));
    let reply = sent(&h.upstream(f[0].0, 404, r#"{"errcode":"M_NOT_FOUND","error":"x"}"#));
    assert_eq!(reply[0].header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code_of(&reply[0]), "4.04");
    assert_eq!(reply[0].get_token(), &[5]);
}

/// Issue 15: every unknown path became a Prometheus label of its own (4,000 random paths: a
/// 381 KB `/metrics`). Paths outside the profile's table now share the label `other`.
#[test]
fn random_paths_add_no_metric_labels() {
    let mut h = Harness::new(Limits {
        peer_rate: 1e9,
        peer_burst: 1_000_000,
        ..Limits::default()
    });
    let labels = |h: &Harness| {
        Metrics::render(&h.core.metrics.registry())
            .lines()
            .filter(|l| l.starts_with("jeton_gateway_requests_total{"))
            .count()
    };
    let id = forwards(&h.feed(&get(1, PLAIN)))[0].0;
    h.upstream(id, 200, "{}");
    let before = labels(&h);
    for n in 0..4000u16 {
        // Short lower-case words: what the old labels kept as they were.
        let word: String = n
            .to_string()
            .bytes()
            .map(|d| (b'a' + d - b'0') as char)
            .collect();
        let f = forwards(&h.feed(&get(n.wrapping_add(2), &["_matrix", "client", "v3", &word])));
        h.upstream(
            f[0].0,
            404,
            r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
        );
    }
    let after = labels(&h);
    println!("request metric series: {before} before 4,000 random paths, {after} after");
    assert!(after <= before + 1, "{before} -> {after}");
    assert!(Metrics::render(&h.core.metrics.registry()).contains(r#"route="other""#));
}
