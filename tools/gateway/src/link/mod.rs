//! The protected link to tokens: EDHOC over CoAP (RFC 9528 appendix A.2, and the combined
//! EDHOC + OSCORE request of RFC 9668) and OSCORE on every request and response, as a
//! sans-I/O layer between the UDP socket and [`crate::transport::Transport`].
//!
//! Inbound, [`Link::on_datagram`] answers EDHOC itself, verifies and decrypts protected
//! requests and hands the inner request to the transport as a plain datagram; outbound,
//! [`Link::on_send`] protects every response (piggybacked, separate, Block2, Observe
//! notifications) to a request that came in protected. The transport never sees a
//! ciphertext and never needs to know about the link.
//!
//! Plain requests carrying option 256 (the Matrix access token) are refused unless the
//! operator turned on `compat_plain_msc3079`; in protected ones it is bound to the context.
//!
//! Nothing from an address that has not proven it receives there costs more than a stateless
//! answer at most three times its size: a message_1 must carry an Echo value made for its
//! address (RFC 9175; the first one gets a 4.01 with that value) before a handshake starts, and
//! only answers to proven senders are remembered.
//!
//! The state, by the file that owns it:
//!
//! - `handshake.rs`: EDHOC handshakes waiting for message_3, and their completion.
//! - `contexts.rs`: the OSCORE contexts and the access token bound to each; protected
//!   requests in, protected responses out.
//! - `durable.rs`: what of the contexts goes through the gateway's state store, and when.
//! - `bindings.rs`: what the responses to each protected request are bound to.
//! - `memory.rs`: the deduplication memory below OSCORE.
//! - `wire.rs`: between coap-lite packets and jeton-link messages.

mod bindings;
mod contexts;
mod durable;
mod handshake;
mod memory;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, Packet};

use crate::echo::{self, EchoKey};
use crate::link_credentials::{AuthorisedToken, LinkCredentials};
use crate::message::{self, code};
use crate::metrics::{LinkRefusal, Metrics};
use crate::profile::option::ACCESS_TOKEN;
use crate::source::Sources;
use crate::store::StateStore;
use crate::transport::PeerId;
use bindings::Bindings;
use contexts::{Contexts, is_protected, protect_response};
use handshake::{Handshake, is_edhoc_resource};
use memory::{Memory, Remembered};
use wire::{error_reply, hash, is_success};

pub use durable::RestoredSticky;
pub use jeton_link::edhoc::EDHOC_OPTION;

/// What to do with a received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Hand this (plain) datagram to the transport as coming from this peer: the sender's
    /// address for a plain message, the OSCORE context for a protected request (and for the
    /// ACK or RST of a message that went out under a context).
    Deliver(PeerId, Vec<u8>),
    /// Send this datagram back to the peer; the transport is not involved.
    Reply(Vec<u8>),
    /// Drop it.
    Drop,
}

/// The link layer's state: open handshakes, OSCORE contexts by recipient id, response
/// bindings, and the deduplication memory.
pub struct Link {
    credentials: Option<LinkCredentials>,
    compat_plain_msc3079: bool,
    /// Handshakes waiting for message_3, by the C_R the gateway chose.
    handshakes: HashMap<Vec<u8>, Handshake>,
    next_connection_id: u32,
    contexts: Contexts,
    bindings: Bindings,
    memory: Memory,
    /// Which source addresses need no Echo round trip before a handshake.
    sources: Sources,
    /// Makes and checks the Echo values a message_1 must carry.
    echo: EchoKey,
    metrics: Metrics,
    /// Where contexts outlive the process; `None`: in RAM only.
    store: Option<Box<dyn StateStore>>,
    /// Observations of restored contexts, by context and CoAP token, to be ended.
    restored_observations: Vec<(u64, Vec<u8>)>,
    /// Sticky states of restored contexts, for the transport.
    restored_sticky: Vec<RestoredSticky>,
}

impl core::fmt::Debug for Link {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("enabled", &self.credentials.is_some())
            .field("compat_plain_msc3079", &self.compat_plain_msc3079)
            .field("handshakes", &self.handshakes.len())
            .field("contexts", &self.contexts.len())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link with these credentials (`None`: no EDHOC/OSCORE configured).
    pub fn new(credentials: Option<LinkCredentials>, compat_plain_msc3079: bool) -> Self {
        if compat_plain_msc3079 {
            tracing::warn!(
                "compat_plain_msc3079 is on: plain CoAP requests may carry the Matrix access token, \
                 which then crosses the air unprotected, and anyone who can forge a plain peer's \
                 source address can send requests under that peer's access token"
            );
        }
        Link {
            credentials,
            compat_plain_msc3079,
            handshakes: HashMap::new(),
            next_connection_id: 0,
            contexts: Contexts::default(),
            bindings: Bindings::default(),
            memory: Memory::default(),
            sources: Sources::default(),
            echo: EchoKey::random(Instant::now()),
            metrics: Metrics::default(),
            store: None,
            restored_observations: Vec::new(),
            restored_sticky: Vec::new(),
        }
    }

