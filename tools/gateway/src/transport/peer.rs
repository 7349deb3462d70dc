//! Everything the transport keeps per peer, by what the peer proved ([`PeerId`]), and the
//! steps of the request pipeline that read or change it as a whole: making room for a new peer,
//! the sticky access token, and admission (draining, the in-flight limit and the rate bucket).
//!
//! A peer's state lives as long as it has work (exchanges, observers, unacknowledged messages,
//! requests in flight, blockwise transfers) and for EXCHANGE_LIFETIME after it was last seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, MessageType, Packet};

use super::blockwise::Blockwise;
use super::exchanges::Exchanges;
use super::observe::Observer;
use super::outbox::Outgoing;
use super::reply::{bad, internal, refuse, retry_later};
use super::request::Incoming;
use super::{Action, Transport};
use crate::message::{self, code};
use crate::profile::option;
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
    pub(super) observers: Vec<Observer>,
    /// CON messages waiting for their ACK, by message id.
    pub(super) outbox: HashMap<u16, Outgoing>,
    next_mid: u16,
    /// Client requests forwarded upstream and not answered yet.
    pub(super) in_flight: usize,
    bucket: TokenBucket,
    pub(super) last_seen: Instant,
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
    fn new(now: Instant, burst: u32, first_mid: u16) -> Self {
        Self {
            access_token: None,
            sticky: StickyState::default(),
            exchanges: Exchanges::default(),
            blockwise: Blockwise::default(),
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
        !(self.is_idle()
            && now.saturating_duration_since(self.last_seen) > message::EXCHANGE_LIFETIME)
    }

    fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.observers.is_empty()
            && self.outbox.is_empty()
            && self.in_flight == 0
            && self.blockwise.is_empty()
    }
}

impl Transport {
    /// Makes sure a request from `addr` has peer state to go with; `false` when the gateway
    /// holds `max_peers` others, after answering the request 5.03 statelessly.
    pub(super) fn admit_peer(
        &mut self,
        addr: PeerId,
        packet: &Packet,
        confirmable: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        if self.peers.contains_key(&addr) {
            return true;
        }
        let mid = packet.header.message_id;
        if self.peers.len() >= self.limits.max_peers {
            let (kind, reply_mid) = if confirmable {
                (MessageType::Acknowledgement, mid)
            } else {
                (MessageType::NonConfirmable, mid.wrapping_add(0x8000))
            };
            let p = message::build(
                kind,
                code::SERVICE_UNAVAILABLE,
                reply_mid,
                packet.get_token(),
            );
            self.send(actions, addr, message::to_datagram(&p));
            return false;
        }
        // Message ids start somewhere unpredictable, so that a restarted gateway does not
        // reuse the ids a peer still remembers (it would take a new CON for a duplicate).
        let first_mid = self.next_random() as u16;
        self.peers
            .insert(addr, Peer::new(now, self.limits.peer_burst, first_mid));
        true
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

    /// Whether the gateway takes the request now: not while draining, not beyond the peer's
    /// in-flight limit or rate. A refusal tells the client when to retry; a request taken
    /// counts as in flight until its answer.
    pub(super) fn admit(
        &mut self,
        incoming: &Incoming,
        now: Instant,
    ) -> Result<(), ResponseContent> {
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
        if !peer
            .bucket
            .take(now, self.limits.peer_rate, self.limits.peer_burst)
        {
            return Err(retry_later(
                incoming,
                code::TOO_MANY_REQUESTS,
                "This peer sends requests faster than the gateway allows.",
            ));
        }
        peer.in_flight += 1;
        Ok(())
    }
}
