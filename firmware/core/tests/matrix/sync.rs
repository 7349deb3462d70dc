//! The sync lane as a person meets it (PROFILE.md section 9): the token names its capacity,
//! shows an event too large for it, skips what it cannot take in one item at a time, shows a
//! message delivered twice once, and retries a failed sync on its own (a `limited` timeline:
//! backfill.rs).

use serde_json::{Value, json};

use super::{PEER, ROOM, World};

fn text(event_id: &str, body: &str) -> Value {
    json!({"type": "m.room.message", "sender": PEER, "event_id": event_id,
        "content": {"msgtype": "m.text", "body": body}})
}

fn message_line(body: &str) -> String {
    format!("message {ROOM} {PEER} unencrypted {body}")
}

/// Runs `world` until the token shows the message `body`, for at most a minute; fails with
/// its screen.
fn shows(world: &mut World, body: &str) {
    let line = message_line(body);
    assert!(
        world.run_until(60_000, |w| w.saw(&line)),
        "{:?}",
        world.screen()
    );
}

fn timeline(events: Vec<Value>) -> Value {
    json!({"rooms": {"join": {ROOM: {"timeline": {"events": events}}}}})
}

#[test]
fn every_sync_request_names_the_token_capacity_and_the_compact_filter_is_raw_json() {
    let mut world = World::logged_in(60);
    let requests = &world.gw.sync_requests;
    assert!(!requests.is_empty());
    for (capacity, _) in requests {
        assert_eq!(
            *capacity,
            Some(4096 - 64),
            "option 258 on every sync request"
        );
    }
    // A gateway that does not split: a sync too large for the buffer, caught up with the
    // compact filter, which goes as JSON for the gateway to encode once.
    let long = "x".repeat(400);
    let events = (0..12).map(|n| text(&format!("$big{n}"), &format!("{n} {long}")));
    let events: Vec<Value> = events.chain([text("$newest", "the newest")]).collect();
    // The compact sync leaves all but the newest out: the token fetches them again.
    world.gw.hs.history = events.clone();
    world.push_sync(timeline(events));
    assert!(
        world.run_until(120_000, |w| w.saw(&message_line("the newest"))),
        "{:?}",
        world.screen()
    );
    for n in 0..12 {
        let line = message_line(&format!("{n} {long}"));
        assert!(world.saw(&line), "message {n}: {:?}", world.screen());
    }
    let compact = world
        .gw
        .sync_requests
        .iter()
        .find_map(|(_, queries)| queries.iter().find(|q| q.starts_with("filter={")).cloned());
    assert_eq!(
        compact.as_deref(),
        Some(r#"filter={"room":{"timeline":{"limit":1}}}"#)
    );
    assert!(
        !world
            .gw
            .sync_requests
            .iter()
            .flat_map(|(_, queries)| queries)
            .any(|q| q.contains('%')),
        "nothing is percent-encoded by the token"
    );
}

#[test]
fn an_event_too_large_is_shown_as_such_and_the_rest_of_the_sync_is_taken_in() {
    let mut world = World::logged_in(61);
    // 33 to-device messages (one over the view's list capacity), the last a stub; a stub and a
    // message in the timeline.
    let mut to_device: Vec<Value> = (0..32)
        .map(|n| json!({"type": "org.example.ping", "sender": PEER, "content": {"n": n}}))
        .collect();
    to_device.push(
        json!({"type": "m.room.encrypted", "sender": "@eve:localhost",
        "jeton.too_large": 5120}),
    );
    world.push_sync(json!({
        "to_device": {"events": to_device},
        "rooms": {"join": {ROOM: {"timeline": {"events": [
            {"type": "m.room.message", "sender": PEER, "event_id": "$huge", "jeton.too_large": 9000},
            text("$small", "after the large one"),
        ]}}}},
    }));
    shows(&mut world, "after the large one");
    assert!(
        world.saw("event-too-large to-device m.room.encrypted @eve:localhost - 5120 skipped"),
        "{:?}",
        world.screen()
    );
    let stub = format!("event-too-large {ROOM} m.room.message {PEER} $huge 9000 skipped");
    assert!(world.saw(&stub), "{:?}", world.screen());
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn an_item_that_cannot_be_read_is_skipped_alone() {
    let mut world = World::logged_in(62);
    world.push_sync(timeline(vec![
        json!({"type": "m.room.message", "sender": 5, "event_id": "$bad",
            "content": {"msgtype": "m.text", "body": "bad"}}),
        text("$good", "the good one"),
    ]));
    shows(&mut world, "the good one");
    let skipped = format!("skipped timeline {ROOM} - $bad");
    assert!(
        world.screen().iter().any(|l| l.starts_with(&skipped)),
        "{:?}",
        world.screen()
    );
    // And the next sync is read.
    world.push_sync(timeline(vec![text("$next", "next")]));
    shows(&mut world, "next");
}

#[test]
fn a_message_delivered_again_is_shown_once() {
    let mut world = World::logged_in(63);
    world.push_sync(timeline(vec![text("$once", "once")]));
    shows(&mut world, "once");
    // A gateway that restarted in the middle of a split refetches from the base position:
    // the same event comes again, with a new one.
    world.push_sync(timeline(vec![text("$once", "once"), text("$twice", "new")]));
    shows(&mut world, "new");
    let shown = world
        .screen()
        .iter()
        .filter(|l| **l == message_line("once"))
        .count();
    assert_eq!(shown, 1, "{:?}", world.screen());
}

#[test]
fn a_failed_sync_is_retried_on_its_own_within_ten_seconds_of_the_homeserver_coming_back() {
    for observe in [true, false] {
        let mut world = World::new(65);
        world.gw.observe_supported = observe;
        // The homeserver's sync is down for a minute; a message waits on it.
        world.gw.sync_down_until = world.now + 60_000;
        world.push_sync(timeline(vec![text("$back", "back")]));
        let now = world.instant();
        world.token().login("token", "secret", now).unwrap();
        let back = world.gw.sync_down_until;
        assert!(
            world.run_until(120_000, |w| w.saw(&message_line("back"))),
            "observe {observe}: {:?}",
            world.screen()
        );
        let failed = world.gw.sync_requests.len() - 1;
        println!(
            "observe {observe}: {failed} failed sync requests, the message shown {} ms after the homeserver came back",
            world.now.saturating_sub(back)
        );
        assert!(failed >= 3, "observe {observe}: it retried");
        assert!(
            world.now <= back + 12_000,
            "observe {observe}: shown {} ms after the homeserver came back",
            world.now - back
        );
    }
}

/// Whether a `/sync` request after the first `from` names `since=s<position>`.
fn asked_from(world: &World, from: usize, position: usize) -> bool {
    let since = format!("since=s{position}");
    world.gw.sync_requests[from..]
        .iter()
        .any(|(_, queries)| queries.contains(&since))
}

#[test]
fn a_notification_fetched_in_blocks_is_confirmed_by_a_registration_from_its_position() {
    let mut world = World::logged_in(66);
    // One that comes whole is confirmed by its acknowledgement: no request follows.
    let before = world.gw.sync_requests.len();
    world.push_sync(timeline(vec![text("$whole", "whole")]));
    shows(&mut world, "whole");
    world.run_for(5_000);
    assert_eq!(world.gw.sync_requests.len(), before, "no request after it");

    // One larger than a block: the token registers again from its position at once.
    let long = "y".repeat(300);
    let events = (0..6)
        .map(|n| text(&format!("$b{n}"), &format!("{n} {long}")))
        .collect();
    world.push_sync(timeline(events));
    let last = message_line(&format!("5 {long}"));
    assert!(
        world.run_until(60_000, |w| w.saw(&last)),
        "{:?}",
        world.screen()
    );
    let position = world.gw.hs.batches.len();
    assert!(
        world.run_until(5_000, |w| asked_from(w, before, position)),
        "{:?}",
        world.gw.sync_requests
    );
}

#[test]
fn a_notification_whose_sync_could_not_be_stored_is_not_acknowledged_and_comes_again() {
    let mut world = World::logged_in(67);
    world.push_sync(timeline(vec![text("$first", "first")]));
    shows(&mut world, "first");
    world.run_for(10_000);
    assert_eq!(world.gw.notifications_resent, 0, "acknowledged once stored");

    // The cursor cannot be written once: the notification goes unacknowledged, the gateway
    // sends it again, and the message is shown once.
    super::fail_puts(jeton_core::store::record::SYNC_CURSOR, 1);
    world.push_sync(timeline(vec![text("$stored", "stored late")]));
    assert!(world.run_until(60_000, |w| w.gw.notifications_resent > 0));
    world.run_for(10_000);
    let shown = world
        .screen()
        .iter()
        .filter(|l| **l == message_line("stored late"))
        .count();
    assert_eq!(shown, 1, "{:?}", world.screen());
    assert!(world.saw("error Store(Io)"), "{:?}", world.screen());
    // Stored the second time: the next sync follows on.
    world.push_sync(timeline(vec![text("$next", "next")]));
    shows(&mut world, "next");
}

#[test]
fn a_registration_answer_that_could_not_be_stored_is_asked_for_again() {
    let mut world = World::new(68);
    world.push_sync(timeline(vec![text("$early", "early")]));
    super::fail_puts(jeton_core::store::record::SYNC_CURSOR, 1);
    let now = world.instant();
    world.token().login("token", "secret", now).unwrap();
    shows(&mut world, "early");
    assert!(world.saw("error Store(Io)"), "{:?}", world.screen());
    // Asked again from the stored cursor (none yet) after the back-off, and stored then.
    let from_start = |w: &World| {
        w.gw.sync_requests
            .iter()
            .filter(|(_, queries)| !queries.iter().any(|q| q.starts_with("since=")))
            .count()
    };
    let asked = from_start(&world);
    assert!(world.run_until(10_000, |w| from_start(w) > asked));
    world.push_sync(timeline(vec![text("$later", "later")]));
    shows(&mut world, "later");
    let early = world
        .screen()
        .iter()
        .filter(|l| **l == message_line("early"))
        .count();
    assert_eq!(early, 1, "{:?}", world.screen());
}
