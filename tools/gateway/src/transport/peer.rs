//! Everything the transport keeps per peer, by what the peer proved ([`PeerId`]), and the
//! steps of the request pipeline that read or change it as a whole: making room for a new peer,
//! the sticky access token, and admission (draining, the in-flight limit and the rate bucket).
//!
//! A peer's state lives as long as it has work (exchanges, observers, unacknowledged messages,
//! requests in flight, blockwise transfers) and for EXCHANGE_LIFETIME after it was last seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, Packet};

use super::blockwise::Blockwise;
use super::budget::{Charge, PEER_CHARGE};
use super::exchanges::Exchanges;
use super::observe::Observer;
use super::outbox::Outgoing;
use super::reply::{Reply, bad, internal, refuse, retry_later};
use super::request::Incoming;
use super::splits::Splits;
use super::{Action, Transport};
use crate::echo::within_amplification;
use crate::limits::Limits;
use crate::message::{self, code};
use crate::profile::option;
use crate::source::{Prefix, prefix_of};
use crate::sticky::StickyState;
use crate::translate::{AccessToken, ResponseContent};

/// Who a peer is, by what it proved. A plain peer is its UDP source address; a token on the
/// protected link is its OSCORE context, which only a request that verified under that context
/// reaches. The two are separate namespaces: nothing a datagram says makes it a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerId {
    /// A plain CoAP peer, by its source address.
    Address(SocketAddr),
    /// A token on the protected link, by the number the link gave its OSCORE context (never
    /// given to another context).
    Context(u64),
}

impl PeerId {
    /// Whether this is a token on the protected link.
    pub(super) fn is_linked(self) -> bool {
        matches!(self, Self::Context(_))
    }
}

impl core::fmt::Display for PeerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Address(addr) => addr.fmt(f),
            Self::Context(n) => write!(f, "OSCORE context {n}"),
        }
    }
}

/// One peer's state.
#[derive(Debug)]
pub(super) struct Peer {
    /// The access token of option 256, kept until the peer sends another ("sticky").
    pub(super) access_token: Option<AccessToken>,
    /// Room ids and Megolm sender fields the peer sent in full (v2), kept with its access token.
    pub(super) sticky: StickyState,
    pub(super) exchanges: Exchanges,
    pub(super) blockwise: Blockwise,
    /// The later parts of sync answers cut to the peer's Response-Capacity.
    pub(super) splits: Splits,
    pub(super) observers: Vec<Observer>,
    /// CON messages waiting for their ACK, by message id.
    pub(super) outbox: HashMap<u16, Outgoing>,
    next_mid: u16,
    /// Client requests forwarded upstream and not answered yet.
    pub(super) in_flight: usize,
    bucket: TokenBucket,
    pub(super) last_seen: Instant,
    /// The peer's fixed share of the memory budget, given back when it is forgotten.
    _charge: Charge,
}

/// The peer's request rate: `peer_rate` tokens a second, at most `peer_burst` saved up.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// Refills for the time since the last call, then takes one token if there is one.
    fn take(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Peer {
    fn new(now: Instant, burst: u32, first_mid: u16, charge: Charge) -> Self {
        Self {
            access_token: None,
            sticky: StickyState::default(),
            exchanges: Exchanges::default(),
            blockwise: Blockwise::new(charge.budget()),
            splits: Splits::default(),
            observers: Vec::new(),
            outbox: HashMap::new(),
            next_mid: first_mid,
            in_flight: 0,
            bucket: TokenBucket {
                tokens: f64::from(burst),
                refilled: now,
            },
            last_seen: now,
            _charge: charge,
        }
    }

    /// A fresh message id for a message the gateway originates (separate response, NON,
    /// notification).
    pub(super) fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// Expires exchanges and blockwise state; `false` when nothing is left and the peer was
    /// last seen more than EXCHANGE_LIFETIME ago, so it can be forgotten.
    pub(super) fn sweep(&mut self, now: Instant) -> bool {
        self.exchanges.expire(now);
        self.blockwise.expire(now);
        self.splits.expire(now);
        !(self.is_idle()
            && now.saturating_duration_since(self.last_seen) > message::EXCHANGE_LIFETIME)
    }

    fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.observers.is_empty()
            && self.outbox.is_empty()
            && self.in_flight == 0
            && self.blockwise.is_empty()
            && self.splits.is_empty()
    }
}

