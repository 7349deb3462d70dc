//! The tables' lifecycles (issue 14), one test per way a token stopped working over a few days
//! of ordinary use: room keys never freed, strangers filling the tables, sessions found by
//! room and session id alone, replays of old indexes, membership the person never saw, and no
//! unwedging of a broken Olm channel.

use serde_json::{Value, json};
use vodozemac::Curve25519PublicKey;
use vodozemac::megolm::{GroupSession, SessionConfig};
use vodozemac::olm::OlmMessage;

use super::gateway::TOKEN_USER;
use super::{
    B64, PEER, PEER_DEVICE, Peer, ROOM, World, encrypted_room_batch, member, peer_reads,
    room_with_peer,
};
use base64::Engine as _;
use jeton_core::matrix::{
    MAX_INBOUND_PER_SENDER, MAX_INBOUND_SESSIONS, MAX_TRACKED_USERS, PENDING_KEY_SYNCS,
    REDELIVERY_MEMORY,
};

/// A membership event of `user` in the room.
fn membership(user: &str, membership: &str, id: &str) -> Value {
    json!({
        "type": "m.room.member", "state_key": user, "sender": user,
        "event_id": id, "content": {"membership": membership},
    })
}

/// The line the token shows for `peer`'s encrypted message `text`.
fn shown(peer: &Peer, text: &str) -> String {
    format!("message {} {} encrypted {text}", peer.room, peer.user)
}

/// `peer` sends its current room key and then message `text` as event `id`, in one sync.
fn key_and_message(world: &mut World, peer: &mut Peer, id: &str, text: &str) {
    let device = world.token_device();
    let payload = peer.room_key_payload(&world.gw.hs, &device);
    let to_device = peer.olm_event(&mut world.gw.hs, &device, &payload);
    let event = peer.megolm_event(id, text);
    let room = peer.room.clone();
    world.push_sync(json!({
        "to_device": {"events": [to_device]},
        "rooms": {"join": {room: {"timeline": {"events": [event]}}}},
    }));
}

/// `peer` sends message `text` as event `id` with its current session.
fn message(world: &mut World, peer: &mut Peer, id: &str, text: &str) -> Value {
    let event = peer.megolm_event(id, text);
    let room = peer.room.clone();
    world.push_sync(json!({"rooms": {"join": {room: {"timeline": {"events": [event.clone()]}}}}}));
    event
}

fn count(world: &World, line: &str) -> usize {
    world.screen().iter().filter(|l| *l == line).count()
}

fn waits_for(world: &mut World, line: &str) {
    assert!(
        world.run_until(60_000, |w| w.saw(line)),
        "waiting for {line:?}: {:?}",
        world.screen()
    );
}

#[test]
fn a_member_who_rotates_more_often_than_the_table_holds_is_read_every_time() {
    // Before: the 8 slots only filled, and every message after the 8th rotation was
    // undecryptable ("the limit of room keys is reached").
    let (mut world, mut peer) = room_with_peer(60);
    let rotations = MAX_INBOUND_SESSIONS + 8;
    for n in 0..rotations {
        peer.group = GroupSession::new(SessionConfig::version_1());
        key_and_message(
            &mut world,
            &mut peer,
            &format!("$rot{n}"),
            &format!("rotation {n}"),
        );
        waits_for(&mut world, &shown(&peer, &format!("rotation {n}")));
    }
    let tables = world.token().occupancy();
    assert!(tables.room_keys <= MAX_INBOUND_PER_SENDER, "{tables}");
    // The person was told of each key that made way; none was refused.
    let dropped = format!("room-key-dropped {ROOM} {PEER}");
    assert_eq!(count(&world, &dropped), rotations - MAX_INBOUND_PER_SENDER);
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
    // A late message of the newest session but one still decrypts: it is not the one
    // evicted.
    world.power_cycle();
    let again = message(&mut world, &mut peer, "$late", "still here");
    let _ = again;
    waits_for(&mut world, &shown(&peer, "still here"));
}

