//! Load from many linked tokens on one gateway: N simulated tokens, each with its own key pair,
//! EDHOC handshake and OSCORE context (jeton-link's initiator, in this process), against the
//! gateway's link layer and transport core driven sans-I/O on one thread. Reports, for each N:
//!
//! - handshakes per second per core: N handshakes one after the other (Echo round trip,
//!   message_1/2, stand-alone message_3/4), per second of the gateway's CPU time (the thread's
//!   CPU time in the share of the wall time spent inside the gateway, so other processes on a
//!   shared machine count less) and with the tokens' side on the same thread;
//! - memory per idle token: the gateway's live heap growth (a counting global allocator) once
//!   every token is authorised, has its context and observes `/sync`, and the gateway's clock
//!   has passed EXCHANGE_LIFETIME, so what it remembered of the exchanges is gone (hash tables
//!   keep their capacity, as in a running gateway);
//! - requests per second per gateway: 1 % of the tokens send protected PUT `send` requests one
//!   after the other while the rest stay idle, per second of the gateway's CPU time as above.
//!
//! The homeserver is a stub in this process that answers every request at once and holds the
//! idle tokens' `/sync` long-polls (nothing new arrives for them): no HTTP, no sockets, so the
//! figures are the gateway core's own cost. What a real long-poll adds (its task and upstream
//! connection) is measured by the `observer_memory` bench.
//!
//! Run: `cargo bench -p jeton-gateway --bench token_load` (TOKENS=N for one smaller run,
//! REQUESTS=N for the chatting phase's length).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use jeton_gateway::echo::ECHO_OPTION as ECHO;
use jeton_gateway::limits::Limits;
use jeton_gateway::link::{Inbound, Link};
use jeton_gateway::link_credentials::{AuthorisedToken, LinkCredentials};
use jeton_gateway::message;
use jeton_gateway::metrics::Metrics;
use jeton_gateway::profile::{TableVersion, json_to_cbor};
use jeton_gateway::translate::{UpstreamOutcome, UpstreamRequest, UpstreamResponse};
use jeton_gateway::transport::{Action, ForwardId, Transport};
use jeton_link::{Credential, Identity, Initiator, Message, OptionList, SecurityContext};

/// Counts the bytes allocated and not yet freed, for the gateway's heap.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// A global allocator cannot be written without `unsafe`; this one only counts.
// SAFETY: every call goes to the system allocator unchanged; only a counter is kept beside it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `ptr` came from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `realloc`; `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const SYNC_ANSWER: &[u8] = br#"{"next_batch":"s1","rooms":{}}"#;
const SEND_ANSWER: &[u8] = br#"{"event_id":"$4CvDieFIFAzSYaykmBObZ2iUhSa5XNEUnC-GQfLl2yc"}"#;
const ACCESS_TOKEN: &[u8] = b"syt_YWxpY2U_bQdPeaSHbWuaaWVfBHzm_2Hh9ns";
/// CBOR, for Content-Format and Accept.
const CBOR: &[u8] = &[60];
/// The profile's table version 2, whose short paths the requests use.
const V2: &[u8] = &[2];

/// The homeserver stub: an answer at once, or `None` for a long-poll it holds.
fn homeserver(request: &UpstreamRequest) -> Option<UpstreamOutcome> {
    let path = request.path_and_query.as_str();
    let sync = path.contains("/sync");
    if sync && path.contains("since=") {
        return None;
    }
    Some(UpstreamOutcome::Response(UpstreamResponse {
        status: 200,
        retry_after: None,
        body: if sync { SYNC_ANSWER } else { SEND_ANSWER }.to_vec(),
        content_type: Some("application/json".into()),
    }))
}

/// The gateway's side: link and transport as the server drives them, the stub for upstream.
struct Gateway {
    link: Link,
    core: Transport,
    /// Long-polls the stub holds.
    held: Vec<ForwardId>,
    /// Time spent inside the gateway (link, transport, stub).
    busy: Duration,
    /// How far the gateway's clock runs ahead of the wall clock.
    ahead: Duration,
}

