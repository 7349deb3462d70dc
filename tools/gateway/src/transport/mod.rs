//! The transport core: everything the gateway decides about CoAP, without sockets.
//!
//! [`Transport`] is driven by three inputs — a datagram ([`Transport::on_datagram`]), an
//! upstream outcome ([`Transport::on_upstream`]), a timer ([`Transport::on_timer`]) — and
//! answers with [`Action`]s: datagrams to send, HTTP requests to make, polls to cancel. The I/O
//! layer (`server.rs`) only moves bytes; tests drive the core directly with a fake clock.
//!
//! The state, by the file that owns it:
//!
//! - `peer.rs`: what is kept per peer (sticky access token and profile state, message ids,
//!   requests in flight, the rate bucket), by what the peer proved ([`PeerId`]: its address,
//!   or its OSCORE context), and admission of a request.
//! - `exchanges.rs`: the duplicate-detection memory of received requests (RFC 7252 §4.5).
//! - `outbox.rs`: CON messages sent and retransmitted until acknowledged (RFC 7252 §4.2).
//! - `blockwise.rs`: Block1 uploads and stored Block2 bodies (RFC 7959).
//! - `budget.rs`: the one memory budget peers, observers and block-wise transfers count
//!   against.
//! - `observe.rs`: observers, their long-polls (RFC 7641) and the positions their clients
//!   confirmed.
//! - `splits.rs`: sync answers cut to the client's Response-Capacity, the later parts kept
//!   until the part before is confirmed.
//! - `forward.rs`: upstream requests in flight, for clients and observers alike.
//! - `timers.rs`: the deadlines (piggyback wait, retransmission, sweep).
//!
//! The request pipeline owns no state: `request.rs` reads a request in short steps
//! (negotiation, options, access token, path, blocks, body) and hands it to the state above,
//! `sync.rs` has the steps of a `/sync` request; `reply.rs` sends the answer, piggybacked,
//! separate or NON.
//!
//! Memory is bounded per peer by [`Limits`] (exchanges, blockwise transfers, observers,
//! in-flight requests) and globally by `memory_budget`, `max_peers`, `max_peers_per_prefix`
//! and `max_observers`. A plain peer gets state only once it proved it receives at its address
//! (an RFC 9175 Echo round trip, `echo.rs`); until then each request gets a 4.01 with an
//! Echo value at most three times its size, and nothing is kept.

mod blockwise;
mod budget;
mod exchanges;
mod forward;
mod observe;
mod outbox;
mod peer;
mod reply;
mod request;
mod splits;
mod sync;
mod timers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType};

use crate::echo::EchoKey;
use crate::limits::Limits;
use crate::message;
use crate::metrics::Metrics;
use crate::profile;
use crate::source::Sources;
use crate::translate::{UpstreamOutcome, UpstreamRequest};
use budget::MemoryBudget;
use forward::{ForwardPurpose, Forwards};
use observe::ObserverState;
use outbox::OutPurpose;
pub use peer::PeerId;
use peer::{Census, Peer};
use timers::{TimerKind, Timers};

/// Identifies one upstream request the core asked for.
pub type ForwardId = u64;