#[test]
fn room_keys_for_a_room_the_token_is_not_in_or_from_a_non_member_are_refused() {
    // Before: both were kept once the stranger's device keys were fetched.
    let (mut world, _peer) = room_with_peer(61);
    let device = world.token_device();
    let mut stranger = Peer::new("@stranger:localhost", "STRANGER");
    stranger.publish(&mut world.gw.hs, 5);

    stranger.room = "!elsewhere:localhost".into();
    let payload = stranger.room_key_payload(&world.gw.hs, &device);
    let to_device = stranger.olm_event(&mut world.gw.hs, &device, &payload);
    world.push_sync(json!({"to_device": {"events": [to_device]}}));
    waits_for(
        &mut world,
        "room key rejected @stranger:localhost NotInRoom",
    );

    // The token forgot the stranger's Olm session once read: a new one.
    stranger.olm.clear();
    // A key for the token's room from someone who is not in it waits a few syncs, then goes.
    stranger.room = ROOM.into();
    stranger.group = GroupSession::new(SessionConfig::version_1());
    key_and_message(&mut world, &mut stranger, "$intruder", "must not show");
    waits_for(&mut world, "undecryptable $intruder AwaitingKey");
    for _ in 0..PENDING_KEY_SYNCS {
        world.push_sync(json!({}));
        world.run_for(2_000);
    }
    waits_for(
        &mut world,
        "room key rejected @stranger:localhost NotAMember",
    );
    world.run_for(10_000);
    assert!(!world.screen().iter().any(|l| l.contains("must not show")));
    assert_eq!(world.token().occupancy().waiting_keys, 0);
    // The stranger is not tracked: no device query asked for them.
    assert!(
        world
            .gw
            .hs
            .queried
            .iter()
            .all(|users| !users.contains(&stranger.user))
    );
}

#[test]
fn a_room_key_that_arrives_before_its_sender_is_a_member_waits_for_the_membership() {
    let (mut world, _peer) = room_with_peer(62);
    let mut newcomer = Peer::new("@newcomer:localhost", "NEWDEV");
    newcomer.publish(&mut world.gw.hs, 5);
    let device = world.token_device();
    let payload = newcomer.room_key_payload(&world.gw.hs, &device);
    let to_device = newcomer.olm_event(&mut world.gw.hs, &device, &payload);
    let mut event = newcomer.megolm_event("$early", "before my join arrived");
    world.push_sync(json!({
        "to_device": {"events": [to_device]},
        "rooms": {"join": {ROOM: {"timeline": {"events": [event.clone()]}}}},
    }));
    waits_for(&mut world, "undecryptable $early AwaitingKey");
    event["room_id"] = json!(ROOM);
    world.gw.hs.events.insert("$early".into(), event);
    // The membership comes with the next sync: the key is taken, the event fetched again.
    world.push_sync(json!({"rooms": {"join": {ROOM: {"state": {"events": [
        member("@newcomer:localhost")
    ]}}}}}));
    waits_for(
        &mut world,
        "member-joined !Q2h17OuTwUiCDRvhRjbiYZbz4plT6DUjLkFXnay1FTI @newcomer:localhost",
    );
    waits_for(&mut world, &shown(&newcomer, "before my join arrived"));
}

/// A stranger asks the token to verify them, then cancels.
fn verification_request_and_cancel(world: &mut World, stranger: &str, n: usize) {
    let txn = format!("spam-{n}");
    world.push_sync(json!({"to_device": {"events": [
        {"type": "m.key.verification.request", "sender": stranger, "content": {
            "from_device": "SPAMDEV", "methods": ["m.sas.v1"],
            "timestamp": 1_700_000_000_000u64, "transaction_id": txn}},
    ]}}));
    waits_for(world, &format!("verification-request {stranger} SPAMDEV"));
    world.push_sync(json!({"to_device": {"events": [
        {"type": "m.key.verification.cancel", "sender": stranger, "content": {
            "transaction_id": txn, "code": "m.user", "reason": "spam"}},
    ]}}));
    world.run_for(3_000);
}

#[test]
fn verification_requests_from_twenty_strangers_leave_room_for_a_new_contact() {
    // Before: each request tracked its sender for good; 11 strangers filled the table and the
    // next real contact's room key was refused ("the sending device is unknown").
    let (mut world, _peer) = room_with_peer(63);
    for n in 0..20 {
        verification_request_and_cancel(&mut world, &format!("@spam{n}:localhost"), n);
        let tables = world.token().occupancy();
        assert!(tables.tracked_users <= 3, "{tables}");
    }
    let mut contact = Peer::new("@contact:localhost", "CONTACT");
    contact.publish(&mut world.gw.hs, 5);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"state": {"events": [
        member("@contact:localhost")
    ]}}}}}));
    world.run_for(5_000);
    key_and_message(
        &mut world,
        &mut contact,
        "$hello",
        "hello from a new contact",
    );
    waits_for(&mut world, &shown(&contact, "hello from a new contact"));
    assert!(world.token().occupancy().tracked_users < MAX_TRACKED_USERS);
}

