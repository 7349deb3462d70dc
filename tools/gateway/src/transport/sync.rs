//! The steps only a `/sync` request takes (PROFILE.md section 9): its Response-Capacity, the
//! end of the observations it ends, and what the gateway answers itself: a deregistration, the
//! next part of a split answer, a registration that confirms an observer's last body.

use std::time::Instant;

use coap_lite::Packet;
use serde_json::json;

use super::observe::{Observer, ObserverTemplate, Start};
use super::reply::{Reply, bad, refuse};
use super::request::{Blocks, Incoming, Target, is_param, query_value};
use super::splits::parse_position;
use super::{Action, Transport};
use crate::message::{self, code};
use crate::profile::MIN_RESPONSE_CAPACITY;
use crate::profile::option::RESPONSE_CAPACITY;
use crate::translate::{self, ResponseContent};

impl Transport {
    /// Step 6 for a sync (block 0): reads option 258; a request without Observe 0 ends the
    /// observations of its path; then the answers the gateway gives itself. `Ok(true)`: the
    /// request is answered. An intermediate position the gateway does not hold goes on to the
    /// homeserver as the `since` it splits.
    pub(super) fn sync_request(
        &mut self,
        incoming: &Incoming,
        packet: &Packet,
        target: &mut Target,
        blocks: &Blocks,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<bool, ResponseContent> {
        target.capacity = read_capacity(incoming, packet)?;
        if blocks.block2_num > 0 {
            return Ok(false);
        }
        let since = query_value(&target.query, "since");
        let call = SyncCall {
            incoming,
            target,
            blocks,
        };
        if blocks.observe != Some(0) && self.end_observations(&call, since.as_deref(), now, actions)
        {
            return Ok(true);
        }
        let Some(since) = since else {
            return Ok(false);
        };
        if self.answer_from_splits(&call, &since, now, actions) {
            return Ok(true);
        }
        if let Some((base, _, _)) = parse_position(&since) {
            // Not held (the gateway restarted, or the split expired): from its since again.
            target.query.retain(|q| !is_param(q, "since"));
            if !base.is_empty() {
                target.query.push(format!("since={base}"));
            }
        }
        Ok(false)
    }

    /// Ends the observations a request without Observe 0 names, by token or path; one that
    /// deregisters (Observe 1) from a position is answered here. `true`: the request is answered.
    fn end_observations(
        &mut self,
        call: &SyncCall<'_>,
        since: Option<&str>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        // Deregistration (RFC 7641 §3.6): a GET of the resource without Observe 0.
        let (token, path) = (call.incoming.token.clone(), call.target.path.clone());
        let which = move |o: &Observer| o.token == token || o.template.path == path;
        self.deregister(call.incoming.peer, which, actions);
        if let (Some(1), Some(since)) = (call.blocks.observe, since) {
            // Answered here: the client stops observing and moves nowhere.
            self.answer_nothing_new(call, since, None, now, actions);
            return true;
        }
        false
    }

    /// Answers a request from `since` out of the peer's splits: the next part if they hold it,
    /// else confirms the part `since` ends and, for an observer that confirms, re-registers it
    /// and answers that nothing is new. `true`: the request is answered.
    fn answer_from_splits(
        &mut self,
        call: &SyncCall<'_>,
        since: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let (incoming, blocks) = (call.incoming, call.blocks);
        let template = (blocks.observe == Some(0))
            .then(|| ObserverTemplate::of_sync(call.target, incoming.encoding, blocks.szx));
        if self.serve_next_part(call, template.clone(), since, now, actions) {
            return true;
        }
        if let Some(peer) = self.peers.get_mut(&incoming.peer) {
            peer.splits.confirm(since);
        }
        if let Some(template) = template.filter(ObserverTemplate::confirms) {
            let (addr, token) = (incoming.peer, incoming.token.as_slice());
            if let Some(seq) =
                self.reregister_confirming(addr, token, template, since, now, actions)
            {
                self.answer_nothing_new(call, since, Some(seq), now, actions);
                return true;
            }
        }
        false
    }

    /// Answers a request from an intermediate position with the next part of its split, if the
    /// peer's splits hold it; a registration registers the observer, which waits for the part
    /// to be confirmed.
    fn serve_next_part(
        &mut self,
        call: &SyncCall<'_>,
        template: Option<ObserverTemplate>,
        since: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let SyncCall {
            incoming,
            target,
            blocks,
        } = *call;
        let Some(peer) = self.peers.get_mut(&incoming.peer) else {
            return false;
        };
        let Some((content, position)) = peer.splits.next_part(since, now) else {
            return false;
        };
        let observe = template.and_then(|template| {
            let start = Start::after_answer(template.confirms(), Some(since.to_owned()), position);
            let (addr, token) = (incoming.peer, &incoming.token);
            self.register(addr, token, template, start, now, actions)
        });
        let reply = Reply {
            content: &content,
            block2: Some((blocks.block2_num, blocks.szx)),
            block1_echo: None,
            observe,
            store_key: Some(&target.key),
        };
        self.finish(incoming, target.route, reply, now, actions);
        true
    }

    /// Answers with a sync that carries nothing new from `since` (with Observe `observe`).
    fn answer_nothing_new(
        &mut self,
        call: &SyncCall<'_>,
        since: &str,
        observe: Option<u32>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let SyncCall {
            incoming,
            target,
            blocks,
        } = *call;
        let body = json!({ "next_batch": since });
        let content = translate::encode_body(code::CONTENT, &body, incoming.encoding);
        let reply = Reply {
            content: &content,
            block2: Some((0, blocks.szx)),
            block1_echo: None,
            observe,
            store_key: Some(&target.key),
        };
        self.finish(incoming, target.route, reply, now, actions);
    }
}

/// A sync request as the steps here read it.
#[derive(Clone, Copy)]
struct SyncCall<'a> {
    incoming: &'a Incoming,
    target: &'a Target,
    blocks: &'a Blocks,
}

/// Option 258: the largest sync body the client holds, at least [`MIN_RESPONSE_CAPACITY`].
fn read_capacity(incoming: &Incoming, packet: &Packet) -> Result<Option<usize>, ResponseContent> {
    let Some(value) = message::uint_option(packet, RESPONSE_CAPACITY) else {
        return Ok(None);
    };
    let capacity =
        value.map_err(|()| bad(incoming, "Option 258 (Response-Capacity) is not a uint."))?;
    if capacity < MIN_RESPONSE_CAPACITY as u64 {
        let why = format!(
            "Option 258 (Response-Capacity) is {capacity} bytes; the gateway needs at least {MIN_RESPONSE_CAPACITY}."
        );
        return Err(refuse(incoming, code::BAD_REQUEST, "M_INVALID_PARAM", &why));
    }
    Ok(Some(usize::try_from(capacity).unwrap_or(usize::MAX)))
}