    /// Which source addresses count as proven without an Echo round trip.
    pub fn with_sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Reports to `metrics` (the gateway's registry) instead of a private set.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replaces the authorised tokens (the tokens file read again): a token newly listed is
    /// accepted at its next handshake, and one no longer listed loses its OSCORE context at
    /// once (its next request is refused, and so is its next handshake). Returns the names of
    /// the tokens whose contexts went; nothing changes on a link without credentials.
    pub fn replace_tokens(&mut self, tokens: HashMap<Vec<u8>, AuthorisedToken>) -> Vec<String> {
        let Some(credentials) = self.credentials.as_mut() else {
            return Vec::new();
        };
        credentials.tokens = tokens;
        let listed = &credentials.tokens;
        let revoked = self
            .contexts
            .revoke(|kid| listed.contains_key(kid), &mut self.bindings);
        revoked
            .into_iter()
            .map(|(id, name)| {
                durable::forget(&mut self.store, id);
                name
            })
            .collect()
    }

    /// OSCORE contexts held (one per paired token that ran EDHOC).
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Handles a received datagram.
    pub fn on_datagram(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Inbound {
        let outcome = self.receive(peer, datagram, now);
        self.within_amplification(peer, datagram.len(), outcome)
    }

    /// An error the link answers itself goes to an address that has not proven it receives
    /// there only if it is at most three times the request's `size`. Its successes go to
    /// proven addresses only: message_2 answers a message_1 that carried an Echo value,
    /// message_4 a message_3 that needed message_2, a protected response a request that
    /// verified.
    fn within_amplification(&self, peer: SocketAddr, size: usize, outcome: Inbound) -> Inbound {
        match outcome {
            Inbound::Reply(reply)
                if !is_success(&reply)
                    && !self.sources.is_validated(peer)
                    && !echo::within_amplification(&reply, size) =>
            {
                Inbound::Drop
            }
            other => other,
        }
    }

    fn receive(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Inbound {
        self.memory.sweep(now);
        self.expire_handshakes(now);
        let plain = PeerId::Address(peer);
        let Ok(packet) = message::parse(datagram) else {
            return Inbound::Deliver(plain, datagram.to_vec());
        };
        let mid = packet.header.message_id;
        let MessageClass::Request(_) = packet.header.code else {
            // An ACK or RST for a message the transport sent under a context goes back to
            // that context, or the transport would retransmit it forever.
            let from = self
                .memory
                .sent_for(peer, mid)
                .map_or(plain, PeerId::Context);
            return Inbound::Deliver(from, datagram.to_vec());
        };
        let fingerprint = hash(datagram);
        // A retransmission: CoAP deduplication comes before OSCORE's replay check.
        if let Some(again) = self.memory.answer_again(peer, mid, fingerprint) {
            return again;
        }
        let is_edhoc = self.credentials.is_some() && is_edhoc_resource(&packet);
        let protected = is_protected(&packet);
        let outcome = if is_edhoc {
            self.on_edhoc(peer, &packet, now)
        } else if protected && self.credentials.is_some() {
            self.on_protected(peer, &packet)
        } else if let Some(refusal) = self.refuse_plain_access_token(peer, &packet) {
            refusal
        } else {
            return Inbound::Deliver(plain, datagram.to_vec());
        };
        // Only what answers a proven sender is remembered (a verified request, an EDHOC
        // step that succeeded): refusals are cheap to make again, and a flood of forged
        // datagrams must not push a token's own exchanges out of the memory.
        let remembered = match &outcome {
            Inbound::Deliver(..) => Some(Remembered::Delivered),
            Inbound::Reply(reply) if is_edhoc && is_success(reply) => {
                Some(Remembered::Reply(reply.clone()))
            }
            Inbound::Reply(_) | Inbound::Drop => None,
        };
        if let Some(remembered) = remembered {
            self.memory
                .remember_received(peer, mid, fingerprint, remembered, now);
        }
        outcome
    }

    /// A plain request carrying an access token is refused unless `compat_plain_msc3079`.
    fn refuse_plain_access_token(&self, peer: SocketAddr, packet: &Packet) -> Option<Inbound> {
        if packet.get_option(CoapOption::from(ACCESS_TOKEN)).is_none() || self.compat_plain_msc3079
        {
            return None;
        }
        tracing::warn!(%peer, "refused a plain request carrying an access token (OSCORE required)");
        self.metrics.link_refused(LinkRefusal::PlainAccessToken);
        Some(Inbound::Reply(error_reply(
            packet,
            code::UNAUTHORIZED,
            b"this gateway requires the access token inside OSCORE (pair the token, run EDHOC)",
        )))
    }

    /// Says where a datagram the transport sends goes, protecting it when it goes to a
    /// context's token. `None`: drop it (its context is gone, or it answers no protected
    /// request, and it must not go out in clear).
    pub fn on_send(&mut self, to: PeerId, datagram: Vec<u8>) -> Option<(SocketAddr, Vec<u8>)> {
        let id = match to {
            PeerId::Address(addr) => return Some((addr, datagram)),
            PeerId::Context(id) => id,
        };
        let Some(peer_context) = self.contexts.by_id_mut(id) else {
            tracing::debug!(%to, "dropped a message whose OSCORE context is gone");
            return None;
        };
        let real = peer_context.real_peer;
        let packet = message::parse(&datagram).ok()?;
        let mid = packet.header.message_id;
        if packet.header.code == MessageClass::Empty {
            // An empty ACK or RST: never protected; kept for retransmitted requests.
            self.memory
                .remember_sent(real, mid, 0, datagram.clone(), id);
            return Some((real, datagram));
        }
        let Some(binding) = self.bindings.get_mut(id, packet.get_token()) else {
            tracing::debug!(%real, "dropped a message that answers no protected request");
            return None;
        };
        let fingerprint = hash(&datagram);
        if let Some(protected) = self.memory.sent_again(real, mid, fingerprint) {
            // A retransmission: the same protected bytes, not a second encryption.
            return Some((real, protected));
        }
        durable::reserve_sequence(&mut self.store, id, &mut peer_context.context);
        let protected = protect_response(peer_context, binding, &packet)?;
        self.memory
            .remember_sent(real, mid, fingerprint, protected.clone(), id);
        Some((real, protected))
    }
}

#[cfg(test)]
mod tests;
