//! Incoming calls as a person meets them: a call rings (`call-incoming`), stops on the
//! caller's hangup, another device's answer or its lifetime's end (with no other traffic), is
//! declined with the answer its invite's version asks for, and never rings for the token's
//! own user, for an invite already past its lifetime, or beyond the table's size.

use serde_json::{Value, json};

use super::gateway::TOKEN_USER;
use super::{PEER, ROOM, World, member, room_with_peer};

/// A logged-in token in an unencrypted room with the peer.
fn plain_room(seed: u64) -> World {
    let mut world = World::logged_in(seed);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"state": {"events": [
        member(TOKEN_USER), member(PEER),
    ]}}}}}));
    world.run_for(5_000);
    world
}

fn call_event(event_id: &str, sender: &str, event_type: &str, content: Value) -> Value {
    json!({"type": event_type, "sender": sender, "event_id": event_id, "content": content})
}

fn invite(event_id: &str, call_id: &str, version: Value, lifetime: u64) -> Value {
    call_event(
        event_id,
        PEER,
        "m.call.invite",
        json!({"call_id": call_id, "party_id": "PEERDEV", "version": version,
            "lifetime": lifetime, "offer": {"type": "offer", "sdp": "v=0"}}),
    )
}

fn timeline(world: &mut World, events: Vec<Value>) {
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": events}}}}}));
}

/// Runs `world` until it shows `line`, for at most a minute; fails with its screen.
fn shows(world: &mut World, line: &str) {
    assert!(
        world.run_until(60_000, |w| w.saw(line)),
        "{line}: {:?}",
        world.screen()
    );
}

fn rings(world: &World) -> Vec<String> {
    world
        .screen()
        .into_iter()
        .filter(|l| l.starts_with("call-"))
        .collect()
}

/// A token in a plain room with the peer, whose call `call_id` (of `version`, a minute's
/// lifetime) rings.
fn ringing(seed: u64, call_id: &str, version: Value) -> World {
    let mut world = plain_room(seed);
    timeline(&mut world, vec![invite("$i1", call_id, version, 60_000)]);
    shows(
        &mut world,
        &format!("call-incoming {ROOM} {PEER} {call_id}"),
    );
    world
}

/// Runs `world` until its outbox delivered something.
fn delivers(world: &mut World) {
    assert!(
        world.run_until(60_000, |w| w
            .screen()
            .iter()
            .any(|l| l.starts_with("delivered "))),
        "{:?}",
        world.screen()
    );
}

#[test]
fn a_call_rings_until_the_caller_hangs_up() {
    let mut world = ringing(71, "c1", json!("1"));
    let hangup = call_event(
        "$h1",
        PEER,
        "m.call.hangup",
        json!({"call_id": "c1", "party_id": "PEERDEV", "version": "1", "reason": "user_hangup"}),
    );
    timeline(&mut world, vec![hangup]);
    shows(&mut world, &format!("call-ended {ROOM} c1 hung-up"));
    // Nothing is left to decline.
    let now = world.instant();
    let refused = world.token().decline(None, now);
    assert!(refused.is_err(), "{:?}", world.screen());
}

#[test]
fn a_call_stops_ringing_at_the_end_of_its_lifetime_without_other_traffic() {
    let mut world = plain_room(72);
    // 2 s of its 30 s passed before the token heard of it.
    let mut event = invite("$i1", "c1", json!(0), 30_000);
    event["unsigned"] = json!({"age": 2_000});
    timeline(&mut world, vec![event]);
    shows(&mut world, &format!("call-incoming {ROOM} {PEER} c1"));
    let rang = world.now;
    shows(&mut world, &format!("call-ended {ROOM} c1 expired"));
    let rang_for = world.now - rang;
    assert!(
        (27_000..=28_500).contains(&rang_for),
        "it rang for {rang_for} ms"
    );
}

#[test]
fn an_invite_past_its_lifetime_the_token_users_own_and_one_for_someone_else_never_ring() {
    let mut world = plain_room(73);
    let mut old = invite("$old", "old", json!("1"), 30_000);
    old["unsigned"] = json!({"age": 30_000});
    let mut own = invite("$own", "own", json!("1"), 30_000);
    own["sender"] = json!(TOKEN_USER);
    let mut other = invite("$other", "other", json!("1"), 30_000);
    other["content"]["invitee"] = json!("@someone:localhost");
    let mut mine = invite("$mine", "mine", json!("1"), 30_000);
    mine["content"]["invitee"] = json!(TOKEN_USER);
    timeline(&mut world, vec![old, own, other, mine]);
    shows(&mut world, &format!("call-incoming {ROOM} {PEER} mine"));
    world.run_for(40_000);
    assert_eq!(
        rings(&world),
        [
            format!("call-incoming {ROOM} {PEER} mine"),
            format!("call-ended {ROOM} mine expired"),
        ]
    );
}

