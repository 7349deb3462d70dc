//! The transport core's tests, driven through its public inputs with a fake clock: the harness
//! here, the tests by concern in the submodules.

mod admission;
mod blockwise;
mod budget;
mod exchanges;
mod observe;
mod requests;
mod routability;
mod sync;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use serde_json::Value;

use super::*;
use crate::message::{self, code};
use crate::profile::{self, BlockValue, CONTENT_FORMAT_CBOR, TableVersion};
use crate::source::Sources;
use crate::translate::{UpstreamOutcome, UpstreamRequest, UpstreamResponse};

const PEER: &str = "127.0.0.1:40000";

/// The access token the harness's peer presents.
const ACCESS_TOKEN: &[u8] = b"syt_harness";

struct Harness {
    core: Transport,
    now: Instant,
    peer: PeerId,
}

impl Harness {
    /// A core whose peer presented an access token, as a client does (block-wise state is
    /// kept only for such a peer).
    fn new(limits: Limits) -> Self {
        let mut h = Self::anonymous(limits);
        h.sign_in();
        h
    }

    /// A core whose peer presented no access token yet.
    fn anonymous(limits: Limits) -> Self {
        let now = Instant::now();
        Self {
            // The tests' peer is on loopback, which needs no Echo round trip.
            core: Transport::new(limits, Metrics::default(), now)
                .with_sources(Sources::parse("127.0.0.0/8").unwrap()),
            now,
            peer: PeerId::Address(PEER.parse::<SocketAddr>().unwrap()),
        }
    }

    /// The peer presents an access token (option 256, sticky) with a request the homeserver
    /// answers; its message id is one the tests do not use.
    fn sign_in(&mut self) {
        let mut p = request(MessageType::Confirmable, 1, 0xfff0, b"in", PLAIN);
        p.add_option(CoapOption::Unknown(256), ACCESS_TOKEN.to_vec());
        let f = forwards(&self.feed(&p));
        self.upstream(f[0].0, 200, "{}");
    }

    fn feed(&mut self, packet: &Packet) -> Vec<Action> {
        let bytes = message::to_datagram(packet);
        self.core.on_datagram(self.peer, &bytes, self.now)
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.core.on_timer(self.now)
    }

    fn upstream(&mut self, id: ForwardId, status: u16, body: &str) -> Vec<Action> {
        let outcome = UpstreamOutcome::Response(UpstreamResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
            content_type: Some("application/json".into()),
        });
        self.core.on_upstream(id, outcome, self.now)
    }
}

fn request(kind: MessageType, method: u8, mid: u16, token: &[u8], path: &[&str]) -> Packet {
    let mut p = message::build(kind, method, mid, token);
    for segment in path {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

fn get(mid: u16, path: &[&str]) -> Packet {
    request(MessageType::Confirmable, 1, mid, &[mid as u8, 0xaa], path)
}

fn sent(actions: &[Action]) -> Vec<Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { datagram, .. } => Some(Packet::from_bytes(datagram).unwrap()),
            _ => None,
        })
        .collect()
}

fn forwards(actions: &[Action]) -> Vec<(ForwardId, UpstreamRequest)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward { id, request } => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}

fn code_of(p: &Packet) -> String {
    code::dotted(u8::from(p.header.code))
}

fn block2(p: &Packet) -> Option<BlockValue> {
    p.get_first_option(CoapOption::Block2)
        .and_then(|v| BlockValue::from_option(v))
}

const SYNC: &[&str] = &["_matrix", "client", "v3", "sync"];

/// A sync response at `next_batch` that carries something (a room's entry).
fn batch(next_batch: &str) -> String {
    serde_json::json!({"next_batch": next_batch, "rooms": {"join": {"!r:s": {}}}}).to_string()
}

const PLAIN: &[&str] = &["_matrix", "client", "v3", "capabilities"];

fn register(h: &mut Harness, mid: u16, token: &[u8]) -> (Packet, ForwardId) {
    let mut p = request(MessageType::Confirmable, 1, mid, token, SYNC);
    p.add_option(CoapOption::Observe, vec![]);
    p.add_option(CoapOption::UriQuery, b"since=s0".to_vec());
    let f = forwards(&h.feed(&p));
    assert_eq!(f[0].1.path_and_query, "/_matrix/client/v3/sync?since=s0");
    let actions = h.upstream(f[0].0, 200, &batch("s1"));
    let reply = sent(&actions).remove(0);
    let poll = forwards(&actions);
    assert_eq!(poll.len(), 1);
    assert_eq!(
        poll[0].1.path_and_query,
        "/_matrix/client/v3/sync?since=s1&timeout=30000"
    );
    (reply, poll[0].0)
}
