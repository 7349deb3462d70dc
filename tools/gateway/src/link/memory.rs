//! The link's CoAP deduplication memory, below OSCORE: what each received request (by address
//! and message id) led to, and what went out to a context's token, so a retransmission gets
//! the same answer (the same protected bytes) instead of reaching OSCORE's replay check or
//! the homeserver twice. Entries leave after EXCHANGE_LIFETIME, or oldest first beyond
//! `MAX_REMEMBERED` of each kind.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::Inbound;
use crate::message;

/// Requests and responses remembered for CoAP deduplication below OSCORE.
const MAX_REMEMBERED: usize = 8192;

/// What a received request led to.
pub(super) enum Remembered {
    /// A protected request already handed to the transport. A copy is never delivered
    /// again (the transport's duplicate memory is shorter than the link's, and a replay
    /// must not reach the homeserver twice): it gets the response or empty ACK that went
    /// out for its message id, or nothing while that is pending.
    Delivered,
    /// A request the link answered itself (EDHOC, errors): the same answer again.
    Reply(Vec<u8>),
}

/// Received requests and sent messages, by (address, message id), with fingerprints of the
/// datagrams so that a different message reusing the id is not taken for a copy.
#[derive(Default)]
pub(super) struct Memory {
    received: HashMap<(SocketAddr, u16), (u64, Remembered)>,
    /// What went out to a context's token, by (its address, message id): the fingerprint
    /// of the plain datagram, the protected bytes, and the context's number (where an ACK or
    /// RST for it belongs).
    sent: HashMap<(SocketAddr, u16), (u64, Vec<u8>, u64)>,
    order: VecDeque<(Instant, SocketAddr, u16, bool)>,
}

impl Memory {
    /// The context of the message `mid` that went out to `peer`, if it was a context's.
    pub(super) fn sent_for(&self, peer: SocketAddr, mid: u16) -> Option<u64> {
        self.sent.get(&(peer, mid)).map(|(_, _, context)| *context)
    }

    /// The answer to a retransmitted request (same address, message id and bytes): what
    /// went out for it, or `Drop` while that is pending. `None` for a new request.
    pub(super) fn answer_again(
        &self,
        peer: SocketAddr,
        mid: u16,
        fingerprint: u64,
    ) -> Option<Inbound> {
        let (seen, remembered) = self.received.get(&(peer, mid))?;
        if *seen != fingerprint {
            return None;
        }
        Some(match remembered {
            Remembered::Delivered => self
                .sent
                .get(&(peer, mid))
                .map_or(Inbound::Drop, |(_, sent, _)| Inbound::Reply(sent.clone())),
            Remembered::Reply(reply) => Inbound::Reply(reply.clone()),
        })
    }

    /// The protected bytes that went out for the same plain datagram, to send them again
    /// rather than encrypt a second time.
    pub(super) fn sent_again(
        &self,
        real: SocketAddr,
        mid: u16,
        fingerprint: u64,
    ) -> Option<Vec<u8>> {
        let (seen, protected, _) = self.sent.get(&(real, mid))?;
        (*seen == fingerprint).then(|| protected.clone())
    }

    pub(super) fn remember_received(
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

    /// Remembers `datagram` sent to `real` for `context`.
    pub(super) fn remember_sent(
        &mut self,
        real: SocketAddr,
        mid: u16,
        fingerprint: u64,
        datagram: Vec<u8>,
        context: u64,
    ) {
        self.sent
            .insert((real, mid), (fingerprint, datagram, context));
        self.order.push_back((Instant::now(), real, mid, true));
    }

    /// Forgets what expired, and the oldest beyond the bound.
    pub(super) fn sweep(&mut self, now: Instant) {
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
    }
}