/// How many plain peers hold state, in all and per source prefix, against `max_peers` and
/// `max_peers_per_prefix`. Tokens on the link are not counted: the tokens file bounds them.
#[derive(Debug, Default)]
pub(super) struct Census {
    addresses: usize,
    by_prefix: HashMap<Prefix, usize>,
}

impl Census {
    /// Whether a new plain peer at `addr` stays within both limits.
    fn has_room(&self, addr: SocketAddr, limits: &Limits) -> bool {
        let in_prefix = self.by_prefix.get(&prefix_of(addr)).copied();
        self.addresses < limits.max_peers && in_prefix.unwrap_or(0) < limits.max_peers_per_prefix
    }

    fn enter(&mut self, id: PeerId) {
        if let PeerId::Address(addr) = id {
            self.addresses += 1;
            *self.by_prefix.entry(prefix_of(addr)).or_default() += 1;
        }
    }

    /// A peer's state was forgotten.
    pub(super) fn leave(&mut self, id: PeerId) {
        let PeerId::Address(addr) = id else {
            return;
        };
        self.addresses = self.addresses.saturating_sub(1);
        let prefix = prefix_of(addr);
        if let Some(n) = self.by_prefix.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                self.by_prefix.remove(&prefix);
            }
        }
    }
}

impl Transport {
    /// Step 1: makes sure a request from `id` has peer state to go with. A plain peer gets
    /// state only once its address is proven (validated by the operator, or the request
    /// carries an Echo value the gateway made for it) and while the peer limits and the memory
    /// budget have room; before that the request gets a 4.01 with an Echo value (or a 5.03
    /// Max-Age 30) and nothing is kept. A token on the link is never refused. `false` when the
    /// request was answered here.
    pub(super) fn admit_peer(
        &mut self,
        id: PeerId,
        packet: &Packet,
        size: usize,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        if self.peers.contains_key(&id) {
            return true;
        }
        if let PeerId::Address(addr) = id
            && !self.sources.is_validated(addr)
            && !self.echo.proves(addr, packet, now)
        {
            let challenge = self.echo.challenge(addr, packet, now);
            self.metrics.echo_challenges.inc();
            self.send_unproven(actions, addr, challenge, size);
            return false;
        }
        let Some(charge) = self.peer_room(id) else {
            let refusal = stateless_refusal(packet, code::SERVICE_UNAVAILABLE, PEERS_FULL_RETRY);
            if let PeerId::Address(addr) = id {
                self.send_unproven(actions, addr, refusal, size);
            }
            return false;
        };
        // Message ids start somewhere unpredictable, so that a restarted gateway does not
        // reuse the ids a peer still remembers (it would take a new CON for a duplicate).
        let first_mid = self.next_random() as u16;
        self.census.enter(id);
        let peer = Peer::new(now, self.limits.peer_burst, first_mid, charge);
        self.peers.insert(id, peer);
        true
    }

    /// The memory budget's charge for a new peer `id`, if the peer limits and the budget have
    /// room for it (always for a token on the link).
    fn peer_room(&self, id: PeerId) -> Option<Charge> {
        if let PeerId::Address(addr) = id
            && !self.census.has_room(addr, &self.limits)
        {
            return None;
        }
        self.budget.admit(PEER_CHARGE, id.is_linked())
    }

    /// Whether `id` may hold block-wise state: a token on the link, or a plain peer (its
    /// address proven, as every plain peer with state is) that presented an access token.
    pub(super) fn is_authenticated(&self, id: PeerId) -> bool {
        id.is_linked()
            || self
                .peers
                .get(&id)
                .is_some_and(|peer| peer.access_token.is_some())
    }

    /// Keeps the sticky state of link tokens for [`Self::take_sticky_changes`] from now on.
    pub fn with_durable_sticky(mut self) -> Self {
        self.sticky_changes = Some(Vec::new());
        self
    }