#[test]
fn a_call_beyond_the_table_does_not_ring_and_is_reported() {
    let mut world = plain_room(74);
    let events = (1..=3)
        .map(|n| invite(&format!("$i{n}"), &format!("c{n}"), json!("1"), 60_000))
        .collect();
    timeline(&mut world, events);
    shows(&mut world, &format!("call-incoming {ROOM} {PEER} c2"));
    world.run_for(1_000);
    assert!(!world.saw(&format!("call-incoming {ROOM} {PEER} c3")));
    assert!(
        world.screen().iter().any(|l| l
            .starts_with(&format!("skipped timeline {ROOM} {PEER} $i3 "))
            && l.contains("calls ringing at once")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn another_device_of_the_user_answering_ends_the_ringing() {
    let mut world = ringing(75, "c1", json!("1"));
    let answer = call_event(
        "$a1",
        TOKEN_USER,
        "m.call.answer",
        json!({"call_id": "c1", "party_id": "PHONE", "version": "1", "answer": {"type": "answer", "sdp": "v=0"}}),
    );
    timeline(&mut world, vec![answer]);
    shows(
        &mut world,
        &format!("call-ended {ROOM} c1 answered-elsewhere"),
    );
}

#[test]
fn declining_a_version_0_call_in_a_plain_room_sends_a_user_hangup() {
    let mut world = ringing(76, "c0", json!(0));
    let now = world.instant();
    world.token().decline(Some("c0"), now).unwrap();
    assert!(world.saw(&format!("call-ended {ROOM} c0 declined")));
    delivers(&mut world);
    let (_, _, event_type, content) = world.gw.hs.sent.last().unwrap().clone();
    assert_eq!(event_type, "m.call.hangup");
    let device = world.token_device();
    assert_eq!(
        content,
        json!({"call_id": "c0", "party_id": device, "reason": "user_hangup", "version": 0})
    );
}

#[test]
fn an_encrypted_call_rings_and_is_declined_with_an_encrypted_reject() {
    let (mut world, mut peer) = room_with_peer(77);
    let device = world.token_device();
    let payload = peer.room_key_payload(&world.gw.hs, &device);
    let to_device = peer.olm_event(&mut world.gw.hs, &device, &payload);
    let event = peer.megolm_typed_event(
        "$i1",
        "m.call.invite",
        json!({"call_id": "c1", "party_id": "PEERDEV", "version": "1", "lifetime": 60_000,
            "offer": {"type": "offer", "sdp": "v=0"}}),
    );
    world.push_sync(json!({
        "to_device": {"events": [to_device]},
        "rooms": {"join": {ROOM: {"timeline": {"events": [event]}}}},
    }));
    shows(&mut world, &format!("call-incoming {ROOM} {PEER} c1"));
    let now = world.instant();
    world.token().decline(None, now).unwrap();
    delivers(&mut world);
    peer.receive_to_device(&world.gw.hs);
    let (_, _, event_type, content) = world.gw.hs.sent.last().unwrap().clone();
    assert_eq!(event_type, "m.room.encrypted");
    let (plaintext, _) = peer
        .decrypt(&content)
        .expect("the peer decrypts the reject");
    assert_eq!(
        plaintext,
        json!({"type": "m.call.reject", "room_id": ROOM,
            "content": {"call_id": "c1", "party_id": device, "version": "1"}})
    );
    assert!(world.saw(&format!("call-ended {ROOM} c1 declined")));
}

#[test]
fn a_matrix_rtc_ring_rings_under_its_event_id_and_a_plain_notification_does_not() {
    let mut world = plain_room(78);
    let ring = call_event(
        "$ring",
        PEER,
        "org.matrix.msc4075.rtc.notification",
        json!({"notification_type": "ring", "lifetime": 30_000, "sender_ts": 1}),
    );
    let notify = call_event(
        "$notify",
        PEER,
        "m.call.notify",
        json!({"call_id": "", "notify_type": "notify", "application": "m.call"}),
    );
    timeline(&mut world, vec![notify, ring]);
    shows(&mut world, &format!("call-incoming {ROOM} {PEER} $ring"));
    // Declining it only silences the token: nothing is sent.
    let sent = world.gw.hs.sent.len();
    let now = world.instant();
    world.token().decline(Some("$ring"), now).unwrap();
    assert!(world.saw(&format!("call-ended {ROOM} $ring declined")));
    world.run_for(5_000);
    assert_eq!(world.gw.hs.sent.len(), sent);
    assert_eq!(rings(&world).len(), 2, "{:?}", world.screen());
}
