//! The upstream requests in flight, by the id the I/O layer reports their outcome with: a
//! client's request with what its answer needs, or an observer's long-poll. Both start in
//! [`Transport::start_forward`].

use super::PeerId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::ForwardId;
use super::observe::{ObserverTemplate, Start};
use super::reply::Reply;
use super::request::{Blocks, Incoming, Target, query_value, with_query};
use super::splits::SyncShape;
use super::timers::TimerKind;
use super::{Action, Transport};
use crate::media::MediaRoute;
use crate::profile::BlockValue;
use crate::translate::{self, Encoding, ResponseContent, UpstreamOutcome, UpstreamRequest};

/// What the answer to a client's request needs once the homeserver has answered.
#[derive(Debug)]
pub(super) struct ClientContext {
    mid: u16,
    token: Vec<u8>,
    method: http::Method,
    encoding: Encoding,
    route: translate::Route,
    szx: u8,
    /// Where a body larger than one block is stored (see [`Target::key`]).
    key: String,
    block2_num: u32,
    block1_echo: Option<BlockValue>,
    /// For a sync with Observe 0: the observer to register once the response is a success.
    register: Option<ObserverTemplate>,
    /// A sync's Response-Capacity (option 258).
    capacity: Option<usize>,
}

/// Whom an upstream request is for.
#[derive(Debug)]
pub(super) enum ForwardPurpose {
    Client(Box<ClientContext>),
    Observe { token: Vec<u8> },
}

/// One upstream request in flight.
#[derive(Debug)]
pub(super) struct Forward {
    pub(super) peer: PeerId,
    pub(super) started: Instant,
    /// The metric label of the request's path.
    pub(super) route: &'static str,
    pub(super) purpose: ForwardPurpose,
}

/// The upstream requests in flight and the next id to give out.
#[derive(Debug)]
pub(super) struct Forwards {
    by_id: HashMap<ForwardId, Forward>,
    next_id: ForwardId,
}

impl Default for Forwards {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            next_id: 1,
        }
    }
}

impl Forwards {
    /// Upstream requests in flight.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Client requests in flight (observer long-polls excluded).
    pub(super) fn client_requests(&self) -> usize {
        self.by_id
            .values()
            .filter(|f| matches!(f.purpose, ForwardPurpose::Client(_)))
            .count()
    }

    /// Takes the request `id` out: its outcome arrived, or it is no longer wanted.
    pub(super) fn remove(&mut self, id: ForwardId) -> Option<Forward> {
        self.by_id.remove(&id)
    }
}