/// What the I/O layer must do.
#[derive(Debug)]
pub enum Action {
    /// Send a datagram.
    Send {
        /// Destination.
        peer: PeerId,
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

/// The transport core. See the module documentation. `Debug` shows counts only: cached
/// responses and stored bodies carry access tokens and messages.
pub struct Transport {
    limits: Limits,
    metrics: Metrics,
    peers: HashMap<PeerId, Peer>,
    /// Plain peers in all and per source prefix.
    census: Census,
    /// What peers, observers and block-wise transfers hold, against `memory_budget`.
    budget: MemoryBudget,
    /// Which source addresses need no proof.
    sources: Sources,
    /// Makes and checks the Echo values plain peers prove their address with.
    echo: EchoKey,
    forwards: Forwards,
    timers: Timers,
    /// Observers of all peers together, against `max_observers`.
    observers: usize,
    draining: bool,
    /// The xorshift state behind retransmission jitter, first message ids and split ids.
    jitter: u64,
    /// The size exponent of `block_size`, the largest block the gateway sends.
    own_szx: u8,
    /// The id of the last observer registered.
    next_observer_id: u64,
    /// Sticky states of link tokens that changed, for the state store; `None`: not kept.
    sticky_changes: Option<Vec<(u64, Vec<u8>)>>,
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

impl Transport {
    /// A core with the given limits, reporting to `metrics`.
    pub fn new(limits: Limits, metrics: Metrics, now: Instant) -> Self {
        let own_szx = limits.block_szx().unwrap_or(profile::MAX_SZX);
        let budget = MemoryBudget::new(limits.memory_budget, &metrics);
        let mut t = Self {
            limits,
            metrics,
            peers: HashMap::new(),
            census: Census::default(),
            budget,
            sources: Sources::default(),
            echo: EchoKey::random(now),
            forwards: Forwards::default(),
            timers: Timers::default(),
            observers: 0,
            draining: false,
            jitter: 0x9e37_79b9_7f4a_7c15,
            own_szx,
            next_observer_id: 0,
            sticky_changes: None,
        };
        t.timers.arm(now + SWEEP_EVERY, TimerKind::Sweep);
        t
    }

    /// Seeds the generator behind retransmission jitter, message ids and split ids (the I/O
    /// layer passes something time-based, so a restarted gateway names its splits anew; tests
    /// keep the default for reproducibility).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.jitter = seed | 1;
        self
    }

    /// Which source addresses count as proven without an Echo round trip.
    pub fn with_sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Active observers.
    pub fn observer_count(&self) -> usize {
        self.observers
    }

    /// Bytes counted against the memory budget: peers, observers and block-wise transfers.
    pub fn memory_held(&self) -> usize {
        self.budget.held()
    }

    /// Peers with state.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Client requests still waiting for the homeserver (observer long-polls excluded).
    pub fn client_requests_in_flight(&self) -> usize {
        self.forwards.client_requests()
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
        self.timers.next()
    }

    /// Stop taking new requests (they get 5.03) and end every observation.
    pub fn begin_drain(&mut self) -> Vec<Action> {
        self.draining = true;
        let mut actions = Vec::new();
        for peer in self.peers.values_mut() {
            for observer in peer.observers.drain(..) {
                if let ObserverState::Polling(id) = observer.state {
                    self.forwards.remove(id);
                    actions.push(Action::Cancel { id });
                }
                self.observers = self.observers.saturating_sub(1);
            }
        }
        self.metrics.observers.set(self.observers as i64);
        actions
    }

    /// A datagram arrived from `peer`.
    pub fn on_datagram(&mut self, peer: PeerId, datagram: &[u8], now: Instant) -> Vec<Action> {
        self.metrics.coap_bytes_in.inc_by(datagram.len() as u64);
        let mut actions = Vec::new();
        let Ok(packet) = message::parse(datagram) else {
            self.metrics.malformed.inc();
            if let Some(h) = message::raw_header(datagram)
                && h.confirmable
            {
                let reset = message::empty(MessageType::Reset, h.message_id);
                self.send(&mut actions, peer, reset);
            }
            return actions;
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement, _) => self.on_ack(peer, mid, now, &mut actions),
            (MessageType::Reset, _) => self.on_reset(peer, mid, &mut actions),
            // CoAP ping: answer with RST (RFC 7252 section 4.3).
            (MessageType::Confirmable, MessageClass::Empty) => {
                self.send(&mut actions, peer, message::empty(MessageType::Reset, mid));
            }
            (_, MessageClass::Request(method)) => {
                let size = datagram.len();
                self.on_request(peer, packet, method, size, now, &mut actions);
            }
            (MessageType::Confirmable, _) => {
                self.metrics.malformed.inc();
                self.send(&mut actions, peer, message::empty(MessageType::Reset, mid));
            }
            _ => {
                self.metrics.malformed.inc();
            }
        }
        self.note_sticky_change(peer);
        actions
    }

    /// The homeserver answered (or failed to) a request the core asked for.
    pub fn on_upstream(
        &mut self,
        id: ForwardId,
        outcome: UpstreamOutcome,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(forward) = self.forwards.remove(id) else {
            return actions;
        };
        let latency = now.saturating_duration_since(forward.started);
        match forward.purpose {
            ForwardPurpose::Client(ctx) => {
                self.metrics.upstream_latency.observe(latency.as_secs_f64());
                let (addr, route) = (forward.peer, forward.route);
                self.on_client_response(addr, route, *ctx, &outcome, now, &mut actions);
            }
            ForwardPurpose::Observe { token } => {
                self.on_poll_response(forward.peer, &token, id, &outcome, now, &mut actions);
            }
        }
        actions
    }

    /// Runs every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Piggyback(addr, mid) => {
                    self.on_piggyback_timeout(addr, mid, &mut actions);
                }
                TimerKind::Retransmit(addr, mid) => self.retransmit(addr, mid, now, &mut actions),
                TimerKind::Observer(addr, id) => {
                    self.on_observer_timer(addr, id, now, &mut actions);
                }
                TimerKind::Sweep => {
                    let census = &mut self.census;
                    self.peers.retain(|id, peer| {
                        let keep = peer.sweep(now);
                        if !keep {
                            census.leave(*id);
                        }
                        keep
                    });
                    self.timers.arm(now + SWEEP_EVERY, TimerKind::Sweep);
                }
            }
        }
        actions
    }

    fn send(&self, actions: &mut Vec<Action>, peer: PeerId, datagram: Vec<u8>) {
        self.metrics.coap_bytes_out.inc_by(datagram.len() as u64);
        actions.push(Action::Send { peer, datagram });
    }

    fn next_random(&mut self) -> u64 {
        // xorshift: jitter, message ids and split ids, nothing security relevant.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        self.jitter
    }
}

#[cfg(test)]
mod tests;
