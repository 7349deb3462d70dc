//! The transport core: everything the gateway decides about CoAP, without sockets.
//!
//! [`Transport`] owns all per-peer state (sticky access token, duplicate-detection cache,
//! Block1 assemblies, stored Block2 bodies, observers, unacknowledged CON messages, rate
//! bucket). It is driven by three inputs — a datagram, an upstream outcome, a timer — and
//! answers with [`Action`]s: datagrams to send, HTTP requests to make, polls to cancel. The
//! I/O layer (`server.rs`) only moves bytes; tests drive the core directly with a fake clock.
//!
//! Memory is bounded per peer by [`Limits`] (exchanges, blockwise transfers, observers,
//! in-flight requests) and globally by `max_peers` and `max_observers`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use serde_json::Value;

use crate::limits::Limits;
use crate::media::MediaRoute;
use crate::message::{self, BlockValue, code};
use crate::metrics::Metrics;
use crate::profile::{self, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, TableVersion};
use crate::sticky::{STICKY_STATE_MISSING, StickyState};
use crate::translate::{
    self, AccessToken, Encoding, ResponseContent, UpstreamOutcome, UpstreamRequest,
};

/// Identifies one upstream request the core asked for.
pub type ForwardId = u64;

/// What the I/O layer must do.
#[derive(Debug)]
pub enum Action {
    /// Send a datagram.
    Send {
        /// Destination.
        peer: SocketAddr,
        /// CoAP message.
        datagram: Vec<u8>,
    },
    /// Make an HTTP request and report its outcome with [`Transport::on_upstream`].
    Forward {
        /// Echo this back.
        id: ForwardId,
        /// The request.
        request: UpstreamRequest,
    },
    /// A forwarded request is no longer wanted (an observer's long-poll).
    Cancel {
        /// Which one.
        id: ForwardId,
    },
}

const SWEEP_EVERY: Duration = Duration::from_secs(5);
const OBSERVE_MAX: u32 = 0x00ff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Piggyback(SocketAddr, u16),
    Retransmit(SocketAddr, u16),
    Sweep,
}

#[derive(Debug)]
struct Exchange {
    confirmable: bool,
    state: ExchangeState,
    expires: Instant,
}

#[derive(Debug)]
enum ExchangeState {
    /// Waiting for the homeserver; `acked` once an empty ACK went out (separate response).
    Pending { acked: bool },
    /// The datagram every duplicate gets.
    Done(Vec<u8>),
}

#[derive(Debug)]
enum OutPurpose {
    SeparateResponse,
    Notification { token: Vec<u8> },
}

#[derive(Debug)]
struct Outgoing {
    datagram: Vec<u8>,
    attempts: u8,
    timeout: Duration,
    purpose: OutPurpose,
}

#[derive(Debug)]
struct Block1Assembly {
    key: String,
    body: Vec<u8>,
    expires: Instant,
}

#[derive(Debug)]
struct StoredBody {
    key: String,
    /// For a notification body: the observed path, so that block follow-ups find it even if
    /// their query differs from the registration's (for example an updated `since`).
    notification_path: Option<String>,
    /// Shared, so that serving one block of a large file does not copy the whole file.
    content: std::sync::Arc<ResponseContent>,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct ObserverTemplate {
    path: String,
    query: Vec<String>,
    access_token: Option<AccessToken>,
    encoding: Encoding,
    szx: u8,
    key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObserverState {
    Polling(ForwardId),
    AwaitingAck(u16),
}

#[derive(Debug)]
struct Observer {
    token: Vec<u8>,
    template: ObserverTemplate,
    since: Option<String>,
    seq: u32,
    state: ObserverState,
    last_push: Instant,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug)]
struct Peer {
    access_token: Option<AccessToken>,
    /// Room ids and Megolm sender fields the peer sent in full (v2), kept with its access token.
    sticky: StickyState,
    exchanges: HashMap<u16, Exchange>,
    exchange_order: VecDeque<u16>,
    block1: Vec<Block1Assembly>,
    block2: Vec<StoredBody>,
    observers: Vec<Observer>,
    outbox: HashMap<u16, Outgoing>,
    next_mid: u16,
    in_flight: usize,
    bucket: TokenBucket,
    last_seen: Instant,
}

impl Peer {
    fn new(now: Instant, burst: u32, first_mid: u16) -> Self {
        Self {
            access_token: None,
            sticky: StickyState::default(),
            exchanges: HashMap::new(),
            exchange_order: VecDeque::new(),
            block1: Vec::new(),
            block2: Vec::new(),
            observers: Vec::new(),
            outbox: HashMap::new(),
            next_mid: first_mid,
            in_flight: 0,
            bucket: TokenBucket {
                tokens: f64::from(burst),
                refilled: now,
            },
            last_seen: now,
        }
    }

    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.observers.is_empty()
            && self.outbox.is_empty()
            && self.in_flight == 0
            && self.block1.is_empty()
            && self.block2.is_empty()
    }
}

#[derive(Debug)]
struct ClientContext {
    mid: u16,
    token: Vec<u8>,
    method: http::Method,
    encoding: Encoding,
    route: translate::Route,
    szx: u8,
    key: String,
    block2_num: u32,
    block1_echo: Option<BlockValue>,
    register: Option<ObserverTemplate>,
}

#[derive(Debug)]
enum ForwardPurpose {
    Client(Box<ClientContext>),
    Observe { token: Vec<u8> },
}

#[derive(Debug)]
struct Forward {
    peer: SocketAddr,
    started: Instant,
    route: String,
    purpose: ForwardPurpose,
}

/// The transport core. See the module documentation. `Debug` shows counts only: cached
/// responses and stored bodies carry access tokens and messages.
pub struct Transport {
    limits: Limits,
    metrics: Metrics,
    peers: HashMap<SocketAddr, Peer>,
    forwards: HashMap<ForwardId, Forward>,
    next_forward: ForwardId,
    timers: BinaryHeap<Reverse<(Instant, TimerKind)>>,
    observers: usize,
    draining: bool,
    jitter: u64,
    own_szx: u8,
}

impl core::fmt::Debug for Transport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transport")
            .field("peers", &self.peers.len())
            .field("observers", &self.observers)
            .field("forwards", &self.forwards.len())
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

