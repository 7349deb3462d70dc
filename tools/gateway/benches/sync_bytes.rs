//! Bytes on the air for `/sync` over the protected link (EDHOC + OSCORE, the gateway's own
//! link layer and transport core, a token-side OSCORE context from jeton-link), counted as UDP
//! payload both ways:
//!
//! - one keepalive notification and its ACK: all an idle token pays, which sets the keepalive
//!   interval against the idle budget of 256 B an hour;
//! - a sync cut into three parts at a token's Response-Capacity (option 258), from the first
//!   notification to the long-poll after the last part is confirmed: every block, ACK, block
//!   fetch and confirming registration.
//!
//! Run: `cargo bench -p jeton-gateway --bench sync_bytes` (KEEPALIVE_SECS=N for the interval).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use jeton_gateway::limits::Limits;
use jeton_gateway::link::{Inbound, Link};
use jeton_gateway::link_credentials::{AuthorisedToken, LinkCredentials};
use jeton_gateway::message;
use jeton_gateway::metrics::Metrics;
use jeton_gateway::profile::{self, BlockValue, TableVersion};
use jeton_gateway::translate::{UpstreamOutcome, UpstreamResponse};
use jeton_gateway::transport::{Action, ForwardId, PeerId, Transport};
use jeton_link::{Identity, Initiator, Message, OptionList, SecurityContext};
use serde_json::{Value, json};

/// A Synapse position as it looks after some months of use.
const SINCE: &str = "s72594_4483_1934_4_1_1_1_12_0_1";
const MOVED: &str = "s72594_4483_1935_4_1_1_1_12_0_1";
const NEXT: &str = "s72611_4490_1934_4_1_1_1_12_0_1";
/// jeton-core's: its 4,096-byte response buffer less the 64 bytes it keeps for a response's
/// options.
const CAPACITY: u64 = 4032;
const IDLE_BUDGET_PER_HOUR: usize = 256;

/// Bytes and datagrams each way.
#[derive(Debug, Default, Clone, Copy)]
struct Air {
    up: usize,
    down: usize,
    datagrams: usize,
}

impl Air {
    fn total(&self) -> usize {
        self.up + self.down
    }

    fn since(&self, before: Air) -> Air {
        Air {
            up: self.up - before.up,
            down: self.down - before.down,
            datagrams: self.datagrams - before.datagrams,
        }
    }
}

struct Token {
    link: Link,
    core: Transport,
    oscore: SecurityContext,
    peer: SocketAddr,
    virtual_peer: Option<PeerId>,
    now: Instant,
    air: Air,
    mid: u16,
}

impl Token {
    /// A gateway with the link on and a token that ran EDHOC with it.
    fn paired(limits: Limits) -> Self {
        let token = Identity::generate([1; 32], b"\x0a", "token").unwrap();
        let gateway = Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
        let authorised = AuthorisedToken {
            name: "bench".into(),
            credential: *token.credential(),
        };
        let tokens = HashMap::from([(token.credential().kid().to_vec(), authorised)]);
        let credentials = LinkCredentials {
            identity: gateway.clone(),
            tokens,
        };
        let mut link = Link::new(Some(credentials), false);
        // The virtual clock starts one keepalive interval in the past and reaches the wall clock
        // when the keepalive is due: the link stamps what it sends with the wall clock.
        let now = Instant::now()
            .checked_sub(limits.observe_keepalive)
            .expect("the machine has been up longer than one keepalive interval");
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (initiator, m1) = Initiator::start([3; 32]).unwrap();
        let r2 =
            reply(link.on_datagram(peer, &edhoc(1, [&[0xF5][..], m1.as_bytes()].concat()), now));
        let (m3, material) = initiator
            .process_message_2(&token, gateway.credential(), &r2.payload)
            .unwrap();
        let mut c_r = [0u8; 9];
        let n =
            jeton_link::encode_connection_id(material.sender_id().as_bytes(), &mut c_r).unwrap();
        reply(link.on_datagram(peer, &edhoc(2, [&c_r[..n], m3.as_bytes()].concat()), now));
        Self {
            link,
            core: Transport::new(limits, Metrics::default(), now),
            oscore: material.security_context().unwrap(),
            peer,
            virtual_peer: None,
            now,
            air: Air::default(),
            mid: 100,
        }
    }

