//! Back-filling a `limited` timeline as a person meets it: every message of the gap shown once
//! and in order, a gap larger than the token goes back announced with how much was fetched, a
//! burst that came with the token's join shown down to the join, a gap the homeserver will not
//! serve announced, and a back-fill that survives a failing homeserver and a power cut.

use serde_json::{Value, json};

use super::gateway::TOKEN_USER;
use super::{PEER, ROOM, World};

fn text(n: usize) -> Value {
    json!({"type": "m.room.message", "sender": PEER, "event_id": format!("$h{n}"),
        "content": {"msgtype": "m.text", "body": format!("message {n}")}})
}

fn message_line(n: usize) -> String {
    format!("message {ROOM} {PEER} unencrypted message {n}")
}

/// The numbers of the messages the token showed, in the order it showed them.
fn shown(world: &World) -> Vec<usize> {
    let prefix = format!("message {ROOM} {PEER} unencrypted message ");
    world
        .screen()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// Runs `world` until the token showed as many messages as `expected`, and a while longer;
/// fails unless it showed exactly those, in that order, with no notice of a gap.
pub(crate) fn shows_in_order(world: &mut World, expected: &[usize]) {
    assert!(
        world.run_until(120_000, |w| shown(w).len() >= expected.len()),
        "{:?}",
        world.screen()
    );
    world.run_for(5_000);
    assert_eq!(shown(world), expected, "{:?}", world.screen());
    assert!(
        !world.screen().iter().any(|l| l.starts_with("gap ")),
        "{:?}",
        world.screen()
    );
}

/// Runs `world` until the token showed message `last`, and a while longer; fails unless it
/// showed exactly `expected`, in that order, after the notice that earlier messages were not
/// fetched (`back_filled` of them were), which comes before message `expected[after]`.
fn shows_after_notice(world: &mut World, expected: &[usize], after: usize, back_filled: usize) {
    let last = *expected.last().unwrap();
    assert!(
        world.run_until(60_000, |w| w.saw(&message_line(last))),
        "{:?}",
        world.screen()
    );
    world.run_for(5_000);
    assert_eq!(shown(world), expected, "{:?}", world.screen());
    let gap = format!("gap {ROOM} earlier messages were not fetched ({back_filled} back-filled)");
    let screen = world.screen();
    let gap_at = screen.iter().position(|l| *l == gap);
    let first = screen
        .iter()
        .position(|l| *l == message_line(expected[after]));
    assert!(
        gap_at.is_some() && gap_at < first,
        "the notice before what was fetched: {screen:?}"
    );
}

/// A sync of the room that holds `history` from `from` on, the events before left out.
pub(crate) fn limited_sync(history: &[Value], from: usize) -> Value {
    json!({"rooms": {"join": {ROOM: {"timeline": {
        "events": history[from..].to_vec(), "limited": true, "prev_batch": format!("t{from}")}}}}})
}

/// A token that followed the room through messages `0..seen` of `total`.
fn following(seed: u64, seen: usize, total: usize) -> World {
    let mut world = World::logged_in(seed);
    follow(&mut world, seen, total);
    world
}

/// The room's history holds `total` messages, of which the token took in the first `seen`.
pub(crate) fn follow(world: &mut World, seen: usize, total: usize) {
    world.gw.hs.history = (0..total).map(text).collect();
    let first = world.gw.hs.history[..seen].to_vec();
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": first}}}}}));
    assert!(
        world.run_until(60_000, |w| w.saw(&message_line(seen - 1))),
        "{:?}",
        world.screen()
    );
    // The position after that sync is where the room stood then.
    let position = format!("s{}", world.gw.hs.batches.len());
    world.gw.hs.positions.insert(position, seen);
}

#[test]
fn a_limited_sync_of_a_followed_room_back_fills_the_gap_and_shows_every_message_once() {
    let mut world = following(80, 5, 20);
    let sync = limited_sync(&world.gw.hs.history, 15);
    world.push_sync(sync);
    shows_in_order(&mut world, &(0..20).collect::<Vec<_>>());
    // The walk back stopped where the token stood: it asked up to the previous position.
    let first = &world.gw.hs.messages_requests[0];
    assert!(first.iter().any(|q| q == "dir=b"), "{first:?}");
    assert!(first.iter().any(|q| q == "from=t15"), "{first:?}");
    assert!(first.iter().any(|q| q.starts_with("to=s")), "{first:?}");

    // And the room goes on live.
    world.gw.hs.history.push(text(20));
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [text(20)]}}}}}));
    assert!(world.run_until(60_000, |w| w.saw(&message_line(20))));
    assert_eq!(shown(&world), (0..21).collect::<Vec<_>>());
}

