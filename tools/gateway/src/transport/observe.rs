//! Observers of `/sync` (RFC 7641) and the positions they move through (PROFILE.md section 9).
//!
//! A client registers with Observe 0; the gateway long-polls the homeserver on its behalf and
//! pushes each batch as a CON notification. An observer long-polls only from the position its
//! client confirmed, so the homeserver deletes no to-device message the client has not stored.
//! A body's position is confirmed by the ACK of a notification that came whole in one datagram,
//! or by a request (registration or poll) from that position; until then nothing is asked of the
//! homeserver. A client that sends no Response-Capacity (option 258) confirms the old way: the
//! ACK of a notification's first block, and at once for a registration's answer.
//!
//! A batch that carries nothing new is not pushed, unless `observe_keepalive` passed since the
//! last notification (the keepalive, whose ACK moves the position as any other); the next
//! long-poll starts from its position, past which the client has nothing to lose. The homeserver
//! failing (no answer, 5xx, 429) does not end an observation: its long-poll is tried again after
//! a back-off of at most `POLL_RETRY_MAX`. An observation ends on deregistration, an RST, a
//! notification left unacknowledged, a body left unconfirmed for `observe_keepalive`, an error
//! from the homeserver, or draining; `max_observers` bounds them all, `max_observers_per_peer`
//! each peer.

use super::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use serde_json::json;

use super::blockwise::{count_blockwise, fill_payload};
use super::budget::{Charge, OBSERVER_CHARGE};
use super::forward::ForwardPurpose;
use super::outbox::OutPurpose;
use super::request::{Target, is_param, with_query};
use super::splits::{SyncShape, parse_position, upstream_since};
use super::timers::TimerKind;
use super::{Action, Transport};
use crate::message::{self, code};
use crate::translate::{
    self, AccessToken, Encoding, ResponseContent, UpstreamOutcome, UpstreamRequest,
};

/// Observe sequence numbers are 24 bits (RFC 7641 §3.4).
const OBSERVE_MAX: u32 = 0x00ff_ffff;

/// The longest wait before a failed long-poll is tried again: the client is receiving again
/// within this (plus one long-poll) of the homeserver coming back.
pub(super) const POLL_RETRY_MAX: Duration = Duration::from_secs(10);

/// The longest wait a homeserver's 429 gets before the long-poll is tried again.
const RATE_LIMIT_WAIT_MAX: Duration = Duration::from_secs(60);

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
    /// The client's Response-Capacity (option 258): bodies are cut to it, and the client
    /// confirms positions as PROFILE.md section 9 says.
    capacity: Option<usize>,
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
            capacity: target.capacity,
        }
    }

    /// Whether the client confirms positions itself (it sent option 258).
    pub(super) fn confirms(&self) -> bool {
        self.capacity.is_some()
    }

    /// Whether `other` observes the same thing, `since` aside.
    pub(super) fn same_as(&self, other: &Self) -> bool {
        self.path == other.path
            && self.query == other.query
            && self.encoding == other.encoding
            && self.capacity == other.capacity
    }

    /// How a sync answer is made for this observer, asked from `since`.
    fn shape<'a>(&self, since: Option<&'a str>, hold_position: bool) -> SyncShape<'a> {
        SyncShape {
            encoding: self.encoding,
            since,
            capacity: self.capacity,
            hold_position,
        }
    }
}

/// What an observer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObserverState {
    /// Its long-poll is in flight.
    Polling(super::ForwardId),
    /// The homeserver failed; the long-poll goes again at this instant.
    Retrying(Instant),
    /// The notification `mid` waits for its ACK; `confirms`: the ACK confirms its position.
    AwaitingAck { mid: u16, confirms: bool },
    /// A body went out that only a request from its position confirms; the observation ends
    /// at this instant if none comes.
    AwaitingConfirmation(Instant),
}

