//! The CoAP client engine: a sans-I/O state machine for the token's side of RFC 7252, with
//! Block-wise transfers (RFC 7959) and one Observe registration (RFC 7641).
//!
//! This module owns every exchange the token has with the gateway: the queue of requests
//! waiting to go out, the one exchange in flight (NSTART 1), retransmission timers, message
//! ids and tokens, duplicate detection of separate responses, the block-wise state, the
//! response buffer and the observation. This file holds the engine's public face (its
//! configuration, requests, errors, counters) and its timers; `queue` the requests waiting in
//! their arena, `exchange` the one exchange in flight with its retransmissions and block-wise
//! transfers, `observation` the observation and its notifications, `delivery` the events, the
//! response buffer they lend their bodies from, and the datagrams that come in.
//!
//! # Driving it
//!
//! The engine never blocks, sleeps or touches a socket. Its owner loops:
//!
//! 1. feed inputs: [`Client::request`], [`Client::observe`], [`Client::handle_datagram`],
//!    and [`Client::handle_timeout`] when [`Client::poll_timeout`]'s instant has come;
//! 2. send every datagram [`Client::poll_transmit`] writes;
//! 3. take every [`Event`] from [`Client::poll_event`].
//!
//! # Memory
//!
//! Two byte arenas, sized by const generics: `REQUEST_BYTES` holds queued requests
//! (options and payload of each, back to back), `RESPONSE_BYTES` holds one response (its
//! options followed by its body, reassembled from blocks). Everything else is a few
//! hundred bytes of bookkeeping; the `size_of` test pins the total.
//!
//! # One peer
//!
//! The engine talks to one gateway: message ids, tokens and the duplicate cache are not
//! keyed by address. The platform drops datagrams from any other source before they
//! reach [`Client::handle_datagram`].
//!
//! # Back-pressure
//!
//! One response buffer means one undelivered body at a time. The engine starts no exchange
//! while a body waits in [`Client::poll_event`], and a response or a notification that finds
//! the buffer taken is not acknowledged, so the gateway retransmits it later. For a
//! notification the engine also registers the observation again once the buffer is free:
//! a server may end an observation whose notification goes unacknowledged, and the
//! registration's answer is the resource's current state, which is all an observer is
//! promised.
//!
//! # Acknowledging a notification
//!
//! A server may take the acknowledgement of a notification as the client's word that it
//! holds what the notification carried (a Matrix gateway moves its `/sync` position past it,
//! PROFILE.md section 9). So the engine acknowledges a confirmable notification that came
//! whole only once the caller took it with [`Client::poll_event`] and let it go (at the next
//! call on the engine): the caller processes and stores what it carried in between. A
//! caller that could not keep it calls [`Client::decline_notification`] before that, and
//! the server sends it again. A notification dropped for lack of buffer is never
//! acknowledged. [`Event::Notification::acknowledged`] says which notifications this
//! acknowledgement covers: not the answer to a (re-)registration, nor one fetched in blocks.

mod delivery;
mod exchange;
mod observation;
mod queue;

use core::fmt;

use heapless::{Deque, Vec};

use super::message::{Code, MessageType, Token};
use super::option::{self, BlockValue};
use crate::platform::{Instant, Rng};

pub use delivery::Event;
pub use exchange::ExchangeError;

use delivery::{BodyState, Disposition, EventRecord, HeldNotification};
use exchange::{Exchange, Phase, Purpose};
use observation::{Observation, ObservationState};
use queue::{CallerBlock, Queued, encode_options};

/// Requests that may wait behind the one in flight.
pub const QUEUE_DEPTH: usize = 4;
/// Events that may wait for [`Client::poll_event`]; the engine starts no exchange unless two
/// slots are free, so this never overflows.
pub const EVENT_CAPACITY: usize = 4;
/// Empty ACKs and RSTs that may wait for [`Client::poll_transmit`]. One more is dropped:
/// its peer retransmits the message that asked for it.
pub const CONTROL_CAPACITY: usize = 4;
/// Message ids of separate responses remembered to acknowledge retransmissions again
/// without processing them twice.
pub const DEDUP_CAPACITY: usize = 8;
/// Bytes of encoded options kept for re-registering the observation.
pub const OBSERVE_OPTIONS_BYTES: usize = 160;
/// Token length the engine uses: 4 random bytes make a late response to an old request
/// match the current one with probability 2^-32.
pub const TOKEN_LEN: usize = 4;

