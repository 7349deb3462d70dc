//! The OSCORE contexts, one per paired token that ran EDHOC, by the recipient id the gateway
//! chose (its C_R) and by the number the transport knows the context by
//! ([`PeerId::Context`]); and the protected requests and responses that go through them. A new handshake of a token
//! replaces its context (and forgets the old one's response bindings).
//!
//! The Matrix access token (option 256) is bound to the context: the first protected request
//! carrying it sets it, later requests of the context get it added, a different one is
//! refused.

use std::collections::HashMap;
use std::net::SocketAddr;

use coap_lite::{CoapOption, Packet};
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{Freshness, Message, OptionList, OscoreError, OscoreOption, SecurityContext};
use jeton_proto::coap::option::OBSERVE;

use zeroize::Zeroizing;

use super::bindings::{Bindings, ResponseBinding};
use super::handshake::{cbor_bstr_len, edhoc_error};
use super::wire::{error_reply, options_of, repack};
use super::{EDHOC_OPTION, Inbound, Link, durable};
use crate::message::code;
use crate::metrics::LinkRefusal;
use crate::profile::option::ACCESS_TOKEN;
use crate::transport::PeerId;

/// Bytes a decrypted or protected message may take.
const MAX_MESSAGE: usize = 64 * 1024;

/// The outer (unprotected) part of a protected request.
struct Outer<'p> {
    /// The recipient id the request names: which context decrypts it.
    kid: Vec<u8>,
    options: OptionList<'p>,
    payload: &'p [u8],
}

/// One token's OSCORE context.
pub(super) struct PeerContext {
    pub(super) context: SecurityContext,
    /// Where the token's latest verified request came from: responses and notifications
    /// go there (the token may change address, e.g. behind a NAT).
    pub(super) real_peer: SocketAddr,
    /// The number the transport knows this context by (`PeerId::Context`).
    pub(super) id: u64,
    pub(super) token_name: String,
    pub(super) peer_kid: Vec<u8>,
    pub(super) access_token: Option<Zeroizing<Vec<u8>>>,
}

impl PeerContext {
    /// The context a handshake made with the token `peer_kid`, from `real_peer`; numbered
    /// when it is installed.
    pub(super) fn new(
        context: SecurityContext,
        real_peer: SocketAddr,
        token_name: String,
        peer_kid: Vec<u8>,
    ) -> Self {
        Self {
            context,
            real_peer,
            id: 0,
            token_name,
            peer_kid,
            access_token: None,
        }
    }

    /// Binds the access token of a request to the context, or adds the bound one to a
    /// request without; `true` when the request carries another one (or it cannot be added).
    fn bind_access_token<'a>(
        &mut self,
        options: &mut OptionList<'a>,
        bound: &'a Option<Zeroizing<Vec<u8>>>,
    ) -> bool {
        match (options.get(ACCESS_TOKEN), bound) {
            (Some(sent), None) => {
                self.access_token = Some(Zeroizing::new(sent.to_vec()));
                false
            }
            (Some(sent), Some(bound)) => sent != bound.as_slice(),
            (None, Some(bound)) => options.insert(ACCESS_TOKEN, bound).is_err(),
            (None, None) => false,
        }
    }
}

/// The contexts by recipient id, the recipient id of each context number, and the recipient
/// ids of each token's contexts; the three change together, only through [`Contexts::put`] and
/// [`Contexts::take`].
#[derive(Default)]
pub(super) struct Contexts {
    by_rid: HashMap<Vec<u8>, PeerContext>,
    rid_of: HashMap<u64, Vec<u8>>,
    /// By token (its kid), so a new handshake finds the token's older context without a walk
    /// over every context. One rid per token, unless the store held more than one.
    rids_of_kid: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The last number given to a context: numbers are never given twice, so a new context
    /// never meets the transport state of an older one.
    numbered: u64,
}

impl Contexts {
    pub(super) fn len(&self) -> usize {
        self.by_rid.len()
    }

