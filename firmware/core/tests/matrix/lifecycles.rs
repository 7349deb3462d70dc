//! The tables' lifecycles (issue 14), one test per way a token stopped working over a few days
//! of ordinary use: room keys never freed, strangers filling the tables, sessions found by
//! room and session id alone, replays of old indexes, membership the person never saw, and no
//! unwedging of a broken Olm channel; then a year in the life, all of it at once.

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
    MAX_INBOUND_SESSIONS, MAX_TRACKED_USERS, PENDING_KEY_SYNCS, REDELIVERY_MEMORY,
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
    assert!(tables.room_keys <= MAX_INBOUND_SESSIONS, "{tables}");
    // The free slots took the first keys; then the person was told of each key that made way;
    // none was refused.
    let dropped = format!("room-key-dropped {ROOM} {PEER}");
    assert_eq!(count(&world, &dropped), rotations - MAX_INBOUND_SESSIONS);
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
    waits_for(
        world,
        &format!("verification-cancelled {stranger} SPAMDEV m.user by-peer"),
    );
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

/// One day, in simulated milliseconds.
const DAY: u64 = 86_400_000;
/// The rooms of the year in the life.
const YEAR_ROOMS: [&str; 3] = [
    "!year-home:localhost",
    "!year-work:localhost",
    "!year-club:localhost",
];

/// A member's device in the year in the life, and where its Megolm session stands.
struct Member {
    peer: Peer,
    /// Messages sent with the current session, and the day it started.
    sent: u32,
    since: u64,
    /// Whether the token was sent the current session's key.
    shared: bool,
}

/// What the year showed.
#[derive(Debug, Default)]
struct Figures {
    received: usize,
    sent: usize,
    rotations: usize,
    joins: usize,
    leaves: usize,
    devices_added: usize,
    devices_removed: usize,
    strangers: usize,
    power_cuts: usize,
    gateway_restarts: usize,
    /// The longest a sync carrying messages waited to be shown.
    longest_wait_ms: u64,
    /// The fullest each table was: rooms, tracked users, devices, Olm sessions, room keys,
    /// waiting keys, outbox.
    fullest: [usize; 7],
}

struct Year {
    world: World,
    rng: crate::support::TestRng,
    members: Vec<Member>,
    /// Devices that left (their user left a room, or the device was removed), with the room.
    gone: Vec<Peer>,
    /// Lines the person must see exactly once.
    expected: Vec<String>,
    people: usize,
    events: usize,
    figures: Figures,
}

impl Year {
    fn new(seed: u64) -> Year {
        let world = World::logged_in(seed);
        let mut year = Year {
            world,
            rng: crate::support::TestRng(seed),
            members: Vec::new(),
            gone: Vec::new(),
            expected: Vec::new(),
            people: 0,
            events: 0,
            figures: Figures::default(),
        };
        let mut rooms = serde_json::Map::new();
        for room in YEAR_ROOMS {
            let mut users = vec![TOKEN_USER.to_string()];
            for _ in 0..2 {
                let peer = year.new_person(room);
                users.push(peer.user.clone());
                year.members.push(year.member(peer));
            }
            let mut state = vec![json!({
                "type": "m.room.encryption", "state_key": "", "sender": users[1],
                "event_id": format!("$enc-{room}"),
                "content": {"algorithm": super::MEGOLM, "rotation_period_msgs": 100,
                            "rotation_period_ms": 604_800_000u64},
            })];
            state.extend(users.iter().map(|u| member(u)));
            rooms.insert(room.into(), json!({"state": {"events": state}}));
        }
        year.world.push_sync(json!({"rooms": {"join": rooms}}));
        let lines: Vec<String> = year
            .members
            .iter()
            .map(|m| format!("new-device {} {}", m.peer.user, m.peer.device))
            .collect();
        year.wait_for_lines(&lines);
        year
    }

    /// A new person with one device, keys published, for `room`.
    fn new_person(&mut self, room: &str) -> Peer {
        self.people += 1;
        let n = self.people;
        let mut peer = Peer::new(&format!("@person{n}:localhost"), &format!("DEV{n}"));
        peer.room = room.into();
        peer.publish(&mut self.world.gw.hs, 20);
        peer
    }

    fn member(&self, peer: Peer) -> Member {
        Member {
            peer,
            sent: 0,
            since: self.world.now,
            shared: false,
        }
    }