/// Default request arena: a Matrix send with its access token fits.
pub const DEFAULT_REQUEST_BYTES: usize = 1024;
/// Default response buffer: two 1024-byte blocks.
pub const DEFAULT_RESPONSE_BYTES: usize = 2048;

/// Transmission parameters (RFC 7252 §4.8) and the engine's own timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// ACK_TIMEOUT in milliseconds.
    pub ack_timeout_ms: u32,
    /// ACK_RANDOM_FACTOR in thousandths: the first timeout is drawn uniformly from
    /// `[ack_timeout, ack_timeout * factor)`.
    pub ack_random_factor_permille: u32,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u8,
    /// How long to wait for a separate response after the empty ACK, in milliseconds.
    /// The gateway answers a long-poll only when the homeserver does, so this exceeds the
    /// long-poll timeout the Matrix layer asks for.
    pub response_timeout_ms: u64,
    /// Preferred block size exponent (`2^(szx+4)` bytes) for Block1 and Block2; the server
    /// may ask for smaller blocks.
    pub block_szx: u8,
    /// Re-register the observation when no notification arrived for this long (and retry
    /// a failed registration after this long, unless the caller re-registers sooner), in
    /// milliseconds.
    pub observe_silence_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ack_timeout_ms: 2_000,
            ack_random_factor_permille: 1_500,
            max_retransmit: 4,
            response_timeout_ms: 120_000,
            block_szx: 6,
            observe_silence_ms: 1_500_000,
        }
    }
}

/// Identifies a request or an observation in [`Event`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u16);

/// How a response body reaches the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyDelivery {
    /// The whole body in one [`Event::Response`]; a body larger than the response buffer
    /// fails with [`ExchangeError::ResponseTooLarge`].
    Whole,
    /// Each block in its own [`Event::ResponseBlock`], so a body of any size passes through
    /// a buffer of one block. The next block is fetched once the caller took this one.
    Streamed,
}

/// A request to send. Options must be in ascending order of number and must not include
/// those the engine manages ([`option::ENGINE_MANAGED`]).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Code,
    /// `(number, value)` pairs in ascending order of number.
    pub options: &'a [(u16, &'a [u8])],
    /// The body; sent with Block1 when it exceeds the block size.
    pub payload: &'a [u8],
    /// How the response body is delivered.
    pub delivery: BodyDelivery,
    /// A block of a body the caller sends in blocks itself (a file read from storage one
    /// block at a time): `payload` is that block, sent with this Block1 option, and the
    /// answer, 2.31 Continue included, arrives as [`Event::Response`].
    pub block1: Option<BlockValue>,
    /// For a [`BodyDelivery::Streamed`] request: the response block to start at (a transfer
    /// resumed where it stopped); the blocks after it follow as usual.
    pub block2: Option<BlockValue>,
}

impl<'a> Request<'a> {
    /// A request whose response arrives whole.
    pub const fn new(method: Code, options: &'a [(u16, &'a [u8])], payload: &'a [u8]) -> Self {
        Request {
            method,
            options,
            payload,
            delivery: BodyDelivery::Whole,
            block1: None,
            block2: None,
        }
    }
}

/// Why a request was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// [`QUEUE_DEPTH`] requests are already waiting.
    QueueFull,
    /// The request's options and payload do not fit in the free part of the request arena.
    TooLarge,
    /// The options are not in ascending order.
    OptionsOutOfOrder,
    /// An option is one the engine sets itself (Observe, Block1, Block2, Size1).
    EngineManagedOption,
    /// An observation is already registered (the engine keeps one).
    ObservationExists,
    /// There is no observation to cancel.
    NoObservation,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::QueueFull => "the CoAP request queue is full",
            RequestError::TooLarge => "the CoAP request does not fit in the request buffer",
            RequestError::OptionsOutOfOrder => {
                "the CoAP request options are not in ascending order"
            }
            RequestError::EngineManagedOption => {
                "the CoAP request carries an option the engine sets itself"
            }
            RequestError::ObservationExists => "an observation is already registered",
            RequestError::NoObservation => "there is no observation to cancel",
        })
    }
}