    /// The token sends a protected CON request with these inner options (sorted by number).
    fn request(&mut self, options: &[(u16, &[u8])]) -> Vec<Action> {
        self.mid += 1;
        let inner = Message {
            code: 0x01,
            options: OptionList::from_sorted(options).unwrap(),
            payload: &[],
        };
        let mut buf = [0u8; 1024];
        let (outer, _) = self.oscore.protect_request(&inner, &mut buf).unwrap();
        let mut shell = message::build(
            MessageType::Confirmable,
            outer.code,
            self.mid,
            &[0x5a, 0x11, 0x0c, 0x7e],
        );
        for (number, value) in outer.options.iter() {
            shell.add_option(CoapOption::from(number), value.to_vec());
        }
        shell.payload = outer.payload.to_vec();
        let wire = message::to_datagram(&shell);
        self.air.up += wire.len();
        self.air.datagrams += 1;
        match self.link.on_datagram(self.peer, &wire, self.now) {
            Inbound::Deliver(virtual_peer, plain) => {
                self.virtual_peer = Some(virtual_peer);
                self.core.on_datagram(virtual_peer, &plain, self.now)
            }
            other => panic!("the link did not take the request: {other:?}"),
        }
    }

    /// The token's empty ACK of message `mid`.
    fn ack(&mut self, mid: u16) -> Vec<Action> {
        let ack = message::empty(MessageType::Acknowledgement, mid);
        self.air.up += ack.len();
        self.air.datagrams += 1;
        match self.link.on_datagram(self.peer, &ack, self.now) {
            Inbound::Deliver(to, plain) => self.core.on_datagram(to, &plain, self.now),
            other => panic!("the link did not take the ACK: {other:?}"),
        }
    }

    /// What the transport sends goes through the link and is counted; returns the packets as
    /// the token reads them (inside OSCORE) and the upstream requests.
    fn deliver(&mut self, actions: Vec<Action>) -> (Vec<Packet>, Vec<ForwardId>) {
        let (mut packets, mut forwards) = (Vec::new(), Vec::new());
        for action in actions {
            match action {
                Action::Send { peer, datagram } => {
                    let (_, protected) = self.link.on_send(peer, datagram.clone()).unwrap();
                    self.air.down += protected.len();
                    self.air.datagrams += 1;
                    packets.push(Packet::from_bytes(&datagram).unwrap());
                }
                Action::Forward { id, .. } => forwards.push(id),
                Action::Cancel { .. } => {}
            }
        }
        (packets, forwards)
    }

    fn upstream(&mut self, id: ForwardId, body: &Value) -> Vec<Action> {
        let outcome = UpstreamOutcome::Response(UpstreamResponse {
            status: 200,
            retry_after: None,
            body: body.to_string().into_bytes(),
            content_type: Some("application/json".into()),
        });
        self.core.on_upstream(id, outcome, self.now)
    }

    /// jeton-core's sync request options: from `since`, Observe, Block2.
    fn sync(&mut self, since: &str, observe: Option<u64>, block: Option<u32>) -> Vec<Action> {
        let since = format!("since={since}");
        let observe = observe.map(message::encode_uint);
        let capacity = message::encode_uint(CAPACITY);
        let block = block.map(|num| {
            message::block_option(BlockValue {
                num,
                more: false,
                szx: 6,
            })
        });
        let mut options: Vec<(u16, &[u8])> = Vec::new();
        if let Some(observe) = &observe {
            options.push((6, observe));
        }
        options.extend([
            (11, &b"v"[..]),
            (15, since.as_bytes()),
            (15, b"filter=0"),
            (17, &[60][..]),
        ]);
        if let Some(block) = &block {
            options.push((23, block));
        }
        if self.virtual_peer.is_none() {
            options.push((256, b"syt_YWxpY2U_bQdPeaSHbWuaaWVfBHzm_2Hh9ns"));
        }
        options.extend([(257, &[2][..]), (258, &capacity[..])]);
        self.request(&options)
    }

    /// The whole body `first` begins, fetching its later blocks as the token does.
    fn body(&mut self, first: &Packet, since: &str) -> Value {
        let mut body = first.payload.clone();
        let mut block = block2(first);
        while let Some(BlockValue {
            num, more: true, ..
        }) = block
        {
            let actions = self.sync(since, None, Some(num + 1));
            let (packets, _) = self.deliver(actions);
            body.extend_from_slice(&packets[0].payload);
            block = block2(&packets[0]);
        }
        profile::cbor_to_json(&body, TableVersion::V2).unwrap()
    }
}

fn block2(p: &Packet) -> Option<BlockValue> {
    p.get_first_option(CoapOption::Block2)
        .and_then(|v| BlockValue::from_option(v))
}

fn edhoc(mid: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut p = message::build(MessageType::Confirmable, 0x02, mid, &[0x71]);
    p.add_option(CoapOption::UriPath, b".well-known".to_vec());
    p.add_option(CoapOption::UriPath, b"edhoc".to_vec());
    p.payload = payload;
    message::to_datagram(&p)
}