    /// Runs until every line in `lines` is on the screen, through power cuts; the wait is a
    /// figure, and bounded.
    fn wait_for_lines(&mut self, lines: &[String]) {
        let start = self.world.now;
        // Only the lines shown from now on: the screen holds the whole year.
        let from = self.world.screen.borrow().len();
        loop {
            let done = self.world.run_until(30 * 60_000, |w| {
                let screen = w.screen.borrow();
                let new = screen.get(from..).unwrap_or_default();
                w.dead() || lines.iter().all(|line| new.contains(line))
            });
            if self.world.dead() {
                self.world.power_cycle();
                self.figures.power_cuts += 1;
                continue;
            }
            let processed = &self.world.gw.processed;
            assert!(
                done,
                "day {}, waited {} s: waiting for {lines:?}: {:?}; the gateway's last requests: {:?}",
                self.world.now / DAY,
                (self.world.now - start) / 1000,
                &self.world.screen()[self.world.screen().len().saturating_sub(8)..],
                &processed[processed.len().saturating_sub(12)..]
            );
            break;
        }
        let waited = self.world.now - start;
        if waited > 60_000 {
            println!(
                "day {}: {} s until {lines:?}",
                self.world.now / DAY,
                waited / 1000
            );
        }
        self.figures.longest_wait_ms = self.figures.longest_wait_ms.max(waited);
        self.world.run_for(2_000);
    }

    /// Member `index` sends `n` messages in one sync, rotating its session first when it is a
    /// week old or would pass 100 messages, and sharing it with the token when it is new.
    fn speak(&mut self, index: usize, n: u32) {
        let now = self.world.now;
        let device = self.world.token_device();
        let member = &mut self.members[index];
        if member.sent + n > 100 || now - member.since >= 7 * DAY {
            member.peer.group = GroupSession::new(SessionConfig::version_1());
            member.sent = 0;
            member.since = now;
            member.shared = false;
            self.figures.rotations += 1;
        }
        let mut to_device = vec![];
        if !member.shared {
            let payload = member.peer.room_key_payload(&self.world.gw.hs, &device);
            to_device.push(
                member
                    .peer
                    .olm_event(&mut self.world.gw.hs, &device, &payload),
            );
            member.shared = true;
        }
        let mut timeline = vec![];
        let mut lines = vec![];
        for _ in 0..n {
            self.events += 1;
            let text = format!("note {} from {}", self.events, member.peer.device);
            timeline.push(
                member
                    .peer
                    .megolm_event(&format!("$y{}", self.events), &text),
            );
            lines.push(shown(&member.peer, &text));
            member.sent += 1;
        }
        let room = member.peer.room.clone();
        self.figures.received += lines.len();
        self.world.push_sync(json!({
            "to_device": {"events": to_device},
            "rooms": {"join": {room: {"timeline": {"events": timeline}}}},
        }));
        self.wait_for_lines(&lines);
        self.expected.extend(lines);
    }

    /// The token speaks in `room`: every current member's device reads it, no device that
    /// left does.
    fn token_speaks(&mut self, room: &str, day: u64) {
        let text = format!("token says hello on day {day}");
        let now = self.world.instant();
        self.world.token().send_text(room, &text, now).unwrap();
        assert!(
            self.world
                .run_until(30 * 60_000, |w| w.token.as_ref().unwrap().outbox_len() == 0),
            "day {day}: the token's message leaves: {:?}",
            self.world.screen()
        );
        self.figures.sent += 1;
        let content = self.world.gw.hs.sent.last().unwrap().3.clone();
        for member in self.members.iter_mut().filter(|m| m.peer.room == room) {
            member.peer.receive_to_device(&self.world.gw.hs);
            let read = member.peer.decrypt(&content);
            assert_eq!(
                read.map(|(plaintext, _)| plaintext["content"]["body"].clone()),
                Some(json!(text)),
                "day {day}: {} {} reads the token",
                member.peer.user,
                member.peer.device
            );
        }
        for peer in self.gone.iter_mut().filter(|p| p.room == room) {
            peer.receive_to_device(&self.world.gw.hs);
            assert!(
                peer.decrypt(&content).is_none(),
                "day {day}: {} {} left and still reads the token",
                peer.user,
                peer.device
            );
        }
    }

