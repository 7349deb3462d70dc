//! The duplicate-detection memory of a peer (RFC 7252 §4.5): every request message id the
//! peer sent within EXCHANGE_LIFETIME (NON_LIFETIME for a NON), waiting for the homeserver or
//! with the datagram that answered it, which a duplicate gets again.

use super::PeerId;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use coap_lite::MessageType;

use super::{Action, Transport};
use crate::message;

/// One received request message.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) confirmable: bool,
    pub(super) state: ExchangeState,
    expires: Instant,
}

/// Where a received request stands.
#[derive(Debug)]
pub(super) enum ExchangeState {
    /// Waiting for the homeserver; `acked` once an empty ACK went out (separate response).
    Pending { acked: bool },
    /// The datagram every duplicate gets.
    Done(Vec<u8>),
}

/// A peer's exchanges by message id, and the order they arrived in (oldest first).
#[derive(Debug, Default)]
pub(super) struct Exchanges {
    by_mid: HashMap<u16, Exchange>,
    order: VecDeque<u16>,
}

impl Exchanges {
    /// The exchange of message id `mid`.
    pub(super) fn get(&self, mid: u16) -> Option<&Exchange> {
        self.by_mid.get(&mid)
    }

    /// The exchange of message id `mid`, to change its state.
    pub(super) fn get_mut(&mut self, mid: u16) -> Option<&mut Exchange> {
        self.by_mid.get_mut(&mid)
    }

    /// Whether no exchange is remembered.
    pub(super) fn is_empty(&self) -> bool {
        self.by_mid.is_empty()
    }

    /// Remembers a new request `mid` as pending. At `capacity`, the oldest finished exchange
    /// is forgotten first; if all are pending, the in-flight limit answers this one.
    pub(super) fn begin(&mut self, mid: u16, confirmable: bool, now: Instant, capacity: usize) {
        let lifetime = if confirmable {
            message::EXCHANGE_LIFETIME
        } else {
            message::NON_LIFETIME
        };
        if self.by_mid.len() >= capacity
            && let Some(pos) = self.order.iter().position(|m| {
                matches!(
                    self.by_mid.get(m).map(|e| &e.state),
                    Some(ExchangeState::Done(_)) | None
                )
            })
            && let Some(old) = self.order.remove(pos)
        {
            self.by_mid.remove(&old);
        }
        self.by_mid.insert(
            mid,
            Exchange {
                confirmable,
                state: ExchangeState::Pending { acked: false },
                expires: now + lifetime,
            },
        );
        self.order.push_back(mid);
    }

    /// Forgets the finished exchanges that expired, oldest first, up to the first one that
    /// has not (or is still pending).
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(mid) = self.order.front().copied() {
            match self.by_mid.get(&mid) {
                Some(e) if e.expires > now => break,
                Some(Exchange {
                    state: ExchangeState::Pending { .. },
                    ..
                }) => break,
                _ => {
                    self.by_mid.remove(&mid);
                    self.order.pop_front();
                }
            }
        }
    }
}

impl Transport {
    /// Records request `mid` from `addr`, seen `now`; `false` for a duplicate (RFC 7252
    /// section 4.5: same peer and message id), which gets the cached response, or an empty
    /// ACK while it is pending.
    pub(super) fn receive(
        &mut self,
        addr: PeerId,
        mid: u16,
        confirmable: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let capacity = self.limits.dedup_per_peer;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return false;
        };
        peer.last_seen = now;
        let Some(exchange) = peer.exchanges.get_mut(mid) else {
            peer.exchanges.begin(mid, confirmable, now, capacity);
            return true;
        };
        self.metrics.duplicates.inc();
        match &mut exchange.state {
            ExchangeState::Done(datagram) => {
                let datagram = datagram.clone();
                self.send(actions, addr, datagram);
            }
            ExchangeState::Pending { acked } => {
                if exchange.confirmable {
                    *acked = true;
                    self.send(
                        actions,
                        addr,
                        message::empty(MessageType::Acknowledgement, mid),
                    );
                }
            }
        }
        false
    }

    /// The homeserver did not answer CON request `mid` in time for a piggybacked response:
    /// an empty ACK stops the client's retransmissions, the response follows as a CON.
    pub(super) fn on_piggyback_timeout(
        &mut self,
        addr: PeerId,
        mid: u16,
        actions: &mut Vec<Action>,
    ) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if let Some(Exchange {
            state: ExchangeState::Pending { acked },
            confirmable: true,
            ..
        }) = peer.exchanges.get_mut(mid)
            && !*acked
        {
            *acked = true;
            self.send(
                actions,
                addr,
                message::empty(MessageType::Acknowledgement, mid),
            );
        }
    }
}