    /// Whether a context uses `rid` as its recipient id.
    pub(super) fn contains(&self, rid: &[u8]) -> bool {
        self.by_rid.contains_key(rid)
    }

    /// The context numbered `id`, if it is still in place.
    pub(super) fn by_id_mut(&mut self, id: u64) -> Option<&mut PeerContext> {
        let rid = self.rid_of.get(&id)?;
        self.by_rid.get_mut(rid)
    }

    /// The numbers of the contexts in place, with their recipient ids.
    #[cfg(test)]
    pub(super) fn numbered_rids(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.rid_of.iter().map(|(id, rid)| (*id, rid.as_slice()))
    }

    /// The number [`Self::install`] gives the next context.
    pub(super) fn next_number(&self) -> u64 {
        self.numbered + 1
    }

    /// Numbers a new context and puts it in place under `rid`; the token's older one goes,
    /// with its response bindings.
    pub(super) fn install(
        &mut self,
        rid: &[u8],
        mut context: PeerContext,
        bindings: &mut Bindings,
    ) {
        let older = self.rids_of_kid.remove(&context.peer_kid);
        for older_rid in older.unwrap_or_default() {
            if let Some(gone) = self.take(&older_rid) {
                bindings.forget(gone.id);
            }
        }
        self.numbered += 1;
        context.id = self.numbered;
        self.put(rid, context);
    }

    /// Puts a context read back from the store in place under `rid`, with its number.
    pub(super) fn restore(&mut self, rid: &[u8], context: PeerContext) {
        self.numbered = self.numbered.max(context.id);
        self.put(rid, context);
    }

    /// Drops the contexts of the tokens `listed` no longer accepts (revoked), with their
    /// response bindings; returns their names.
    pub(super) fn revoke(
        &mut self,
        listed: impl Fn(&[u8]) -> bool,
        bindings: &mut Bindings,
    ) -> Vec<(u64, String)> {
        let unlisted: Vec<Vec<u8>> = self
            .rids_of_kid
            .iter()
            .filter(|(kid, _)| !listed(kid))
            .flat_map(|(_, rids)| rids.iter().cloned())
            .collect();
        let mut revoked = Vec::new();
        for rid in unlisted {
            if let Some(gone) = self.take(&rid) {
                bindings.forget(gone.id);
                revoked.push((gone.id, gone.token_name));
            }
        }
        revoked
    }

    /// Puts `context` in place under `rid`, in every index; a context already there goes.
    fn put(&mut self, rid: &[u8], context: PeerContext) {
        self.take(rid);
        self.rid_of.insert(context.id, rid.to_vec());
        self.rids_of_kid
            .entry(context.peer_kid.clone())
            .or_default()
            .push(rid.to_vec());
        self.by_rid.insert(rid.to_vec(), context);
    }

    /// Takes the context under `rid` out of every index.
    fn take(&mut self, rid: &[u8]) -> Option<PeerContext> {
        let context = self.by_rid.remove(rid)?;
        self.rid_of.remove(&context.id);
        if let Some(rids) = self.rids_of_kid.get_mut(&context.peer_kid) {
            rids.retain(|r| r.as_slice() != rid);
            if rids.is_empty() {
                self.rids_of_kid.remove(&context.peer_kid);
            }
        }
        Some(context)
    }
}