    /// A member leaves (all their devices go), and a new person joins a room.
    fn churn(&mut self) {
        let index = self.rng.next_u64() as usize % self.members.len();
        let user = self.members[index].peer.user.clone();
        let room = self.members[index].peer.room.clone();
        self.world.push_sync(
            json!({"rooms": {"join": {(room.clone()): {"timeline": {"events": [
                membership(&user, "leave", &format!("$leave-{user}"))
            ]}}}}}),
        );
        self.wait_for_lines(&[format!("member-left {room} {user}")]);
        let (left, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.peer.user == user);
        self.members = stay;
        self.gone.extend(left.into_iter().map(|m| m.peer));
        self.figures.leaves += 1;

        let room = YEAR_ROOMS[self.rng.next_u64() as usize % YEAR_ROOMS.len()];
        let peer = self.new_person(room);
        let lines = [
            format!("member-joined {room} {}", peer.user),
            format!("new-device {} {}", peer.user, peer.device),
        ];
        self.world
            .push_sync(json!({"rooms": {"join": {room: {"state": {"events": [
                member(&peer.user)
            ]}}}}}));
        self.wait_for_lines(&lines);
        let joined = self.member(peer);
        self.members.push(joined);
        self.figures.joins += 1;
    }

    /// A member with one device adds a second.
    fn add_device(&mut self) {
        let Some(index) = self.single_device_member() else {
            return;
        };
        self.people += 1;
        let (user, room) = {
            let peer = &self.members[index].peer;
            (peer.user.clone(), peer.room.clone())
        };
        let mut peer = Peer::new(&user, &format!("SECOND{}", self.people));
        peer.room = room;
        peer.publish(&mut self.world.gw.hs, 20);
        self.world
            .push_sync(json!({"device_lists": {"changed": [user.clone()]}}));
        self.wait_for_lines(&[format!("new-device {user} {}", peer.device)]);
        let added = self.member(peer);
        self.members.push(added);
        self.figures.devices_added += 1;
    }

    fn single_device_member(&mut self) -> Option<usize> {
        let start = self.rng.next_u64() as usize;
        (0..self.members.len())
            .map(|i| (start + i) % self.members.len())
            .find(|&i| {
                let user = &self.members[i].peer.user;
                self.members.iter().filter(|m| m.peer.user == *user).count() == 1
            })
    }

    /// A member's device goes (its keys no longer listed); with `replacement`, the person
    /// signs in again on a new device in the same sync, as a re-keyed device does.
    fn remove_device(&mut self, replacement: bool) {
        let start = self.rng.next_u64() as usize;
        let count = self.members.len();
        // Without a replacement, only a second device goes: the person keeps one.
        let Some(index) = (0..count).map(|i| (start + i) % count).find(|&i| {
            let user = &self.members[i].peer.user;
            replacement || self.members.iter().filter(|m| m.peer.user == *user).count() > 1
        }) else {
            return;
        };
        let removed = self.members.remove(index).peer;
        let key = (removed.user.clone(), removed.device.clone());
        self.world.gw.hs.device_keys.remove(&key);
        let mut lines = vec![format!(
            "device-removed {} {}",
            removed.user, removed.device
        )];
        if replacement {
            self.people += 1;
            let mut peer = Peer::new(&removed.user, &format!("AGAIN{}", self.people));
            peer.room = removed.room.clone();
            peer.publish(&mut self.world.gw.hs, 20);
            lines.push(format!("new-device {} {}", peer.user, peer.device));
            let again = self.member(peer);
            self.members.push(again);
            self.figures.devices_added += 1;
        }
        self.world
            .push_sync(json!({"device_lists": {"changed": [removed.user.clone()]}}));
        self.wait_for_lines(&lines);
        self.gone.push(removed);
        self.figures.devices_removed += 1;
    }

