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
//! The Matrix access token (option 256) is bound to the OSCORE context: the first protected
//! request carrying it sets it, later requests of the context get it added, a different one
//! is refused. Plain requests carrying option 256 are refused unless the operator turned on
//! `compat_plain_msc3079`.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{
    Freshness, Message, OptionList, OscoreError, OscoreOption, RequestBinding, Responder,
    SecurityContext, split_connection_id,
};

use crate::link_credentials::LinkCredentials;
use crate::message::{self, code};
use crate::profile::option::ACCESS_TOKEN;
use crate::profile::{CONTENT_FORMAT_EDHOC, CONTENT_FORMAT_TEXT};

pub use jeton_link::edhoc::EDHOC_OPTION;
/// EDHOC handshakes waiting for message_3; more are refused until one completes or expires.
const MAX_HANDSHAKES: usize = 256;
/// A handshake without message_3 after this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests and responses remembered for CoAP deduplication below OSCORE.
const MAX_REMEMBERED: usize = 8192;
/// Requests whose responses the link can still protect (the latest per CoAP token). An
/// observation outlived by this many newer requests loses its notifications; the token
/// registers again.
const MAX_BINDINGS: usize = 16_384;
/// Bytes a decrypted or protected message may take.
const MAX_MESSAGE: usize = 64 * 1024;

/// What to do with a received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Hand this (plain) datagram to the transport as coming from this address: the
    /// sender's own for a plain request, the context's virtual peer for a protected one.
    Deliver(SocketAddr, Vec<u8>),
    /// Send this datagram back to the peer; the transport is not involved.
    Reply(Vec<u8>),
    /// Drop it.
    Drop,
}

struct Handshake {
    responder: Responder,
    started: Instant,
}

struct PeerContext {
    context: SecurityContext,
    /// Where the token's latest verified request came from: responses and notifications
    /// go there (the token may change address, e.g. behind a NAT).
    real_peer: SocketAddr,
    /// The address the transport knows this context by (see [`virtual_peer`]).
    virtual_peer: SocketAddr,
    token_name: String,
    peer_kid: Vec<u8>,
    access_token: Option<Vec<u8>>,
}

#[derive(Clone, Copy)]
struct ResponseBinding {
    binding: RequestBinding,
    /// The first response may reuse the request's nonce; every later one takes its own
    /// Partial IV.
    request_nonce_used: bool,
}

enum Remembered {
    /// A protected request already handed to the transport. A copy is never delivered
    /// again (the transport's duplicate memory is shorter than the link's, and a replay
    /// must not reach the homeserver twice): it gets the response or empty ACK that went
    /// out for its message id, or nothing while that is pending.
    Delivered,
    /// A request the link answered itself (EDHOC, errors): the same answer again.
    Reply(Vec<u8>),
}

/// The link layer's state: open handshakes, OSCORE contexts by recipient id, response
/// bindings, and the deduplication memory.
pub struct Link {
    credentials: Option<LinkCredentials>,
    compat_plain_msc3079: bool,
    handshakes: HashMap<Vec<u8>, Handshake>,
    contexts: HashMap<Vec<u8>, PeerContext>,
    /// Response bindings by (virtual peer, CoAP token).
    bindings: HashMap<(SocketAddr, Vec<u8>), (u64, ResponseBinding)>,
    /// Bindings in the order they were made, with the generation that made them, so the
    /// oldest go first beyond [`MAX_BINDINGS`].
    binding_order: VecDeque<(u64, SocketAddr, Vec<u8>)>,
    binding_generation: u64,
    /// Virtual peer address -> recipient id of its context.
    virtual_peers: HashMap<SocketAddr, Vec<u8>>,
    received: HashMap<(SocketAddr, u16), (u64, Remembered)>,
    /// What went out to a context's token, by (its address, message id): the fingerprint
    /// of the plain datagram, the protected bytes, and the context's virtual peer (where an
    /// ACK or RST for it belongs).
    sent: HashMap<(SocketAddr, u16), (u64, Vec<u8>, SocketAddr)>,
    order: VecDeque<(Instant, SocketAddr, u16, bool)>,
    next_connection_id: u32,
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

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    // Without OS randomness no handshake may run; an all-zero seed would repeat keys.
    if getrandom::fill(&mut seed).is_err() {
        tracing::error!("no OS randomness: EDHOC cannot run");
    }
    seed
}