impl Link {
    /// A request with the OSCORE option: verified and decrypted, it reaches the transport in
    /// clear as its context's, its responses bound for protection.
    pub(super) fn on_protected(&mut self, peer: SocketAddr, packet: &Packet) -> Inbound {
        let Outer {
            kid,
            options,
            payload,
        } = match self.open_outer(peer, packet) {
            Ok(outer) => outer,
            Err(refusal) => return Inbound::Reply(refusal),
        };
        let Some(peer_context) = self.contexts.by_rid.get_mut(&kid) else {
            tracing::info!(%peer, kid = %hex::encode(&kid), "OSCORE request for an unknown context");
            self.metrics.link_refused(LinkRefusal::UnknownContext);
            return Inbound::Reply(error_reply(
                packet,
                code::UNAUTHORIZED,
                b"Security context not found",
            ));
        };
        let outer = Message {
            code: u8::from(packet.header.code),
            options,
            payload,
        };
        let mut plain = vec![0u8; payload.len().min(MAX_MESSAGE)];
        let inner = match peer_context.context.unprotect_request(&outer, &mut plain) {
            Ok(inner) => inner,
            Err(e) => {
                self.metrics.link_refused(match e {
                    OscoreError::Replay => LinkRefusal::Replay,
                    _ => LinkRefusal::DecryptionFailed,
                });
                return Inbound::Reply(refuse_unprotect(peer, peer_context, packet, e));
            }
        };
        peer_context.real_peer = peer;
        let id = peer_context.id;
        let binding = ResponseBinding {
            binding: inner.binding,
            request_nonce_used: false,
        };
        let mut message = inner.message;
        let bound = peer_context.access_token.clone();
        let conflict = peer_context.bind_access_token(&mut message.options, &bound);
        let echo_required = inner.freshness == Freshness::EchoRequired;
        if !conflict && !echo_required {
            let newly_bound = match bound {
                None => peer_context.access_token.clone(),
                Some(_) => None,
            };
            let piv = inner.binding.piv.sequence();
            if let Err(e) = durable::accept_request(
                &mut self.store,
                id,
                piv,
                newly_bound.as_ref().map(|t| t.as_slice()),
            ) {
                // Acted on without its mark stored, a replay after a restart could pass.
                tracing::error!(error = %e, "a protected request was not acted on: the state store failed");
                return Inbound::Drop;
            }
            if message
                .options
                .get(OBSERVE)
                .is_some_and(|v| v.iter().all(|b| *b == 0))
            {
                durable::observe(&mut self.store, id, packet.get_token(), piv);
            }
        }
        let delivered = repack(packet, &message);
        self.bindings.bind(id, packet.get_token(), binding);
        if conflict || echo_required {
            // A context starts with a fresh replay window, or one restored with its stored
            // high-water mark (`durable.rs`), so the Echo case does not arise; both answers go
            // out protected.
            let why: &[u8] = if conflict {
                b"another access token is bound to this OSCORE context: run EDHOC again"
            } else {
                b"the replay window of this context was lost: run EDHOC again"
            };
            let refusal = error_reply(packet, code::UNAUTHORIZED, why);
            return self
                .on_send(PeerId::Context(id), refusal)
                .map_or(Inbound::Drop, |(_, datagram)| Inbound::Reply(datagram));
        }
        Inbound::Deliver(PeerId::Context(id), delivered)
    }

    /// The kid, outer options and payload of a protected request; for an EDHOC + OSCORE
    /// request (RFC 9668) the handshake is completed first and its part taken off. `Err` is
    /// the answer.
    fn open_outer<'p>(
        &mut self,
        peer: SocketAddr,
        packet: &'p Packet,
    ) -> Result<Outer<'p>, Vec<u8>> {
        let Ok(outer_options) = options_of(packet) else {
            return Err(error_reply(packet, code::BAD_REQUEST, b"too many options"));
        };
        let kid = match OscoreOption::kid_of(&Message {
            code: 0,
            options: outer_options,
            payload: &[],
        }) {
            Ok(Some(kid)) => kid.to_vec(),
            _ => {
                return Err(error_reply(
                    packet,
                    code::BAD_REQUEST,
                    b"OSCORE option without kid",
                ));
            }
        };
        let payload = packet.payload.as_slice();
        if packet.get_option(CoapOption::from(EDHOC_OPTION)).is_none() {
            return Ok(Outer {
                kid,
                options: outer_options,
                payload,
            });
        }
        // RFC 9668: the payload starts with message_3 (a CBOR byte string); the kid is C_R.
        let Some(split) = cbor_bstr_len(payload) else {
            self.metrics.link_refused(LinkRefusal::EdhocFailed);
            return Err(edhoc_error(
                packet,
                code::BAD_REQUEST,
                "malformed EDHOC + OSCORE request",
            ));
        };
        let (message_3, rest) = payload.split_at(split);
        if let Err((status, why)) = self.complete_handshake(peer, &kid, message_3) {
            return Err(edhoc_error(packet, status, why));
        }
        let mut without = OptionList::new();
        for (n, v) in outer_options.iter().filter(|(n, _)| *n != EDHOC_OPTION) {
            let _ = without.push(n, v);
        }
        Ok(Outer {
            kid,
            options: without,
            payload: rest,
        })
    }
}