    /// A week's strangers: a verification request and its cancel, a flood of Olm pre-key
    /// messages, a room key for a room the token is not in, and one for a token's room from
    /// someone not in it.
    fn strangers(&mut self, week: usize) {
        self.figures.strangers += 3;
        let device = self.world.token_device();
        // The request and its cancel in one sync.
        let spam = format!("@spam{week}:localhost");
        let txn = format!("year-spam-{week}");
        self.world.push_sync(json!({"to_device": {"events": [
            {"type": "m.key.verification.request", "sender": spam, "content": {
                "from_device": "SPAMDEV", "methods": ["m.sas.v1"],
                "timestamp": 1_700_000_000_000u64, "transaction_id": txn}},
            {"type": "m.key.verification.cancel", "sender": spam, "content": {
                "transaction_id": txn, "code": "m.user", "reason": "spam"}},
        ]}}));
        self.wait_for_lines(&[format!(
            "verification-cancelled {spam} SPAMDEV m.user by-peer"
        )]);

        let mut flood = Peer::new(&format!("@flood{week}:localhost"), "FLOOD");
        let events: Vec<Value> = (0..3)
            .map(|_| {
                flood.olm.clear();
                flood.olm_event(
                    &mut self.world.gw.hs,
                    &device,
                    &json!({"type": "m.dummy", "content": {}}),
                )
            })
            .collect();
        self.world
            .push_sync(json!({"to_device": {"events": events}}));
        self.world.run_for(20_000);

        let mut foreign = Peer::new(&format!("@foreign{week}:localhost"), "FOREIGN");
        foreign.publish(&mut self.world.gw.hs, 2);
        foreign.room = "!elsewhere:localhost".into();
        let payload = foreign.room_key_payload(&self.world.gw.hs, &device);
        let to_device = foreign.olm_event(&mut self.world.gw.hs, &device, &payload);
        self.world
            .push_sync(json!({"to_device": {"events": [to_device]}}));
        self.wait_for_lines(&[format!("room key rejected {} NotInRoom", foreign.user)]);

        // Someone not in the room shares a key for it and speaks: never shown.
        foreign.room = YEAR_ROOMS[week % YEAR_ROOMS.len()].into();
        foreign.olm.clear();
        let payload = foreign.room_key_payload(&self.world.gw.hs, &device);
        let to_device = foreign.olm_event(&mut self.world.gw.hs, &device, &payload);
        let event = foreign.megolm_event(&format!("$s{week}"), "a stranger must not show");
        let room = foreign.room.clone();
        self.world.push_sync(json!({
            "to_device": {"events": [to_device]},
            "rooms": {"join": {room: {"timeline": {"events": [event]}}}},
        }));
        self.world.run_for(20_000);
    }

    /// Notes how full the tables are; none is past its capacity.
    fn check_tables(&mut self, day: u64) {
        let tables = self.world.token().occupancy();
        let now = [
            tables.rooms,
            tables.tracked_users,
            tables.devices,
            tables.olm_sessions,
            tables.room_keys,
            tables.waiting_keys,
            tables.outbox,
        ];
        let caps = [
            jeton_core::matrix::MAX_ROOMS,
            MAX_TRACKED_USERS,
            jeton_core::matrix::MAX_DEVICES,
            jeton_core::matrix::MAX_OLM_SESSIONS,
            MAX_INBOUND_SESSIONS,
            jeton_core::matrix::MAX_PENDING_ROOM_KEYS,
            jeton_core::matrix::OUTBOX_DEPTH,
        ];
        for ((fullest, now), cap) in self.figures.fullest.iter_mut().zip(now).zip(caps) {
            assert!(now <= cap, "day {day}: {tables}");
            *fullest = (*fullest).max(now);
        }
    }
}