/// A request after its options were read: everything needed to forward or answer it.
struct Incoming {
    peer: SocketAddr,
    mid: u16,
    token: Vec<u8>,
    confirmable: bool,
    encoding: Encoding,
    /// The body limit that applies to this request (the Size1 of a 4.13): `max_body`, or
    /// `max_media_body` for a media upload.
    body_limit: usize,
}

impl Transport {
    /// A core with the given limits, reporting to `metrics`.
    pub fn new(limits: Limits, metrics: Metrics, now: Instant) -> Self {
        let own_szx = message::szx_for_size(limits.block_size).unwrap_or(6);
        let mut t = Self {
            limits,
            metrics,
            peers: HashMap::new(),
            forwards: HashMap::new(),
            next_forward: 1,
            timers: BinaryHeap::new(),
            observers: 0,
            draining: false,
            jitter: 0x9e37_79b9_7f4a_7c15,
            own_szx,
        };
        t.arm(now + SWEEP_EVERY, TimerKind::Sweep);
        t
    }

    /// Active observers.
    pub fn observer_count(&self) -> usize {
        self.observers
    }

    /// Peers with state.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Client requests still waiting for the homeserver (observer long-polls excluded).
    pub fn client_requests_in_flight(&self) -> usize {
        self.forwards
            .values()
            .filter(|f| matches!(f.purpose, ForwardPurpose::Client(_)))
            .count()
    }

    /// CON messages (separate responses) not yet acknowledged.
    pub fn unacknowledged_responses(&self) -> usize {
        self.peers
            .values()
            .flat_map(|p| p.outbox.values())
            .filter(|o| matches!(o.purpose, OutPurpose::SeparateResponse))
            .count()
    }

    /// When [`Transport::on_timer`] wants to run next.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Stop taking new requests (they get 5.03) and end every observation.
    pub fn begin_drain(&mut self) -> Vec<Action> {
        self.draining = true;
        let mut actions = Vec::new();
        let peers: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in peers {
            let Some(peer) = self.peers.get_mut(&addr) else {
                continue;
            };
            for observer in peer.observers.drain(..) {
                if let ObserverState::Polling(id) = observer.state {
                    self.forwards.remove(&id);
                    actions.push(Action::Cancel { id });
                }
                self.observers = self.observers.saturating_sub(1);
            }
        }
        self.metrics.observers.set(self.observers as i64);
        actions
    }

    fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.timers.push(Reverse((at, kind)));
    }

    /// Seeds the generator behind retransmission jitter and message ids (the I/O layer passes
    /// something time-based; tests keep the default for reproducibility).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.jitter = seed | 1;
        self
    }

    fn next_random(&mut self) -> u64 {
        // xorshift: jitter and message ids only, nothing security relevant.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        self.jitter
    }

    fn jittered_ack_timeout(&mut self) -> Duration {
        // ACK_TIMEOUT * [1, 1.5) (RFC 7252 section 4.8).
        let fraction = (self.next_random() % 1000) as u32;
        self.limits.ack_timeout + self.limits.ack_timeout * fraction / 2000
    }

    /// Keeps a confirmable message `mid` to `addr` in the peer's outbox and arms its first
    /// retransmission after a jittered ACK_TIMEOUT; the caller sends it.
    fn retransmit_until_acked(
        &mut self,
        addr: SocketAddr,
        mid: u16,
        datagram: Vec<u8>,
        purpose: OutPurpose,
        now: Instant,
    ) {
        let timeout = self.jittered_ack_timeout();
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.outbox.insert(
                mid,
                Outgoing {
                    datagram,
                    attempts: 0,
                    timeout,
                    purpose,
                },
            );
        }
        self.arm(now + timeout, TimerKind::Retransmit(addr, mid));
    }

    /// A datagram arrived from `peer`.
    pub fn on_datagram(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Vec<Action> {
        self.metrics.coap_bytes_in.inc_by(datagram.len() as u64);
        let mut actions = Vec::new();
        let packet = match message::parse(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.metrics.malformed.inc();
                if let Some(h) = message::raw_header(datagram)
                    && h.confirmable
                {
                    self.send(
                        &mut actions,
                        peer,
                        message::empty(MessageType::Reset, h.message_id),
                    );
                }
                return actions;
            }
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement, _) => self.on_ack(peer, mid, now, &mut actions),
            (MessageType::Reset, _) => self.on_reset(peer, mid, &mut actions),
            // CoAP ping: answer with RST (RFC 7252 section 4.3).
            (MessageType::Confirmable, MessageClass::Empty) => {
                self.send(&mut actions, peer, message::empty(MessageType::Reset, mid));
            }
            (kind, MessageClass::Request(method)) => {
                self.on_request(
                    peer,
                    packet,
                    method,
                    kind == MessageType::Confirmable,
                    now,
                    &mut actions,
                );
            }
            (MessageType::Confirmable, _) => {
                self.metrics.malformed.inc();
                self.send(&mut actions, peer, message::empty(MessageType::Reset, mid));
            }
            _ => {
                self.metrics.malformed.inc();
            }
        }
        actions
    }

    fn send(&self, actions: &mut Vec<Action>, peer: SocketAddr, datagram: Vec<u8>) {
        self.metrics.coap_bytes_out.inc_by(datagram.len() as u64);
        actions.push(Action::Send { peer, datagram });
    }

    fn on_ack(&mut self, addr: SocketAddr, mid: u16, now: Instant, actions: &mut Vec<Action>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(out) = peer.outbox.remove(&mid) else {
            return;
        };
        if let OutPurpose::Notification { token } = out.purpose {
            let Some(observer) = peer.observers.iter().find(|o| o.token == token) else {
                return;
            };
            if observer.state == ObserverState::AwaitingAck(mid) {
                self.poll(addr, &token, now, actions);
            }
        }
    }

    fn on_reset(&mut self, addr: SocketAddr, mid: u16, actions: &mut Vec<Action>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(out) = peer.outbox.remove(&mid) else {
            return;
        };
        if let OutPurpose::Notification { token } = out.purpose {
            self.deregister(addr, |o| o.token == token, actions);
        }
    }

    fn deregister(
        &mut self,
        addr: SocketAddr,
        which: impl Fn(&Observer) -> bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let before = peer.observers.len();
        peer.observers.retain(|o| {
            if which(o) {
                if let ObserverState::Polling(id) = o.state {
                    actions.push(Action::Cancel { id });
                }
                false
            } else {
                true
            }
        });
        let removed = before - peer.observers.len();
        if removed > 0 {
            tracing::debug!(peer = %addr, removed, "observer deregistered");
        }
        for action in actions.iter() {
            if let Action::Cancel { id } = action {
                self.forwards.remove(id);
            }
        }
        self.observers = self.observers.saturating_sub(removed);
        self.metrics.observers.set(self.observers as i64);
    }

    fn on_request(
        &mut self,
        addr: SocketAddr,
        packet: Packet,
        method: RequestType,
        confirmable: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let mid = packet.header.message_id;
        if !self.peers.contains_key(&addr) {
            if self.peers.len() >= self.limits.max_peers {
                // No state for this peer: answer statelessly.
                let kind = if confirmable {
                    MessageType::Acknowledgement
                } else {
                    MessageType::NonConfirmable
                };
                let reply_mid = if confirmable {
                    mid
                } else {
                    mid.wrapping_add(0x8000)
                };
                let p = message::build(
                    kind,
                    code::SERVICE_UNAVAILABLE,
                    reply_mid,
                    packet.get_token(),
                );
                self.send(actions, addr, message::to_datagram(&p));
                return;
            }
            // Message ids start somewhere unpredictable, so that a restarted gateway does not
            // reuse the ids a peer still remembers (it would take a new CON for a duplicate).
            let first_mid = self.next_random() as u16;
            self.peers
                .insert(addr, Peer::new(now, self.limits.peer_burst, first_mid));
        }
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        peer.last_seen = now;

        // Duplicate detection (RFC 7252 section 4.5): same peer and message id.
        if let Some(exchange) = peer.exchanges.get_mut(&mid) {
            self.metrics.duplicates.inc();
            match &mut exchange.state {
                ExchangeState::Done(datagram) => {
                    let datagram = datagram.clone();
                    self.send(actions, addr, datagram);
                }
                ExchangeState::Pending { acked } => {
                    if exchange.confirmable {
                        *acked = true;
                        self.send(
                            actions,
                            addr,
                            message::empty(MessageType::Acknowledgement, mid),
                        );
                    }
                }
            }
            return;
        }
        let lifetime = if confirmable {
            message::EXCHANGE_LIFETIME
        } else {
            message::NON_LIFETIME
        };
        if peer.exchanges.len() >= self.limits.dedup_per_peer {
            // Forget the oldest finished exchange; if all are pending, the in-flight limit
            // below answers this one.
            if let Some(pos) = peer.exchange_order.iter().position(|m| {
                matches!(
                    peer.exchanges.get(m).map(|e| &e.state),
                    Some(ExchangeState::Done(_)) | None
                )
            }) && let Some(old) = peer.exchange_order.remove(pos)
            {
                peer.exchanges.remove(&old);
            }
        }
        peer.exchanges.insert(
            mid,
            Exchange {
                confirmable,
                state: ExchangeState::Pending { acked: false },
                expires: now + lifetime,
            },
        );
        peer.exchange_order.push_back(mid);

        let mut incoming = Incoming {
            peer: addr,
            mid,
            token: packet.get_token().to_vec(),
            confirmable,
            encoding: Encoding {
                cbor: false,
                version: TableVersion::V1,
            },
            body_limit: self.limits.max_body,
        };
        if let Err(content) = self.handle_request(&mut incoming, packet, method, now, actions) {
            let label = "-".to_owned();
            self.finish(&incoming, &label, Reply::plain(&content), now, actions);
        }
    }

    /// Reads the request; `Err` is an immediate answer.
    fn handle_request(
        &mut self,
        incoming: &mut Incoming,
        packet: Packet,
        method: RequestType,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), ResponseContent> {
        let addr = incoming.peer;
        // Encoding first, so even errors come back the way the client reads them.
        let content_format = uint(&packet, 12)
            .map_err(|_| bad(incoming, "The Content-Format option is not a uint."))?;
        let accept =
            uint(&packet, 17).map_err(|_| bad(incoming, "The Accept option is not a uint."))?;
        let version_value = uint(&packet, profile::CBOR_TABLE_VERSION)
            .map_err(|_| bad(incoming, "Option 257 (table version) is not a uint."))?;
        incoming.encoding.cbor = content_format == Some(u64::from(CONTENT_FORMAT_CBOR))
            || accept == Some(u64::from(CONTENT_FORMAT_CBOR));
        match version_value.map(TableVersion::from_option) {
            None => {}
            Some(Some(v)) => incoming.encoding.version = v,
            Some(None) => {
                return Err(bad(
                    incoming,
                    "Option 257 names a CBOR table version this gateway does not know.",
                ));
            }
        }
        // v2: a body without Content-Format is CBOR (PROFILE.md section 1), and so is the answer.
        let v2_cbor_body = incoming.encoding.version == TableVersion::V2
            && content_format.is_none()
            && !packet.payload.is_empty();
        let content_format = if v2_cbor_body {
            Some(u64::from(CONTENT_FORMAT_CBOR))
        } else {
            content_format
        };
        incoming.encoding.cbor = content_format == Some(u64::from(CONTENT_FORMAT_CBOR))
            || accept == Some(u64::from(CONTENT_FORMAT_CBOR));
        // Proxy-Uri / Proxy-Scheme: this is a gateway to one homeserver, not a forward proxy.
        if packet.get_option(CoapOption::ProxyUri).is_some()
            || packet.get_option(CoapOption::ProxyScheme).is_some()
        {
            return Err(refuse(
                incoming,
                code::PROXYING_NOT_SUPPORTED,
                "M_UNRECOGNIZED",
                "The gateway is not a forward proxy.",
            ));
        }
        if let Some((number, _)) = packet
            .options()
            .find(|(n, _)| message::is_critical(**n) && !message::is_known_option(**n))
        {
            let msg = format!("Critical option {number} is not supported.");
            return Err(refuse(incoming, code::BAD_OPTION, "M_UNRECOGNIZED", &msg));
        }
        if let Some(a) = accept
            && a != u64::from(CONTENT_FORMAT_CBOR)
            && a != u64::from(CONTENT_FORMAT_JSON)
        {
            return Err(refuse(
                incoming,
                code::NOT_ACCEPTABLE,
                "M_UNRECOGNIZED",
                "Only application/cbor (60) and application/json (50) are served.",
            ));
        }
        let http_method = match method {
            RequestType::Get => http::Method::GET,
            RequestType::Post => http::Method::POST,
            RequestType::Put => http::Method::PUT,
            RequestType::Delete => http::Method::DELETE,
            _ => {
                return Err(translate::gateway_error(
                    code::METHOD_NOT_ALLOWED,
                    "M_UNRECOGNIZED",
                    "Only GET, POST, PUT and DELETE are forwarded.",
                    incoming.encoding,
                ));
            }
        };

        let peer = self
            .peers
            .get_mut(&addr)
            .ok_or_else(|| internal(incoming))?;
        if let Some(value) = packet.get_first_option(CoapOption::Unknown(profile::ACCESS_TOKEN)) {
            match AccessToken::from_option(value) {
                Some(token) => {
                    // The sticky profile state belongs to the access token it came with.
                    if peer.access_token.as_ref().map(AccessToken::expose) != Some(token.expose()) {
                        peer.sticky.clear();
                    }
                    peer.access_token = Some(token);
                }
                None => {
                    return Err(bad(
                        incoming,
                        "Option 256 (access token) is not a valid token.",
                    ));
                }
            }
        }
        let access_token = peer.access_token.clone();

        let mut segments = Vec::new();
        for s in packet.get_option(CoapOption::UriPath).into_iter().flatten() {
            segments.push(
                std::str::from_utf8(s)
                    .map_err(|_| bad(incoming, "A Uri-Path segment is not UTF-8."))?,
            );
        }
        let mut query: Vec<String> = Vec::new();
        for q in packet
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
        {
            query.push(
                std::str::from_utf8(q)
                    .map_err(|_| bad(incoming, "A Uri-Query option is not UTF-8."))?
                    .to_owned(),
            );
        }
        let segments = peer
            .sticky
            .resolve_rooms(&segments, incoming.encoding.version)
            .map_err(|e| refuse(incoming, STICKY_STATE_MISSING, "M_UNKNOWN", &e.to_string()))?;
        let path =
            profile::expand_segments(segments.iter().map(|s| &**s), incoming.encoding.version)
                .map_err(|e| refuse(incoming, code::NOT_FOUND, "M_UNRECOGNIZED", &e.to_string()))?;
        let media = MediaRoute::of_path(&path);
        let mut content_type = None;
        if media == Some(MediaRoute::Upload) {
            incoming.body_limit = self.limits.max_media_body;
            // No Content-Format: octet-stream; one the gateway has no type for: refused below.
            content_type = match content_format {
                None => Some(crate::media::OCTET_STREAM),
                Some(cf) => u16::try_from(cf).ok(),
            }
            .and_then(crate::media::media_type)
            .map(str::to_owned);
            if let Some(named) = query.iter().find_map(|q| {
                q.strip_prefix(crate::media::CONTENT_TYPE_QUERY)?
                    .strip_prefix('=')
            }) {
                content_type = Some(named.to_owned());
            }
            if content_type.is_none() {
                return Err(refuse(
                    incoming,
                    code::UNSUPPORTED_CONTENT_FORMAT,
                    "M_UNKNOWN",
                    "The gateway knows no media type for this Content-Format; name it in the content_type query.",
                ));
            }
            query.retain(|q| !is_param(q, crate::media::CONTENT_TYPE_QUERY));
        }
        let route = translate::route_label(&path);
        let key = format!(
            "{http_method} {path}?{} a={} v={}",
            query.join("&"),
            incoming.encoding.cbor,
            incoming.encoding.version as u8
        );

        let observe =
            uint(&packet, 6).map_err(|_| bad(incoming, "The Observe option is not a uint."))?;
        let block2 = match packet.get_first_option(CoapOption::Block2) {
            Some(v) => Some(
                BlockValue::decode(v)
                    .ok_or_else(|| bad(incoming, "The Block2 option is malformed."))?,
            ),
            None => None,
        };
        let block1 = match packet.get_first_option(CoapOption::Block1) {
            Some(v) => Some(
                BlockValue::decode(v)
                    .ok_or_else(|| bad(incoming, "The Block1 option is malformed."))?,
            ),
            None => None,
        };
        let szx = block2.map_or(self.own_szx, |b| b.szx.min(self.own_szx));
        let block2_num = block2.map_or(0, |b| b.num);
        let is_sync = http_method == http::Method::GET
            && path.starts_with("/_matrix/client/")
            && path.ends_with("/sync");

        // A later block of a body the gateway already holds (a large response or a notification).
        if block2_num > 0 {
            let peer = self
                .peers
                .get_mut(&addr)
                .ok_or_else(|| internal(incoming))?;
            let stored = match peer.block2.iter().position(|s| s.key == key) {
                Some(i) => Some(i),
                None if http_method == http::Method::GET => peer
                    .block2
                    .iter()
                    .position(|s| s.notification_path.as_deref() == Some(path.as_str())),
                None => None,
            };
            if let Some(stored) = stored.and_then(|i| peer.block2.get_mut(i)) {
                stored.expires = now + self.limits.blockwise_timeout;
                let content = std::sync::Arc::clone(&stored.content);
                self.metrics
                    .blockwise
                    .get_or_create(&crate::metrics::BlockLabels { kind: "block2" })
                    .inc();
                self.finish(
                    incoming,
                    &route,
                    Reply {
                        block2: Some((block2_num, szx)),
                        ..Reply::plain(&content)
                    },
                    now,
                    actions,
                );
                return Ok(());
            }
            if http_method != http::Method::GET {
                return Err(refuse(
                    incoming,
                    code::REQUEST_ENTITY_INCOMPLETE,
                    "M_UNKNOWN",
                    "The earlier blocks of this response have expired; request block 0 again.",
                ));
            }
        }

        // Deregistration: a GET for the resource without Observe (block fetches excepted), or Observe=1.
        if is_sync && block2_num == 0 && observe != Some(0) {
            let token = incoming.token.clone();
            let path_key = path.clone();
            self.deregister(
                addr,
                move |o| o.token == token || o.template.path == path_key,
                actions,
            );
        }

        let body = self.request_body(
            incoming,
            &packet,
            block1,
            &key,
            // A media upload is the file's bytes: never transcoded, whatever its format.
            content_format.filter(|_| media != Some(MediaRoute::Upload)),
            now,
        )?;
        let Some(body) = body else {
            // A Block1 block that is not the last one: 2.31 Continue.
            let echo = block1.map(|b| BlockValue {
                num: b.num,
                more: true,
                szx: b.szx.min(self.own_szx),
            });
            let content = ResponseContent {
                code: code::CONTINUE,
                max_age: None,
                content_format: None,
                payload: Vec::new(),
            };
            self.finish(
                incoming,
                &route,
                Reply {
                    block1_echo: echo,
                    ..Reply::plain(&content)
                },
                now,
                actions,
            );
            return Ok(());
        };
        // v2: the Megolm sender fields an encrypted send left out are the ones the peer sent last.
        let body = match body {
            Some(json) => {
                let peer = self
                    .peers
                    .get_mut(&addr)
                    .ok_or_else(|| internal(incoming))?;
                Some(
                    peer.sticky
                        .megolm_send_json(&path, json, incoming.encoding.version),
                )
            }
            None => None,
        };

        if self.draining {
            return Err(refuse(
                incoming,
                code::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "The gateway is shutting down.",
            ));
        }
        let peer = self
            .peers
            .get_mut(&addr)
            .ok_or_else(|| internal(incoming))?;
        if peer.in_flight >= self.limits.max_in_flight_per_peer {
            return Err(retry_later(
                incoming,
                code::SERVICE_UNAVAILABLE,
                "Too many requests in flight from this peer.",
            ));
        }
        let elapsed = now
            .saturating_duration_since(peer.bucket.refilled)
            .as_secs_f64();
        peer.bucket.tokens = (peer.bucket.tokens + elapsed * self.limits.peer_rate)
            .min(f64::from(self.limits.peer_burst));
        peer.bucket.refilled = now;
        if peer.bucket.tokens < 1.0 {
            return Err(retry_later(
                incoming,
                code::TOO_MANY_REQUESTS,
                "This peer sends requests faster than the gateway allows.",
            ));
        }
        peer.bucket.tokens -= 1.0;

        let register =
            (is_sync && observe == Some(0) && block2_num == 0).then(|| ObserverTemplate {
                path: path.clone(),
                query: query
                    .iter()
                    .filter(|q| !is_param(q, "since") && !is_param(q, "timeout"))
                    .cloned()
                    .collect(),
                access_token: access_token.clone(),
                encoding: incoming.encoding,
                szx,
                key: key.clone(),
            });
        let path_and_query = with_query(&path, query.iter().map(String::as_str));
        let request = UpstreamRequest {
            method: http_method.clone(),
            path_and_query,
            access_token,
            json_body: body,
            content_type,
            max_response_body: (media == Some(MediaRoute::Download))
                .then_some(self.limits.max_media_body),
            timeout: self.limits.upstream_timeout,
        };
        let context = ClientContext {
            mid: incoming.mid,
            token: incoming.token.clone(),
            method: http_method,
            encoding: incoming.encoding,
            route: if path == "/_matrix/client/versions" {
                translate::Route::Versions
            } else if is_sync {
                translate::Route::Sync {
                    since: query_value(&query, "since"),
                }
            } else if media == Some(MediaRoute::Download) {
                translate::Route::MediaDownload
            } else if media == Some(MediaRoute::Config) {
                translate::Route::MediaConfig {
                    upload_limit: self.limits.max_media_body,
                }
            } else {
                translate::Route::Other
            },
            szx,
            key,
            block2_num,
            block1_echo: block1,
            register,
        };
        peer.in_flight += 1;
        let id = self.next_forward;
        self.next_forward += 1;
        self.forwards.insert(
            id,
            Forward {
                peer: addr,
                started: now,
                route,
                purpose: ForwardPurpose::Client(Box::new(context)),
            },
        );
        if incoming.confirmable {
            self.arm(
                now + self.limits.piggyback_wait,
                TimerKind::Piggyback(addr, incoming.mid),
            );
        }
        actions.push(Action::Forward { id, request });
        Ok(())
    }

    /// The JSON body to forward; `Ok(None)` while Block1 blocks are still arriving.
    fn request_body(
        &mut self,
        incoming: &Incoming,
        packet: &Packet,
        block1: Option<BlockValue>,
        key: &str,
        content_format: Option<u64>,
        now: Instant,
    ) -> Result<Option<Option<Vec<u8>>>, ResponseContent> {
        let too_large = |incoming: &Incoming| {
            refuse(
                incoming,
                code::REQUEST_ENTITY_TOO_LARGE,
                "M_TOO_LARGE",
                "The request body is larger than the gateway accepts.",
            )
        };
        let limit = incoming.body_limit;
        let announced = uint(packet, 60).ok().flatten();
        if announced.is_some_and(|n| n > limit as u64) || packet.payload.len() > limit {
            return Err(too_large(incoming));
        }
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        let raw = match block1 {
            None => packet.payload.clone(),
            Some(b) => {
                if b.more && packet.payload.len() != b.size() {
                    return Err(bad(
                        incoming,
                        "A Block1 block other than the last must fill the block size.",
                    ));
                }
                if b.num == 0 {
                    peer.block1.retain(|a| a.key != key);
                    if peer.block1.len() + peer.block2.len() >= self.limits.blockwise_per_peer {
                        if peer.block2.is_empty() {
                            peer.block1.remove(0);
                        } else {
                            peer.block2.remove(0);
                        }
                    }
                    self.metrics
                        .blockwise
                        .get_or_create(&crate::metrics::BlockLabels { kind: "block1" })
                        .inc();
                    peer.block1.push(Block1Assembly {
                        key: key.to_owned(),
                        body: Vec::new(),
                        expires: now,
                    });
                }
                let Some(pos) = peer.block1.iter().position(|a| a.key == key) else {
                    return Err(refuse(
                        incoming,
                        code::REQUEST_ENTITY_INCOMPLETE,
                        "M_UNKNOWN",
                        "Block1 transfer unknown or expired; start again at block 0.",
                    ));
                };
                let assembly = peer.block1.get_mut(pos).ok_or_else(|| internal(incoming))?;
                // The block just taken, sent again under a new message id because every answer
                // to it was lost: the client gets its 2.31 again instead of starting over.
                let repeated = b.more
                    && b.offset() + packet.payload.len() == assembly.body.len()
                    && assembly.body.get(b.offset()..) == Some(packet.payload.as_slice());
                if repeated {
                    assembly.expires = now + self.limits.blockwise_timeout;
                    return Ok(None);
                }
                if b.offset() != assembly.body.len() {
                    peer.block1.remove(pos);
                    return Err(refuse(
                        incoming,
                        code::REQUEST_ENTITY_INCOMPLETE,
                        "M_UNKNOWN",
                        "Block1 block out of order; start again at block 0.",
                    ));
                }
                if assembly.body.len() + packet.payload.len() > limit {
                    peer.block1.remove(pos);
                    return Err(too_large(incoming));
                }
                assembly.body.extend_from_slice(&packet.payload);
                assembly.expires = now + self.limits.blockwise_timeout;
                if b.more {
                    return Ok(None);
                }
                peer.block1.remove(pos).body
            }
        };
        if raw.is_empty() {
            return Ok(Some(None));
        }
        match content_format {
            Some(cf) if cf == u64::from(CONTENT_FORMAT_CBOR) => {
                let value =
                    profile::cbor_to_json(&raw, incoming.encoding.version).map_err(|e| {
                        refuse(
                            incoming,
                            code::BAD_REQUEST,
                            "M_BAD_JSON",
                            &format!("The CBOR body could not be read: {e}"),
                        )
                    })?;
                Ok(Some(Some(value.to_string().into_bytes())))
            }
            None => Ok(Some(Some(raw))),
            Some(cf) if cf == u64::from(CONTENT_FORMAT_JSON) => Ok(Some(Some(raw))),
            Some(_) => Err(refuse(
                incoming,
                code::UNSUPPORTED_CONTENT_FORMAT,
                "M_NOT_JSON",
                "Bodies must be application/cbor (60) or application/json (50).",
            )),
        }
    }

    /// Sends the response to a client request, choosing piggybacked, separate or NON, and
    /// remembers it for duplicates.
    fn finish(
        &mut self,
        incoming: &Incoming,
        route: &str,
        reply: Reply<'_>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let content = reply.content;
        self.metrics
            .requests
            .get_or_create(&crate::metrics::RequestLabels {
                route: route.to_owned(),
                code: code::dotted(content.code),
            })
            .inc();
        let addr = incoming.peer;
        // Route labels carry no identifiers, and neither tokens nor bodies are logged.
        tracing::debug!(peer = %addr, route, code = %code::dotted(content.code), bytes = content.payload.len(), "answered");
        let (num, szx) = reply.block2.unwrap_or((0, self.own_szx));
        let blockwise_timeout = self.limits.blockwise_timeout;
        let max_body = incoming.body_limit;
        let blockwise_per_peer = self.limits.blockwise_per_peer;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let (kind, mid, separate) = match peer.exchanges.get(&incoming.mid).map(|e| &e.state) {
            Some(ExchangeState::Pending { acked: true }) if incoming.confirmable => {
                (MessageType::Confirmable, peer.mid(), true)
            }
            _ if incoming.confirmable => (MessageType::Acknowledgement, incoming.mid, false),
            _ => (MessageType::NonConfirmable, peer.mid(), false),
        };
        let mut packet = message::build(kind, content.code, mid, &incoming.token);
        let split = fill_payload(&mut packet, content, num, szx);
        if split && let Some(key) = reply.store_key {
            store_body(
                peer,
                key,
                None,
                content,
                now + blockwise_timeout,
                blockwise_per_peer,
            );
            self.metrics
                .blockwise
                .get_or_create(&crate::metrics::BlockLabels { kind: "block2" })
                .inc();
        }
        if let Some(seq) = reply.observe {
            packet.add_option(CoapOption::Observe, message::encode_uint(u64::from(seq)));
        }
        if let Some(echo) = reply.block1_echo {
            packet.add_option(CoapOption::Block1, echo.encode());
        }
        if content.code == code::REQUEST_ENTITY_TOO_LARGE {
            packet.add_option(CoapOption::Size1, message::encode_uint(max_body as u64));
        }
        let datagram = message::to_datagram(&packet);
        if let Some(exchange) = peer.exchanges.get_mut(&incoming.mid) {
            exchange.state = ExchangeState::Done(if separate {
                message::empty(MessageType::Acknowledgement, incoming.mid)
            } else {
                datagram.clone()
            });
        }
        if separate {
            self.retransmit_until_acked(
                addr,
                mid,
                datagram.clone(),
                OutPurpose::SeparateResponse,
                now,
            );
        }
        self.send(actions, addr, datagram);
    }

    /// The homeserver answered (or failed to) a request the core asked for.
    pub fn on_upstream(
        &mut self,
        id: ForwardId,
        outcome: UpstreamOutcome,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(forward) = self.forwards.remove(&id) else {
            return actions;
        };
        let latency = now.saturating_duration_since(forward.started);
        match forward.purpose {
            ForwardPurpose::Client(ctx) => {
                self.metrics.upstream_latency.observe(latency.as_secs_f64());
                self.on_client_response(
                    forward.peer,
                    &forward.route,
                    *ctx,
                    &outcome,
                    now,
                    &mut actions,
                );
            }
            ForwardPurpose::Observe { token } => {
                self.on_poll_response(forward.peer, &token, id, &outcome, now, &mut actions);
            }
        }
        actions
    }

    fn on_client_response(
        &mut self,
        addr: SocketAddr,
        route: &str,
        ctx: ClientContext,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        peer.in_flight = peer.in_flight.saturating_sub(1);
        let confirmable = peer.exchanges.get(&ctx.mid).is_none_or(|e| e.confirmable);
        let content = translate::translate_response(outcome, &ctx.method, ctx.encoding, &ctx.route);
        let incoming = Incoming {
            peer: addr,
            mid: ctx.mid,
            token: ctx.token.clone(),
            confirmable,
            encoding: ctx.encoding,
            body_limit: self.limits.max_body,
        };
        let mut observe = None;
        if let (Some(template), true) = (ctx.register, content.code == code::CONTENT) {
            observe = self.register(addr, &ctx.token, template, outcome, now, actions);
        }
        let reply = Reply {
            content: &content,
            block2: Some((ctx.block2_num, ctx.szx)),
            block1_echo: ctx.block1_echo,
            observe,
            store_key: Some(&ctx.key),
        };
        self.finish(&incoming, route, reply, now, actions);
    }

    /// Adds an observer after a successful registration response; returns its Observe number.
    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        addr: SocketAddr,
        token: &[u8],
        template: ObserverTemplate,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<u32> {
        let since = next_batch(outcome)?;
        // Same token: the client re-registers; replace the old observation.
        let token_owned = token.to_vec();
        self.deregister(addr, |o| o.token == token_owned, actions);
        let per_peer = self.peers.get(&addr).map_or(0, |p| p.observers.len());
        if self.draining
            || self.observers >= self.limits.max_observers
            || per_peer >= self.limits.max_observers_per_peer
        {
            return None;
        }
        let peer = self.peers.get_mut(&addr)?;
        peer.observers.push(Observer {
            token: token.to_vec(),
            template,
            since: Some(since),
            seq: 2,
            state: ObserverState::AwaitingAck(0),
            last_push: now,
        });
        self.observers += 1;
        self.metrics.observers.set(self.observers as i64);
        tracing::debug!(peer = %addr, observers = self.observers, "observer registered");
        self.poll(addr, token, now, actions);
        Some(2)
    }

    /// Starts the next long-poll for an observer.
    fn poll(&mut self, addr: SocketAddr, token: &[u8], now: Instant, actions: &mut Vec<Action>) {
        let id = self.next_forward;
        let poll_timeout = self.limits.observe_poll_timeout;
        let upstream_timeout = self
            .limits
            .upstream_timeout
            .max(poll_timeout + Duration::from_secs(10));
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(observer) = peer.observers.iter_mut().find(|o| o.token == token) else {
            return;
        };
        let t = &observer.template;
        let since = observer.since.as_ref().map(|s| format!("since={s}"));
        let timeout = format!("timeout={}", poll_timeout.as_millis());
        let params = t
            .query
            .iter()
            .map(String::as_str)
            .chain(since.as_deref())
            .chain(Some(timeout.as_str()));
        let request = UpstreamRequest {
            method: http::Method::GET,
            path_and_query: with_query(&t.path, params),
            access_token: t.access_token.clone(),
            json_body: None,
            content_type: None,
            max_response_body: None,
            timeout: upstream_timeout,
        };
        let route = translate::route_label(&t.path);
        observer.state = ObserverState::Polling(id);
        self.next_forward += 1;
        self.forwards.insert(
            id,
            Forward {
                peer: addr,
                started: now,
                route,
                purpose: ForwardPurpose::Observe {
                    token: token.to_vec(),
                },
            },
        );
        actions.push(Action::Forward { id, request });
    }

    fn on_poll_response(
        &mut self,
        addr: SocketAddr,
        token: &[u8],
        id: ForwardId,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let keepalive = self.limits.observe_keepalive;
        let blockwise_timeout = self.limits.blockwise_timeout;
        let blockwise_per_peer = self.limits.blockwise_per_peer;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let mid = peer.mid();
        let Some(observer) = peer.observers.iter_mut().find(|o| o.token == token) else {
            return;
        };
        if observer.state != ObserverState::Polling(id) {
            return;
        }
        let template = observer.template.clone();
        let content = translate::translate_response(
            outcome,
            &http::Method::GET,
            template.encoding,
            // The poll's since: a prev_batch equal to it is left out (the observer knows it).
            &translate::Route::Sync {
                since: observer.since.clone(),
            },
        );
        let ok = content.code == code::CONTENT;
        let batch = if ok { next_batch(outcome) } else { None };
        // No next_batch (an error, or a 200 that is not a sync response): the last notification.
        let changed = batch.is_some() && batch != observer.since;
        if batch.is_some()
            && !changed
            && now.saturating_duration_since(observer.last_push) < keepalive
        {
            self.poll(addr, token, now, actions);
            return;
        }
        let mut packet = message::build(MessageType::Confirmable, content.code, mid, token);
        let final_notification = batch.is_none();
        if !final_notification {
            observer.seq = (observer.seq + 1) & OBSERVE_MAX;
            observer.since = batch;
            observer.last_push = now;
            observer.state = ObserverState::AwaitingAck(mid);
            // Observe comes before Block2 in option order; coap-lite sorts options anyway.
            packet.add_option(
                CoapOption::Observe,
                message::encode_uint(u64::from(observer.seq)),
            );
        }
        if fill_payload(&mut packet, &content, 0, template.szx) {
            // The client fetches the rest with Block2 using the registration's options, so the
            // body it gets is exactly the one pushed.
            store_body(
                peer,
                &template.key,
                Some(&template.path),
                &content,
                now + blockwise_timeout,
                blockwise_per_peer,
            );
            self.metrics
                .blockwise
                .get_or_create(&crate::metrics::BlockLabels { kind: "block2" })
                .inc();
        }
        let datagram = message::to_datagram(&packet);
        self.retransmit_until_acked(
            addr,
            mid,
            datagram.clone(),
            OutPurpose::Notification {
                token: token.to_vec(),
            },
            now,
        );
        self.metrics.notifications.inc();
        if final_notification {
            // An error notification ends the observation (RFC 7641 section 3.2).
            let token = token.to_vec();
            self.deregister(addr, |o| o.token == token, actions);
        }
        self.send(actions, addr, datagram);
    }

    /// Runs every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(Reverse((at, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Piggyback(addr, mid) => {
                    let Some(peer) = self.peers.get_mut(&addr) else {
                        continue;
                    };
                    if let Some(Exchange {
                        state: ExchangeState::Pending { acked },
                        confirmable: true,
                        ..
                    }) = peer.exchanges.get_mut(&mid)
                        && !*acked
                    {
                        *acked = true;
                        self.send(
                            &mut actions,
                            addr,
                            message::empty(MessageType::Acknowledgement, mid),
                        );
                    }
                }
                TimerKind::Retransmit(addr, mid) => self.retransmit(addr, mid, now, &mut actions),
                TimerKind::Sweep => {
                    self.sweep(now);
                    self.arm(now + SWEEP_EVERY, TimerKind::Sweep);
                }
            }
        }
        actions
    }

    fn retransmit(&mut self, addr: SocketAddr, mid: u16, now: Instant, actions: &mut Vec<Action>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(out) = peer.outbox.get_mut(&mid) else {
            return;
        };
        if out.attempts < message::MAX_RETRANSMIT {
            out.attempts += 1;
            out.timeout *= 2;
            let (datagram, at) = (out.datagram.clone(), now + out.timeout);
            self.metrics.retransmissions.inc();
            self.arm(at, TimerKind::Retransmit(addr, mid));
            self.send(actions, addr, datagram);
            return;
        }
        let Some(out) = peer.outbox.remove(&mid) else {
            return;
        };
        if let OutPurpose::Notification { token } = out.purpose {
            // Repeatedly unacknowledged: the client is gone (RFC 7641 section 4.5).
            self.deregister(addr, |o| o.token == token, actions);
        }
    }

    /// Expires exchanges, blockwise state and idle peers.
    fn sweep(&mut self, now: Instant) {
        self.peers.retain(|_, peer| {
            while let Some(mid) = peer.exchange_order.front().copied() {
                match peer.exchanges.get(&mid) {
                    Some(e) if e.expires > now => break,
                    Some(Exchange {
                        state: ExchangeState::Pending { .. },
                        ..
                    }) => break,
                    _ => {
                        peer.exchanges.remove(&mid);
                        peer.exchange_order.pop_front();
                    }
                }
            }
            peer.block1.retain(|a| a.expires > now);
            peer.block2.retain(|s| s.expires > now);
            !(peer.is_idle()
                && now.saturating_duration_since(peer.last_seen) > message::EXCHANGE_LIFETIME)
        });
    }
}

