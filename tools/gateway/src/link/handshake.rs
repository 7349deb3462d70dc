//! EDHOC with tokens (RFC 9528, on CoAP as appendix A.2 has it): the handshakes waiting for
//! message_3, by the connection identifier the gateway chose (C_R), and their completion into
//! an OSCORE context. A handshake without message_3 after `HANDSHAKE_TIMEOUT` is dropped; at
//! most `MAX_HANDSHAKES` wait at once, `MAX_HANDSHAKES_PER_PREFIX` from one source prefix. A
//! message_1 starts one only if it carries an Echo value made for its address (RFC 9175, RFC
//! 9528 §9.7): the first one gets a 4.01 with that value, and nothing is kept.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, Packet, RequestType};
use jeton_link::{HandshakeError, OscoreMaterial, Responder, split_connection_id};

use super::contexts::PeerContext;
use super::wire::{error_reply, reply};
use super::{Inbound, Link, durable};
use crate::message::code;
use crate::metrics::LinkRefusal;
use crate::profile::CONTENT_FORMAT_EDHOC;
use crate::source::{Prefix, prefix_of};

/// EDHOC handshakes waiting for message_3; more are refused until one completes or expires.
const MAX_HANDSHAKES: usize = 256;
/// Of those, from one source prefix (IPv4 /24, IPv6 /48).
const MAX_HANDSHAKES_PER_PREFIX: usize = 16;
/// A handshake without message_3 after this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// A handshake that sent message_2 and waits for message_3.
pub(super) struct Handshake {
    responder: Responder,
    started: Instant,
    /// The source prefix of its message_1.
    prefix: Prefix,
}

/// Why a message_3 did not complete a handshake: the CoAP code and the EDHOC error's text.
type Refusal = (u8, &'static str);

impl Link {
    /// Drops the handshakes that waited too long.
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        self.handshakes
            .retain(|_, h| now.duration_since(h.started) < HANDSHAKE_TIMEOUT);
    }

    /// A request to `/.well-known/edhoc`: message_1 (after CBOR `true`) gets message_2,
    /// `C_R || message_3` completes the handshake and gets message_4.
    pub(super) fn on_edhoc(&mut self, peer: SocketAddr, packet: &Packet, now: Instant) -> Inbound {
        if packet.header.code != MessageClass::Request(RequestType::Post) {
            return Inbound::Reply(error_reply(
                packet,
                code::METHOD_NOT_ALLOWED,
                b"EDHOC takes POST",
            ));
        }
        if self.credentials.is_none() {
            return Inbound::Drop;
        }
        let payload = packet.payload.as_slice();
        if let Some((&0xF5, message_1)) = payload.split_first() {
            return self.on_message_1(peer, packet, message_1, now);
        }
        let Ok((c_r, message_3)) = split_connection_id(payload) else {
            self.metrics.link_refused(LinkRefusal::EdhocFailed);
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

    /// message_1: once its sender proved its address, a responder under a fresh C_R answers
    /// with message_2.
    fn on_message_1(
        &mut self,
        peer: SocketAddr,
        packet: &Packet,
        message_1: &[u8],
        now: Instant,
    ) -> Inbound {
        if !self.sources.is_validated(peer) && !self.echo.proves(peer, packet, now) {
            self.metrics.echo_challenges.inc();
            return Inbound::Reply(self.echo.challenge(peer, packet, now));
        }
        let prefix = prefix_of(peer);
        let from_prefix = self.handshakes.values().filter(|h| h.prefix == prefix);
        if self.handshakes.len() >= MAX_HANDSHAKES
            || from_prefix.count() >= MAX_HANDSHAKES_PER_PREFIX
        {
            let mut busy = error_reply(
                packet,
                code::SERVICE_UNAVAILABLE,
                b"too many EDHOC handshakes in progress",
            );
            with_max_age(&mut busy, HANDSHAKE_TIMEOUT);
            self.metrics.link_refused(LinkRefusal::HandshakesBusy);
            return Inbound::Reply(busy);
        }
        let Some(identity) = self.credentials.as_ref().map(|c| c.identity.clone()) else {
            return Inbound::Drop;
        };
        // Two tries: a C_R that happens to equal the token's C_I is refused once.
        let mut outcome = Err(HandshakeError::InvalidConnectionId);
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
            if !matches!(outcome, Err(HandshakeError::InvalidConnectionId)) {
                break;
            }
        }
        match outcome {
            Ok((c_r, responder, message_2)) => {
                let handshake = Handshake {
                    responder,
                    started: now,
                    prefix,
                };
                self.handshakes.insert(c_r, handshake);
                Inbound::Reply(reply(
                    packet,
                    code::CHANGED,
                    Some(CONTENT_FORMAT_EDHOC),
                    message_2.as_bytes(),
                ))
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "EDHOC message_1 refused");
                self.metrics.link_refused(LinkRefusal::EdhocFailed);
                Inbound::Reply(edhoc_error(packet, code::BAD_REQUEST, &e.to_string()))
            }
        }
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
            if !self.contexts.contains(&id) && !self.handshakes.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Runs message_3 for the handshake `c_r`; on success the OSCORE context is in place
    /// (replacing an older one of the same token) and message_4 is returned.
    pub(super) fn complete_handshake(
        &mut self,
        peer: SocketAddr,
        c_r: &[u8],
        message_3: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let outcome = self.run_message_3(peer, c_r, message_3);
        match &outcome {
            Ok(_) => {
                self.metrics.handshakes.inc();
                self.metrics.contexts.set(self.contexts.len() as i64);
            }
            // Only an unlisted token is refused with 4.01.
            Err((code::UNAUTHORIZED, _)) => self.metrics.link_refused(LinkRefusal::UnknownToken),
            Err(_) => self.metrics.link_refused(LinkRefusal::EdhocFailed),
        }
        outcome
    }

    fn run_message_3(
        &mut self,
        peer: SocketAddr,
        c_r: &[u8],
        message_3: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let Some(handshake) = self.handshakes.remove(c_r) else {
            return Err((
                code::BAD_REQUEST,
                "no EDHOC session with this connection identifier",
            ));
        };
        let (material, message_4) = self.verify_message_3(peer, handshake, message_3)?;
        let Ok(mut context) = material.security_context() else {
            return Err((code::INTERNAL_SERVER_ERROR, "no OSCORE context"));
        };
        if self.store.is_some() {
            context = context.with_persisted_sequence();
        }
        let peer_kid = material.peer_kid().as_bytes().to_vec();
        let token_name = self.credentials.as_ref().map_or_else(String::new, |c| {
            c.tokens
                .get(&peer_kid)
                .map_or_else(String::new, |t| t.name.clone())
        });
        tracing::info!(%peer, token = %token_name, kid = %hex::encode(&peer_kid), "EDHOC complete: OSCORE context established");
        let mut peer_context = PeerContext::new(context, peer, token_name, peer_kid);
        if let Err(e) = durable::store_new(
            &mut self.store,
            c_r,
            &mut peer_context,
            self.contexts.next_number(),
        ) {
            tracing::error!(%peer, error = %e, "EDHOC refused: the new context could not be stored");
            return Err((
                code::INTERNAL_SERVER_ERROR,
                "the gateway could not store the context",
            ));
        }
        self.contexts.install(c_r, peer_context, &mut self.bindings);
        Ok(message_4.as_bytes().to_vec())
    }

    /// message_3 checked against the authorised tokens: the keying material and message_4.
    fn verify_message_3(
        &self,
        peer: SocketAddr,
        handshake: Handshake,
        message_3: &[u8],
    ) -> Result<(OscoreMaterial, jeton_link::EdhocMessage), Refusal> {
        let Some(credentials) = &self.credentials else {
            return Err((code::BAD_REQUEST, "EDHOC is off"));
        };
        let mut seen_kid = Vec::new();
        let result = handshake.responder.process_message_3(message_3, |kid| {
            seen_kid = kid.to_vec();
            credentials.tokens.get(kid).map(|t| t.credential)
        });
        match result {
            Ok(done) => Ok(done),
            Err(HandshakeError::UnknownPeer) => {
                tracing::warn!(%peer, kid = %hex::encode(&seen_kid), "EDHOC refused: unknown token credential (not in the authorised tokens file: pair it with `jeton pair`, then send the gateway SIGHUP)");
                Err((
                    code::UNAUTHORIZED,
                    "unknown credential: this token is not authorised on this gateway",
                ))
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "EDHOC message_3 refused");
                Err((code::BAD_REQUEST, "EDHOC message_3 did not verify"))
            }
        }
    }
}