#[test]
fn an_olm_pre_key_flood_from_a_stranger_leaves_the_members_session_alone() {
    // Before: every pre-key message stored a session; 18 of them pushed out the member's, and
    // the member's next room key was refused ("the Olm message could not be decrypted").
    let (mut world, mut peer) = room_with_peer(64);
    key_and_message(&mut world, &mut peer, "$first", "first");
    waits_for(&mut world, &shown(&peer, "first"));
    let device = world.token_device();
    let mut stranger = Peer::new("@flood:localhost", "FLOOD");
    for round in 0..6 {
        let mut events = Vec::new();
        for _ in 0..3 {
            stranger.olm.clear();
            events.push(stranger.olm_event(
                &mut world.gw.hs,
                &device,
                &json!({"type": "m.dummy", "content": {}}),
            ));
        }
        world.push_sync(json!({"to_device": {"events": events}}));
        // The token publishes one-time keys again as they are claimed.
        world.run_for(20_000);
        assert!(
            world.token().occupancy().olm_sessions <= 1,
            "round {round}: {}",
            world.token().occupancy()
        );
    }
    peer.group = GroupSession::new(SessionConfig::version_1());
    key_and_message(&mut world, &mut peer, "$second", "second");
    waits_for(&mut world, &shown(&peer, "second"));
}

#[test]
fn a_member_re_sharing_another_members_session_does_not_take_it_over() {
    // Before: sessions were found by room and session id alone: Bob's copy of Alice's session
    // (reaching further back) replaced hers, and her messages were refused as another
    // sender's.
    let (mut world, mut alice) = room_with_peer(65);
    let mut bob = Peer::new("@bob:localhost", "BOBDEV");
    bob.publish(&mut world.gw.hs, 5);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"state": {"events": [
        member("@bob:localhost")
    ]}}}}}));
    world.run_for(5_000);
    // Bob holds Alice's session from its first index and shares it as his own.
    let device = world.token_device();
    let mut forged = bob.room_key_payload(&world.gw.hs, &device);
    forged["content"]["session_id"] = json!(alice.group.session_id());
    forged["content"]["session_key"] = json!(alice.group.session_key().to_base64());
    for n in 0..3 {
        alice.megolm_event(&format!("$unseen{n}"), "not delivered");
    }
    let from_bob = bob.olm_event(&mut world.gw.hs, &device, &forged);
    world.push_sync(json!({"to_device": {"events": [from_bob]}}));
    world.run_for(5_000);
    // Then Alice shares her session (from its current index) and speaks.
    key_and_message(&mut world, &mut alice, "$alice", "from alice");
    waits_for(&mut world, &shown(&alice, "from alice"));
    assert!(!world.saw("undecryptable $alice SenderMismatch"));
    assert!(
        !world
            .screen()
            .iter()
            .any(|l| l.starts_with("message") && l.contains("@bob"))
    );
}

#[test]
fn an_old_index_replayed_under_a_new_event_id_is_refused_and_a_redelivery_is_not_shown_twice() {
    // Before: only the last 16 indexes were remembered; index 2 replayed after 20 messages
    // showed as a new message.
    let (mut world, mut peer) = room_with_peer(66);
    key_and_message(&mut world, &mut peer, "$m0", "m0");
    waits_for(&mut world, &shown(&peer, "m0"));
    let mut events = vec![];
    for n in 1..=REDELIVERY_MEMORY + 8 {
        events.push(message(
            &mut world,
            &mut peer,
            &format!("$m{n}"),
            &format!("m{n}"),
        ));
        waits_for(&mut world, &shown(&peer, &format!("m{n}")));
    }
    let mut replayed = events[1].clone();
    replayed["event_id"] = json!("$m2-again");
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [replayed]}}}}}));
    waits_for(&mut world, "undecryptable $m2-again Replay");
    // The newest message delivered again (a sync fetched twice) is not shown a second time.
    let last = events.last().unwrap().clone();
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [last]}}}}}));
    world.run_for(10_000);
    let n = REDELIVERY_MEMORY + 8;
    assert_eq!(count(&world, &shown(&peer, &format!("m{n}"))), 1);
    assert!(!world.saw(&format!("undecryptable $m{n} Replay")));
    assert_eq!(count(&world, &shown(&peer, "m2")), 1);
}

