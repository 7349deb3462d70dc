//! What of the link goes through the gateway's [`StateStore`], and when: a context is stored
//! when a handshake makes it (with its first block of sender sequence numbers reserved), a
//! new block is reserved before a number of it is used, the replay high-water mark and a
//! newly bound access token are stored before a request is acted on, an observation's
//! registration is recorded, and a revoked token's context is forgotten. At start,
//! [`Link::with_store`] puts the stored contexts back, and
//! [`Link::end_restored_observations`] ends the observations the transport no longer holds
//! (RFC 7641 §3.2: a response without Observe), so their tokens register again at once.
//! Without a store every step is a no-op and contexts live in RAM only.

use std::net::SocketAddr;

use coap_lite::MessageType;
use jeton_link::oscore::SEQUENCE_CHUNK;
use jeton_link::{PartialIv, RequestBinding, SecurityContext};

use super::Link;
use super::bindings::ResponseBinding;
use super::contexts::PeerContext;
use crate::message::{self, code};
use crate::store::{StateStore, StoreError, StoredContext};
use crate::transport::PeerId;
use zeroize::Zeroizing;

type Store = Option<Box<dyn StateStore>>;

/// A restored context's sticky state, for the transport
/// ([`Transport::restore_sticky`](crate::transport::Transport::restore_sticky)).
pub struct RestoredSticky {
    /// The context's number.
    pub context: u64,
    /// The access token bound to the context.
    pub access_token: Option<Zeroizing<Vec<u8>>>,
    /// The stored record.
    pub record: Vec<u8>,
}

impl core::fmt::Debug for RestoredSticky {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RestoredSticky")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Keeps the OSCORE contexts in `store` from now on, and puts back those it holds: their
    /// tokens go on without a new handshake. A stored context of a token no longer in the
    /// authorised tokens file is forgotten.
    pub fn with_store(mut self, mut store: Box<dyn StateStore>) -> Result<Self, StoreError> {
        for stored in store.contexts()? {
            let listed = self
                .credentials
                .as_ref()
                .is_some_and(|c| c.tokens.contains_key(&stored.peer_kid));
            if !listed {
                tracing::info!(token = %stored.token_name, "stored OSCORE context dropped: its token is no longer authorised");
                store.forget_context(stored.id)?;
                continue;
            }
            let context = SecurityContext::restore_with_replay_mark(
                &stored.record,
                stored.sequence_mark,
                stored.replay_high_water,
            )
            .map_err(|e| StoreError::Database(format!("a stored OSCORE context: {e}")))?;
            let mut peer_context = PeerContext::new(
                context,
                stored.real_peer,
                stored.token_name,
                stored.peer_kid,
            );
            peer_context.id = stored.id;
            if let Some(record) = stored.sticky {
                self.restored_sticky.push(RestoredSticky {
                    context: stored.id,
                    access_token: stored.access_token.clone(),
                    record,
                });
            }
            peer_context.access_token = stored.access_token;
            if let Some((coap_token, piv)) = stored.observation {
                let binding = RequestBinding {
                    kid: *peer_context.context.recipient_id(),
                    piv: PartialIv::from_sequence(piv),
                };
                // Its first answer went out before the restart: later ones take their own
                // Partial IV.
                let binding = ResponseBinding {
                    binding,
                    request_nonce_used: true,
                };
                self.bindings.bind(stored.id, &coap_token, binding);
                self.restored_observations.push((stored.id, coap_token));
            }
            self.contexts.restore(&stored.rid, peer_context);
        }
        self.metrics.contexts.set(self.contexts.len() as i64);
        self.store = Some(store);
        Ok(self)
    }

    /// The datagrams that end the observations of restored contexts: one NON 5.03 without
    /// Observe each, protected under the observation's registration. A token that still
    /// observes registers again at once, from the position it confirmed; one that does not
    /// drops it.
    pub fn end_restored_observations(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let restored = std::mem::take(&mut self.restored_observations);
        restored
            .into_iter()
            .zip(self.own_message_ids())
            .filter_map(|((id, coap_token), mid)| {
                let mut packet = message::build(
                    MessageType::NonConfirmable,
                    code::SERVICE_UNAVAILABLE,
                    mid,
                    &coap_token,
                );
                packet.payload = b"the gateway restarted: observe again".to_vec();
                self.on_send(PeerId::Context(id), message::to_datagram(&packet))
            })
            .collect()
    }

