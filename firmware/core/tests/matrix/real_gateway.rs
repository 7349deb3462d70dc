//! The real gateway in the world's place of the fake: `jeton_gateway`'s transport core (and its
//! link layer, EDHOC + OSCORE) in front of the in-memory homeserver of `gateway.rs`, on the
//! world's virtual clock. What happens between the token and the homeserver (path expansion,
//! sticky state, blockwise, Observe, sync splits) is the gateway's own code.
//!
//! The homeserver answers an upstream request at once, except a sync with nothing new and a
//! timeout: that one waits for the next batch the test pushes, or until its timeout, when it
//! is answered with nothing new, as a homeserver's long-poll is.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use jeton_core::coap::message::Message;
use jeton_core::coap::option;
use jeton_core::link::KeyFile;
use jeton_gateway::limits::Limits;
use jeton_gateway::link::{Inbound, Link};
use jeton_gateway::link_credentials::{AuthorisedToken, LinkCredentials};
use jeton_gateway::metrics::Metrics;
use jeton_gateway::source::Sources;
use jeton_gateway::translate::{UpstreamOutcome, UpstreamRequest, UpstreamResponse};
use jeton_gateway::transport::{Action, ForwardId, Transport};
use jeton_proto::TableVersion;
use jeton_proto::transcode::{cbor_to_json, json_to_cbor};
use serde_json::{Value, json};

use crate::gateway::{ACCESS_TOKEN, FakeGateway, Homeserver, TOKEN_USER};
use crate::link::{gateway_identity, token_identity};
use crate::{PEER, Peer, ROOM, World, join_room_with_peer, peer_reads, send_delivered};

/// The token's address as the gateway sees it (loopback: no Echo round trip needed).
const TOKEN_ADDRESS: &str = "127.0.0.1:40000";

/// A sync long-poll the homeserver holds.
struct Held {
    id: ForwardId,
    position: usize,
    deadline: u64,
}

pub(crate) struct RealGateway {
    transport: Transport,
    link: Link,
    /// Virtual time zero as the gateway's clock reads it.
    epoch: std::time::Instant,
    held: Vec<Held>,
    /// Datagrams for the token, as they leave the gateway.
    pub outbox: Vec<Vec<u8>>,
    /// Every request the gateway made to the homeserver: method, path and query, body.
    pub forwarded: Vec<(String, String, Value)>,
    /// The token's requests as the gateway's transport read them: Uri-Path and payload.
    pub on_the_air: Vec<(Vec<String>, Vec<u8>)>,
    /// How long a sync without a timeout waits when nothing is new (0: answered at once, as
    /// Synapse does; more: a slow homeserver).
    pub untimed_sync_ms: u64,
}

impl RealGateway {
    /// A gateway as `jeton-gateway` builds it: `link` with or without pairing credentials.
    pub(crate) fn new(link: Link, now: u64) -> Self {
        let epoch = std::time::Instant::now();
        let at = epoch + Duration::from_millis(now);
        RealGateway {
            transport: Transport::new(Limits::default(), Metrics::default(), at)
                .with_sources(loopback()),
            link: link.with_sources(loopback()),
            epoch,
            held: Vec::new(),
            outbox: Vec::new(),
            forwarded: Vec::new(),
            on_the_air: Vec::new(),
            untimed_sync_ms: 0,
        }
    }

    /// A plain gateway (no pairing), taking access tokens in clear as MSC3079 does.
    pub(crate) fn plain(now: u64) -> Self {
        Self::new(Link::new(None, true), now)
    }

    /// The gateway process restarts: a new transport and link, nothing of the old one's
    /// state; the homeserver forgets the long-polls it held for the old one.
    pub(crate) fn restart(&mut self, link: Link, now: u64) {
        let forwarded = std::mem::take(&mut self.forwarded);
        let on_the_air = std::mem::take(&mut self.on_the_air);
        *self = Self::new(link, now);
        self.forwarded = forwarded;
        self.on_the_air = on_the_air;
    }

