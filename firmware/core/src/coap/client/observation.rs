//! The one observation (RFC 7641) the engine keeps: its registration, its notifications,
//! their block-wise fetch, re-registration after silence, and cancellation.

use heapless::Vec;

use super::*;
use crate::coap::message::{Message, Token};
use crate::coap::option::{self, BlockValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ObservationState {
    /// A (re-)registration is due when the exchange slot is free.
    RegistrationDue,
    /// Registered, or waiting for its retry time; re-register at `deadline`.
    Waiting { deadline: Instant },
    /// The rest of a notification is due to be fetched.
    FetchDue { sequence: u32, next: BlockValue },
    /// An exchange for it is in flight.
    InFlight,
    /// Cancelled; a deregistration is due.
    DeregistrationDue,
}

pub(super) struct Observation {
    pub(super) id: RequestId,
    pub(super) token: Token,
    /// The options of the current registration; its block fetches repeat them.
    pub(super) options: Vec<u8, OBSERVE_OPTIONS_BYTES>,
    /// Options for the next (re-)registration, from [`Client::set_observation_options`].
    pub(super) next_options: Option<Vec<u8, OBSERVE_OPTIONS_BYTES>>,
    pub(super) state: ObservationState,
    /// The last delivered notification's number and arrival time.
    pub(super) last: Option<(u32, Instant)>,
    pub(super) cancelled: bool,
    /// A notification was left unacknowledged while a fetch was under way: re-register after
    /// it.
    pub(super) missed: bool,
}

impl fmt::Debug for Observation {
    // The options may carry a secret (a Matrix access token): only their sizes are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observation")
            .field("id", &self.id)
            .field("options_len", &self.options.len())
            .field(
                "next_options_len",
                &self.next_options.as_ref().map(|o| o.len()),
            )
            .field("state", &self.state)
            .field("last", &self.last)
            .field("cancelled", &self.cancelled)
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}

impl Observation {
    /// The state after an exchange for the observation ended.
    pub(super) fn settle(&mut self, now: Instant, silence_ms: u64) {
        self.state = if self.cancelled {
            ObservationState::DeregistrationDue
        } else if core::mem::take(&mut self.missed) {
            ObservationState::RegistrationDue
        } else {
            ObservationState::Waiting {
                deadline: now.plus_millis(silence_ms),
            }
        };
    }
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize>
    Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    /// Registers an observation of the resource the options name (a GET with Observe 0).
    /// Its notifications arrive as [`Event::Notification`], always whole.
    pub fn observe(&mut self, options: &[(u16, &[u8])]) -> Result<RequestId, RequestError> {
        self.release_lent_body();
        if self.observation.is_some() {
            return Err(RequestError::ObservationExists);
        }
        let mut encoded = Vec::new();
        encode_options(&mut encoded, options)?;
        let id = self.allocate_request_id();
        let token = self.fresh_token();
        self.observation = Some(Observation {
            id,
            token,
            options: encoded,
            next_options: None,
            state: ObservationState::RegistrationDue,
            last: None,
            cancelled: false,
            missed: false,
        });
        Ok(id)
    }

    /// Replaces the options of the observation's next (re-)registration, keeping its
    /// token. A Matrix `/sync` observer moves its `since` query forward this way, so that a
    /// re-registration resumes where the last notification left off. Block fetches of the
    /// current registration's notifications keep its own options (RFC 7959 §2.4: the
    /// server finds the body it pushed by them).
    pub fn set_observation_options(
        &mut self,
        options: &[(u16, &[u8])],
    ) -> Result<(), RequestError> {
        self.release_lent_body();
        let observation = self
            .observation
            .as_mut()
            .ok_or(RequestError::NoObservation)?;
        let mut encoded = Vec::new();
        encode_options(&mut encoded, options)?;
        observation.next_options = Some(encoded);
        Ok(())
    }

    /// Registers the observation again now instead of at the end of the silence period,
    /// when the caller learned that the server lost it (a gateway that answers as if it had
    /// restarted). Does nothing while an exchange for the observation is under way.
    pub fn reregister_observation(&mut self) -> Result<(), RequestError> {
        let observation = self
            .observation
            .as_mut()
            .ok_or(RequestError::NoObservation)?;
        if let ObservationState::Waiting { .. } = observation.state
            && !observation.cancelled
        {
            observation.state = ObservationState::RegistrationDue;
        }
        Ok(())
    }

    /// Cancels the observation: the engine deregisters it (GET with Observe 1) and
    /// acknowledges and drops notifications meanwhile. No event follows.
    pub fn cancel_observation(&mut self) -> Result<(), RequestError> {
        self.release_lent_body();
        let observation = self
            .observation
            .as_mut()
            .ok_or(RequestError::NoObservation)?;
        observation.cancelled = true;
        let fetch_due = matches!(observation.state, ObservationState::FetchDue { .. });
        if observation.state != ObservationState::InFlight {
            observation.state = ObservationState::DeregistrationDue;
        }
        if fetch_due {
            // The first block of a notification nobody wants any more.
            self.discard_body();
        }
        Ok(())
    }

    /// Settles the observation after the answer to a (re-)registration; returns the event
    /// the caller should see, if any.
    pub(super) fn complete_registration(
        &mut self,
        message: &Message<'_>,
        exchange: &Exchange,
        now: Instant,
    ) -> Option<EventRecord> {
        let code = message.header.code;
        let id = exchange.id;
        let sequence = exchange
            .observe_sequence
            .or_else(|| message.uint_option(option::OBSERVE));
        let silence_ms = self.config.observe_silence_ms;
        let observation = self.observation.as_mut()?;
        let wanted = !observation.cancelled;
        match sequence {
            Some(sequence) if code.class() == 2 => {
                // A re-registration answers with the current state, which the caller may
                // have seen already as a notification; unless told otherwise, a state not
                // fresher than the last one is not delivered again. Either way the answer's
                // number is the server's numbering from now on: a server that restarted
                // counts from a small number again.
                let fresh = observation.last.is_none_or(|(last, at)| {
                    option::observe_is_fresher(last, sequence, now.millis_since(at))
                });
                observation.settle(now, silence_ms);
                observation.last = Some((sequence, now));
                if !fresh && !self.deliver_every_registration {
                    self.stats.stale_notifications += 1;
                    return None;
                }
                // The answer to a request: the server learns that it is held from the next
                // request, not from an acknowledgement.
                wanted.then_some(EventRecord::Notification {
                    id,
                    sequence,
                    code,
                    acknowledged: false,
                })
            }
            // Answered without Observe, or with an error: the resource is not observed.
            _ => {
                self.observation = None;
                wanted.then_some(EventRecord::Response { id, code })
            }
        }
    }

    /// A message carrying the observation's token outside an exchange for it. A notification
    /// the engine has no room for is left unacknowledged (a server may take the acknowledgement
    /// as the client's word that it holds the body), and the observation is registered again
    /// once the engine has room: the server may give up on an unacknowledged notification and
    /// end the observation.
    pub(super) fn handle_notification(
        &mut self,
        message: &Message<'_>,
        now: Instant,
    ) -> Disposition {
        let Some(observation) = self.observation.as_ref() else {
            return Disposition::Processed;
        };
        if observation.cancelled {
            return Disposition::Processed;
        }
        let (id, state, last) = (observation.id, observation.state, observation.last);
        let Some(sequence) = message.uint_option(option::OBSERVE) else {
            // A final response without Observe ends the observation at the server.
            self.set_observation_state(ObservationState::RegistrationDue);
            return Disposition::Processed;
        };
        if let Some((last, at)) = last
            && !option::observe_is_fresher(last, sequence, now.millis_since(at))
        {
            self.stats.stale_notifications += 1;
            return Disposition::Processed;
        }
        let block = message
            .option(option::BLOCK2)
            .and_then(BlockValue::from_option);
        if block.is_some_and(|b| b.num != 0) {
            // Not the start of a notification: nothing to take.
            return Disposition::Processed;
        }
        let more = block.is_some_and(|b| b.more);
        let busy = matches!(
            state,
            ObservationState::InFlight | ObservationState::FetchDue { .. }
        );
        // A multi-block notification holds the buffer until its blocks are fetched, which
        // must not wait behind another exchange that needs the same buffer.
        let room = self.body_state == BodyState::Free
            && self.events.capacity() - self.events.len() >= 2
            && !(more && self.exchange.is_some());
        if busy || !room || !self.store_body(message.raw_options(), message.payload) {
            return self.miss_notification(busy);
        }
        let (next_state, disposition) = match block {
            Some(block) if more => {
                self.body_state = BodyState::Filling;
                let next = BlockValue {
                    num: 1,
                    more: false,
                    szx: block.szx,
                };
                // The first block is acknowledged now; the rest is fetched, and the whole
                // body is confirmed to the server by the caller's next request.
                (
                    ObservationState::FetchDue { sequence, next },
                    Disposition::Processed,
                )
            }
            _ => self.hold_notification(message, id, (sequence, last), now),
        };
        if let Some(observation) = self.observation.as_mut() {
            observation.last = Some((sequence, now));
            observation.state = next_state;
        }
        disposition
    }

    /// A notification the engine had no room for (or that came while the observation's
    /// exchange was busy): counted, left unacknowledged, and the observation registered again
    /// once there is room (or, when busy, marked as having missed one).
    fn miss_notification(&mut self, busy: bool) -> Disposition {
        self.stats.missed_notifications += 1;
        if busy {
            if let Some(observation) = self.observation.as_mut() {
                observation.missed = true;
            }
        } else {
            self.set_observation_state(ObservationState::RegistrationDue);
        }
        Disposition::Deferred
    }

    /// A whole notification, its body stored: held for the application, its acknowledgement
    /// (if confirmable) held until the body is taken. `sequence` is its Observe number and
    /// `last` the notification before it.
    fn hold_notification(
        &mut self,
        message: &Message<'_>,
        id: RequestId,
        (sequence, last): (u32, Option<(u32, Instant)>),
        now: Instant,
    ) -> (ObservationState, Disposition) {
        self.body_state = BodyState::Pending;
        let acknowledged = message.header.message_type == MessageType::Confirmable;
        if acknowledged {
            self.held_ack = Some(HeldNotification {
                message_id: message.header.message_id,
                previous: last,
            });
        }
        self.push_event(EventRecord::Notification {
            id,
            sequence,
            code: message.header.code,
            acknowledged,
        });
        let deadline = now.plus_millis(self.config.observe_silence_ms);
        (ObservationState::Waiting { deadline }, Disposition::Held)
    }

    pub(super) fn set_observation_state(&mut self, state: ObservationState) {
        if let Some(observation) = self.observation.as_mut() {
            observation.state = state;
        }
    }
}