    /// The sticky states (as records) of link tokens that changed since the last call, by
    /// context number: the I/O layer stores them.
    pub fn take_sticky_changes(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.sticky_changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Notes the sticky state of `id` if it is a link token's and it changed.
    pub(super) fn note_sticky_change(&mut self, id: PeerId) {
        let (Some(changes), PeerId::Context(context)) = (self.sticky_changes.as_mut(), id) else {
            return;
        };
        if let Some(record) = self
            .peers
            .get_mut(&id)
            .and_then(|peer| peer.sticky.changed_record())
        {
            changes.push((context, record));
        }
    }

    /// Puts back a link token's access token and sticky state as stored before a restart, so
    /// that its room handles and left-out sender fields resolve as they did.
    pub fn restore_sticky(
        &mut self,
        context: u64,
        access_token: Option<&[u8]>,
        record: &[u8],
        now: Instant,
    ) {
        let Some(sticky) = StickyState::from_record(record) else {
            tracing::warn!(
                context,
                "a stored sticky state could not be read; the token sends its rooms in full again"
            );
            return;
        };
        let id = PeerId::Context(context);
        let first_mid = self.next_random() as u16;
        self.census.enter(id);
        let charge = self.budget.charge(PEER_CHARGE);
        let mut peer = Peer::new(now, self.limits.peer_burst, first_mid, charge);
        peer.access_token = access_token.and_then(AccessToken::from_option);
        peer.sticky = sticky;
        self.peers.insert(id, peer);
    }

    /// Sends `datagram` to an address with no state here (not proven, or refused), if it is
    /// at most three times the `request_size` it answers: nothing larger goes where the
    /// gateway does not know anyone receives.
    fn send_unproven(
        &mut self,
        actions: &mut Vec<Action>,
        addr: SocketAddr,
        datagram: Vec<u8>,
        request_size: usize,
    ) {
        if within_amplification(&datagram, request_size) {
            self.send(actions, PeerId::Address(addr), datagram);
        }
    }

    /// Step 2: the peer's request rate, duplicates included (each one costs an answer). Over
    /// the rate a retransmission is dropped and a new request gets 4.29 with Max-Age, neither
    /// remembered. `false` when the request goes no further.
    pub(super) fn within_rate(
        &mut self,
        incoming: &Incoming,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let (rate, burst) = (self.limits.peer_rate, self.limits.peer_burst);
        let Some(peer) = self.peers.get_mut(&incoming.peer) else {
            return false;
        };
        if peer.bucket.take(now, rate, burst) {
            return true;
        }
        if peer.exchanges.get(incoming.mid).is_none() {
            let content = retry_later(
                incoming,
                code::TOO_MANY_REQUESTS,
                "This peer sends requests faster than the gateway allows.",
            );
            self.finish(incoming, "-", Reply::plain(&content), now, actions);
        }
        false
    }

    /// Takes the access token of option 256 if the request carries one (the sticky profile
    /// state goes with the token it came with) and returns the peer's current one.
    pub(super) fn take_access_token(
        &mut self,
        incoming: &Incoming,
        packet: &Packet,
    ) -> Result<Option<AccessToken>, ResponseContent> {
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        if let Some(value) = packet.get_first_option(CoapOption::Unknown(option::ACCESS_TOKEN)) {
            let Some(token) = AccessToken::from_option(value) else {
                return Err(bad(
                    incoming,
                    "Option 256 (access token) is not a valid token.",
                ));
            };
            if peer.access_token.as_ref().map(AccessToken::expose) != Some(token.expose()) {
                peer.sticky.clear();
            }
            peer.access_token = Some(token);
        }
        Ok(peer.access_token.clone())
    }

    /// v2: the Megolm sender fields an encrypted send left out are the ones the peer sent
    /// last (and the ones it sent are kept for next time).
    pub(super) fn with_sticky_sender(
        &mut self,
        incoming: &Incoming,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, ResponseContent> {
        let Some(json) = body else {
            return Ok(None);
        };
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        let version = incoming.encoding.version;
        Ok(Some(peer.sticky.megolm_send_json(path, json, version)))
    }

    /// Whether the gateway forwards the request now: not while draining, not beyond the
    /// peer's in-flight limit. A refusal tells the client when to retry; a request taken
    /// counts as in flight until its answer.
    pub(super) fn admit(&mut self, incoming: &Incoming) -> Result<(), ResponseContent> {
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
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        if peer.in_flight >= self.limits.max_in_flight_per_peer {
            return Err(retry_later(
                incoming,
                code::SERVICE_UNAVAILABLE,
                "Too many requests in flight from this peer.",
            ));
        }
        peer.in_flight += 1;
        Ok(())
    }
}

/// How long a client refused for want of peer room waits before it tries again, in seconds.
const PEERS_FULL_RETRY: u8 = 30;

/// An answer to `request` with this code and Max-Age and nothing else, for a peer with no
/// state: piggybacked on the ACK of a CON, a NON otherwise.
fn stateless_refusal(request: &Packet, status: u8, max_age: u8) -> Vec<u8> {
    let mut packet = message::response_to(request, status);
    packet.add_option(CoapOption::MaxAge, vec![max_age]);
    message::to_datagram(&packet)
}