/// One observation.
#[derive(Debug)]
pub(super) struct Observer {
    /// Names the observer in timers.
    pub(super) id: u64,
    /// The CoAP token of the registration, which every notification carries.
    pub(super) token: Vec<u8>,
    pub(super) template: ObserverTemplate,
    /// The position every long-poll starts from (through [`upstream_since`] for an intermediate
    /// one): the last the client confirmed, or past it the position of a batch that carried
    /// nothing for the client (it loses nothing there, and a homeserver may answer a poll from
    /// an older position at once). `None`: a sync from the start.
    confirmed: Option<String>,
    /// The position of the last body sent, until it is confirmed.
    pub(super) pending: Option<String>,
    seq: u32,
    pub(super) state: ObserverState,
    last_push: Instant,
    /// Long-polls that failed in a row.
    failures: u32,
    /// The observer's fixed share of the memory budget, given back when it ends.
    _charge: Charge,
}

impl Observer {
    /// The next long-poll: the registration's request from the confirmed position.
    fn poll_request(&self, poll_timeout: Duration, upstream_timeout: Duration) -> UpstreamRequest {
        let t = &self.template;
        let since = self
            .confirmed
            .as_deref()
            .and_then(upstream_since)
            .map(|s| format!("since={s}"));
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

    /// The next Observe number.
    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & OBSERVE_MAX;
        self.seq
    }

    /// The client confirmed `position` (the body it names is stored).
    fn confirm(&mut self, position: String) {
        self.confirmed = Some(position);
        self.pending = None;
        self.failures = 0;
    }
}

/// Where a new observer starts.
#[derive(Debug)]
pub(super) struct Start {
    /// The position the client confirmed.
    pub(super) confirmed: Option<String>,
    /// The position of the registration's answer, when only a request from it confirms it.
    pub(super) pending: Option<String>,
}

impl Start {
    /// After the registration answer at `position` to a request from `since`: a client that
    /// confirms positions itself (option 258) must confirm the answer unless it moved nowhere;
    /// for one that does not, it is confirmed at once (MSC3079's way).
    pub(super) fn after_answer(confirms: bool, since: Option<String>, position: String) -> Self {
        let (confirmed, pending) = match (confirms, since) {
            (true, Some(since)) if since == position => (Some(since), None),
            (true, since) => (since, Some(position)),
            (false, _) => (Some(position), None),
        };
        Self { confirmed, pending }
    }
}