    fn at(&self, now: u64) -> std::time::Instant {
        self.epoch + Duration::from_millis(now)
    }

    pub(crate) fn next_timer(&self) -> Option<u64> {
        let transport = self
            .transport
            .next_timer()
            .map(|t| t.saturating_duration_since(self.epoch).as_millis() as u64);
        let held = self.held.iter().map(|h| h.deadline).min();
        transport.into_iter().chain(held).min()
    }

    pub(crate) fn handle_datagram(&mut self, gw: &mut FakeGateway, now: u64, datagram: &[u8]) {
        let address: SocketAddr = TOKEN_ADDRESS.parse().unwrap();
        let (peer, plain) = match self.link.on_datagram(address, datagram, self.at(now)) {
            Inbound::Deliver(peer, plain) => (peer, plain),
            Inbound::Reply(reply) => return self.outbox.push(reply),
            Inbound::Drop => return,
        };
        if let Ok(message) = Message::decode(&plain)
            && message.header.code.is_request()
        {
            let path = message
                .options()
                .filter(|(n, _)| *n == option::URI_PATH)
                .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
                .collect();
            self.on_the_air.push((path, message.payload.to_vec()));
        }
        let actions = self.transport.on_datagram(peer, &plain, self.at(now));
        self.perform(gw, now, actions);
    }

    pub(crate) fn handle_timeout(&mut self, gw: &mut FakeGateway, now: u64) {
        let (due, held) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.deadline <= now);
        self.held = held;
        for h in due {
            let answer = sync_answer(&gw.hs, h.position);
            let actions = self.transport.on_upstream(h.id, answer, self.at(now));
            self.perform(gw, now, actions);
        }
        let actions = self.transport.on_timer(self.at(now));
        self.perform(gw, now, actions);
    }

    /// The test pushed a sync batch: the long-polls waiting for it are answered.
    pub(crate) fn notify(&mut self, gw: &mut FakeGateway, now: u64) {
        let batches = gw.hs.batches.len();
        let (ready, held) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.position < batches);
        self.held = held;
        for h in ready {
            let answer = sync_answer(&gw.hs, h.position);
            let actions = self.transport.on_upstream(h.id, answer, self.at(now));
            self.perform(gw, now, actions);
        }
    }

    fn perform(&mut self, gw: &mut FakeGateway, now: u64, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { peer, datagram } => {
                    if let Some((_, datagram)) = self.link.on_send(peer, datagram) {
                        self.outbox.push(datagram);
                    }
                }
                Action::Forward { id, request } => {
                    if let Some(answer) = self.upstream(gw, id, request, now) {
                        queue.extend(self.transport.on_upstream(id, answer, self.at(now)));
                    }
                }
                Action::Cancel { id } => self.held.retain(|h| h.id != id),
            }
        }
    }

    /// The homeserver's answer to `request`, or `None` while it holds a long-poll.
    fn upstream(
        &mut self,
        gw: &mut FakeGateway,
        id: ForwardId,
        request: UpstreamRequest,
        now: u64,
    ) -> Option<UpstreamOutcome> {
        let body = request
            .json_body
            .as_deref()
            .map_or(Value::Null, |b| serde_json::from_slice(b).unwrap());
        self.forwarded.push((
            request.method.to_string(),
            request.path_and_query.clone(),
            body.clone(),
        ));
        let (segments, query) = short_path(&request.path_and_query);
        let route = segments.join("/");
        gw.processed.push(route.clone());
        let token = request.access_token.as_ref().map(|t| t.expose());
        if route != "31" && token != Some(ACCESS_TOKEN) {
            // As Synapse answers a request without (or with a wrong) access token.
            let errcode = if token.is_none() {
                "M_MISSING_TOKEN"
            } else {
                "M_UNKNOWN_TOKEN"
            };
            return Some(json_response(401, &json!({"errcode": errcode})));
        }
        if route == "v" {
            // Like Synapse: a sync without a position, or without a timeout, is answered at
            // once; one with nothing new waits up to its timeout for the next batch.
            let since = query.iter().find_map(|q| q.strip_prefix("since=s"));
            let position = since.map_or(0, |s| s.parse().unwrap());
            let timeout: u64 = query
                .iter()
                .find_map(|q| q.strip_prefix("timeout="))
                .map_or(self.untimed_sync_ms, |t| t.parse().unwrap());
            if since.is_some() && timeout > 0 && position >= gw.hs.batches.len() {
                self.held.push(Held {
                    id,
                    position,
                    deadline: now + timeout,
                });
                return None;
            }
            return Some(sync_answer(&gw.hs, position));
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (code, value) = if segments.first() == Some(&"3E") {
            gw.hs.messages(&query)
        } else {
            gw.hs.answer(&segments, body)
        };
        let status = u16::from(code.class()) * 100 + u16::from(code.detail());
        let status = if status / 100 == 2 { 200 } else { status };
        Some(json_response(status, &value))
    }
}