/// The answer to a protected request that did not verify: 4.01 for a replay, 4.00 else.
fn refuse_unprotect(
    peer: SocketAddr,
    peer_context: &PeerContext,
    packet: &Packet,
    error: OscoreError,
) -> Vec<u8> {
    let token = &peer_context.token_name;
    if matches!(error, OscoreError::Replay) {
        tracing::warn!(%peer, %token, "OSCORE replay refused");
        return error_reply(packet, code::UNAUTHORIZED, b"Replay detected");
    }
    tracing::info!(%peer, %token, %error, "OSCORE request refused");
    error_reply(packet, code::BAD_REQUEST, b"Decryption failed")
}

/// Protects a response (or notification) to a request of this context; `None` when it
/// cannot be, and must not go out in clear.
pub(super) fn protect_response(
    peer_context: &mut PeerContext,
    binding: &mut ResponseBinding,
    packet: &Packet,
) -> Option<Vec<u8>> {
    let own_partial_iv = binding.request_nonce_used;
    binding.request_nonce_used = true;
    let options = options_of(packet).ok()?;
    let inner = Message {
        code: u8::from(packet.header.code),
        options,
        payload: &packet.payload,
    };
    let mut buf = vec![0u8; packet.payload.len() + 1024];
    let context = &mut peer_context.context;
    match context.protect_response(&binding.binding, &inner, own_partial_iv, &mut buf) {
        Ok(outer) => Some(repack(packet, &outer)),
        Err(e) => {
            let real = peer_context.real_peer;
            tracing::warn!(%real, error = %e, "could not protect a response; dropped");
            None
        }
    }
}