    /// The sticky states of restored contexts, for the transport.
    pub fn take_restored_sticky(&mut self) -> Vec<RestoredSticky> {
        std::mem::take(&mut self.restored_sticky)
    }

    /// Stores the transport's sticky state of a context's token; a failure costs the token
    /// only a 4.12 round trip after a restart.
    pub fn store_sticky(&mut self, id: u64, record: &[u8]) {
        if let Some(store) = &mut self.store
            && let Err(e) = store.put_sticky(id, record)
        {
            tracing::warn!(error = %e, "a token's sticky state could not be stored");
        }
    }

    /// Message ids for messages the link sends of its own, from a random start.
    fn own_message_ids(&self) -> impl Iterator<Item = u16> + use<> {
        let mut start = [0u8; 2];
        let _ = getrandom::fill(&mut start);
        let start = u16::from_be_bytes(start);
        (0..=u16::MAX).map(move |n| start.wrapping_add(n))
    }
}

/// Stores a context a handshake made, to be numbered `id`, with its first block of sender
/// sequence numbers reserved.
pub(super) fn store_new(
    store: &mut Store,
    rid: &[u8],
    peer_context: &mut PeerContext,
    id: u64,
) -> Result<(), StoreError> {
    let Some(store) = store else {
        return Ok(());
    };
    let mark = peer_context.context.next_sequence() + SEQUENCE_CHUNK;
    store.put_context(&StoredContext {
        id,
        rid: rid.to_vec(),
        peer_kid: peer_context.peer_kid.clone(),
        token_name: peer_context.token_name.clone(),
        real_peer: peer_context.real_peer,
        record: peer_context.context.to_record(),
        sequence_mark: mark,
        replay_high_water: None,
        access_token: peer_context.access_token.clone(),
        observation: None,
        sticky: None,
    })?;
    peer_context.context.sequence_persisted(mark);
    Ok(())
}

/// Reserves the next block of sender sequence numbers when the context asks for it. When the
/// store fails the numbers stay unreserved, and a response that needs one is not sent.
pub(super) fn reserve_sequence(store: &mut Store, id: u64, context: &mut SecurityContext) {
    let (Some(store), Some(mark)) = (store, context.sequence_to_persist()) else {
        return;
    };
    match store.reserve_sequence(id, mark) {
        Ok(()) => context.sequence_persisted(mark),
        Err(e) => tracing::error!(error = %e, "OSCORE sequence numbers could not be reserved"),
    }
}

/// Stores what a verified request changes before it is acted on: the replay high-water mark
/// (`piv`), and the access token it bound, if any.
pub(super) fn accept_request(
    store: &mut Store,
    id: u64,
    piv: u64,
    newly_bound: Option<&[u8]>,
) -> Result<(), StoreError> {
    let Some(store) = store else {
        return Ok(());
    };
    if let Some(access_token) = newly_bound {
        store.bind_access_token(id, access_token)?;
    }
    store.accept_request(id, piv)
}

/// Records an observation's registration (request `piv`, CoAP token `coap_token`). Failing
/// costs only the prompt re-registration after a restart.
pub(super) fn observe(store: &mut Store, id: u64, coap_token: &[u8], piv: u64) {
    if let Some(store) = store
        && let Err(e) = store.observe(id, coap_token, piv)
    {
        tracing::warn!(error = %e, "an observation's registration could not be stored");
    }
}

/// Forgets a revoked token's context.
pub(super) fn forget(store: &mut Store, id: u64) {
    if let Some(store) = store
        && let Err(e) = store.forget_context(id)
    {
        tracing::error!(error = %e, "a revoked token's OSCORE context could not be forgotten");
    }
}