/// Every address in 127.0.0.0/8 proven, as `--trusted-sources` would make it.
fn loopback() -> Sources {
    Sources::parse("127.0.0.0/8").unwrap()
}

fn sync_answer(hs: &Homeserver, position: usize) -> UpstreamOutcome {
    json_response(200, &hs.sync_batch(position, false))
}

fn json_response(status: u16, value: &Value) -> UpstreamOutcome {
    UpstreamOutcome::Response(UpstreamResponse {
        status,
        retry_after: None,
        body: value.to_string().into_bytes(),
        content_type: Some("application/json".into()),
    })
}

/// The HTTP path as the homeserver routes it: the profile's short path segments (the path
/// table's enum first, then the parameters, percent-decoded), and the query's pairs.
fn short_path(path_and_query: &str) -> (Vec<String>, Vec<String>) {
    let mut short = String::new();
    jeton_proto::path::compress(path_and_query, TableVersion::V2, &mut short).unwrap();
    let (path, query) = short.split_once('?').unwrap_or((&short, ""));
    let segments = path[1..].split('/').map(percent_decode).collect();
    let query = query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(percent_decode)
        .collect();
    (segments, query)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A world whose token talks to the real gateway (plain CoAP, no pairing).
fn real_world(seed: u64) -> World {
    let mut world = World::new(seed);
    world.real = Some(RealGateway::plain(world.now));
    world
}

/// A paired token and a real gateway that authorises it: EDHOC, then OSCORE on everything.
fn real_paired_world(seed: u64) -> World {
    let mut world = World::new(seed);
    world.real = Some(RealGateway::new(paired_link(), world.now));
    world.material = Some(KeyFile {
        identity: token_identity(),
        peer: Some(*gateway_identity().credential()),
    });
    world.power_cycle();
    world
}

/// The gateway's link with pairing credentials for the test token, refusing plain access
/// tokens as a paired deployment does.
fn paired_link() -> Link {
    let token = *token_identity().credential();
    let authorised = AuthorisedToken {
        name: "test-token".into(),
        credential: token,
    };
    let credentials = LinkCredentials {
        identity: gateway_identity(),
        tokens: HashMap::from([(token.kid().to_vec(), authorised)]),
    };
    Link::new(Some(credentials), false)
}

fn real(world: &World) -> &RealGateway {
    world.real.as_ref().unwrap()
}

/// The requests the homeserver got whose path and query contain `part`.
fn forwarded_to<'w>(world: &'w World, part: &str) -> Vec<&'w (String, String, Value)> {
    real(world)
        .forwarded
        .iter()
        .filter(|(_, path, _)| path.contains(part))
        .collect()
}

