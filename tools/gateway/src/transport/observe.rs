//! Observers of `/sync` (RFC 7641): a client registers with Observe 0, the gateway long-polls
//! the homeserver on its behalf and pushes each new batch as a CON notification, polling again
//! once it is acknowledged. An observation ends on deregistration, an RST, a notification left
//! unacknowledged, an error from the homeserver, or draining; `max_observers` bounds them all,
//! `max_observers_per_peer` each peer.

use super::PeerId;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use serde_json::Value;

use super::blockwise::{count_blockwise, fill_payload};
use super::forward::ForwardPurpose;
use super::outbox::OutPurpose;
use super::request::{Target, is_param, with_query};
use super::{Action, Transport};
use crate::message::{self, code};
use crate::translate::{
    self, AccessToken, Encoding, ResponseContent, UpstreamOutcome, UpstreamRequest,
};

/// Observe sequence numbers are 24 bits (RFC 7641 §3.4).
const OBSERVE_MAX: u32 = 0x00ff_ffff;

/// What every long-poll of an observer repeats from its registration.
#[derive(Debug, Clone)]
pub(super) struct ObserverTemplate {
    pub(super) path: String,
    /// The registration's query without `since` and `timeout`, which each poll sets.
    query: Vec<String>,
    access_token: Option<AccessToken>,
    encoding: Encoding,
    szx: u8,
    /// Where a notification larger than one block is stored (see [`Target::key`]).
    key: String,
}

impl ObserverTemplate {
    /// The template of a sync request registering with Observe 0.
    pub(super) fn of_sync(target: &Target, encoding: Encoding, szx: u8) -> Self {
        Self {
            path: target.path.clone(),
            query: target
                .query
                .iter()
                .filter(|q| !is_param(q, "since") && !is_param(q, "timeout"))
                .cloned()
                .collect(),
            access_token: target.access_token.clone(),
            encoding,
            szx,
            key: target.key.clone(),
        }
    }
}

/// Whether an observer waits for the homeserver or for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObserverState {
    /// Its long-poll is in flight.
    Polling(super::ForwardId),
    /// The notification with this message id waits for its ACK.
    AwaitingAck(u16),
}

/// One observation.
#[derive(Debug)]
pub(super) struct Observer {
    /// The CoAP token of the registration, which every notification carries.
    pub(super) token: Vec<u8>,
    pub(super) template: ObserverTemplate,
    /// The `next_batch` of the last notification: where the next poll starts.
    since: Option<String>,
    seq: u32,
    pub(super) state: ObserverState,
    last_push: Instant,
}

impl Observer {
    /// The next long-poll: the registration's request from `since`, waiting `poll_timeout`.
    fn poll_request(&self, poll_timeout: Duration, upstream_timeout: Duration) -> UpstreamRequest {
        let t = &self.template;
        let since = self.since.as_ref().map(|s| format!("since={s}"));
        let timeout = format!("timeout={}", poll_timeout.as_millis());
        let params = t
            .query
            .iter()
            .map(String::as_str)
            .chain(since.as_deref())
            .chain(Some(timeout.as_str()));
        UpstreamRequest {
            method: http::Method::GET,
            path_and_query: with_query(&t.path, params),
            access_token: t.access_token.clone(),
            json_body: None,
            content_type: None,
            max_response_body: None,
            timeout: upstream_timeout,
        }
    }

    /// The poll's outcome as the client reads it, and the batch it brings (`None`: an error,
    /// or a 200 that is not a sync response, which ends the observation).
    fn poll_outcome(&self, outcome: &UpstreamOutcome) -> (ResponseContent, Option<String>) {
        let content = translate::translate_response(
            outcome,
            &http::Method::GET,
            self.template.encoding,
            // The poll's since: a prev_batch equal to it is left out (the observer knows it).
            &translate::Route::Sync {
                since: self.since.clone(),
            },
        );
        let ok = content.code == code::CONTENT;
        let batch = if ok { next_batch(outcome) } else { None };
        (content, batch)
    }

    /// The notification of `batch` as message `mid`; with a batch the observer moves on to it
    /// and waits for the ACK, without one this is the last notification (no Observe option).
    fn notification(&mut self, code: u8, batch: Option<String>, mid: u16, now: Instant) -> Packet {
        let mut packet = message::build(MessageType::Confirmable, code, mid, &self.token);
        if batch.is_some() {
            self.seq = (self.seq + 1) & OBSERVE_MAX;
            self.since = batch;
            self.last_push = now;
            self.state = ObserverState::AwaitingAck(mid);
            // Observe comes before Block2 in option order; coap-lite sorts options anyway.
            packet.add_option(
                CoapOption::Observe,
                message::encode_uint(u64::from(self.seq)),
            );
        }
        packet
    }
}

impl Transport {
    /// Ends the observations of `addr` that `which` picks, cancelling their polls.
    pub(super) fn deregister(
        &mut self,
        addr: PeerId,
        which: impl Fn(&Observer) -> bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let before = peer.observers.len();
        peer.observers.retain(|o| {
            if which(o) {
                if let ObserverState::Polling(id) = o.state {
                    actions.push(Action::Cancel { id });
                }
                false
            } else {
                true
            }
        });
        let removed = before - peer.observers.len();
        if removed > 0 {
            tracing::debug!(peer = %addr, removed, "observer deregistered");
        }
        for action in actions.iter() {
            if let Action::Cancel { id } = action {
                self.forwards.remove(*id);
            }
        }
        self.observers = self.observers.saturating_sub(removed);
        self.metrics.observers.set(self.observers as i64);
    }