#[test]
fn members_and_devices_coming_and_going_are_shown_and_end_the_session_they_had() {
    // Before: none of it was shown, a dropped device did not end the session it had received,
    // and a device that came back with other keys was taken as new.
    let (mut world, mut peer) = room_with_peer(67);
    let joined = format!("member-joined {ROOM} {PEER}");
    assert!(world.saw(&joined), "{:?}", world.screen());
    assert!(world.saw(&format!("new-device {PEER} {PEER_DEVICE}")));

    let mut second = Peer::new(PEER, "PEERDEV2");
    second.publish(&mut world.gw.hs, 3);
    world.push_sync(json!({"device_lists": {"changed": [PEER]}}));
    waits_for(&mut world, &format!("new-device {PEER} PEERDEV2"));
    let now = world.instant();
    world.token().send_text(ROOM, "to both", now).unwrap();
    assert!(world.run_until(60_000, |w| w.gw.hs.sent.len() == 1));

    // The second device is removed: the token says so, and its next message uses a session
    // that device never received.
    world
        .gw
        .hs
        .device_keys
        .remove(&(PEER.to_string(), "PEERDEV2".to_string()));
    world.push_sync(json!({"device_lists": {"changed": [PEER]}}));
    waits_for(&mut world, &format!("device-removed {PEER} PEERDEV2"));
    let now = world.instant();
    world.token().send_text(ROOM, "to one", now).unwrap();
    assert!(world.run_until(60_000, |w| w.gw.hs.sent.len() == 2));
    let read = peer_reads(&world, &mut peer);
    assert_ne!(read[0].1, read[1].1, "a new session after a device left");
    second.receive_to_device(&world.gw.hs);
    assert!(second.decrypt(&world.gw.hs.sent[1].3).is_none());

    // It comes back under the same id with other keys: refused as a changed device.
    let mut impostor = Peer::new(PEER, "PEERDEV2");
    impostor.publish(&mut world.gw.hs, 3);
    world.push_sync(json!({"device_lists": {"changed": [PEER]}}));
    waits_for(
        &mut world,
        &format!("device rejected {PEER} PEERDEV2 KeysChanged"),
    );
    let now = world.instant();
    world
        .token()
        .send_text(ROOM, "not to the impostor", now)
        .unwrap();
    assert!(world.run_until(60_000, |w| w.gw.hs.sent.len() == 3));
    let to_impostor = world
        .gw
        .hs
        .to_device
        .iter()
        .filter(|(_, _, content)| content["ciphertext"].get(impostor.curve()).is_some())
        .count();
    assert_eq!(
        to_impostor, 0,
        "nothing was encrypted to the impostor's keys"
    );

    // The peer leaves: shown, and let go.
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [
        membership(PEER, "leave", "$leave")
    ]}}}}}));
    waits_for(&mut world, &format!("member-left {ROOM} {PEER}"));
    let tables = world.token().occupancy();
    assert_eq!(
        tables.tracked_users, 1,
        "only the token's own user: {tables}"
    );
    assert_eq!(tables.devices, 0, "{tables}");
}

#[test]
fn a_user_the_homeserver_lists_as_left_and_a_room_the_token_left_are_forgotten() {
    let (mut world, mut peer) = room_with_peer(68);
    key_and_message(&mut world, &mut peer, "$k", "keyed");
    waits_for(&mut world, &shown(&peer, "keyed"));
    world.push_sync(json!({"device_lists": {"left": [PEER]}}));
    waits_for(&mut world, &format!("member-left {ROOM} {PEER}"));
    let tables = world.token().occupancy();
    assert_eq!(
        (tables.tracked_users, tables.devices, tables.room_keys),
        (1, 0, 0),
        "{tables}"
    );

    world.push_sync(json!({"rooms": {"leave": {ROOM: {"timeline": {"events": [
        membership(TOKEN_USER, "leave", "$gone")
    ]}}}}}));
    waits_for(&mut world, &format!("left {ROOM}"));
    assert_eq!(world.token().rooms().count(), 0);
    // Its slot is free for another room, and its records are gone from flash.
    world.power_cycle();
    assert_eq!(world.token().rooms().count(), 0);
}