/// Whether a request carries the OSCORE option.
pub(super) fn is_protected(packet: &Packet) -> bool {
    packet.get_option(CoapOption::from(OSCORE_OPTION)).is_some()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use jeton_link::{PartialIv, RequestBinding};

    use super::*;

    fn context(kid: &[u8], rid: &[u8]) -> PeerContext {
        let oscore = SecurityContext::derive(b"master secret 16", b"salt", b"\x01", rid).unwrap();
        let peer = SocketAddr::from(([192, 0, 2, 1], 5683));
        PeerContext::new(oscore, peer, hex::encode(kid), kid.to_vec())
    }

    fn bind(bindings: &mut Bindings, contexts: &Contexts, rid: &[u8]) -> u64 {
        let id = contexts.by_rid[rid].id;
        let binding = RequestBinding {
            kid: *contexts.by_rid[rid].context.recipient_id(),
            piv: PartialIv::from_sequence(1),
        };
        let binding = ResponseBinding {
            binding,
            request_nonce_used: false,
        };
        bindings.bind(id, b"t", binding);
        id
    }

    /// The three indexes name the same contexts, and `expected` are the (kid, rid) in place.
    fn assert_agree(contexts: &Contexts, expected: &[(&[u8], &[u8])]) {
        let in_place: HashSet<(Vec<u8>, Vec<u8>)> = contexts
            .by_rid
            .iter()
            .map(|(rid, c)| (c.peer_kid.clone(), rid.clone()))
            .collect();
        let wanted = expected.iter().map(|(k, r)| (k.to_vec(), r.to_vec()));
        assert_eq!(in_place, wanted.collect());
        assert_eq!(contexts.rid_of.len(), contexts.by_rid.len());
        for (id, rid) in contexts.numbered_rids() {
            assert_eq!(contexts.by_rid[rid].id, id);
        }
        let by_kid: HashSet<(Vec<u8>, Vec<u8>)> = contexts
            .rids_of_kid
            .iter()
            .flat_map(|(kid, rids)| rids.iter().map(|rid| (kid.clone(), rid.clone())))
            .collect();
        assert_eq!(by_kid, in_place);
        assert!(contexts.rids_of_kid.values().all(|rids| !rids.is_empty()));
    }

    #[test]
    fn the_kid_index_follows_installs_replacements_and_removals() {
        let mut contexts = Contexts::default();
        let mut bindings = Bindings::default();
        contexts.install(b"\x01", context(b"a", b"\x01"), &mut bindings);
        contexts.install(b"\x02", context(b"b", b"\x02"), &mut bindings);
        contexts.install(b"\x03", context(b"c", b"\x03"), &mut bindings);
        assert_agree(
            &contexts,
            &[(b"a", b"\x01"), (b"b", b"\x02"), (b"c", b"\x03")],
        );

        // A new handshake of `a` replaces its context and forgets its bindings.
        let old_a = bind(&mut bindings, &contexts, b"\x01");
        let b = bind(&mut bindings, &contexts, b"\x02");
        contexts.install(b"\x04", context(b"a", b"\x04"), &mut bindings);
        assert_agree(
            &contexts,
            &[(b"a", b"\x04"), (b"b", b"\x02"), (b"c", b"\x03")],
        );
        assert!(bindings.get_mut(old_a, b"t").is_none());
        assert!(bindings.get_mut(b, b"t").is_some());
        assert!(contexts.by_id_mut(old_a).is_none());

        // Restored contexts keep their numbers; a rid in use again replaces its context.
        contexts.restore(b"\x05", {
            let mut d = context(b"d", b"\x05");
            d.id = 40;
            d
        });
        contexts.restore(b"\x03", {
            let mut e = context(b"e", b"\x03");
            e.id = 41;
            e
        });
        assert_agree(
            &contexts,
            &[
                (b"a", b"\x04"),
                (b"b", b"\x02"),
                (b"d", b"\x05"),
                (b"e", b"\x03"),
            ],
        );
        assert_eq!(contexts.next_number(), 42);

        let revoked = contexts.revoke(|kid| kid != b"b" && kid != b"d", &mut bindings);
        let mut names: Vec<String> = revoked.into_iter().map(|(_, name)| name).collect();
        names.sort();
        assert_eq!(names, [hex::encode(b"b"), hex::encode(b"d")]);
        assert!(bindings.get_mut(b, b"t").is_none());
        assert_agree(&contexts, &[(b"a", b"\x04"), (b"e", b"\x03")]);

        contexts.install(b"\x06", context(b"e", b"\x06"), &mut bindings);
        assert_agree(&contexts, &[(b"a", b"\x04"), (b"e", b"\x06")]);
        assert_eq!(contexts.len(), 2);
    }

    #[test]
    fn a_handshake_replaces_every_stored_context_of_its_token() {
        let mut contexts = Contexts::default();
        let mut bindings = Bindings::default();
        for (rid, id) in [(b"\x01", 1), (b"\x02", 2)] {
            let mut stored = context(b"a", rid);
            stored.id = id;
            contexts.restore(rid, stored);
        }
        assert_agree(&contexts, &[(b"a", b"\x01"), (b"a", b"\x02")]);
        contexts.install(b"\x03", context(b"a", b"\x03"), &mut bindings);
        assert_agree(&contexts, &[(b"a", b"\x03")]);
        assert_eq!(contexts.by_id_mut(3).map(|c| c.id), Some(3));
    }
}