    /// Adds an observer after a successful registration response; returns its Observe number.
    pub(super) fn register(
        &mut self,
        addr: PeerId,
        token: &[u8],
        template: ObserverTemplate,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<u32> {
        let since = next_batch(outcome)?;
        // Same token: the client re-registers; replace the old observation.
        let token_owned = token.to_vec();
        self.deregister(addr, |o| o.token == token_owned, actions);
        let per_peer = self.peers.get(&addr).map_or(0, |p| p.observers.len());
        if self.draining
            || self.observers >= self.limits.max_observers
            || per_peer >= self.limits.max_observers_per_peer
        {
            return None;
        }
        let peer = self.peers.get_mut(&addr)?;
        peer.observers.push(Observer {
            token: token.to_vec(),
            template,
            since: Some(since),
            seq: 2,
            state: ObserverState::AwaitingAck(0),
            last_push: now,
        });
        self.observers += 1;
        self.metrics.observers.set(self.observers as i64);
        tracing::debug!(peer = %addr, observers = self.observers, "observer registered");
        self.poll(addr, token, now, actions);
        Some(2)
    }

    /// Starts the next long-poll for an observer.
    pub(super) fn poll(
        &mut self,
        addr: PeerId,
        token: &[u8],
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let poll_timeout = self.limits.observe_poll_timeout;
        let upstream_timeout = self
            .limits
            .upstream_timeout
            .max(poll_timeout + Duration::from_secs(10));
        let Some(observer) = self.observer_mut(addr, token) else {
            return;
        };
        let request = observer.poll_request(poll_timeout, upstream_timeout);
        let route = translate::route_label(&observer.template.path);
        let purpose = ForwardPurpose::Observe {
            token: token.to_vec(),
        };
        let id = self.start_forward(addr, route, purpose, request, now, actions);
        if let Some(observer) = self.observer_mut(addr, token) {
            observer.state = ObserverState::Polling(id);
        }
    }

    /// An observer's long-poll `id` ended: push what it brought, or poll again when it brought
    /// nothing new and the last notification is recent.
    pub(super) fn on_poll_response(
        &mut self,
        addr: PeerId,
        token: &[u8],
        id: super::ForwardId,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let keepalive = self.limits.observe_keepalive;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let mid = peer.mid();
        let Some(observer) = peer.observers.iter_mut().find(|o| o.token == token) else {
            return;
        };
        if observer.state != ObserverState::Polling(id) {
            return;
        }
        let template = observer.template.clone();
        let (content, batch) = observer.poll_outcome(outcome);
        let changed = batch.is_some() && batch != observer.since;
        if batch.is_some()
            && !changed
            && now.saturating_duration_since(observer.last_push) < keepalive
        {
            self.poll(addr, token, now, actions);
            return;
        }
        let final_notification = batch.is_none();
        let packet = observer.notification(content.code, batch, mid, now);
        let datagram = self.notification_datagram(addr, &template, &content, packet, now);
        if final_notification {
            // An error notification ends the observation (RFC 7641 section 3.2).
            let token = token.to_vec();
            self.deregister(addr, |o| o.token == token, actions);
        }
        self.send(actions, addr, datagram);
    }

    /// The notification with the first block of `content` (the rest stored for Block2
    /// follow-ups under the registration's options, so the body the client gets is exactly the
    /// one pushed), kept for retransmission until acknowledged; the caller sends it.
    fn notification_datagram(
        &mut self,
        addr: PeerId,
        template: &ObserverTemplate,
        content: &ResponseContent,
        mut packet: Packet,
        now: Instant,
    ) -> Vec<u8> {
        if fill_payload(&mut packet, content, 0, template.szx) {
            let expires = now + self.limits.blockwise_timeout;
            let capacity = self.limits.blockwise_per_peer;
            if let Some(peer) = self.peers.get_mut(&addr) {
                let path = Some(template.path.as_str());
                peer.blockwise
                    .store(&template.key, path, content, expires, capacity);
            }
            count_blockwise(&self.metrics, "block2");
        }
        let datagram = message::to_datagram(&packet);
        let mid = packet.header.message_id;
        let token = packet.get_token().to_vec();
        let purpose = OutPurpose::Notification { token };
        self.retransmit_until_acked(addr, mid, datagram.clone(), purpose, now);
        self.metrics.notifications.inc();
        datagram
    }

    fn observer_mut(&mut self, addr: PeerId, token: &[u8]) -> Option<&mut Observer> {
        let peer = self.peers.get_mut(&addr)?;
        peer.observers.iter_mut().find(|o| o.token == token)
    }
}

/// The `next_batch` of a successful sync response.
fn next_batch(outcome: &UpstreamOutcome) -> Option<String> {
    let UpstreamOutcome::Response(r) = outcome else {
        return None;
    };
    if !(200..300).contains(&r.status) {
        return None;
    }
    let value: Value = serde_json::from_slice(&r.body).ok()?;
    value.get("next_batch")?.as_str().map(str::to_owned)
}