/// What to send back for one client request.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    content: &'a ResponseContent,
    /// Which block the client asked for, and at which size.
    block2: Option<(u32, u8)>,
    block1_echo: Option<BlockValue>,
    observe: Option<u32>,
    /// Where to keep the whole body if it does not fit one block.
    store_key: Option<&'a str>,
}

impl<'a> Reply<'a> {
    fn plain(content: &'a ResponseContent) -> Self {
        Self {
            content,
            block2: None,
            block1_echo: None,
            observe: None,
            store_key: None,
        }
    }
}

/// Puts block `num` of the content into the packet (with Block2 and Size2 when the body is
/// larger than one block); returns whether the body was split.
fn fill_payload(packet: &mut Packet, content: &ResponseContent, num: u32, szx: u8) -> bool {
    if let Some(cf) = content.content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u64::from(cf)),
        );
    }
    if let Some(age) = content.max_age {
        packet.add_option(CoapOption::MaxAge, message::encode_uint(u64::from(age)));
    }
    let block = BlockValue {
        num,
        more: false,
        szx,
    };
    let size = block.size();
    if content.payload.len() <= size && num == 0 {
        packet.payload = content.payload.clone();
        return false;
    }
    let start = block.offset().min(content.payload.len());
    let end = start.saturating_add(size).min(content.payload.len());
    packet.payload = content
        .payload
        .get(start..end)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let more = end < content.payload.len();
    packet.add_option(CoapOption::Block2, BlockValue { more, ..block }.encode());
    if num == 0 {
        packet.add_option(
            CoapOption::Size2,
            message::encode_uint(content.payload.len() as u64),
        );
    }
    true
}