/// The peer sends its room key and one encrypted and one plain message; the token shows both.
fn peer_writes(world: &mut World, peer: &mut Peer, id: &str, within_ms: u64) {
    let device = world.token_device();
    let payload = peer.room_key_payload(&world.gw.hs, &device);
    let to_device = peer.olm_event(&mut world.gw.hs, &device, &payload);
    let secret = format!("Secret {id}");
    let event = peer.megolm_event(&format!("$e{id}"), &secret);
    let plain = json!({"type": "m.room.message", "sender": PEER, "event_id": format!("$p{id}"),
        "content": {"msgtype": "m.text", "body": format!("Clear {id}")}});
    for event in [&event, &plain] {
        let id = event["event_id"].as_str().unwrap().to_string();
        world.gw.hs.events.insert(id, event.clone());
    }
    world.push_sync(json!({
        "to_device": {"events": [to_device]},
        "rooms": {"join": {ROOM: {"timeline": {"events": [event, plain]}}}},
    }));
    let lines = [
        format!("message {ROOM} {PEER} encrypted {secret}"),
        format!("message {ROOM} {PEER} unencrypted Clear {id}"),
    ];
    assert!(
        world.run_until(within_ms, |w| lines.iter().all(|l| w.saw(l))),
        "{:?}",
        world.screen()
    );
}

/// The encrypted sends the homeserver got, each checked for the fields a Megolm event needs
/// (the gateway fills in what the token left with it): `(room, text)` as the peer reads it.
fn homeserver_sends(world: &World, peer: &mut Peer) -> Vec<String> {
    let identity = world.token.as_ref().unwrap().identity();
    let device = world.token_device();
    for (room, _, event_type, content) in &world.gw.hs.sent {
        assert_eq!(room, ROOM);
        assert_eq!(event_type, "m.room.encrypted");
        assert_eq!(content["sender_key"], identity.curve25519.as_str());
        assert_eq!(content["device_id"], device.as_str());
        assert!(content["session_id"].is_string(), "{content}");
    }
    peer_reads(world, peer).into_iter().map(|r| r.0).collect()
}