impl Gateway {
    fn new(credentials: LinkCredentials, limits: Limits, held: Vec<ForwardId>) -> Self {
        Gateway {
            link: Link::new(Some(credentials), false),
            core: Transport::new(limits, Metrics::default(), Instant::now()),
            held,
            busy: Duration::ZERO,
            ahead: Duration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.ahead
    }

    /// Moves the gateway's clock past EXCHANGE_LIFETIME and lets it forget what it remembered
    /// of past exchanges (its timers run, a stray datagram sweeps the link's memory), as an
    /// idle token's state is once nothing happened for a while.
    fn idle(&mut self) {
        self.ahead += message::EXCHANGE_LIFETIME + Duration::from_secs(60);
        let actions = self.core.on_timer(self.now());
        let mut out = Vec::new();
        self.run(actions, &mut out);
        self.receive(SocketAddr::from(([192, 0, 2, 1], 9)), &[0]);
    }

    /// One datagram from `from`; returns the datagrams that go back to it.
    fn receive(&mut self, from: SocketAddr, datagram: &[u8]) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let now = self.now();
        let mut out = Vec::new();
        match self.link.on_datagram(from, datagram, now) {
            Inbound::Deliver(peer, plain) => {
                let actions = self.core.on_datagram(peer, &plain, now);
                self.run(actions, &mut out);
            }
            Inbound::Reply(reply) => out.push(reply),
            Inbound::Drop => {}
        }
        self.busy += start.elapsed();
        out
    }

    fn run(&mut self, actions: Vec<Action>, out: &mut Vec<Vec<u8>>) {
        for action in actions {
            match action {
                Action::Send { peer, datagram } => {
                    out.extend(self.link.on_send(peer, datagram).map(|(_, d)| d));
                }
                Action::Forward { id, request } => match homeserver(&request) {
                    Some(outcome) => {
                        let more = self.core.on_upstream(id, outcome, self.now());
                        self.run(more, out);
                    }
                    None => self.held.push(id),
                },
                Action::Cancel { id } => self.held.retain(|held| *held != id),
            }
        }
    }
}

/// One simulated token: its key pair, address and (after EDHOC) OSCORE context.
struct Token {
    identity: Identity,
    addr: SocketAddr,
    oscore: Option<SecurityContext>,
    mid: u16,
}