fn store_body(
    peer: &mut Peer,
    key: &str,
    notification_path: Option<&str>,
    content: &ResponseContent,
    expires: Instant,
    cap: usize,
) {
    peer.block2.retain(|s| {
        s.key != key
            && (notification_path.is_none() || s.notification_path.as_deref() != notification_path)
    });
    while !peer.block2.is_empty() && peer.block2.len() + peer.block1.len() >= cap {
        peer.block2.remove(0);
    }
    peer.block2.push(StoredBody {
        key: key.to_owned(),
        notification_path: notification_path.map(str::to_owned),
        content: std::sync::Arc::new(content.clone()),
        expires,
    });
}

fn next_batch(outcome: &UpstreamOutcome) -> Option<String> {
    let UpstreamOutcome::Response(r) = outcome else {
        return None;
    };
    if !(200..300).contains(&r.status) {
        return None;
    }
    let value: Value = serde_json::from_slice(&r.body).ok()?;
    value.get("next_batch")?.as_str().map(str::to_owned)
}

fn is_param(pair: &str, name: &str) -> bool {
    pair.split_once('=').map_or(pair, |(n, _)| n) == name
}

/// The value of query parameter `name`, if the query has it.
fn query_value(query: &[String], name: &str) -> Option<String> {
    query
        .iter()
        .find(|pair| is_param(pair, name))
        .and_then(|pair| pair.split_once('='))
        .map(|(_, value)| value.to_owned())
}

fn with_query<'a>(path: &str, pairs: impl Iterator<Item = &'a str>) -> String {
    let mut out = path.to_owned();
    for (i, pair) in pairs.enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&translate::encode_query_pair(pair));
    }
    out
}

fn uint(packet: &Packet, number: u16) -> Result<Option<u64>, ()> {
    message::uint_option(packet, number).transpose()
}

fn refuse(incoming: &Incoming, code: u8, errcode: &str, message: &str) -> ResponseContent {
    translate::gateway_error(code, errcode, message, incoming.encoding)
}

/// A limit answer: the client may try again after Max-Age (1 s).
fn retry_later(incoming: &Incoming, code: u8, message: &str) -> ResponseContent {
    ResponseContent {
        max_age: Some(1),
        ..refuse(incoming, code, "M_LIMIT_EXCEEDED", message)
    }
}

fn bad(incoming: &Incoming, message: &str) -> ResponseContent {
    refuse(incoming, code::BAD_REQUEST, "M_BAD_JSON", message)
}

fn internal(incoming: &Incoming) -> ResponseContent {
    refuse(
        incoming,
        code::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "Internal gateway error.",
    )
}

#[cfg(test)]
mod tests;
