//! What the caller gets: the events waiting for [`Client::poll_event`] and the one response
//! buffer their bodies are lent from; and the datagrams that come in (dispatched to the
//! exchange or the observation, deduplicated, acknowledged or reset).

use super::*;
use crate::coap::message::{Message, MessageType, Options};
use crate::coap::option;

/// Something the caller learns from the engine.
#[derive(Debug)]
pub enum Event<'a> {
    /// A request (or an observation whose registration was answered without Observe,
    /// which ends it) completed with this response.
    Response {
        /// The request's id.
        id: RequestId,
        /// The response code.
        code: Code,
        /// The response's options (Block2 and Observe included as received).
        options: Options<'a>,
        /// The whole body.
        body: &'a [u8],
    },
    /// One block of a response to a [`BodyDelivery::Streamed`] request.
    ResponseBlock {
        /// The request's id.
        id: RequestId,
        /// The response code.
        code: Code,
        /// The options of the block's response.
        options: Options<'a>,
        /// Where this block starts in the body.
        offset: usize,
        /// The block.
        body: &'a [u8],
        /// Whether this is the last block.
        last: bool,
    },
    /// A fresh notification (or the registration response) of the observation.
    Notification {
        /// The id [`Client::observe`] returned.
        id: RequestId,
        /// The Observe sequence number.
        sequence: u32,
        /// The notification's response code.
        code: Code,
        /// Its options.
        options: Options<'a>,
        /// Its whole body, reassembled if it came in blocks.
        body: &'a [u8],
        /// Whether the engine acknowledges this notification, once the caller let it go: a
        /// confirmable one that came whole in one datagram. False for the answer to a
        /// (re-)registration and for a notification fetched in blocks (whose first block was
        /// acknowledged on arrival): the server learns that such a one is held only from a
        /// new request.
        acknowledged: bool,
    },
    /// A request, or an observation's (re-)registration, failed. A failed registration is
    /// retried after [`ClientConfig::observe_silence_ms`].
    Failed {
        /// The request's or observation's id.
        id: RequestId,
        /// Why.
        error: ExchangeError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyState {
    /// Nothing in the buffer.
    Free,
    /// The exchange in flight is reassembling a body.
    Filling,
    /// A body waits for [`Client::poll_event`].
    Pending,
    /// A body was handed out by [`Client::poll_event`]; free at the next input.
    Lent,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum EventRecord {
    Response {
        id: RequestId,
        code: Code,
    },
    ResponseBlock {
        id: RequestId,
        code: Code,
        offset: usize,
        last: bool,
    },
    Notification {
        id: RequestId,
        sequence: u32,
        code: Code,
        acknowledged: bool,
    },
    Failed {
        id: RequestId,
        error: ExchangeError,
    },
}

/// A confirmable notification stored for the caller, not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeldNotification {
    pub(super) message_id: u16,
    /// The observation's last number before it, restored if it goes unacknowledged, so that
    /// its retransmission is fresh again.
    pub(super) previous: Option<(u32, Instant)>,
}

/// What became of a received response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Processed (or knowingly dropped): acknowledge it.
    Processed,
    /// A notification stored for the caller: acknowledged once the caller let it go.
    Held,
    /// Not processed for lack of buffer: leave it unacknowledged so that it is resent.
    Deferred,
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize>
    Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    /// Frees the response buffer if the caller took its content with `poll_event`; every
    /// input calls this first, which ends the borrow's meaning. A notification the caller
    /// took is acknowledged now: the caller is done with what it carried.
    pub(super) fn release_lent_body(&mut self) {
        if self.body_state == BodyState::Lent {
            if let Some(held) = self.held_ack.take() {
                self.push_control(MessageType::Acknowledgement, held.message_id);
            }
            self.discard_body();
        }
    }

    /// The caller could not keep what the notification it just took carried (its storage
    /// failed): the notification is not acknowledged, and its retransmission is taken as new.
    /// Call it before the next call on the engine; it does nothing for other events.
    pub fn decline_notification(&mut self) {
        if self.body_state == BodyState::Lent {
            self.forget_held_notification();
        }
    }

    /// The notification in the buffer goes unacknowledged, and it is forgotten (its message
    /// id and number) so that its retransmission is taken as new.
    fn forget_held_notification(&mut self) {
        if let Some(held) = self.held_ack.take() {
            self.recent_ids.retain(|id| *id != held.message_id);
            if let Some(observation) = self.observation.as_mut() {
                observation.last = held.previous;
            }
        }
    }

    /// Takes the next event. The borrowed body stays valid until the next call on the
    /// engine.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.release_lent_body();
        let record = self.events.pop_front()?;
        let body_event = !matches!(record, EventRecord::Failed { .. });
        if body_event {
            self.body_state = BodyState::Lent;
        }
        let (options, body) = self
            .body
            .split_at_checked(self.body_options_len)
            .unwrap_or((&[], &[]));
        let options = Options::new(options);
        Some(match record {
            EventRecord::Response { id, code } => Event::Response {
                id,
                code,
                options,
                body,
            },
            EventRecord::ResponseBlock {
                id,
                code,
                offset,
                last,
            } => Event::ResponseBlock {
                id,
                code,
                options,
                offset,
                body,
                last,
            },
            EventRecord::Notification {
                id,
                sequence,
                code,
                acknowledged,
            } => Event::Notification {
                id,
                sequence,
                code,
                options,
                body,
                acknowledged,
            },
            EventRecord::Failed { id, error } => Event::Failed { id, error },
        })
    }

    pub(super) fn push_event(&mut self, record: EventRecord) {
        // Cannot fail: exchanges start only with two free slots, and an exchange pushes
        // at most one event before it ends; a notification is taken only when the body
        // buffer is free, so at most one body event waits.
        let _ = self.events.push_back(record);
    }

    pub(super) fn push_control(&mut self, message_type: MessageType, message_id: u16) {
        if self.control.push_back((message_type, message_id)).is_err() {
            self.stats.control_dropped += 1;
        }
    }

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        self.release_lent_body();
        let message = match Message::decode(datagram) {
            Ok(message) => message,
            Err(_) => {
                self.stats.malformed += 1;
                // A malformed CON is rejected with RST (RFC 7252 §4.2) if its id is readable.
                if let Some([first, _, high, low]) = datagram.first_chunk::<4>().copied()
                    && first >> 6 == 1
                    && (first >> 4) & 0b11 == 0
                {
                    self.push_control(MessageType::Reset, u16::from_be_bytes([high, low]));
                }
                return;
            }
        };
        let header = message.header;
        match header.message_type {
            MessageType::Acknowledgement => self.handle_ack(&message, now),
            MessageType::Reset => {
                if self.exchange.is_some_and(|exchange| {
                    exchange.message_id == header.message_id
                        && matches!(exchange.phase, Phase::AwaitingAck { .. })
                }) {
                    self.fail_exchange(ExchangeError::Reset, now);
                }
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let confirmable = header.message_type == MessageType::Confirmable;
                if !header.code.is_response() {
                    // A client takes no requests; an empty CON is a ping, answered by RST.
                    if confirmable {
                        self.push_control(MessageType::Reset, header.message_id);
                    }
                    return;
                }
                if self.recent_ids.iter().any(|id| *id == header.message_id) {
                    self.stats.duplicates += 1;
                    // A notification still with the caller is acknowledged when the caller is
                    // done with it, not before.
                    let held = self.held_ack.map(|held| held.message_id);
                    if confirmable && held != Some(header.message_id) {
                        self.push_control(MessageType::Acknowledgement, header.message_id);
                    }
                    return;
                }
                let disposition = if has_unknown_critical_option(&message) {
                    None
                } else if self.exchange.is_some_and(|exchange| {
                    exchange.token == header.token && exchange.phase != Phase::Unsent
                }) {
                    Some(self.handle_response(&message, now))
                } else if self
                    .observation
                    .as_ref()
                    .is_some_and(|observation| observation.token == header.token)
                {
                    Some(self.handle_notification(&message, now))
                } else {
                    None
                };
                match disposition {
                    Some(Disposition::Processed) => {
                        self.remember_message_id(header.message_id);
                        if confirmable {
                            self.push_control(MessageType::Acknowledgement, header.message_id);
                        }
                    }
                    // Acknowledged when the caller let it go (`release_lent_body`).
                    Some(Disposition::Held) => self.remember_message_id(header.message_id),
                    Some(Disposition::Deferred) => {}
                    // Unknown token or unprocessable: RST, which also ends a stale
                    // observation at the server (RFC 7641 §3.6).
                    None => self.push_control(MessageType::Reset, header.message_id),
                }
            }
        }
    }

    pub(super) fn remember_message_id(&mut self, message_id: u16) {
        if self.recent_ids.is_full() {
            self.recent_ids.pop_front();
        }
        let _ = self.recent_ids.push_back(message_id);
    }

    pub(super) fn discard_body(&mut self) {
        // A notification dropped before the caller was done with it goes unacknowledged.
        self.forget_held_notification();
        self.body_state = BodyState::Free;
        self.body.clear();
        self.body_options_len = 0;
    }

    /// Puts a response's options and body into the empty buffer; false if they do not fit.
    pub(super) fn store_body(&mut self, options: &[u8], payload: &[u8]) -> bool {
        self.body.clear();
        self.body_options_len = 0;
        if self.body.extend_from_slice(options).is_err()
            || self.body.extend_from_slice(payload).is_err()
        {
            self.body.clear();
            return false;
        }
        self.body_options_len = options.len();
        true
    }
}

pub(super) fn has_unknown_critical_option(message: &Message<'_>) -> bool {
    message
        .options()
        .any(|(number, _)| option::is_critical(number) && !option::is_known_in_response(number))
}