impl Transport {
    /// Asks the I/O layer for `request` on `addr`'s behalf; its outcome comes back to
    /// [`Transport::on_upstream`] with the id returned.
    pub(super) fn start_forward(
        &mut self,
        addr: PeerId,
        route: &'static str,
        purpose: ForwardPurpose,
        request: UpstreamRequest,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> ForwardId {
        let id = self.forwards.next_id;
        self.forwards.next_id += 1;
        let forward = Forward {
            peer: addr,
            started: now,
            route,
            purpose,
        };
        self.forwards.by_id.insert(id, forward);
        actions.push(Action::Forward { id, request });
        id
    }

    /// The last step of a client request the gateway took: the HTTP request goes upstream,
    /// and a CON request gets an empty ACK if the answer takes longer than `piggyback_wait`.
    pub(super) fn forward_client_request(
        &mut self,
        incoming: &Incoming,
        target: Target,
        blocks: &Blocks,
        body: Option<Vec<u8>>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let register = (target.is_sync && blocks.observe == Some(0) && blocks.block2_num == 0)
            .then(|| ObserverTemplate::of_sync(&target, incoming.encoding, blocks.szx));
        let request = UpstreamRequest {
            method: target.method.clone(),
            path_and_query: with_query(&target.path, target.query.iter().map(String::as_str)),
            access_token: target.access_token.clone(),
            json_body: body,
            content_type: target.content_type.clone(),
            max_response_body: (target.media == Some(MediaRoute::Download))
                .then_some(self.limits.max_media_body),
            timeout: self.limits.upstream_timeout,
        };
        let context = ClientContext {
            mid: incoming.mid,
            token: incoming.token.clone(),
            route: self.response_route(&target),
            method: target.method,
            encoding: incoming.encoding,
            szx: blocks.szx,
            key: target.key,
            block2_num: blocks.block2_num,
            block1_echo: blocks.block1,
            register,
            capacity: target.capacity,
        };
        let purpose = ForwardPurpose::Client(Box::new(context));
        self.start_forward(incoming.peer, target.route, purpose, request, now, actions);
        if incoming.confirmable {
            let at = now + self.limits.piggyback_wait;
            self.timers
                .arm(at, TimerKind::Piggyback(incoming.peer, incoming.mid));
        }
    }

    /// How the homeserver's answer to `target` is translated.
    fn response_route(&self, target: &Target) -> translate::Route {
        if target.path == "/_matrix/client/versions" {
            translate::Route::Versions
        } else if target.is_sync {
            translate::Route::Sync {
                since: query_value(&target.query, "since"),
            }
        } else if target.media == Some(MediaRoute::Download) {
            translate::Route::MediaDownload
        } else if target.media == Some(MediaRoute::Config) {
            translate::Route::MediaConfig {
                upload_limit: self.limits.max_media_body,
            }
        } else {
            translate::Route::Other
        }
    }

    /// The answer to a client's request and the sync position it carries: a sync GET's made as
    /// the client can take it (possibly the first part of a split), anything else translated.
    fn client_answer(
        &mut self,
        addr: PeerId,
        ctx: &ClientContext,
        outcome: &UpstreamOutcome,
        now: Instant,
    ) -> (Arc<ResponseContent>, Option<String>) {
        match &ctx.route {
            translate::Route::Sync { since } if ctx.method == http::Method::GET => {
                let shape = SyncShape {
                    encoding: ctx.encoding,
                    since: since.as_deref(),
                    capacity: ctx.capacity,
                    hold_position: true,
                };
                let answer = self.sync_answer(addr, outcome, shape, now);
                (answer.content, answer.position)
            }
            route => {
                let content =
                    translate::translate_response(outcome, &ctx.method, ctx.encoding, route);
                (Arc::new(content), None)
            }
        }
    }

    /// Answers a client's request with the homeserver's answer, registering the observer a
    /// successful sync with Observe 0 asked for.
    pub(super) fn on_client_response(
        &mut self,
        addr: PeerId,
        route: &'static str,
        ctx: ClientContext,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        peer.in_flight = peer.in_flight.saturating_sub(1);
        let confirmable = peer.exchanges.get(ctx.mid).is_none_or(|e| e.confirmable);
        let (content, position) = self.client_answer(addr, &ctx, outcome, now);
        let incoming = Incoming {
            peer: addr,
            mid: ctx.mid,
            token: ctx.token.clone(),
            confirmable,
            encoding: ctx.encoding,
            body_limit: self.limits.max_body,
        };
        let mut observe = None;
        if let (Some(template), Some(position)) = (ctx.register, position) {
            let since = match &ctx.route {
                translate::Route::Sync { since } => since.clone(),
                _ => None,
            };
            let start = Start::after_answer(template.confirms(), since, position);
            observe = self.register(addr, &ctx.token, template, start, now, actions);
        }
        if ctx.block1_echo.is_some_and(|b| !b.more)
            && let Some(peer) = self.peers.get_mut(&addr)
        {
            peer.blockwise.remember_answer(&ctx.key, &content);
        }
        let reply = Reply {
            content: &content,
            block2: Some((ctx.block2_num, ctx.szx)),
            block1_echo: ctx.block1_echo,
            observe,
            store_key: Some(&ctx.key),
        };
        self.finish(&incoming, route, reply, now, actions);
    }
}