/// The options of a coap-lite packet as the link's list (coap-lite keeps them sorted).
fn options_of(packet: &Packet) -> Result<OptionList<'_>, OscoreError> {
    let mut list = OptionList::new();
    for (number, values) in packet.options() {
        for value in values {
            list.push(*number, value)?;
        }
    }
    Ok(list)
}

/// A packet with `packet`'s header and token and this code, options and payload.
fn repack(packet: &Packet, message: &Message<'_>) -> Vec<u8> {
    let mut out = message::build(
        packet.header.get_type(),
        message.code,
        packet.header.message_id,
        packet.get_token(),
    );
    for (number, value) in message.options.iter() {
        out.add_option(CoapOption::from(number), value.to_vec());
    }
    out.payload = message.payload.to_vec();
    message::to_datagram(&out)
}

impl Link {
    /// A link with these credentials (`None`: no EDHOC/OSCORE configured).
    pub fn new(credentials: Option<LinkCredentials>, compat_plain_msc3079: bool) -> Self {
        if compat_plain_msc3079 {
            tracing::warn!(
                "compat_plain_msc3079 is on: plain CoAP requests may carry the Matrix access token, \
                 which then crosses the air unprotected"
            );
        }
        Link {
            credentials,
            compat_plain_msc3079,
            handshakes: HashMap::new(),
            contexts: HashMap::new(),
            bindings: HashMap::new(),
            binding_order: VecDeque::new(),
            binding_generation: 0,
            virtual_peers: HashMap::new(),
            received: HashMap::new(),
            sent: HashMap::new(),
            order: VecDeque::new(),
            next_connection_id: 0,
        }
    }