#[test]
fn a_gap_larger_than_the_bound_shows_a_notice_with_the_count() {
    let mut world = following(81, 5, 60);
    let sync = limited_sync(&world.gw.hs.history, 55);
    world.push_sync(sync);
    // Four pages of five back from the gap's end: messages 35 to 54, then the sync's own.
    let fetched = (jeton_core::matrix::BACKFILL_PAGES as usize)
        * (jeton_core::matrix::BACKFILL_PAGE_EVENTS as usize);
    assert_eq!(fetched, 20);
    let expected: Vec<usize> = (0..5).chain(35..60).collect();
    shows_after_notice(&mut world, &expected, 5, fetched);
}

#[test]
fn a_just_joined_rooms_burst_is_back_filled_down_to_the_join() {
    let mut world = World::logged_in(82);
    let member = |user: &str, id: &str, membership: &str| {
        json!({"type": "m.room.member", "sender": user, "state_key": user, "event_id": id,
            "content": {"membership": membership}})
    };
    // History from before the token's arrival, its join, then a burst of twelve.
    let mut history = vec![
        json!({"type": "m.room.create", "sender": PEER, "state_key": "", "event_id": "$create",
            "content": {}}),
        member(PEER, "$peer", "join"),
    ];
    history.extend((100..103).map(text));
    history.push(member(TOKEN_USER, "$join", "join"));
    history.extend((0..12).map(text));
    world.gw.hs.history = history.clone();
    // The sync that brings the room holds the last five of the burst.
    let from = history.len() - 5;
    world.push_sync(limited_sync(&history, from));
    shows_in_order(&mut world, &(0..12).collect::<Vec<_>>());
}

#[test]
fn a_limited_timeline_without_prev_batch_is_back_filled_from_where_the_token_stood() {
    let mut world = following(85, 5, 12);
    // The gateway leaves out a `prev_batch` equal to the token's `since` (PROFILE.md 3.4).
    let events = world.gw.hs.history[5..].to_vec();
    world.push_sync(
        json!({"rooms": {"join": {ROOM: {"timeline": {"events": events, "limited": true}}}}}),
    );
    shows_in_order(&mut world, &(0..12).collect::<Vec<_>>());
}

#[test]
fn a_gap_the_homeserver_will_not_serve_is_announced_and_the_syncs_messages_still_show() {
    let mut world = following(86, 5, 20);
    world.gw.hs.history_hidden = true;
    let sync = limited_sync(&world.gw.hs.history, 15);
    world.push_sync(sync);
    let expected: Vec<usize> = (0..5).chain(15..20).collect();
    shows_after_notice(&mut world, &expected, 5, 0);
}

#[test]
fn a_failing_homeserver_delays_the_back_fill_without_holding_up_the_live_sync() {
    let mut world = following(83, 5, 12);
    world.gw.hs.failing_messages = 3;
    let sync = limited_sync(&world.gw.hs.history, 10);
    world.push_sync(sync);
    // Another room is live meanwhile.
    let other = "!other:localhost";
    world.push_sync(json!({"rooms": {"join": {other: {"timeline": {"events": [
        {"type": "m.room.message", "sender": PEER, "event_id": "$o",
            "content": {"msgtype": "m.text", "body": "elsewhere"}}]}}}}}));
    let elsewhere = format!("message {other} {PEER} unencrypted elsewhere");
    assert!(
        world.run_until(60_000, |w| w.saw(&elsewhere)),
        "{:?}",
        world.screen()
    );
    shows_in_order(&mut world, &(0..12).collect::<Vec<_>>());
}

#[test]
fn a_back_fill_a_power_cut_interrupts_goes_on_after_it() {
    let mut world = following(84, 5, 30);
    let sync = limited_sync(&world.gw.hs.history, 25);
    world.push_sync(sync);
    // Cut the power once the walk has started.
    assert!(world.run_until(60_000, |w| !w.gw.hs.messages_requests.is_empty()));
    world.power_cycle();
    assert!(
        world.run_until(120_000, |w| w.saw(&message_line(29))),
        "{:?}",
        world.screen()
    );
    world.run_for(5_000);
    let mut seen = shown(&world);
    seen.dedup();
    // Every message shows (one shown before the cut may show again after it).
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, (0..30).collect::<Vec<_>>(), "{:?}", world.screen());
}