/// What a long-poll's outcome asks of its observer.
enum PollVerdict {
    /// The homeserver failed for now: try again after this long.
    Retry(Duration),
    /// Nothing to push yet: poll again from this position, past a batch that carried nothing
    /// for the client.
    Repoll(String),
    /// Push this body carrying this position.
    Push(Arc<ResponseContent>, String),
    /// An error or a body that is not a sync: the last notification.
    End(Arc<ResponseContent>),
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
        let mut cancelled = Vec::new();
        let mut unsent = Vec::new();
        peer.observers.retain(|o| {
            if !which(o) {
                return true;
            }
            match o.state {
                ObserverState::Polling(id) => cancelled.push(id),
                // Its notification is not retransmitted any more: a re-registration with the
                // same token would take it for one of its own.
                ObserverState::AwaitingAck { mid, .. } => unsent.push(mid),
                ObserverState::Retrying(_) | ObserverState::AwaitingConfirmation(_) => {}
            }
            false
        });
        for mid in unsent {
            peer.outbox.remove(&mid);
        }
        let removed = before - peer.observers.len();
        if removed > 0 {
            tracing::debug!(peer = %addr, removed, "observer deregistered");
        }
        for id in cancelled {
            self.forwards.remove(id);
            actions.push(Action::Cancel { id });
        }
        self.observers = self.observers.saturating_sub(removed);
        self.metrics.observers.set(self.observers as i64);
    }

    /// Adds an observer for the registration answered from `start`. Returns the answer's
    /// Observe number.
    pub(super) fn register(
        &mut self,
        addr: PeerId,
        token: &[u8],
        template: ObserverTemplate,
        start: Start,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<u32> {
        let Start { confirmed, pending } = start;
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
        // A full memory budget: the registration is answered as a plain GET.
        let charge = self.budget.admit(OBSERVER_CHARGE, addr.is_linked())?;
        self.next_observer_id += 1;
        let id = self.next_observer_id;
        let waits = pending.is_some();
        let peer = self.peers.get_mut(&addr)?;
        peer.observers.push(Observer {
            id,
            token: token.to_vec(),
            template,
            confirmed,
            pending,
            seq: 2,
            state: ObserverState::AwaitingAck {
                mid: 0,
                confirms: false,
            },
            last_push: now,
            failures: 0,
            _charge: charge,
        });
        self.observers += 1;
        self.metrics.observers.set(self.observers as i64);
        tracing::debug!(peer = %addr, observers = self.observers, "observer registered");
        if waits {
            self.await_confirmation(addr, id, now);
        } else {
            self.poll(addr, token, now, actions);
        }
        Some(2)
    }

    /// A registration from `since` that confirms the body the observer `token` (or, failing
    /// that, the one of the same path) sent last: the observer moves on with the registration's
    /// options, and the registration is answered with nothing new (the long-poll brings what is
    /// new). Returns the answer's Observe number, `None` when no observer waits for `since`.
    pub(super) fn reregister_confirming(
        &mut self,
        addr: PeerId,
        token: &[u8],
        template: ObserverTemplate,
        since: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<u32> {
        let peer = self.peers.get_mut(&addr)?;
        let waits_for_since =
            |o: &Observer| o.pending.as_deref() == Some(since) && o.template.same_as(&template);
        let index = peer
            .observers
            .iter()
            .position(|o| o.token == token && waits_for_since(o))
            .or_else(|| {
                let path = &template.path;
                peer.observers
                    .iter()
                    .position(|o| &o.template.path == path && waits_for_since(o))
            })?;
        let observer = peer.observers.get_mut(index)?;
        if let ObserverState::AwaitingAck { mid, .. } = observer.state {
            // Confirmed by this request: the notification needs no more retransmissions.
            peer.outbox.remove(&mid);
        }
        if let ObserverState::Polling(id) = observer.state {
            self.forwards.remove(id);
            actions.push(Action::Cancel { id });
        }
        observer.token = token.to_vec();
        observer.template = template;
        observer.confirm(since.to_owned());
        let seq = observer.next_seq();
        self.advance(addr, token, now, actions);
        Some(seq)
    }

    /// After a confirmation: the next part of a split answer if the gateway holds it, else the
    /// long-poll from the confirmed position.
    fn advance(&mut self, addr: PeerId, token: &[u8], now: Instant, actions: &mut Vec<Action>) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(observer) = peer.observers.iter().find(|o| o.token == token) else {
            return;
        };
        let next = observer
            .confirmed
            .as_deref()
            .filter(|c| parse_position(c).is_some())
            .and_then(|c| peer.splits.next_part(c, now));
        match next {
            Some((content, position)) => self.push(addr, token, &content, position, now, actions),
            None => {
                if let Some(confirmed) = observer.confirmed.clone() {
                    peer.splits.confirm(&confirmed);
                }
                self.poll(addr, token, now, actions);
            }
        }
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

    /// An observer's long-poll `id` ended: push what it brought, poll again when it brought
    /// nothing new and no keepalive is due, try again later when the homeserver failed.
    pub(super) fn on_poll_response(
        &mut self,
        addr: PeerId,
        token: &[u8],
        id: super::ForwardId,
        outcome: &UpstreamOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(observer) = self.observer_mut(addr, token) else {
            return;
        };
        if observer.state != ObserverState::Polling(id) {
            return;
        }
        match self.poll_verdict(addr, token, outcome, now) {
            Some(PollVerdict::Retry(hint)) => self.retry_poll(addr, token, hint, now, actions),
            Some(PollVerdict::Repoll(position)) => {
                if let Some(observer) = self.observer_mut(addr, token) {
                    observer.confirmed = Some(position);
                }
                self.poll(addr, token, now, actions);
            }
            Some(PollVerdict::Push(content, position)) => {
                self.push(addr, token, &content, position, now, actions);
            }
            Some(PollVerdict::End(content)) => {
                // An error notification ends the observation (RFC 7641 section 3.2).
                self.push_final(addr, token, &content, now, actions);
                let token = token.to_vec();
                self.deregister(addr, |o| o.token == token, actions);
            }
            None => {}
        }
    }

    fn poll_verdict(
        &mut self,
        addr: PeerId,
        token: &[u8],
        outcome: &UpstreamOutcome,
        now: Instant,
    ) -> Option<PollVerdict> {
        if let Some(hint) = translate::transient(outcome) {
            return Some(PollVerdict::Retry(hint));
        }
        let keepalive = self.limits.observe_keepalive;
        let observer = self.observer_mut(addr, token)?;
        let since = observer
            .confirmed
            .as_deref()
            .and_then(upstream_since)
            .map(str::to_owned);
        let shape = observer.template.shape(since.as_deref(), false);
        let keepalive_due = now.saturating_duration_since(observer.last_push) >= keepalive;
        let answer = self.sync_answer(addr, outcome, shape, now);
        Some(match answer.position {
            None => PollVerdict::End(answer.content),
            Some(position) if answer.nothing_new && !keepalive_due => PollVerdict::Repoll(position),
            Some(position) => PollVerdict::Push(answer.content, position),
        })
    }

    /// The homeserver failed the long-poll: the observation stays, and polls again after a
    /// back-off (doubling from one second up to `POLL_RETRY_MAX`, longer for a 429 that asks
    /// for it). A keepalive due meanwhile still goes out, carrying the confirmed position.
    fn retry_poll(
        &mut self,
        addr: PeerId,
        token: &[u8],
        hint: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let keepalive = self.limits.observe_keepalive;
        let Some(observer) = self.observer_mut(addr, token) else {
            return;
        };
        observer.failures = observer.failures.saturating_add(1);
        let doubling = Duration::from_secs(1) * 2u32.saturating_pow(observer.failures - 1);
        let wait = doubling
            .min(POLL_RETRY_MAX)
            .max(hint.min(RATE_LIMIT_WAIT_MAX));
        let at = now + wait;
        observer.state = ObserverState::Retrying(at);
        let (id, failures) = (observer.id, observer.failures);
        let keepalive_due = now.saturating_duration_since(observer.last_push) >= keepalive;
        let confirmed = observer.confirmed.clone();
        let encoding = observer.template.encoding;
        tracing::debug!(peer = %addr, failures, wait_ms = wait.as_millis() as u64, "observer long-poll failed, trying again");
        self.metrics.poll_retries.inc();
        self.timers.arm(at, TimerKind::Observer(addr, id));
        if let (true, Some(position)) = (keepalive_due, confirmed) {
            let body = json!({ "next_batch": position });
            let content = translate::encode_body(code::CONTENT, &body, encoding);
            self.push(addr, token, &content, position, now, actions);
        }
    }

    /// An observer's deadline came: a long-poll to try again, or a confirmation that never came.
    pub(super) fn on_observer_timer(
        &mut self,
        addr: PeerId,
        id: u64,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let Some(observer) = peer.observers.iter().find(|o| o.id == id) else {
            return;
        };
        let token = observer.token.clone();
        match observer.state {
            ObserverState::Retrying(at) if at <= now => self.poll(addr, &token, now, actions),
            ObserverState::AwaitingConfirmation(at) if at <= now => {
                tracing::debug!(peer = %addr, "observer ended: its client never confirmed the last body");
                self.deregister(addr, |o| o.id == id, actions);
            }
            _ => {}
        }
    }

    /// The ACK of notification `mid` to the observer `token`: its position is confirmed if the
    /// notification came whole (or the client confirms the old way), and the observer moves on;
    /// otherwise the client confirms with a request from the position.
    pub(super) fn on_notification_ack(
        &mut self,
        addr: PeerId,
        token: &[u8],
        mid: u16,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(observer) = self.observer_mut(addr, token) else {
            return;
        };
        let ObserverState::AwaitingAck {
            mid: waited,
            confirms,
        } = observer.state
        else {
            return;
        };
        if waited != mid {
            return;
        }
        if !confirms {
            let id = observer.id;
            self.await_confirmation(addr, id, now);
            return;
        }
        if let Some(position) = observer.pending.take() {
            observer.confirm(position);
        }
        self.advance(addr, token, now, actions);
    }

    /// The observer `id` waits for a request from its pending position, for at most
    /// `observe_keepalive`.
    fn await_confirmation(&mut self, addr: PeerId, id: u64, now: Instant) {
        let at = now + self.limits.observe_keepalive;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(observer) = peer.observers.iter_mut().find(|o| o.id == id) {
            observer.state = ObserverState::AwaitingConfirmation(at);
            self.timers.arm(at, TimerKind::Observer(addr, id));
        }
    }

    /// Pushes `content` carrying `position` as a CON notification (Block2 for the rest of a
    /// large one), kept for retransmission until acknowledged.
    fn push(
        &mut self,
        addr: PeerId,
        token: &[u8],
        content: &ResponseContent,
        position: String,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let mid = peer.mid();
        let Some(observer) = peer.observers.iter_mut().find(|o| o.token == token) else {
            return;
        };
        let mut packet = message::build(MessageType::Confirmable, content.code, mid, token);
        let seq = observer.next_seq();
        // Observe comes before Block2 in option order; coap-lite sorts options anyway.
        packet.add_option(CoapOption::Observe, message::encode_uint(u64::from(seq)));
        let template = observer.template.clone();
        let single = !self.notification_payload(addr, &template, content, &mut packet, now);
        let Some(observer) = self.observer_mut(addr, token) else {
            return;
        };
        observer.pending = Some(position);
        observer.last_push = now;
        observer.state = ObserverState::AwaitingAck {
            mid,
            confirms: single || !template.confirms(),
        };
        self.send_notification(addr, packet, now, actions);
    }

    /// The last notification of an observation (no Observe option): an error, or a body that is
    /// not a sync.
    fn push_final(
        &mut self,
        addr: PeerId,
        token: &[u8],
        content: &ResponseContent,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let mid = peer.mid();
        let Some(template) = peer
            .observers
            .iter()
            .find(|o| o.token == token)
            .map(|o| o.template.clone())
        else {
            return;
        };
        let mut packet = message::build(MessageType::Confirmable, content.code, mid, token);
        self.notification_payload(addr, &template, content, &mut packet, now);
        self.send_notification(addr, packet, now, actions);
    }

    /// Puts the first block of `content` into the notification and stores the rest for Block2
    /// follow-ups under the registration's options, so that the body the client gets is exactly
    /// the one pushed. Returns whether the body takes more than one block.
    fn notification_payload(
        &mut self,
        addr: PeerId,
        template: &ObserverTemplate,
        content: &ResponseContent,
        packet: &mut Packet,
        now: Instant,
    ) -> bool {
        if !fill_payload(packet, content, 0, template.szx) {
            return false;
        }
        let expires = now + self.limits.blockwise_timeout;
        let capacity = self.limits.blockwise_per_peer;
        let keeps = self.is_authenticated(addr);
        if let Some(peer) = self.peers.get_mut(&addr).filter(|_| keeps) {
            let path = Some(template.path.as_str());
            let linked = addr.is_linked();
            peer.blockwise
                .store(&template.key, path, content, expires, capacity, linked);
        }
        count_blockwise(&self.metrics, "block2");
        true
    }

    /// Sends a notification and keeps it for retransmission until acknowledged.
    fn send_notification(
        &mut self,
        addr: PeerId,
        packet: Packet,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let datagram = message::to_datagram(&packet);
        let mid = packet.header.message_id;
        let token = packet.get_token().to_vec();
        let purpose = OutPurpose::Notification { token };
        self.retransmit_until_acked(addr, mid, datagram.clone(), purpose, now);
        self.metrics.notifications.inc();
        self.send(actions, addr, datagram);
    }

    fn observer_mut(&mut self, addr: PeerId, token: &[u8]) -> Option<&mut Observer> {
        let peer = self.peers.get_mut(&addr)?;
        peer.observers.iter_mut().find(|o| o.token == token)
    }
}