    /// OSCORE contexts held (one per paired token that ran EDHOC).
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Handles a received datagram.
    pub fn on_datagram(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Inbound {
        self.sweep(now);
        let Ok(packet) = message::parse(datagram) else {
            return Inbound::Deliver(peer, datagram.to_vec());
        };
        let mid = packet.header.message_id;
        let MessageClass::Request(_) = packet.header.code else {
            // An ACK or RST for a message the transport sent to a context's virtual peer
            // goes back to that peer, or the transport would retransmit it forever.
            let from = self.sent.get(&(peer, mid)).map_or(peer, |(_, _, v)| *v);
            return Inbound::Deliver(from, datagram.to_vec());
        };
        let fingerprint = hash(datagram);
        if let Some((seen, remembered)) = self.received.get(&(peer, mid))
            && *seen == fingerprint
        {
            // A retransmission: CoAP deduplication comes before OSCORE's replay check.
            return match remembered {
                Remembered::Delivered => self
                    .sent
                    .get(&(peer, mid))
                    .map_or(Inbound::Drop, |(_, sent, _)| Inbound::Reply(sent.clone())),
                Remembered::Reply(reply) => Inbound::Reply(reply.clone()),
            };
        }
        let is_edhoc = self.credentials.is_some() && is_edhoc_resource(&packet);
        let protected = packet.get_option(CoapOption::from(OSCORE_OPTION)).is_some();
        let outcome = if is_edhoc {
            self.on_edhoc(peer, &packet)
        } else if protected && self.credentials.is_some() {
            self.on_protected(peer, &packet)
        } else {
            if packet.get_option(CoapOption::from(ACCESS_TOKEN)).is_some()
                && !self.compat_plain_msc3079
            {
                tracing::warn!(%peer, "refused a plain request carrying an access token (OSCORE required)");
                Inbound::Reply(error_reply(
                    &packet,
                    code::UNAUTHORIZED,
                    b"this gateway requires the access token inside OSCORE (pair the token, run EDHOC)",
                ))
            } else {
                return Inbound::Deliver(peer, datagram.to_vec());
            }
        };
        // Refusals of protected requests are not remembered: a forged datagram with a
        // token's address and message id must not displace that token's own exchange.
        let remembered = match &outcome {
            Inbound::Deliver(..) => Some(Remembered::Delivered),
            Inbound::Reply(reply) if is_edhoc || !protected => {
                Some(Remembered::Reply(reply.clone()))
            }
            Inbound::Reply(_) | Inbound::Drop => None,
        };
        if let Some(remembered) = remembered {
            self.remember_received(peer, mid, fingerprint, remembered, now);
        }
        outcome
    }

    /// Protects a datagram the transport sends to a context's peer and says where it goes.
    /// `None`: drop it (its context is gone, or it answers no protected request, and it
    /// must not go out in clear).
    pub fn on_send(&mut self, to: SocketAddr, datagram: Vec<u8>) -> Option<(SocketAddr, Vec<u8>)> {
        let Some(rid) = self.virtual_peers.get(&to) else {
            return Some((to, datagram));
        };
        let Some(peer_context) = self.contexts.get_mut(rid) else {
            tracing::debug!(%to, "dropped a message whose OSCORE context is gone");
            return None;
        };
        let real = peer_context.real_peer;
        let packet = message::parse(&datagram).ok()?;
        let mid = packet.header.message_id;
        if packet.header.code == MessageClass::Empty {
            // An empty ACK or RST: never protected; kept for retransmitted requests.
            self.sent.insert((real, mid), (0, datagram.clone(), to));
            self.order.push_back((Instant::now(), real, mid, true));
            return Some((real, datagram));
        }
        let Some((_, binding)) = self.bindings.get_mut(&(to, packet.get_token().to_vec())) else {
            tracing::debug!(%real, "dropped a message that answers no protected request");
            return None;
        };
        let fingerprint = hash(&datagram);
        if let Some((seen, protected, _)) = self.sent.get(&(real, mid))
            && *seen == fingerprint
        {
            // A retransmission: the same protected bytes, not a second encryption.
            return Some((real, protected.clone()));
        }
        let own_partial_iv = binding.request_nonce_used;
        binding.request_nonce_used = true;
        let options = options_of(&packet).ok()?;
        let inner = Message {
            code: u8::from(packet.header.code),
            options,
            payload: &packet.payload,
        };
        let mut buf = vec![0u8; packet.payload.len() + 1024];
        let protected = match peer_context.context.protect_response(
            &binding.binding,
            &inner,
            own_partial_iv,
            &mut buf,
        ) {
            Ok(outer) => repack(&packet, &outer),
            Err(e) => {
                tracing::warn!(%real, error = %e, "could not protect a response; dropped");
                return None;
            }
        };
        self.sent
            .insert((real, mid), (fingerprint, protected.clone(), to));
        self.order.push_back((Instant::now(), real, mid, true));
        Some((real, protected))
    }

    /// Records what the responses to a request must be bound to, forgetting the oldest
    /// binding beyond [`MAX_BINDINGS`].
    fn bind(&mut self, virtual_peer: SocketAddr, token: &[u8], binding: ResponseBinding) {
        self.binding_generation += 1;
        let generation = self.binding_generation;
        self.bindings
            .insert((virtual_peer, token.to_vec()), (generation, binding));
        self.binding_order
            .push_back((generation, virtual_peer, token.to_vec()));
        while self.binding_order.len() > MAX_BINDINGS {
            let Some((old, peer, token)) = self.binding_order.pop_front() else {
                break;
            };
            let key = (peer, token);
            if self.bindings.get(&key).is_some_and(|(g, _)| *g == old) {
                self.bindings.remove(&key);
            }
        }
    }

    fn remember_received(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        fingerprint: u64,
        remembered: Remembered,
        now: Instant,
    ) {
        self.received.insert((peer, mid), (fingerprint, remembered));
        self.order.push_back((now, peer, mid, false));
    }

    fn sweep(&mut self, now: Instant) {
        while let Some(&(at, peer, mid, sent)) = self.order.front() {
            let expired = now.duration_since(at) > message::EXCHANGE_LIFETIME;
            let full = self.order.len() > 2 * MAX_REMEMBERED;
            if !expired && !full {
                break;
            }
            self.order.pop_front();
            if sent {
                self.sent.remove(&(peer, mid));
            } else {
                self.received.remove(&(peer, mid));
            }
        }
        self.handshakes
            .retain(|_, h| now.duration_since(h.started) < HANDSHAKE_TIMEOUT);
    }

    /// A fresh responder connection id, unused by any context or open handshake: the 48
    /// one-byte CBOR integers first, then two-byte strings.
    fn connection_id(&mut self) -> Option<Vec<u8>> {
        for _ in 0..70_000 {
            let n = self.next_connection_id;
            self.next_connection_id = self.next_connection_id.wrapping_add(1) % (48 + 65_536);
            let id = if n < 24 {
                vec![n as u8]
            } else if n < 48 {
                vec![0x20 + (n - 24) as u8]
            } else {
                ((n - 48) as u16).to_be_bytes().to_vec()
            };
            if !self.contexts.contains_key(&id) && !self.handshakes.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn on_edhoc(&mut self, peer: SocketAddr, packet: &Packet) -> Inbound {
        if packet.header.code != MessageClass::Request(coap_lite::RequestType::Post) {
            return Inbound::Reply(error_reply(
                packet,
                code::METHOD_NOT_ALLOWED,
                b"EDHOC takes POST",
            ));
        }
        let Some(credentials) = &self.credentials else {
            return Inbound::Drop;
        };
        let payload = packet.payload.as_slice();
        if let Some((&0xF5, message_1)) = payload.split_first() {
            if self.handshakes.len() >= MAX_HANDSHAKES {
                return Inbound::Reply(error_reply(
                    packet,
                    code::SERVICE_UNAVAILABLE,
                    b"too many EDHOC handshakes in progress",
                ));
            }
            let identity = credentials.identity.clone();
            // Two tries: a C_R that happens to equal the token's C_I is refused once.
            let mut outcome = Err(jeton_link::HandshakeError::InvalidConnectionId);
            for _ in 0..2 {
                let Some(c_r) = self.connection_id() else {
                    return Inbound::Reply(error_reply(
                        packet,
                        code::SERVICE_UNAVAILABLE,
                        b"no connection identifier free",
                    ));
                };
                outcome = Responder::respond(seed(), &identity, message_1, &c_r)
                    .map(|(responder, message_2)| (c_r, responder, message_2));
                if !matches!(
                    outcome,
                    Err(jeton_link::HandshakeError::InvalidConnectionId)
                ) {
                    break;
                }
            }
            return match outcome {
                Ok((c_r, responder, message_2)) => {
                    self.handshakes.insert(
                        c_r,
                        Handshake {
                            responder,
                            started: Instant::now(),
                        },
                    );
                    Inbound::Reply(reply(
                        packet,
                        code::CHANGED,
                        Some(CONTENT_FORMAT_EDHOC),
                        message_2.as_bytes(),
                    ))
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "EDHOC message_1 refused");
                    Inbound::Reply(edhoc_error(packet, code::BAD_REQUEST, &e.to_string()))
                }
            };
        }
        let Ok((c_r, message_3)) = split_connection_id(payload) else {
            return Inbound::Reply(edhoc_error(
                packet,
                code::BAD_REQUEST,
                "malformed EDHOC message",
            ));
        };
        match self.complete_handshake(peer, c_r, message_3) {
            Ok(message_4) => Inbound::Reply(reply(
                packet,
                code::CHANGED,
                Some(CONTENT_FORMAT_EDHOC),
                &message_4,
            )),
            Err((status, why)) => Inbound::Reply(edhoc_error(packet, status, why)),
        }
    }

    /// Runs message_3 for the handshake `c_r`; on success the OSCORE context is in place
    /// (replacing an older one of the same token) and message_4 is returned.
    fn complete_handshake(
        &mut self,
        peer: SocketAddr,
        c_r: &[u8],
        message_3: &[u8],
    ) -> Result<Vec<u8>, (u8, &'static str)> {
        let Some(handshake) = self.handshakes.remove(c_r) else {
            return Err((
                code::BAD_REQUEST,
                "no EDHOC session with this connection identifier",
            ));
        };
        let Some(credentials) = &self.credentials else {
            return Err((code::BAD_REQUEST, "EDHOC is off"));
        };
        let mut seen_kid = Vec::new();
        let result = handshake.responder.process_message_3(message_3, |kid| {
            seen_kid = kid.to_vec();
            credentials.tokens.get(kid).map(|t| t.credential)
        });
        let (material, message_4) = match result {
            Ok(done) => done,
            Err(jeton_link::HandshakeError::UnknownPeer) => {
                tracing::warn!(%peer, kid = %hex::encode(&seen_kid), "EDHOC refused: unknown token credential (not in the authorised tokens file)");
                return Err((
                    code::UNAUTHORIZED,
                    "unknown credential: this token is not authorised on this gateway",
                ));
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "EDHOC message_3 refused");
                return Err((code::BAD_REQUEST, "EDHOC message_3 did not verify"));
            }
        };
        let Ok(context) = material.security_context() else {
            return Err((code::INTERNAL_SERVER_ERROR, "no OSCORE context"));
        };
        let peer_kid = material.peer_kid().as_bytes().to_vec();
        let token_name = credentials
            .tokens
            .get(&peer_kid)
            .map_or_else(String::new, |t| t.name.clone());
        // One context per token: a new handshake replaces the old context.
        let virtual_peers = &mut self.virtual_peers;
        let bindings = &mut self.bindings;
        self.contexts.retain(|_, c| {
            let keep = c.peer_kid != peer_kid;
            if !keep {
                virtual_peers.remove(&c.virtual_peer);
                bindings.retain(|(peer, _), _| *peer != c.virtual_peer);
            }
            keep
        });
        let virtual_peer = virtual_peer(c_r);
        self.virtual_peers.insert(virtual_peer, c_r.to_vec());
        tracing::info!(%peer, token = %token_name, kid = %hex::encode(&peer_kid), "EDHOC complete: OSCORE context established");
        self.contexts.insert(
            c_r.to_vec(),
            PeerContext {
                context,
                real_peer: peer,
                virtual_peer,
                token_name,
                peer_kid,
                access_token: None,
            },
        );
        Ok(message_4.as_bytes().to_vec())
    }

    fn on_protected(&mut self, peer: SocketAddr, packet: &Packet) -> Inbound {
        let Ok(mut outer_options) = options_of(packet) else {
            return Inbound::Reply(error_reply(packet, code::BAD_REQUEST, b"too many options"));
        };
        let kid = match OscoreOption::kid_of(&Message {
            code: 0,
            options: outer_options,
            payload: &[],
        }) {
            Ok(Some(kid)) => kid.to_vec(),
            _ => {
                return Inbound::Reply(error_reply(
                    packet,
                    code::BAD_REQUEST,
                    b"OSCORE option without kid",
                ));
            }
        };
        let mut payload = packet.payload.as_slice();
        if packet.get_option(CoapOption::from(EDHOC_OPTION)).is_some() {
            // RFC 9668: the payload starts with message_3 (a CBOR byte string); the kid is C_R.
            let Some(split) = cbor_bstr_len(payload) else {
                return Inbound::Reply(edhoc_error(
                    packet,
                    code::BAD_REQUEST,
                    "malformed EDHOC + OSCORE request",
                ));
            };
            let (message_3, rest) = payload.split_at(split);
            if let Err((status, why)) = self.complete_handshake(peer, &kid, message_3) {
                return Inbound::Reply(edhoc_error(packet, status, why));
            }
            payload = rest;
            let mut without = OptionList::new();
            for (n, v) in outer_options.iter().filter(|(n, _)| *n != EDHOC_OPTION) {
                let _ = without.push(n, v);
            }
            outer_options = without;
        }
        let Some(peer_context) = self.contexts.get_mut(&kid) else {
            tracing::info!(%peer, kid = %hex::encode(&kid), "OSCORE request for an unknown context");
            return Inbound::Reply(error_reply(
                packet,
                code::UNAUTHORIZED,
                b"Security context not found",
            ));
        };
        let outer = Message {
            code: u8::from(packet.header.code),
            options: outer_options,
            payload,
        };
        let mut plain = vec![0u8; payload.len().min(MAX_MESSAGE)];
        let inner = match peer_context.context.unprotect_request(&outer, &mut plain) {
            Ok(inner) => inner,
            Err(OscoreError::Replay) => {
                tracing::warn!(%peer, token = %peer_context.token_name, "OSCORE replay refused");
                return Inbound::Reply(error_reply(packet, code::UNAUTHORIZED, b"Replay detected"));
            }
            Err(e) => {
                tracing::info!(%peer, token = %peer_context.token_name, error = %e, "OSCORE request refused");
                return Inbound::Reply(error_reply(
                    packet,
                    code::BAD_REQUEST,
                    b"Decryption failed",
                ));
            }
        };
        peer_context.real_peer = peer;
        let virtual_peer = peer_context.virtual_peer;
        let binding = ResponseBinding {
            binding: inner.binding,
            request_nonce_used: false,
        };
        let mut message = inner.message;
        let bound = peer_context.access_token.clone();
        let conflict = match (message.options.get(ACCESS_TOKEN), &bound) {
            (Some(sent), None) => {
                peer_context.access_token = Some(sent.to_vec());
                false
            }
            (Some(sent), Some(bound)) => sent != bound.as_slice(),
            (None, Some(bound)) => message.options.insert(ACCESS_TOKEN, bound).is_err(),
            (None, None) => false,
        };
        let echo_required = inner.freshness == Freshness::EchoRequired;
        let delivered = repack(packet, &message);
        self.bind(virtual_peer, packet.get_token(), binding);
        if conflict || echo_required {
            // Contexts here live in RAM and start with a fresh replay window, so the Echo
            // case does not arise; both answers go out protected.
            let why: &[u8] = if conflict {
                b"another access token is bound to this OSCORE context: run EDHOC again"
            } else {
                b"the replay window of this context was lost: run EDHOC again"
            };
            let refusal = error_reply(packet, code::UNAUTHORIZED, why);
            return self
                .on_send(virtual_peer, refusal)
                .map_or(Inbound::Drop, |(_, datagram)| Inbound::Reply(datagram));
        }
        Inbound::Deliver(virtual_peer, delivered)
    }
}

/// The address the transport knows a context by: the recipient id inside 100::/64, the
/// discard-only prefix of RFC 6666, which no real peer can send from. The transport's
/// per-peer state (sticky access token, duplicate cache, observers, rate limits) is thus
/// per OSCORE context, never shared with plain requests from the same UDP address.
fn virtual_peer(recipient_id: &[u8]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets[0] = 0x01;
    octets[8] = recipient_id.len() as u8;
    for (slot, byte) in octets[9..].iter_mut().zip(recipient_id) {
        *slot = *byte;
    }
    SocketAddr::from((std::net::Ipv6Addr::from(octets), 5683))
}

/// The length of the CBOR byte string at the start of `bytes` (header included).
fn cbor_bstr_len(bytes: &[u8]) -> Option<usize> {
    let (header, len) = match bytes {
        [h @ 0x40..=0x57, ..] => (1, usize::from(h - 0x40)),
        [0x58, n, ..] => (2, usize::from(*n)),
        [0x59, a, b, ..] => (3, usize::from(u16::from_be_bytes([*a, *b]))),
        _ => return None,
    };
    let total = header + len;
    (total <= bytes.len()).then_some(total)
}

fn is_edhoc_resource(packet: &Packet) -> bool {
    let Some(path) = packet.get_option(CoapOption::UriPath) else {
        return false;
    };
    let segments: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
    segments == [&b".well-known"[..], b"edhoc"]
}

/// A response to `request`: piggybacked on the ACK of a CON, a NON otherwise.
fn reply(request: &Packet, status: u8, content_format: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let (kind, mid) = match request.header.get_type() {
        MessageType::Confirmable => (MessageType::Acknowledgement, request.header.message_id),
        _ => (
            MessageType::NonConfirmable,
            request.header.message_id.wrapping_add(0x8000),
        ),
    };
    let mut packet = message::build(kind, status, mid, request.get_token());
    if let Some(format) = content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u64::from(format)),
        );
    }
    packet.payload = payload.to_vec();
    message::to_datagram(&packet)
}

/// An error response with a diagnostic text payload.
fn error_reply(request: &Packet, status: u8, text: &[u8]) -> Vec<u8> {
    reply(request, status, Some(CONTENT_FORMAT_TEXT), text)
}

/// An EDHOC error message (RFC 9528 §6): ERR_CODE 1 and a text ERR_INFO.
fn edhoc_error(request: &Packet, status: u8, text: &str) -> Vec<u8> {
    let mut body = vec![0x01];
    let len = text.len().min(255);
    if len < 24 {
        body.push(0x60 | len as u8);
    } else {
        body.extend_from_slice(&[0x78, len as u8]);
    }
    body.extend_from_slice(&text.as_bytes()[..len]);
    reply(request, status, Some(CONTENT_FORMAT_EDHOC), &body)
}

#[cfg(test)]
mod tests;