impl Token {
    fn new(index: usize) -> Self {
        let number = (index as u32).to_be_bytes();
        let mut seed = [7u8; 32];
        seed[28..].copy_from_slice(&number);
        let identity = Identity::generate(seed, &number, "load").unwrap();
        let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | index as u32), 5683));
        Token {
            identity,
            addr,
            oscore: None,
            mid: 0,
        }
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// POST to `/.well-known/edhoc`, with an Echo value when given; the gateway's one answer.
    fn edhoc(&mut self, gateway: &mut Gateway, payload: &[u8], echo: Option<&[u8]>) -> Packet {
        let mut post = message::build(MessageType::Confirmable, 0x02, self.next_mid(), &[0x71]);
        post.add_option(CoapOption::UriPath, b".well-known".to_vec());
        post.add_option(CoapOption::UriPath, b"edhoc".to_vec());
        if let Some(echo) = echo {
            post.add_option(CoapOption::Unknown(ECHO), echo.to_vec());
        }
        post.payload = payload.to_vec();
        let answers = gateway.receive(self.addr, &message::to_datagram(&post));
        Packet::from_bytes(answers.first().expect("an EDHOC answer")).unwrap()
    }

    /// EDHOC with the gateway, as a token does it from an address not yet proven.
    fn handshake(&mut self, gateway: &mut Gateway, gateway_credential: &Credential) {
        let mut seed = [9u8; 32];
        seed[..2].copy_from_slice(&self.mid.to_be_bytes());
        seed[24..].copy_from_slice(&self.identity.private_key()[..8]);
        let (initiator, m1) = Initiator::start(seed).unwrap();
        let first = [&[0xF5][..], m1.as_bytes()].concat();
        let challenge = self.edhoc(gateway, &first, None);
        assert_eq!(u8::from(challenge.header.code), 0x81, "no Echo challenge");
        let echo = challenge
            .get_first_option(CoapOption::Unknown(ECHO))
            .cloned();
        let m2 = self.edhoc(gateway, &first, echo.as_deref());
        let (m3, material) = initiator
            .process_message_2(&self.identity, gateway_credential, &m2.payload)
            .unwrap();
        let mut c_r = [0u8; 9];
        let n =
            jeton_link::encode_connection_id(material.sender_id().as_bytes(), &mut c_r).unwrap();
        let m4 = self.edhoc(gateway, &[&c_r[..n], m3.as_bytes()].concat(), None);
        assert_eq!(u8::from(m4.header.code), 0x44, "EDHOC did not complete");
        self.oscore = Some(material.security_context().unwrap());
    }

    /// A protected CON request with these inner code, options (sorted) and payload; returns
    /// the code of the gateway's (decrypted) response.
    fn request(
        &mut self,
        gateway: &mut Gateway,
        code: u8,
        options: &[(u16, &[u8])],
        payload: &[u8],
    ) -> u8 {
        let mid = self.next_mid();
        let oscore = self.oscore.as_mut().expect("a context");
        let inner = Message {
            code,
            options: OptionList::from_sorted(options).unwrap(),
            payload,
        };
        let mut buf = [0u8; 1024];
        let (outer, binding) = oscore.protect_request(&inner, &mut buf).unwrap();
        let mut shell = message::build(
            MessageType::Confirmable,
            outer.code,
            mid,
            &mid.to_be_bytes(),
        );
        for (number, value) in outer.options.iter() {
            shell.add_option(CoapOption::from(number), value.to_vec());
        }
        shell.payload = outer.payload.to_vec();
        for answer in gateway.receive(self.addr, &message::to_datagram(&shell)) {
            let packet = Packet::from_bytes(&answer).unwrap();
            if packet.header.get_type() == MessageType::Confirmable {
                let ack = message::empty(MessageType::Acknowledgement, packet.header.message_id);
                gateway.receive(self.addr, &ack);
            }
            if packet.get_token() != mid.to_be_bytes() || packet.payload.is_empty() {
                continue;
            }
            let mut options = OptionList::new();
            for (number, values) in packet.options() {
                for value in values {
                    options.push(*number, value).unwrap();
                }
            }
            let outer = Message {
                code: u8::from(packet.header.code),
                options,
                payload: &packet.payload,
            };
            let mut plain = [0u8; 2048];
            return oscore
                .unprotect_response(&binding, &outer, &mut plain)
                .unwrap()
                .code;
        }
        panic!("no response to a protected request");
    }

    /// Observe `/sync` (Observe 0) and bind the access token to the context, as the first
    /// request after pairing does.
    fn observe_sync(&mut self, gateway: &mut Gateway) -> u8 {
        let options = [
            (6, &[][..]),
            (11, b"v"),
            (17, CBOR),
            (256, ACCESS_TOKEN),
            (257, V2),
        ];
        self.request(gateway, 0x01, &options, &[])
    }

    /// A protected PUT `send` of a text message.
    fn send(&mut self, gateway: &mut Gateway, body: &[u8]) -> u8 {
        let txn = format!("t{}", self.mid);
        let options = [
            (11, &b"w"[..]),
            (11, b"!load:example.org"),
            (11, b"m.room.message"),
            (11, txn.as_bytes()),
            (12, CBOR),
            (17, CBOR),
            (257, V2),
        ];
        self.request(gateway, 0x03, &options, body)
    }
}

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The gateway's credentials with every token authorised.
fn credentials(gateway: &Identity, tokens: &[Token]) -> LinkCredentials {
    let tokens = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let credential = *t.identity.credential();
            let name = format!("load-{i}");
            (
                credential.kid().to_vec(),
                AuthorisedToken { name, credential },
            )
        })
        .collect::<HashMap<_, _>>();
    LinkCredentials {
        identity: gateway.clone(),
        tokens,
    }
}

fn per_token(bytes: usize, n: usize) -> usize {
    bytes / n.max(1)
}

/// The CPU time this thread has had (Linux schedstat), so that time other processes took
/// from it on a shared machine does not count as the gateway's.
fn thread_cpu() -> Duration {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = schedstat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok());
    Duration::from_nanos(nanos.unwrap_or(0))
}

/// One timed phase: wall time, the thread's CPU time, and the wall time inside the gateway.
struct Phase {
    count: usize,
    wall: Duration,
    cpu: Duration,
    busy: Duration,
}

impl Phase {
    /// Runs `work`, `count` operations on `gateway`, and times it.
    fn time(gateway: &mut Gateway, count: usize, work: impl FnOnce(&mut Gateway)) -> Phase {
        let (busy, cpu, wall) = (gateway.busy, thread_cpu(), Instant::now());
        work(gateway);
        Phase {
            count,
            wall: wall.elapsed(),
            cpu: thread_cpu().saturating_sub(cpu),
            busy: gateway.busy - busy,
        }
    }