/// 32 bytes from the operating system for one handshake.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    // Without OS randomness no handshake may run; an all-zero seed would repeat keys.
    if getrandom::fill(&mut seed).is_err() {
        tracing::error!("no OS randomness: EDHOC cannot run");
    }
    seed
}

/// Whether a request is for the EDHOC resource, `/.well-known/edhoc`.
pub(super) fn is_edhoc_resource(packet: &Packet) -> bool {
    let Some(path) = packet.get_option(coap_lite::CoapOption::UriPath) else {
        return false;
    };
    let segments: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
    segments == [&b".well-known"[..], b"edhoc"]
}

/// The length of the CBOR byte string at the start of `bytes` (header included): where
/// message_3 ends in an EDHOC + OSCORE request (RFC 9668).
pub(super) fn cbor_bstr_len(bytes: &[u8]) -> Option<usize> {
    let (header, len) = match bytes {
        [h @ 0x40..=0x57, ..] => (1, usize::from(h - 0x40)),
        [0x58, n, ..] => (2, usize::from(*n)),
        [0x59, a, b, ..] => (3, usize::from(u16::from_be_bytes([*a, *b]))),
        _ => return None,
    };
    let total = header + len;
    (total <= bytes.len()).then_some(total)
}

/// An EDHOC error message (RFC 9528 §6): ERR_CODE 1 and a text ERR_INFO.
pub(super) fn edhoc_error(request: &Packet, status: u8, text: &str) -> Vec<u8> {
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

/// Adds Max-Age (when to try again) to a reply the link made.
fn with_max_age(reply: &mut Vec<u8>, after: Duration) {
    if let Ok(mut packet) = crate::message::parse(reply) {
        let seconds = crate::message::encode_uint(after.as_secs());
        packet.add_option(coap_lite::CoapOption::MaxAge, seconds);
        *reply = crate::message::to_datagram(&packet);
    }
}