#[test]
fn a_year_in_the_life() {
    // 365 simulated days of three rooms whose members speak every day, rotate weekly and
    // every 100 messages, come and go monthly, add, lose and replace devices; the gateway
    // restarts monthly (its stored state kept, its transport state lost), the power goes at
    // random writes, and strangers send verification requests, Olm pre-key floods and room
    // keys every week.
    let mut year = Year::new(365);
    for day in 0..365u64 {
        // The board slept until the day's first message; it wakes and catches up its timers.
        year.world.now = year.world.now.max(1_000 + day * DAY);
        year.world.run_for(10_000);
        if day % 30 == 7 {
            year.world.gw.restart_keeping_state();
            year.figures.gateway_restarts += 1;
        }
        if day > 0 && day % 30 == 0 {
            year.churn();
        }
        if day % 45 == 10 {
            year.add_device();
        }
        if day % 45 == 30 {
            year.remove_device(false);
        }
        if day % 60 == 50 {
            year.remove_device(true);
        }
        if day % 7 == 3 {
            year.strangers((day / 7) as usize);
        }
        let cut = day % 9 == 4;
        if cut {
            let at = (year.rng.next_u64() % 12) as u32;
            year.world.flash.borrow_mut().cut_power_after(at);
        }
        for _ in 0..2 {
            let index = year.rng.next_u64() as usize % year.members.len();
            let n = 1 + (year.rng.next_u64() % 3) as u32;
            year.speak(index, n);
        }
        if cut && !year.world.dead() {
            // The cut did not come: no later write is dropped.
            year.world.flash.borrow_mut().cut_power_after(u32::MAX);
        }
        if day % 30 == 15 {
            // A busy day: one member sends 105 messages, past the session's 100.
            let index = year.rng.next_u64() as usize % year.members.len();
            for _ in 0..21 {
                year.speak(index, 5);
            }
        }
        if day % 7 == 0 {
            for room in YEAR_ROOMS {
                year.token_speaks(room, day);
            }
        }
        year.check_tables(day);
    }

    // Every message a member sent was shown exactly once; nothing of a stranger's was; the
    // person saw every key dropped.
    let screen = year.world.screen();
    let mut shown_lines = std::collections::HashMap::<&str, usize>::new();
    for line in &screen {
        *shown_lines.entry(line.as_str()).or_default() += 1;
    }
    for line in &year.expected {
        assert_eq!(shown_lines.get(line.as_str()), Some(&1), "{line}");
    }
    assert!(!screen.iter().any(|l| l.contains("must not show")));
    let undecryptable: Vec<_> = screen
        .iter()
        .filter(|l| l.starts_with("undecryptable $y"))
        .collect();
    assert!(undecryptable.is_empty(), "{undecryptable:?}");
    let errors: Vec<_> = screen.iter().filter(|l| l.starts_with("error")).collect();
    let dropped = screen
        .iter()
        .filter(|l| l.starts_with("room-key-dropped"))
        .count();
    let olm_dropped = screen
        .iter()
        .filter(|l| l.starts_with("olm-session-dropped"))
        .count();
    // What the tables take on flash at the end of the year: (bytes, largest record).
    let on_flash = |first: u16, count: u16| {
        let mut buf = vec![0u8; 4096];
        let mut flash = year.world.flash.borrow_mut();
        let sizes: Vec<usize> = (first..first + count)
            .filter_map(|id| flash.get(id, &mut buf).ok().flatten())
            .collect();
        (
            sizes.iter().sum::<usize>(),
            sizes.iter().max().copied().unwrap_or(0),
        )
    };
    use jeton_core::store::{Store as _, record};
    println!(
        "on flash (bytes, largest record): room keys {:?}, Olm sessions {:?}, waiting keys {:?}, \
         rooms {:?}, outbound sessions {:?}, devices {:?}, account {:?}",
        on_flash(record::INBOUND, MAX_INBOUND_SESSIONS as u16),
        on_flash(record::OLM, jeton_core::matrix::MAX_OLM_SESSIONS as u16),
        on_flash(
            record::PENDING,
            jeton_core::matrix::MAX_PENDING_ROOM_KEYS as u16
        ),
        on_flash(record::ROOMS, jeton_core::matrix::MAX_ROOMS as u16),
        on_flash(record::OUTBOUND, jeton_core::matrix::MAX_ROOMS as u16),
        on_flash(record::DEVICES, 1),
        on_flash(record::ACCOUNT, 1),
    );
    let figures = &year.figures;
    println!(
        "a year in the life: {} messages received and shown once, {} sent and read by every \
         member, {} rotations, {} joins, {} leaves, {} devices added, {} removed, {} stranger \
         attacks, {} power cuts, {} gateway restarts; {dropped} room keys and {olm_dropped} Olm \
         sessions dropped (each shown); longest wait for a sync {} s; fullest tables \
         (rooms, tracked users, devices, Olm sessions, room keys, waiting keys, outbox): {:?}; \
         {} errors shown: {:?}",
        figures.received,
        figures.sent,
        figures.rotations,
        figures.joins,
        figures.leaves,
        figures.devices_added,
        figures.devices_removed,
        figures.strangers,
        figures.power_cuts,
        figures.gateway_restarts,
        figures.longest_wait_ms / 1000,
        figures.fullest,
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>(),
    );
    assert!(errors.is_empty());
    // The year filled the room keys: what the person was told of made way, nothing else.
    assert_eq!(figures.fullest[4], MAX_INBOUND_SESSIONS);
    assert!(dropped > 0);
}