    /// Per second of the gateway's CPU time: the thread's CPU time in the gateway's share of
    /// the wall time (or that share of the wall time where schedstat is missing).
    fn gateway_rate(&self) -> f64 {
        let share = self.busy.as_secs_f64() / self.wall.as_secs_f64();
        let cpu = if self.cpu.is_zero() {
            self.wall
        } else {
            self.cpu
        };
        self.count as f64 / (cpu.as_secs_f64() * share)
    }

    /// Per second of the thread's CPU time, both sides together.
    fn both_rate(&self) -> f64 {
        let cpu = if self.cpu.is_zero() {
            self.wall
        } else {
            self.cpu
        };
        self.count as f64 / cpu.as_secs_f64()
    }
}

/// The heap the gateway holds, split by what it is for, from `base`.
struct Heap {
    listed: usize,
    contexts: usize,
    observers: usize,
    fresh: usize,
}

fn run(n: usize, requests: usize) {
    let gateway_identity = Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
    let mut tokens: Vec<Token> = (0..n).map(Token::new).collect();
    // The stub's list is allocated before the gateway is counted.
    let held = Vec::with_capacity(n);
    let base = live_heap();
    // Per-peer request rates are lifted: the chatting tokens send as fast as the gateway answers.
    let limits = Limits {
        peer_rate: 1e9,
        peer_burst: u32::MAX,
        max_observers: n.max(Limits::default().max_observers),
        ..Limits::default()
    };
    let mut gateway = Gateway::new(credentials(&gateway_identity, &tokens), limits, held);
    let listed = live_heap() - base;
    let handshakes = Phase::time(&mut gateway, n, |gateway| {
        for token in &mut tokens {
            token.handshake(gateway, gateway_identity.credential());
        }
    });
    gateway.idle();
    let contexts = live_heap() - base - listed;
    for token in &mut tokens {
        let code = token.observe_sync(&mut gateway);
        assert_eq!(code, 0x45, "registration refused");
    }
    let fresh = live_heap() - base;
    gateway.idle();
    let observers = live_heap() - base - listed - contexts;
    assert_eq!(gateway.core.observer_count(), n);
    assert_eq!(gateway.held.len(), n, "every idle long-poll is held");
    let heap = Heap {
        listed,
        contexts,
        observers,
        fresh,
    };
    let chatting = n.div_ceil(100);
    let chat = Phase::time(&mut gateway, requests, |gateway| {
        chat(&mut tokens[..chatting], gateway, requests);
    });
    report(n, &handshakes, &heap, &chat, chatting);
}

/// `requests` protected sends from `tokens` in turn, each answered with a 2.xx.
fn chat(tokens: &mut [Token], gateway: &mut Gateway, requests: usize) {
    let body = json_to_cbor(
        &serde_json::json!({"msgtype": "m.text", "body": "load test message"}),
        TableVersion::V2,
    )
    .unwrap();
    for i in 0..requests {
        let code = tokens[i % tokens.len()].send(gateway, &body);
        assert_eq!(code >> 5, 2, "send refused: {code:#x}");
    }
}

fn report(n: usize, handshakes: &Phase, heap: &Heap, chat: &Phase, chatting: usize) {
    println!("N = {n}");
    println!(
        "  handshakes       {:>7.0} /s per core, gateway side ({:.0} /s with the tokens' side on the same core)",
        handshakes.gateway_rate(),
        handshakes.both_rate()
    );
    println!(
        "  memory per idle token {:>5} B of gateway heap: authorised-token entry {}, OSCORE context {}, /sync observer {} ({} B right after registering, with the CoAP deduplication memory of the exchanges)",
        per_token(heap.listed + heap.contexts + heap.observers, n),
        per_token(heap.listed, n),
        per_token(heap.contexts, n),
        per_token(heap.observers, n),
        per_token(heap.fresh, n)
    );
    println!(
        "  requests         {:>7.0} /s per gateway core: {} protected PUT send from {chatting} chatting tokens, {} idle observing ({:.0} /s with the tokens' side on the same core)",
        chat.gateway_rate(),
        chat.count,
        n - chatting,
        chat.both_rate()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "linked tokens on one gateway: link (EDHOC, OSCORE) and transport core in process, one thread;"
    );
    println!(
        "the homeserver is a stub answering at once and holding idle /sync long-polls (no HTTP, no sockets)"
    );
    let requests = env("REQUESTS").unwrap_or(100_000);
    let sizes = env("TOKENS").map_or_else(|| vec![1_000, 10_000], |n| vec![n]);
    for n in sizes {
        run(n, requests);
    }
}