#[test]
fn through_the_real_gateway_the_token_logs_in_joins_and_shows_messages() {
    let mut world = real_world(41);
    world.log_in();
    let device = world.token_device();
    assert!(world.saw(&format!("logged in {TOKEN_USER} {device}")));
    assert!(world.saw("keys published 10"), "{:?}", world.screen());
    assert!(
        world
            .gw
            .hs
            .device_keys
            .contains_key(&(TOKEN_USER.to_string(), device))
    );

    // Invited by the peer, the person joins the room.
    world.push_sync(
        json!({"rooms": {"invite": {ROOM: {"invite_state": {"events": [
            {"type": "m.room.member", "state_key": TOKEN_USER, "sender": PEER,
             "content": {"membership": "invite"}},
        ]}}}}}),
    );
    let invited = format!("invited {ROOM} {PEER}");
    assert!(
        world.run_until(60_000, |w| w.saw(&invited)),
        "{:?}",
        world.screen()
    );
    let now = world.instant();
    world.token().join(ROOM, now).unwrap();
    let joined = format!("joined {ROOM}");
    assert!(
        world.run_until(60_000, |w| w.saw(&joined)),
        "{:?}",
        world.screen()
    );
    let join = format!("/rooms/{}/join", ROOM.replace('!', "%21"));
    let joins: Vec<_> = forwarded_to(&world, &join)
        .iter()
        .map(|f| f.1.clone())
        .collect();
    assert_eq!(joins.len(), 1, "{joins:?}");

    let (mut world, mut peer) = join_room_with_peer(world);
    peer_writes(&mut world, &mut peer, "1", 60_000);
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn through_the_real_gateway_an_encrypted_send_reaches_the_homeserver_in_full() {
    let (mut world, mut peer) = join_room_with_peer({
        let mut world = real_world(42);
        world.log_in();
        world
    });
    for text in ["Hello peer", "Again", "Third"] {
        send_delivered(&mut world, text);
    }
    // The later sends left the room id and the sender fields with the gateway; the real
    // gateway put them back, and the homeserver got every field under the full path.
    assert_eq!(
        homeserver_sends(&world, &mut peer),
        ["Hello peer", "Again", "Third"]
    );
    let sends = forwarded_to(&world, "/send/m.room.encrypted/");
    assert_eq!(sends.len(), 3);
    // The room id as the path carries it, percent-encoded.
    let room = ROOM.replace('!', "%21");
    for (method, path, _) in sends {
        assert_eq!(method, "PUT");
        assert!(
            path.starts_with(&format!("/_matrix/client/v3/rooms/{room}/send/")),
            "{path}"
        );
    }
    // On the air, the later sends named the room by its handle and left the sender fields
    // and the session id out: what the homeserver got in full, the real gateway filled in.
    let sends: Vec<_> = real(&world)
        .on_the_air
        .iter()
        .filter(|(path, _)| path.first().is_some_and(|p| p == "we"))
        .collect();
    assert_eq!(sends.len(), 3);
    for (i, (path, body)) in sends.iter().enumerate() {
        let body = cbor_to_json(body, TableVersion::V2).unwrap();
        let later = i > 0;
        assert_eq!(path[1].starts_with('~'), later, "{path:?}");
        for field in ["sender_key", "device_id", "session_id"] {
            assert_eq!(body.get(field).is_none(), later, "{field} in {body}");
        }
    }
    assert_eq!(world.token().outbox_len(), 0);
}

#[test]
fn through_the_real_gateway_over_edhoc_and_oscore_messages_go_both_ways() {
    let mut world = real_paired_world(43);
    world.log_in();
    let (mut world, mut peer) = join_room_with_peer(world);
    peer_writes(&mut world, &mut peer, "1", 60_000);
    for text in ["Over OSCORE", "Again over OSCORE"] {
        send_delivered(&mut world, text);
    }
    assert_eq!(
        homeserver_sends(&world, &mut peer),
        ["Over OSCORE", "Again over OSCORE"]
    );
}

/// A token in a room with the peer, one message delivered, then the gateway restarts.
fn restarted_gateway(seed: u64) -> (World, Peer) {
    let (mut world, peer) = join_room_with_peer({
        let mut world = real_world(seed);
        world.log_in();
        world
    });
    send_delivered(&mut world, "Before the restart");
    let now = world.now;
    world
        .real
        .as_mut()
        .unwrap()
        .restart(Link::new(None, true), now);
    (world, peer)
}

#[test]
fn after_the_real_gateway_restarts_the_token_recovers_and_nothing_is_lost() {
    let (mut world, mut peer) = restarted_gateway(44);
    // The peer reads what came before (its Olm session with the token starts here).
    assert_eq!(homeserver_sends(&world, &mut peer), ["Before the restart"]);
    // The new gateway holds no observation, access token, room handle or sender fields for
    // the token: the token notices, registers again with everything in full, and what the
    // peer writes is shown.
    peer_writes(&mut world, &mut peer, "2", 3_600_000);
    send_delivered(&mut world, "After the restart");
    assert_eq!(
        homeserver_sends(&world, &mut peer),
        ["Before the restart", "After the restart"]
    );
    assert_eq!(world.token().outbox_len(), 0);
}

/// A send right after a restart: the new gateway answers 4.12 to the room handle, then 4.01
/// to the send in full without the access token; the token sends it once more with
/// everything, and it is delivered.
#[test]
fn a_send_right_after_the_real_gateway_restarts_is_delivered() {
    let (mut world, mut peer) = restarted_gateway(46);
    send_delivered(&mut world, "After the restart");
    let rooms: Vec<bool> = real(&world)
        .on_the_air
        .iter()
        .filter(|(path, _)| path.first().is_some_and(|p| p == "we"))
        .map(|(path, _)| path[1].starts_with('~'))
        .collect();
    // Before: the room in full. After: by its handle (4.12), in full (4.01), in full again.
    assert_eq!(rooms, [false, true, false, false]);
    assert_eq!(
        homeserver_sends(&world, &mut peer),
        ["Before the restart", "After the restart"]
    );
}

#[test]
fn a_sync_larger_than_the_token_takes_is_split_by_the_real_gateway_and_arrives_whole() {
    let mut world = real_world(45);
    world.log_in();
    let events: Vec<Value> = (0..24)
        .map(|i| {
            json!({"type": "m.room.message", "sender": PEER, "event_id": format!("$long{i:02}"),
                   "origin_server_ts": 1_700_000_000_000u64 + i,
                   "content": {"msgtype": "m.text", "body": format!("{i:02} {}", "x".repeat(300))}})
        })
        .collect();
    let size = json_to_cbor(
        &json!({"rooms": {"join": {ROOM: {"timeline": {"events": &events}}}}}),
        TableVersion::V2,
    )
    .unwrap()
    .len();
    assert!(
        size > 2 * 4_096,
        "the sync is larger than the token's buffer: {size} B"
    );
    let syncs = |world: &World| {
        let real = real(world);
        let on_the_air = real.on_the_air.iter().filter(|(p, _)| p[..] == ["v"]);
        let upstream = real.forwarded.iter().filter(|f| f.1.contains("/sync"));
        (on_the_air.count(), upstream.count())
    };
    let before = syncs(&world);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": events}}}}}));
    let lines: Vec<String> = (0..24)
        .map(|i| {
            format!(
                "message {ROOM} {PEER} unencrypted {i:02} {}",
                "x".repeat(300)
            )
        })
        .collect();
    assert!(
        world.run_until(120_000, |w| lines.iter().all(|l| w.saw(l))),
        "{:?}",
        world.screen()
    );
    // In order, each once.
    let shown: Vec<String> = world
        .screen()
        .into_iter()
        .filter(|l| l.starts_with("message "))
        .collect();
    assert_eq!(shown, lines);
    // The later parts came from the gateway's store of the split: the token asked for more
    // syncs than the homeserver answered.
    let after = syncs(&world);
    let (asked, answered) = (after.0 - before.0, after.1 - before.1);
    assert!(
        asked >= answered + 2,
        "{asked} syncs asked, {answered} upstream"
    );
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
}

/// As above, but the homeserver takes a minute to answer a sync without a timeout (the token's
/// registrations): the send waits behind them (NSTART 1) and is delivered, nothing lost.
#[test]
fn a_send_behind_a_slow_registration_after_a_restart_is_delivered() {
    let (mut world, mut peer) = restarted_gateway(47);
    world.real.as_mut().unwrap().untimed_sync_ms = 60_000;
    let now = world.instant();
    let id = world
        .token()
        .send_text(ROOM, "After the restart", now)
        .unwrap();
    let delivered = format!("delivered {id} ");
    assert!(
        world.run_until(600_000, |w| w
            .screen()
            .iter()
            .any(|l| l.starts_with(&delivered))),
        "{:?}",
        world.screen()
    );
    assert_eq!(
        homeserver_sends(&world, &mut peer),
        ["Before the restart", "After the restart"]
    );
}

#[test]
fn through_the_real_gateway_a_limited_timeline_is_back_filled_in_order() {
    let mut world = real_world(48);
    world.log_in();
    super::backfill::follow(&mut world, 5, 20);
    let sync = super::backfill::limited_sync(&world.gw.hs.history, 15);
    world.push_sync(sync);
    super::backfill::shows_in_order(&mut world, &(0..20).collect::<Vec<_>>());
    // The gateway asked the homeserver's /messages with the token's queries.
    let pages = forwarded_to(&world, "/messages?");
    assert!(
        pages
            .iter()
            .any(|f| f.1.contains("dir=b") && f.1.contains("from=t15")),
        "{pages:?}"
    );
    assert!(
        !world.screen().iter().any(|l| l.starts_with("error")),
        "{:?}",
        world.screen()
    );
}