impl core::error::Error for RequestError {}

/// Counters for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams written by [`Client::poll_transmit`].
    pub datagrams_sent: u32,
    /// Retransmissions among them.
    pub retransmissions: u32,
    /// Received datagrams that did not decode.
    pub malformed: u32,
    /// Received duplicates of messages already processed.
    pub duplicates: u32,
    /// Notifications dropped as older than the last one delivered.
    pub stale_notifications: u32,
    /// Notifications left unacknowledged because the response buffer was taken (the server
    /// sends them again, and the engine registers the observation again).
    pub missed_notifications: u32,
    /// Empty ACKs or RSTs not sent because [`CONTROL_CAPACITY`] were already waiting.
    pub control_dropped: u32,
}

/// The CoAP client engine. See the [module documentation](self).
pub struct Client<
    R: Rng,
    const REQUEST_BYTES: usize = DEFAULT_REQUEST_BYTES,
    const RESPONSE_BYTES: usize = DEFAULT_RESPONSE_BYTES,
> {
    config: ClientConfig,
    rng: R,
    next_message_id: u16,
    next_request_id: u16,
    queue: Deque<Queued, QUEUE_DEPTH>,
    arena: Vec<u8, REQUEST_BYTES>,
    exchange: Option<Exchange>,
    observation: Option<Observation>,
    /// The response's encoded options, then its body.
    body: Vec<u8, RESPONSE_BYTES>,
    body_options_len: usize,
    body_state: BodyState,
    /// The notification in the buffer, acknowledged once the caller let its body go.
    held_ack: Option<delivery::HeldNotification>,
    events: Deque<EventRecord, EVENT_CAPACITY>,
    control: Deque<(MessageType, u16), CONTROL_CAPACITY>,
    recent_ids: Deque<u16, DEDUP_CAPACITY>,
    stats: ClientStats,
    deliver_every_registration: bool,
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize> fmt::Debug
    for Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("queued", &self.queue.len())
            .field("exchange", &self.exchange)
            .field("observation", &self.observation)
            .field("body_state", &self.body_state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize>
    Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    /// A client with no exchange; message ids start at a random value.
    pub fn new(config: ClientConfig, mut rng: R) -> Self {
        let next_message_id = rng.next_u32() as u16;
        Client {
            config,
            rng,
            next_message_id,
            next_request_id: 1,
            queue: Deque::new(),
            arena: Vec::new(),
            exchange: None,
            observation: None,
            body: Vec::new(),
            body_options_len: 0,
            body_state: BodyState::Free,
            held_ack: None,
            events: Deque::new(),
            control: Deque::new(),
            recent_ids: Deque::new(),
            stats: ClientStats::default(),
            deliver_every_registration: false,
        }
    }

    /// Delivers the answer to every (re-)registration as a notification, even when its
    /// Observe number is not fresher than the last one. For resources whose registration
    /// options name what the answer holds (a Matrix `/sync` with `since`), so that the answer
    /// is new data, not a repeat.
    pub fn deliver_every_registration(&mut self, deliver: bool) {
        self.deliver_every_registration = deliver;
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The random generator, for the layers above that need one too.
    pub fn rng(&mut self) -> &mut R {
        &mut self.rng
    }

    /// Whether nothing is queued, in flight or waiting to be sent or taken. A registered
    /// observation between notifications counts as idle.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.exchange.is_none()
            && self.events.is_empty()
            && self.control.is_empty()
    }

    fn allocate_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request_id);
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    fn fresh_token(&mut self) -> Token {
        let observed = self.observation.as_ref().map(|o| o.token);
        loop {
            let mut bytes = [0u8; TOKEN_LEN];
            self.rng.fill_bytes(&mut bytes);
            let token = Token::new(&bytes).unwrap_or_default();
            if Some(token) != observed {
                return token;
            }
        }
    }

    fn fresh_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = id.wrapping_add(1);
        id
    }

    /// The instant at which [`Client::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let exchange = self
            .exchange
            .as_ref()
            .and_then(|exchange| match exchange.phase {
                Phase::Unsent | Phase::AwaitingAck { due: true, .. } => None,
                Phase::AwaitingAck { next_at, .. } => Some(next_at),
                Phase::AwaitingResponse { deadline } => Some(deadline),
            });
        let observation = self.observation.as_ref().and_then(|o| match o.state {
            ObservationState::Waiting { deadline } => Some(deadline),
            _ => None,
        });
        match (exchange, observation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_lent_body();
        let max_retransmit = self.config.max_retransmit;
        let mut expired = false;
        if let Some(exchange) = self.exchange.as_mut() {
            match &mut exchange.phase {
                Phase::AwaitingAck {
                    transmissions,
                    timeout_ms,
                    next_at,
                    due,
                } if !*due && now >= *next_at => {
                    if *transmissions > max_retransmit {
                        expired = true;
                    } else {
                        // Exponential back-off (RFC 7252 §4.2).
                        *timeout_ms = timeout_ms.saturating_mul(2);
                        *next_at = now.plus_millis(*timeout_ms);
                        *due = true;
                    }
                }
                Phase::AwaitingResponse { deadline } if now >= *deadline => expired = true,
                _ => {}
            }
        }
        if expired {
            self.fail_exchange(ExchangeError::Timeout, now);
        }
        if let Some(observation) = self.observation.as_mut()
            && let ObservationState::Waiting { deadline } = observation.state
            && now >= deadline
        {
            observation.state = ObservationState::RegistrationDue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator that is never asked for much: the size test only needs a type.
    struct ZeroRng;

    impl Rng for ZeroRng {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(0);
        }
    }

    #[test]
    fn memory_with_default_capacities_is_pinned() {
        let total = core::mem::size_of::<Client<ZeroRng>>();
        let arenas = DEFAULT_REQUEST_BYTES + DEFAULT_RESPONSE_BYTES;
        let bookkeeping = total - arenas;
        println!(
            "Client<_, {DEFAULT_REQUEST_BYTES}, {DEFAULT_RESPONSE_BYTES}>: {total} B \
             ({arenas} B request and response buffers + {bookkeeping} B bookkeeping, \
             of which 2 x {OBSERVE_OPTIONS_BYTES} B observation options); \
             Exchange {} B, Observation {} B",
            core::mem::size_of::<Exchange>(),
            core::mem::size_of::<Observation>(),
        );
        // Pinned on a 64-bit host; a 32-bit target is smaller (usize lengths halve). The
        // observation keeps its registered options and the next registration's; each queued
        // request may carry a caller's Block1 or starting Block2 (files); a notification the
        // caller holds keeps its message id for the acknowledgement that follows.
        assert!(bookkeeping <= 896, "bookkeeping grew to {bookkeeping} B");
        assert!(total <= 3_968, "the engine grew to {total} B");
    }

    #[test]
    fn request_validation_names_the_problem() {
        let mut client: Client<ZeroRng, 64, 64> = Client::new(ClientConfig::default(), ZeroRng);
        let unordered = [(12, &[][..]), (11, &b"a"[..])];
        assert_eq!(
            client.request(&Request::new(Code::GET, &unordered, &[])),
            Err(RequestError::OptionsOutOfOrder)
        );
        let managed = [(option::BLOCK2, &[][..])];
        assert_eq!(
            client.request(&Request::new(Code::GET, &managed, &[])),
            Err(RequestError::EngineManagedOption)
        );
        assert_eq!(
            client.request(&Request::new(Code::POST, &[], &[0; 65])),
            Err(RequestError::TooLarge)
        );
        // A failed request leaves no trace: the arena still takes a request that fills it.
        assert!(
            client
                .request(&Request::new(Code::POST, &[], &[0; 64]))
                .is_ok()
        );
        assert_eq!(
            client.request(&Request::new(Code::POST, &[], &[0; 1])),
            Err(RequestError::TooLarge)
        );
        assert_eq!(
            client.cancel_observation(),
            Err(RequestError::NoObservation)
        );
        assert!(client.observe(&[(option::URI_PATH, &b"sync"[..])]).is_ok());
        assert_eq!(
            client.observe(&[(option::URI_PATH, &b"sync"[..])]),
            Err(RequestError::ObservationExists)
        );
    }
}
