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

pub use jeton_link::edhoc::EDHOC_OPTION;
/// The MSC3079 access-token option.
const ACCESS_TOKEN: u16 = 256;
/// application/edhoc+cbor-seq (RFC 9528 §10.9).
const CONTENT_FORMAT_EDHOC: u8 = 64;
const CONTENT_FORMAT_TEXT: u8 = 0;
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
fn reply(request: &Packet, status: u8, content_format: Option<u8>, payload: &[u8]) -> Vec<u8> {
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
mod tests {
    use super::*;
    use crate::link_credentials::AuthorisedToken;
    use jeton_link::{Credential, Identity, Initiator};

    const PEER: &str = "127.0.0.1:40000";

    struct Pair {
        link: Link,
        token: Identity,
        gateway: Identity,
    }

    fn pair(authorise_token: bool) -> Pair {
        let token = Identity::generate([1; 32], b"\x0a", "token").unwrap();
        let gateway = Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
        let mut tokens = HashMap::new();
        if authorise_token {
            tokens.insert(
                token.credential().kid().to_vec(),
                AuthorisedToken {
                    name: "test-token".into(),
                    credential: *token.credential(),
                },
            );
        }
        let credentials = LinkCredentials {
            identity: gateway.clone(),
            tokens,
        };
        Pair {
            link: Link::new(Some(credentials), false),
            token,
            gateway,
        }
    }

    fn post_edhoc(mid: u16, payload: Vec<u8>) -> Vec<u8> {
        let mut p = message::build(MessageType::Confirmable, 0x02, mid, &[0x71]);
        p.add_option(CoapOption::UriPath, b".well-known".to_vec());
        p.add_option(CoapOption::UriPath, b"edhoc".to_vec());
        p.payload = payload;
        message::to_datagram(&p)
    }

    fn reply_of(inbound: Inbound) -> Packet {
        match inbound {
            Inbound::Reply(d) => message::parse(&d).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Runs EDHOC (stand-alone message_3) and returns the token's OSCORE context.
    fn handshake(pair: &mut Pair, now: Instant) -> SecurityContext {
        let peer: SocketAddr = PEER.parse().unwrap();
        let (initiator, m1) = Initiator::start([3; 32]).unwrap();
        let mut payload = vec![0xF5];
        payload.extend_from_slice(m1.as_bytes());
        let r2 = reply_of(pair.link.on_datagram(peer, &post_edhoc(1, payload), now));
        assert_eq!(u8::from(r2.header.code), code::CHANGED);
        let (m3, material) = initiator
            .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
            .unwrap();
        let mut payload = Vec::new();
        let mut cr = [0u8; 9];
        let n = jeton_link::encode_connection_id(material.sender_id().as_bytes(), &mut cr).unwrap();
        payload.extend_from_slice(&cr[..n]);
        payload.extend_from_slice(m3.as_bytes());
        let r4 = reply_of(pair.link.on_datagram(peer, &post_edhoc(2, payload), now));
        assert_eq!(u8::from(r4.header.code), code::CHANGED, "{:?}", r4.payload);
        assert_eq!(pair.link.context_count(), 1);
        material.security_context().unwrap()
    }

    fn delivered(inbound: Inbound) -> Packet {
        match inbound {
            Inbound::Deliver(_, d) => message::parse(&d).unwrap(),
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    fn access_token(packet: &Packet) -> Vec<u8> {
        let values = packet.get_option(CoapOption::from(ACCESS_TOKEN)).unwrap();
        values.front().unwrap().clone()
    }

    fn protected_get(
        client: &mut SecurityContext,
        mid: u16,
        token: &[u8],
        options: &[(u16, &[u8])],
    ) -> (Vec<u8>, RequestBinding) {
        let inner = Message {
            code: 0x01,
            options: OptionList::from_sorted(options).unwrap(),
            payload: &[],
        };
        let mut buf = [0u8; 512];
        let (outer, binding) = client.protect_request(&inner, &mut buf).unwrap();
        let shell = message::build(MessageType::Confirmable, 0x01, mid, token);
        (repack(&shell, &outer), binding)
    }

    #[test]
    fn protected_requests_reach_the_transport_in_clear_and_responses_go_back_protected() {
        let mut pair = pair(true);
        let now = Instant::now();
        let mut client = handshake(&mut pair, now);
        let peer: SocketAddr = PEER.parse().unwrap();
        let (wire, binding) = protected_get(
            &mut client,
            10,
            b"tk",
            &[(11, b"_matrix"), (11, b"versions"), (256, b"syt_secret")],
        );
        assert!(
            !wire.windows(10).any(|w| w == b"syt_secret"),
            "access token in clear"
        );
        let inbound = pair.link.on_datagram(peer, &wire, now);
        let Inbound::Deliver(virtual_peer, _) = &inbound else {
            panic!("not delivered: {inbound:?}");
        };
        let virtual_peer = *virtual_peer;
        assert_ne!(
            virtual_peer, peer,
            "the transport sees the context, not the address"
        );
        let plain = delivered(inbound);
        assert_eq!(plain.header.message_id, 10);
        assert_eq!(access_token(&plain), b"syt_secret");

        // The transport's piggybacked response is protected on the way out.
        let mut response = message::build(MessageType::Acknowledgement, code::CONTENT, 10, b"tk");
        response.payload = b"{\"versions\":[]}".to_vec();
        let (to, out) = pair
            .link
            .on_send(virtual_peer, message::to_datagram(&response))
            .unwrap();
        assert_eq!(to, peer);
        assert!(!out.windows(8).any(|w| w == b"versions"));
        let out = message::parse(&out).unwrap();
        let outer = Message {
            code: u8::from(out.header.code),
            options: options_of(&out).unwrap(),
            payload: &out.payload,
        };
        let mut buf = [0u8; 256];
        let inner = client
            .unprotect_response(&binding, &outer, &mut buf)
            .unwrap();
        assert_eq!(inner.code, code::CONTENT);
        assert_eq!(inner.payload, b"{\"versions\":[]}");

        // A notification (CON) goes out protected with the gateway's own Partial IV, and the
        // token's ACK for it finds its way back to the context's virtual peer.
        let mut notification =
            message::build(MessageType::Confirmable, code::CONTENT, 0x7777, b"tk");
        notification.add_option(CoapOption::Observe, vec![3]);
        let (_, out) = pair
            .link
            .on_send(virtual_peer, message::to_datagram(&notification))
            .unwrap();
        let out = message::parse(&out).unwrap();
        let option = out.get_option(CoapOption::from(OSCORE_OPTION)).unwrap();
        assert_eq!(option.front().unwrap(), &[0x01, 0x00], "own Partial IV 0");
        let ack = message::empty(MessageType::Acknowledgement, 0x7777);
        assert_eq!(
            pair.link.on_datagram(peer, &ack, now),
            Inbound::Deliver(virtual_peer, ack)
        );

        // The next request carries no access token; the gateway adds the bound one.
        let (wire, _) = protected_get(&mut client, 11, b"tl", &[(11, b"sync")]);
        let plain = delivered(pair.link.on_datagram(peer, &wire, now));
        assert_eq!(access_token(&plain), b"syt_secret");
        // A different one is refused, protected.
        let (wire, _) = protected_get(&mut client, 12, b"tm", &[(256, b"syt_other")]);
        let refused = reply_of(pair.link.on_datagram(peer, &wire, now));
        assert!(
            refused
                .get_option(CoapOption::from(OSCORE_OPTION))
                .is_some()
        );
    }

    #[test]
    fn replays_never_reach_the_transport_twice() {
        let mut pair = pair(true);
        let now = Instant::now();
        let mut client = handshake(&mut pair, now);
        let peer: SocketAddr = PEER.parse().unwrap();
        let (wire, _) = protected_get(&mut client, 20, b"tk", &[(11, b"versions")]);
        assert!(matches!(
            pair.link.on_datagram(peer, &wire, now),
            Inbound::Deliver(..)
        ));
        // The same datagram again: a retransmission, answered from the link's memory.
        assert_eq!(pair.link.on_datagram(peer, &wire, now), Inbound::Drop);
        let ack = message::empty(MessageType::Acknowledgement, 20);
        let virtual_peer = *pair.link.virtual_peers.keys().next().unwrap();
        assert_eq!(
            pair.link.on_send(virtual_peer, ack.clone()),
            Some((peer, ack.clone()))
        );
        assert_eq!(
            pair.link.on_datagram(peer, &wire, now),
            Inbound::Reply(ack.clone())
        );
        // A forgery with the token's address and message id is refused and forgotten: the
        // token's own retransmission still gets its answer.
        let mut forged = wire.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            pair.link.on_datagram(peer, &forged, now),
            Inbound::Reply(_)
        ));
        assert_eq!(
            pair.link.on_datagram(peer, &wire, now),
            Inbound::Reply(ack.clone())
        );
        // From another address, or with another message id: the replay window refuses it.
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let refused = reply_of(pair.link.on_datagram(other, &wire, now));
        assert_eq!(u8::from(refused.header.code), code::UNAUTHORIZED);
        let mut moved = wire.clone();
        moved[3] ^= 0x55;
        let refused = reply_of(pair.link.on_datagram(peer, &moved, now));
        assert_eq!(refused.payload, b"Replay detected");
    }

    #[test]
    fn every_flipped_bit_of_the_oscore_part_is_refused() {
        let mut pair = pair(true);
        let now = Instant::now();
        let mut client = handshake(&mut pair, now);
        let peer: SocketAddr = PEER.parse().unwrap();
        let (wire, _) = protected_get(&mut client, 30, b"tk", &[(11, b"versions")]);
        // Header (4), token (2), the OSCORE option's header byte, its value, 0xFF, the
        // ciphertext. Every bit of the option value and the ciphertext is protected.
        let value_len = usize::from(wire[6] & 0x0F);
        let protected_bits =
            (7 * 8..(7 + value_len) * 8).chain((8 + value_len) * 8..wire.len() * 8);
        for bit in protected_bits {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            bad[2] = 0x7F; // a fresh message id each time, so deduplication does not answer
            bad[3] = bit as u8;
            let outcome = pair.link.on_datagram(peer, &bad, now);
            assert!(
                !matches!(outcome, Inbound::Deliver(..)),
                "bit {bit} delivered"
            );
        }
        // A flip in the CoAP framing (the option header, the payload marker) can turn the
        // message into a plain one; it then carries garbage, never the protected request's
        // path or the access token.
        for bit in (6 * 8..7 * 8).chain((7 + value_len) * 8..(8 + value_len) * 8) {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            bad[2] = 0x7E;
            bad[3] = bit as u8;
            if let Inbound::Deliver(_, plain) = pair.link.on_datagram(peer, &bad, now)
                && let Ok(plain) = message::parse(&plain)
            {
                {
                    let path = plain.get_option(CoapOption::UriPath);
                    assert!(
                        path.is_none_or(|p| !p.iter().any(|s| s == b"versions")),
                        "bit {bit}"
                    );
                    assert!(
                        plain.get_option(CoapOption::from(ACCESS_TOKEN)).is_none(),
                        "bit {bit}"
                    );
                }
            }
        }
        // The untouched request still goes through: nothing above advanced the window.
        assert!(matches!(
            pair.link.on_datagram(peer, &wire, now),
            Inbound::Deliver(..)
        ));
    }

    #[test]
    fn a_lost_context_is_reported_so_the_token_runs_edhoc_again() {
        // The token's context from before a gateway restart: the new gateway has none.
        let mut before = pair(true);
        let now = Instant::now();
        let mut client = handshake(&mut before, now);
        let mut after = pair(true);
        let peer: SocketAddr = PEER.parse().unwrap();
        let (wire, _) = protected_get(&mut client, 40, b"tk", &[(11, b"versions")]);
        let reply = reply_of(after.link.on_datagram(peer, &wire, now));
        assert_eq!(u8::from(reply.header.code), code::UNAUTHORIZED);
        assert_eq!(reply.payload, b"Security context not found");
        assert!(reply.get_option(CoapOption::from(OSCORE_OPTION)).is_none());
    }

    #[test]
    fn an_unknown_token_is_refused_with_a_clear_error() {
        let mut pair = pair(false);
        let peer: SocketAddr = PEER.parse().unwrap();
        let (initiator, m1) = Initiator::start([3; 32]).unwrap();
        let mut payload = vec![0xF5];
        payload.extend_from_slice(m1.as_bytes());
        let r2 = reply_of(
            pair.link
                .on_datagram(peer, &post_edhoc(1, payload), Instant::now()),
        );
        let (m3, material) = initiator
            .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
            .unwrap();
        let mut payload = material.sender_id().as_bytes().to_vec();
        payload.extend_from_slice(m3.as_bytes());
        let r = reply_of(
            pair.link
                .on_datagram(peer, &post_edhoc(2, payload), Instant::now()),
        );
        assert_eq!(u8::from(r.header.code), code::UNAUTHORIZED);
        assert!(String::from_utf8_lossy(&r.payload).contains("not authorised"));
        assert_eq!(pair.link.context_count(), 0);
    }

    #[test]
    fn plain_access_tokens_are_refused_unless_compat_is_on() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut request = message::build(MessageType::Confirmable, 0x01, 5, b"t");
        request.add_option(CoapOption::UriPath, b"sync".to_vec());
        let without = message::to_datagram(&request);
        request.add_option(CoapOption::from(ACCESS_TOKEN), b"syt".to_vec());
        let with = message::to_datagram(&request);
        let mut link = Link::new(None, false);
        assert_eq!(
            link.on_datagram(peer, &without, Instant::now()),
            Inbound::Deliver(peer, without.clone())
        );
        let refused = reply_of(link.on_datagram(peer, &with, Instant::now()));
        assert_eq!(u8::from(refused.header.code), code::UNAUTHORIZED);
        let mut compat = Link::new(None, true);
        assert_eq!(
            compat.on_datagram(peer, &with, Instant::now()),
            Inbound::Deliver(peer, with.clone())
        );
    }

    #[test]
    fn garbage_never_panics_the_link() {
        let mut pair = pair(true);
        let now = Instant::now();
        let _client = handshake(&mut pair, now);
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut state = 0x1234_5678u32;
        for i in 0..3000u32 {
            let mut bytes = Vec::new();
            let len = (i % 90) as usize;
            for _ in 0..len {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((state >> 24) as u8);
            }
            let datagram = match i % 3 {
                0 => post_edhoc(i as u16, bytes),
                1 => {
                    let mut p = message::build(MessageType::Confirmable, 0x02, i as u16, b"x");
                    p.add_option(
                        CoapOption::from(OSCORE_OPTION),
                        bytes.get(..len.min(6)).unwrap_or_default().to_vec(),
                    );
                    if i % 2 == 0 {
                        p.add_option(CoapOption::from(EDHOC_OPTION), Vec::new());
                    }
                    p.payload = bytes;
                    message::to_datagram(&p)
                }
                _ => bytes,
            };
            let _ = pair.link.on_datagram(peer, &datagram, now);
        }
        let _ = Credential::parse(&[0xA2]);
    }
}
