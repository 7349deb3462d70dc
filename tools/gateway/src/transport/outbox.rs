//! The CON messages the gateway sent (separate responses and notifications), kept per peer by
//! message id and retransmitted with exponential back-off until an ACK or RST settles them
//! (RFC 7252 §4.2).

use super::PeerId;
use std::time::{Duration, Instant};

use super::timers::TimerKind;
use super::{Action, Transport};
use crate::message;

/// Why a CON message went out, which says what its ACK or RST means.
#[derive(Debug)]
pub(super) enum OutPurpose {
    /// A response the client's request waited for.
    SeparateResponse,
    /// A notification to the observer with this token.
    Notification { token: Vec<u8> },
}

/// A CON message waiting for its ACK.
#[derive(Debug)]
pub(super) struct Outgoing {
    datagram: Vec<u8>,
    attempts: u8,
    timeout: Duration,
    pub(super) purpose: OutPurpose,
}

impl Transport {
    /// ACK_TIMEOUT * [1, 1.5) (RFC 7252 section 4.8).
    fn jittered_ack_timeout(&mut self) -> Duration {
        let fraction = (self.next_random() % 1000) as u32;
        self.limits.ack_timeout + self.limits.ack_timeout * fraction / 2000
    }

    /// Keeps a confirmable message `mid` to `addr` in the peer's outbox and arms its first
    /// retransmission after a jittered ACK_TIMEOUT; the caller sends it.
    pub(super) fn retransmit_until_acked(
        &mut self,
        addr: PeerId,
        mid: u16,
        datagram: Vec<u8>,
        purpose: OutPurpose,
        now: Instant,
    ) {
        let timeout = self.jittered_ack_timeout();
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.outbox.insert(
                mid,
                Outgoing {
                    datagram,
                    attempts: 0,
                    timeout,
                    purpose,
                },
            );
        }
        self.timers
            .arm(now + timeout, TimerKind::Retransmit(addr, mid));
    }

    /// An ACK settles a message; for a notification it may confirm the position it carries
    /// (`observe.rs`).
    pub(super) fn on_ack(
        &mut self,
        addr: PeerId,
        mid: u16,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if let Some(OutPurpose::Notification { token }) = self.settle(addr, mid) {
            self.on_notification_ack(addr, &token, mid, now, actions);
        }
    }

    /// An RST settles a message; for a notification it ends the observation (RFC 7641 §3.6).
    pub(super) fn on_reset(&mut self, addr: PeerId, mid: u16, actions: &mut Vec<Action>) {
        if let Some(OutPurpose::Notification { token }) = self.settle(addr, mid) {
            self.deregister(addr, |o| o.token == token, actions);
        }
    }

    /// Takes message `mid` to `addr` out of the outbox: why it was sent, if it was waiting.
    fn settle(&mut self, addr: PeerId, mid: u16) -> Option<OutPurpose> {
        let out = self.peers.get_mut(&addr)?.outbox.remove(&mid)?;
        Some(out.purpose)
    }

    /// Sends message `mid` again with twice the timeout, or gives it up after MAX_RETRANSMIT.
    pub(super) fn retransmit(
        &mut self,
        addr: PeerId,
        mid: u16,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(out) = peer.outbox.get_mut(&mid) else {
            return;
        };
        if out.attempts < message::MAX_RETRANSMIT {
            out.attempts += 1;
            out.timeout *= 2;
            let (datagram, at) = (out.datagram.clone(), now + out.timeout);
            self.metrics.retransmissions.inc();
            self.timers.arm(at, TimerKind::Retransmit(addr, mid));
            self.send(actions, addr, datagram);
            return;
        }
        if let Some(OutPurpose::Notification { token }) = self.settle(addr, mid) {
            // Repeatedly unacknowledged: the client is gone (RFC 7641 section 4.5).
            self.deregister(addr, |o| o.token == token, actions);
        }
    }
}
