//! Answering a client's request: piggybacked on the ACK of a CON, as a separate CON once an
//! empty ACK went out, or as a NON; the answer is remembered for duplicates. Also the error
//! answers the request pipeline gives without asking the homeserver.

use coap_lite::{CoapOption, MessageType, Packet};

use super::blockwise::{count_blockwise, fill_payload};
use super::exchanges::ExchangeState;
use super::outbox::OutPurpose;
use super::peer::Peer;
use super::request::Incoming;
use super::{Action, Transport};
use crate::message::{self, code};
use crate::metrics::RequestLabels;
use crate::profile::BlockValue;
use crate::translate::{self, ResponseContent};

/// What to send back for one client request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reply<'a> {
    pub(super) content: &'a ResponseContent,
    /// Which block the client asked for, and at which size.
    pub(super) block2: Option<(u32, u8)>,
    pub(super) block1_echo: Option<BlockValue>,
    pub(super) observe: Option<u32>,
    /// Where to keep the whole body if it does not fit one block.
    pub(super) store_key: Option<&'a str>,
}

impl<'a> Reply<'a> {
    /// The content alone: no block, no observation.
    pub(super) fn plain(content: &'a ResponseContent) -> Self {
        Self {
            content,
            block2: None,
            block1_echo: None,
            observe: None,
            store_key: None,
        }
    }
}

impl Transport {
    /// Sends the response to a client request, choosing piggybacked, separate or NON, and
    /// remembers it for duplicates.
    pub(super) fn finish(
        &mut self,
        incoming: &Incoming,
        route: &'static str,
        reply: Reply<'_>,
        now: std::time::Instant,
        actions: &mut Vec<Action>,
    ) {
        let content = reply.content;
        self.count_answer(incoming, route, content);
        let addr = incoming.peer;
        let (num, szx) = reply.block2.unwrap_or((0, self.own_szx));
        // Only an authenticated peer's large answer is kept for its later blocks.
        let store_key = reply.store_key.filter(|_| self.is_authenticated(addr));
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let (kind, mid, separate) = response_type(peer, incoming);
        let mut packet = message::build(kind, content.code, mid, &incoming.token);
        let split = fill_payload(&mut packet, content, num, szx);
        if split && let Some(key) = store_key {
            let expires = now + self.limits.blockwise_timeout;
            let capacity = self.limits.blockwise_per_peer;
            let linked = addr.is_linked();
            peer.blockwise
                .store(key, None, content, expires, capacity, linked);
            count_blockwise(&self.metrics, "block2");
        }
        add_reply_options(&mut packet, &reply, incoming.body_limit);
        let datagram = message::to_datagram(&packet);
        if let Some(exchange) = peer.exchanges.get_mut(incoming.mid) {
            exchange.state = ExchangeState::Done(if separate {
                message::empty(MessageType::Acknowledgement, incoming.mid)
            } else {
                datagram.clone()
            });
        }
        if separate {
            let purpose = OutPurpose::SeparateResponse;
            self.retransmit_until_acked(addr, mid, datagram.clone(), purpose, now);
        }
        self.send(actions, addr, datagram);
    }

    /// Counts the answer by route and code, and logs it. Route labels carry no identifiers,
    /// and neither tokens nor bodies are logged.
    fn count_answer(&self, incoming: &Incoming, route: &'static str, content: &ResponseContent) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                code: code::dotted(content.code),
            })
            .inc();
        tracing::debug!(peer = %incoming.peer, route, code = %code::dotted(content.code), bytes = content.payload.len(), "answered");
    }
}

/// The type and message id of the answer: a separate CON once the request was acknowledged
/// empty, else piggybacked on the ACK of a CON, else a NON.
fn response_type(peer: &mut Peer, incoming: &Incoming) -> (MessageType, u16, bool) {
    match peer.exchanges.get(incoming.mid).map(|e| &e.state) {
        Some(ExchangeState::Pending { acked: true }) if incoming.confirmable => {
            (MessageType::Confirmable, peer.mid(), true)
        }
        _ if incoming.confirmable => (MessageType::Acknowledgement, incoming.mid, false),
        _ => (MessageType::NonConfirmable, peer.mid(), false),
    }
}

/// The options of the answer that are not about its payload: Observe, the Block1 echo, and
/// Size1 in a 4.13 (the largest body the request may have).
fn add_reply_options(packet: &mut Packet, reply: &Reply<'_>, body_limit: usize) {
    if let Some(seq) = reply.observe {
        packet.add_option(CoapOption::Observe, message::encode_uint(u64::from(seq)));
    }
    if let Some(echo) = reply.block1_echo {
        packet.add_option(CoapOption::Block1, message::block_option(echo));
    }
    if reply.content.code == code::REQUEST_ENTITY_TOO_LARGE {
        packet.add_option(CoapOption::Size1, message::encode_uint(body_limit as u64));
    }
}

/// A gateway error in the request's encoding.
pub(super) fn refuse(
    incoming: &Incoming,
    code: u8,
    errcode: &str,
    message: &str,
) -> ResponseContent {
    translate::gateway_error(code, errcode, message, incoming.encoding)
}

/// A limit answer: the client may try again after Max-Age (1 s).
pub(super) fn retry_later(incoming: &Incoming, code: u8, message: &str) -> ResponseContent {
    ResponseContent {
        max_age: Some(1),
        ..refuse(incoming, code, "M_LIMIT_EXCEEDED", message)
    }
}

/// 4.00 for a request the gateway cannot read.
pub(super) fn bad(incoming: &Incoming, message: &str) -> ResponseContent {
    refuse(incoming, code::BAD_REQUEST, "M_BAD_JSON", message)
}

/// 4.13 for a body over the request's limit (Size1 tells the limit).
pub(super) fn too_large(incoming: &Incoming) -> ResponseContent {
    refuse(
        incoming,
        code::REQUEST_ENTITY_TOO_LARGE,
        "M_TOO_LARGE",
        "The request body is larger than the gateway accepts.",
    )
}

/// 5.00 for state that should be there and is not.
pub(super) fn internal(incoming: &Incoming) -> ResponseContent {
    refuse(
        incoming,
        code::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "Internal gateway error.",
    )
}