#[test]
fn the_rotation_period_a_room_sets_is_capped_at_a_week() {
    let mut world = World::logged_in(69);
    let mut peer = Peer::new(PEER, PEER_DEVICE);
    peer.publish(&mut world.gw.hs, 5);
    let mut batch = encrypted_room_batch(&[TOKEN_USER, PEER]);
    let content = &mut batch["rooms"]["join"][ROOM]["state"]["events"][0]["content"];
    content["rotation_period_ms"] = json!(30u64 * 86_400_000);
    content["rotation_period_msgs"] = json!(10_000);
    world.push_sync(batch);
    world.run_until(60_000, |w| w.gw.processed.iter().any(|p| p == "3h"));
    world.run_for(5_000);
    let now = world.instant();
    world.token().send_text(ROOM, "monday", now).unwrap();
    world.run_until(60_000, |w| w.gw.hs.sent.len() == 1);
    // Eight days later (the board slept): a new session, though the room asked for thirty.
    world.now += 8 * 86_400_000;
    let now = world.instant();
    world.token().handle_timeout(now);
    world.token().send_text(ROOM, "next week", now).unwrap();
    assert!(world.run_until(60_000, |w| w.gw.hs.sent.len() == 2));
    let read = peer_reads(&world, &mut peer);
    assert_ne!(read[0].1, read[1].1, "rotated after the spec's week");
}

/// Flips the last byte of the Olm ciphertext in a to-device event (its MAC): well formed, but
/// no session decrypts it.
fn break_olm(event: &mut Value, token_curve: &str) {
    let body = &mut event["content"]["ciphertext"][token_curve]["body"];
    let mut bytes = B64.decode(body.as_str().unwrap()).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    *body = json!(B64.encode(bytes));
}

/// The `m.dummy` payloads the token sent `peer` over new Olm sessions since the to-device
/// message `seen`, which moves past them.
fn dummies(world: &World, peer: &mut Peer, seen: &mut usize) -> usize {
    let mut found = 0;
    let sent = &world.gw.hs.to_device;
    let new = sent.get(*seen..).unwrap_or_default();
    *seen = sent.len();
    for (user, device, content) in new {
        if *user != peer.user || *device != peer.device {
            continue;
        }
        let message = &content["ciphertext"][peer.curve()];
        let body = B64.decode(message["body"].as_str().unwrap()).unwrap();
        let Ok(OlmMessage::PreKey(pre_key)) =
            OlmMessage::from_parts(message["type"].as_u64().unwrap() as usize, &body)
        else {
            continue;
        };
        let sender =
            Curve25519PublicKey::from_base64(content["sender_key"].as_str().unwrap()).unwrap();
        let Ok(created) = peer.account.create_inbound_session(
            vodozemac::olm::SessionConfig::version_1(),
            sender,
            &pre_key,
        ) else {
            continue;
        };
        let payload: Value = serde_json::from_slice(&created.plaintext).unwrap();
        if payload["type"] == "m.dummy" {
            assert_eq!(payload["recipient"], peer.user);
            found += 1;
        }
    }
    found
}

#[test]
fn a_known_device_whose_olm_message_cannot_be_decrypted_is_unwedged_at_most_hourly() {
    // Before: the token showed the failure and did nothing; the member's channel stayed broken.
    let (mut world, mut peer) = room_with_peer(70);
    key_and_message(&mut world, &mut peer, "$ok", "ok");
    waits_for(&mut world, &shown(&peer, "ok"));
    let device = world.token_device();
    let token_curve = world.token().identity().curve25519.to_string();
    let broken = |world: &mut World, peer: &mut Peer| {
        let mut event = peer.olm_event(
            &mut world.gw.hs,
            &device,
            &json!({"type": "m.dummy", "content": {}}),
        );
        break_olm(&mut event, &token_curve);
        world.push_sync(json!({"to_device": {"events": [event]}}));
        world.run_for(30_000);
    };
    let mut seen = world.gw.hs.to_device.len();
    broken(&mut world, &mut peer);
    assert!(world.saw(&format!("room key rejected {PEER} Olm")));
    assert_eq!(
        dummies(&world, &mut peer, &mut seen),
        1,
        "{:?}",
        world.screen()
    );
    // Within the hour: no second session.
    broken(&mut world, &mut peer);
    assert_eq!(dummies(&world, &mut peer, &mut seen), 0);
    // An hour later: again.
    world.run_for(3_600_000);
    broken(&mut world, &mut peer);
    assert_eq!(dummies(&world, &mut peer, &mut seen), 1);
}