fn reply(inbound: Inbound) -> Packet {
    match inbound {
        Inbound::Reply(d) => Packet::from_bytes(&d).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Synapse's answer when nothing happened for the token: its key counts and a position.
fn quiet(position: &str) -> Value {
    json!({"next_batch": position, "device_one_time_keys_count": {"signed_curve25519": 50},
           "device_unused_fallback_key_types": ["signed_curve25519"]})
}

/// Unpadded base64 of `len` made-up bytes, as Matrix carries keys and ciphertexts (canonical,
/// so the gateway sends it as a byte string).
fn b64(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = (0..len).map(|i| (i * 151 + 7) as u8).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, b)| w | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(word >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// A busy sync after a while offline: two Olm messages (room keys), a member joining, and a
/// dozen Megolm messages.
fn busy_sync() -> Value {
    let olm = |n: usize| {
        json!({"type": "m.room.encrypted", "sender": format!("@peer{n}:example.org"),
        "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": b64(32),
                    "ciphertext": {b64(32): {"type": 0, "body": b64(900)}}}})
    };
    let megolm = |n: usize| {
        json!({"type": "m.room.encrypted", "sender": "@alice:example.org",
        "event_id": format!("$event{n:02}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "origin_server_ts": 1_700_000_000_000u64 + n as u64,
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": b64(380), "session_id": b64(32)}})
    };
    let member = json!({"type": "m.room.member", "sender": "@carol:example.org", "state_key": "@carol:example.org",
        "event_id": "$memberAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "content": {"membership": "join"}});
    let mut timeline = vec![member];
    timeline.extend((0..13).map(megolm));
    json!({"next_batch": NEXT, "to_device": {"events": [olm(1), olm(2)]},
           "device_lists": {"changed": ["@carol:example.org"]},
           "device_one_time_keys_count": {"signed_curve25519": 48},
           "rooms": {"join": {"!room:example.org": {"timeline": {"events": timeline}}}}})
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let keepalive_secs: u64 = std::env::var("KEEPALIVE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200);
    let limits = Limits {
        observe_keepalive: Duration::from_secs(keepalive_secs),
        ..Limits::default()
    };
    let mut token = Token::paired(limits);

    // Registration: nothing new, the long-poll starts.
    let actions = token.sync(SINCE, Some(0), None);
    let (_, forwards) = token.deliver(actions);
    let actions = token.upstream(forwards[0], &quiet(MOVED));
    let (_, polls) = token.deliver(actions);

    // Idle: a keepalive notification once the interval passed, and the token's ACK.
    token.now += Duration::from_secs(keepalive_secs);
    let before = token.air;
    let actions = token.upstream(polls[0], &quiet(MOVED));
    let (packets, _) = token.deliver(actions);
    let keepalive = &packets[0];
    assert_eq!(keepalive.header.get_type(), MessageType::Confirmable);
    let actions = token.ack(keepalive.header.message_id);
    let (_, polls) = token.deliver(actions);
    let idle = token.air.since(before);
    let per_hour = idle.total() * 3600 / keepalive_secs as usize;
    let floor = (idle.total() * 3600).div_ceil(IDLE_BUDGET_PER_HOUR);
    println!("sync over OSCORE, bytes of UDP payload (token up + gateway down)");
    println!(
        "keepalive notification + ACK: {} B ({} + {}), payload {} B",
        idle.total(),
        idle.up,
        idle.down,
        keepalive.payload.len()
    );
    println!(
        "idle at one keepalive per {keepalive_secs} s: {per_hour} B/h (budget {IDLE_BUDGET_PER_HOUR} B/h: interval at least {floor} s)"
    );

    // A busy sync cut into parts at the token's capacity.
    let whole = busy_sync();
    let whole_cbor = profile::json_to_cbor(&whole, TableVersion::V2)
        .unwrap()
        .len();
    let before = token.air;
    let actions = token.upstream(polls[0], &whole);
    let (packets, _) = token.deliver(actions);
    let notification = packets[0].clone();
    let part = token.body(&notification, MOVED);
    let actions = token.ack(notification.header.message_id);
    token.deliver(actions);
    let mut position = part["next_batch"].as_str().unwrap().to_owned();
    let mut sizes = vec![
        profile::json_to_cbor(&part, TableVersion::V2)
            .unwrap()
            .len(),
    ];
    while position != NEXT {
        let actions = token.sync(&position, Some(0), None);
        let (packets, forwards) = token.deliver(actions);
        assert!(forwards.is_empty());
        let part = token.body(&packets[0], &position);
        sizes.push(
            profile::json_to_cbor(&part, TableVersion::V2)
                .unwrap()
                .len(),
        );
        position = part["next_batch"].as_str().unwrap().to_owned();
    }
    let actions = token.sync(NEXT, Some(0), None);
    let (_, forwards) = token.deliver(actions);
    assert_eq!(
        forwards.len(),
        1,
        "the long-poll from the last part's position"
    );
    let split = token.air.since(before);
    println!(
        "a {whole_cbor} B sync at capacity {CAPACITY} B: {} parts of {sizes:?} B; on the air {} B ({} up + {} down) in {} datagrams, confirmations included",
        sizes.len(),
        split.total(),
        split.up,
        split.down,
        split.datagrams
    );
}
