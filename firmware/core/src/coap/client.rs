//! The CoAP client engine: a sans-I/O state machine for the token's side of RFC 7252, with
//! Block-wise transfers (RFC 7959) and one Observe registration (RFC 7641).
//!
//! This module owns every exchange the token has with the gateway: the queue of requests
//! waiting to go out, the one exchange in flight (NSTART 1), retransmission timers, message
//! ids and tokens, duplicate detection of separate responses, the block-wise state, the
//! response buffer and the observation.
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
//! while a body waits in [`Client::poll_event`], and a response that finds the buffer taken
//! is not acknowledged, so the gateway retransmits it later. A notification that finds the
//! buffer taken is acknowledged and dropped, and the engine re-registers the observation
//! once the buffer is free: re-registration returns the resource's current state, which is
//! all an observer is promised.

use core::fmt;

use heapless::{Deque, Vec};
use jeton_proto::coap::codec::option_head;

use super::message::{
    Code, EncodeError, Header, Message, MessageType, MessageWriter, Options, Token,
};
use super::option::{self, BlockValue};
use crate::platform::{Instant, Rng};

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
    /// a failed registration after this long), in milliseconds.
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
            observe_silence_ms: 600_000,
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

/// Why an exchange ended without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeError {
    /// No acknowledgement after MAX_RETRANSMIT retransmissions (MAX_TRANSMIT_WAIT), or no
    /// separate response within the response timeout.
    Timeout,
    /// The server answered with RST: it could not process the message.
    Reset,
    /// The response body exceeds the response buffer.
    ResponseTooLarge,
    /// The server broke the block-wise protocol (wrong block number, changed ETag,
    /// Continue after the last block).
    BlockwiseMismatch,
    /// The request could not be encoded into the transmit buffer given to
    /// [`Client::poll_transmit`].
    TransmitBufferTooSmall,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExchangeError::Timeout => "the gateway did not answer in time",
            ExchangeError::Reset => "the gateway rejected the message with a reset",
            ExchangeError::ResponseTooLarge => "the response is larger than the response buffer",
            ExchangeError::BlockwiseMismatch => "the gateway broke the block-wise transfer",
            ExchangeError::TransmitBufferTooSmall => {
                "the transmit buffer is too small for the request"
            }
        })
    }
}

impl core::error::Error for ExchangeError {}

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
    /// Notifications dropped because the response buffer was taken (re-registered later).
    pub missed_notifications: u32,
    /// Empty ACKs or RSTs not sent because [`CONTROL_CAPACITY`] were already waiting.
    pub control_dropped: u32,
}

/// A request waiting in the arena; its options then payload start at the arena offset
/// equal to the sum of the lengths of the requests ahead of it.
#[derive(Clone, Copy, Debug)]
struct Queued {
    id: RequestId,
    method: Code,
    options_len: u16,
    payload_len: u16,
    delivery: BodyDelivery,
    caller_block: Option<CallerBlock>,
}

/// A block the caller chose ([`Request::block1`], [`Request::block2`]).
#[derive(Clone, Copy, Debug)]
enum CallerBlock {
    /// The request carries this block of a body the caller sends in blocks.
    Request(BlockValue),
    /// The response is fetched from this block on.
    ResponseFrom(BlockValue),
}

impl Queued {
    fn len(&self) -> usize {
        usize::from(self.options_len) + usize::from(self.payload_len)
    }
}

/// What the exchange in flight carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// The request at the head of the queue.
    Request,
    /// GET with Observe 0 (block follow-ups without it).
    Register,
    /// The remaining blocks of a notification (GET with Block2, no Observe).
    NotificationBlocks { sequence: u32 },
    /// GET with Observe 1.
    Deregister,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not sent yet (a new request, or the next block of one).
    Unsent,
    /// Sent as CON; `due` once its retransmission timer fired.
    AwaitingAck {
        transmissions: u8,
        timeout_ms: u64,
        next_at: Instant,
        due: bool,
    },
    /// Acknowledged with an empty ACK; the separate response is awaited.
    AwaitingResponse { deadline: Instant },
}

#[derive(Clone, Copy, Debug)]
struct Exchange {
    id: RequestId,
    purpose: Purpose,
    method: Code,
    delivery: BodyDelivery,
    token: Token,
    message_id: u16,
    phase: Phase,
    /// The request block this message carries.
    block1: Option<BlockValue>,
    /// Whether the caller sends the body in blocks itself ([`Request::block1`]).
    caller_block1: bool,
    /// The response block this message asks for.
    block2: Option<BlockValue>,
    /// Body bytes received so far.
    received: usize,
    /// The ETag of the first block, when the response had one.
    etag: Option<[u8; 8]>,
    etag_len: u8,
    /// The Observe number of the first block of a registration response.
    observe_sequence: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObservationState {
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

struct Observation {
    id: RequestId,
    token: Token,
    /// The options of the current registration; its block fetches repeat them.
    options: Vec<u8, OBSERVE_OPTIONS_BYTES>,
    /// Options for the next (re-)registration, from [`Client::set_observation_options`].
    next_options: Option<Vec<u8, OBSERVE_OPTIONS_BYTES>>,
    state: ObservationState,
    /// The last delivered notification's number and arrival time.
    last: Option<(u32, Instant)>,
    cancelled: bool,
    /// A notification was dropped while a fetch was under way: re-register after it.
    missed: bool,
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
    fn settle(&mut self, now: Instant, silence_ms: u64) {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
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
enum EventRecord {
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
    },
    Failed {
        id: RequestId,
        error: ExchangeError,
    },
}

/// What became of a received response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    /// Processed (or knowingly dropped): acknowledge it.
    Processed,
    /// Not processed for lack of buffer: leave it unacknowledged so that it is resent.
    Deferred,
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

    /// Queues a request; it is sent when the exchanges ahead of it are done.
    pub fn request(&mut self, request: &Request<'_>) -> Result<RequestId, RequestError> {
        self.release_lent_body();
        if self.queue.is_full() {
            return Err(RequestError::QueueFull);
        }
        let payload_len =
            u16::try_from(request.payload.len()).map_err(|_| RequestError::TooLarge)?;
        let start = self.arena.len();
        let options_len = match encode_options(&mut self.arena, request.options) {
            Ok(len) => len,
            Err(error) => {
                self.arena.truncate(start);
                return Err(error);
            }
        };
        let options_len = u16::try_from(options_len);
        let Ok(options_len) = options_len else {
            self.arena.truncate(start);
            return Err(RequestError::TooLarge);
        };
        if self.arena.extend_from_slice(request.payload).is_err() {
            self.arena.truncate(start);
            return Err(RequestError::TooLarge);
        }
        let id = self.allocate_request_id();
        let queued = Queued {
            id,
            method: request.method,
            options_len,
            payload_len,
            delivery: request.delivery,
            caller_block: request
                .block1
                .map(CallerBlock::Request)
                .or(request.block2.map(CallerBlock::ResponseFrom)),
        };
        if self.queue.push_back(queued).is_err() {
            self.arena.truncate(start);
            return Err(RequestError::QueueFull);
        }
        Ok(id)
    }

    /// Queues a request ahead of every waiting one (never ahead of the one in flight), for a
    /// layer under the caller's requests that they wait for: the link's key exchange.
    pub fn request_first(&mut self, request: &Request<'_>) -> Result<RequestId, RequestError> {
        let waiting = self.queue.len();
        let id = self.request(request)?;
        let in_flight = self
            .exchange
            .is_some_and(|exchange| exchange.purpose == Purpose::Request);
        let keep = usize::from(in_flight).min(waiting);
        let Some(first) = self.queue.pop_back() else {
            return Ok(id);
        };
        // Its bytes were appended at the end of the arena: move them in front of the
        // waiting requests' bytes, then the entry in front of theirs.
        let kept_bytes: usize = self.queue.iter().take(keep).map(Queued::len).sum();
        if let Some(tail) = self.arena.get_mut(kept_bytes..) {
            tail.rotate_right(first.len());
        }
        let mut behind: Deque<Queued, QUEUE_DEPTH> = Deque::new();
        while self.queue.len() > keep {
            if let Some(queued) = self.queue.pop_back() {
                let _ = behind.push_front(queued);
            }
        }
        let _ = self.queue.push_back(first);
        while let Some(queued) = behind.pop_front() {
            let _ = self.queue.push_back(queued);
        }
        Ok(id)
    }

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

    /// Frees the response buffer if the caller took its content with `poll_event`; every
    /// input calls this first, which ends the borrow's meaning.
    fn release_lent_body(&mut self) {
        if self.body_state == BodyState::Lent {
            self.discard_body();
        }
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
            EventRecord::Notification { id, sequence, code } => Event::Notification {
                id,
                sequence,
                code,
                options,
                body,
            },
            EventRecord::Failed { id, error } => Event::Failed { id, error },
        })
    }

    fn push_event(&mut self, record: EventRecord) {
        // Cannot fail: exchanges start only with two free slots, and an exchange pushes
        // at most one event before it ends; a notification is taken only when the body
        // buffer is free, so at most one body event waits.
        let _ = self.events.push_back(record);
    }

    fn push_control(&mut self, message_type: MessageType, message_id: u16) {
        if self.control.push_back((message_type, message_id)).is_err() {
            self.stats.control_dropped += 1;
        }
    }

    /// Writes the next datagram to send into `buf` and returns its length, or `None` when
    /// there is nothing to send now.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<usize>, EncodeError> {
        self.release_lent_body();
        if let Some((message_type, message_id)) = self.control.pop_front() {
            let header = Header {
                message_type,
                code: Code::EMPTY,
                message_id,
                token: Token::EMPTY,
            };
            let len = MessageWriter::new(buf, &header)?.finish();
            self.stats.datagrams_sent += 1;
            return Ok(Some(len));
        }
        if self.exchange.is_none() && !self.start_exchange() {
            return Ok(None);
        }
        let Some(exchange) = self.exchange else {
            return Ok(None);
        };
        let retransmission = match exchange.phase {
            Phase::Unsent => false,
            Phase::AwaitingAck { due: true, .. } => true,
            _ => return Ok(None),
        };
        if !retransmission
            && exchange.delivery == BodyDelivery::Streamed
            && self.body_state == BodyState::Pending
        {
            // The next block waits until the caller took this one.
            return Ok(None);
        }
        let len = match self.encode_exchange(&exchange, buf) {
            Ok(len) => len,
            Err(error) => {
                self.fail_exchange(ExchangeError::TransmitBufferTooSmall, now);
                return Err(error);
            }
        };
        let phase = match exchange.phase {
            Phase::AwaitingAck {
                transmissions,
                timeout_ms,
                next_at,
                ..
            } => Phase::AwaitingAck {
                transmissions: transmissions + 1,
                timeout_ms,
                next_at,
                due: false,
            },
            _ => {
                let base = u64::from(self.config.ack_timeout_ms);
                let spread = base
                    * u64::from(self.config.ack_random_factor_permille.saturating_sub(1_000))
                    / 1_000;
                let jitter = u64::from(self.rng.below(u32::try_from(spread).unwrap_or(u32::MAX)));
                let timeout_ms = base + jitter;
                Phase::AwaitingAck {
                    transmissions: 1,
                    timeout_ms,
                    next_at: now.plus_millis(timeout_ms),
                    due: false,
                }
            }
        };
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.phase = phase;
        }
        self.stats.datagrams_sent += 1;
        if retransmission {
            self.stats.retransmissions += 1;
        }
        Ok(Some(len))
    }

    /// Starts the next exchange if the engine has room for its outcome; returns whether
    /// one is in flight now.
    fn start_exchange(&mut self) -> bool {
        let fetch_due = self
            .observation
            .as_ref()
            .is_some_and(|o| matches!(o.state, ObservationState::FetchDue { .. }));
        // A notification's first block waits in the buffer for the fetch of the rest.
        let buffer_ready = self.body_state == BodyState::Free
            || (self.body_state == BodyState::Filling && fetch_due);
        if self.events.capacity() - self.events.len() < 2 || !buffer_ready {
            return false;
        }
        if let Some(observation) = self.observation.as_mut()
            && observation.state == ObservationState::RegistrationDue
            && let Some(next) = observation.next_options.take()
        {
            observation.options = next;
        }
        let observation_work = self.observation.as_ref().and_then(|o| match o.state {
            ObservationState::RegistrationDue => Some((o.id, o.token, Purpose::Register, None)),
            ObservationState::FetchDue { sequence, next } => Some((
                o.id,
                o.token,
                Purpose::NotificationBlocks { sequence },
                Some(next),
            )),
            ObservationState::DeregistrationDue => Some((o.id, o.token, Purpose::Deregister, None)),
            _ => None,
        });
        let (id, purpose, method, delivery, token, block2, payload_len) =
            if let Some((id, token, purpose, block2)) = observation_work {
                if let Some(observation) = self.observation.as_mut() {
                    observation.state = ObservationState::InFlight;
                }
                // Block follow-ups of a notification use their own token so that they
                // are not mistaken for notifications (RFC 7959 §3.4).
                let token = if block2.is_some() {
                    self.fresh_token()
                } else {
                    token
                };
                (
                    id,
                    purpose,
                    Code::GET,
                    BodyDelivery::Whole,
                    token,
                    block2,
                    0,
                )
            } else if let Some(queued) = self.queue.front().copied() {
                let token = self.fresh_token();
                let start = match queued.caller_block {
                    Some(CallerBlock::ResponseFrom(block)) => Some(block),
                    _ => None,
                };
                (
                    queued.id,
                    Purpose::Request,
                    queued.method,
                    queued.delivery,
                    token,
                    start,
                    usize::from(queued.payload_len),
                )
            } else {
                return false;
            };
        let szx = self.config.block_szx.min(option::MAX_SZX);
        let caller_block1 = match (purpose, self.queue.front().and_then(|q| q.caller_block)) {
            (Purpose::Request, Some(CallerBlock::Request(block))) => Some(block),
            _ => None,
        };
        let block1 =
            caller_block1.or((payload_len > (1usize << (szx + 4))).then_some(BlockValue {
                num: 0,
                more: true,
                szx,
            }));
        let message_id = self.fresh_message_id();
        let received = if fetch_due {
            self.body.len().saturating_sub(self.body_options_len)
        } else {
            self.body.clear();
            self.body_options_len = 0;
            // A streamed response resumed at a later block: the bytes before it are the
            // caller's already.
            match (purpose, block2) {
                (Purpose::Request, Some(start)) if delivery == BodyDelivery::Streamed => {
                    start.offset()
                }
                _ => 0,
            }
        };
        self.exchange = Some(Exchange {
            id,
            purpose,
            method,
            delivery,
            token,
            message_id,
            phase: Phase::Unsent,
            block1,
            caller_block1: caller_block1.is_some(),
            block2,
            received,
            etag: None,
            etag_len: 0,
            observe_sequence: None,
        });
        true
    }

    /// The stored options and payload of the exchange's request.
    fn request_parts(&self, exchange: &Exchange) -> (&[u8], &[u8]) {
        match exchange.purpose {
            Purpose::Request => {
                let Some(head) = self.queue.front() else {
                    return (&[], &[]);
                };
                let options_len = usize::from(head.options_len);
                let (options, rest) = self
                    .arena
                    .split_at_checked(options_len)
                    .unwrap_or((&[], &[]));
                (
                    options,
                    rest.get(..usize::from(head.payload_len)).unwrap_or(&[]),
                )
            }
            _ => (
                self.observation
                    .as_ref()
                    .map_or(&[][..], |o| &o.options[..]),
                &[],
            ),
        }
    }

    fn encode_exchange(&self, exchange: &Exchange, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let header = Header {
            message_type: MessageType::Confirmable,
            code: exchange.method,
            message_id: exchange.message_id,
            token: exchange.token,
        };
        let (stored_options, payload) = self.request_parts(exchange);
        let observe = match exchange.purpose {
            Purpose::Register if exchange.block2.is_none() => Some(0),
            Purpose::Deregister => Some(1),
            _ => None,
        };
        // The options the engine adds, in ascending order of number.
        let mut managed: [(u16, Option<u32>); 4] = [
            (option::OBSERVE, observe),
            (option::BLOCK2, exchange.block2.map(BlockValue::to_uint)),
            (option::BLOCK1, exchange.block1.map(BlockValue::to_uint)),
            (
                option::SIZE1,
                exchange
                    .block1
                    .filter(|block| block.num == 0 && !exchange.caller_block1)
                    .map(|_| payload.len() as u32),
            ),
        ];
        let mut writer = MessageWriter::new(buf, &header)?;
        let mut managed_iter = managed.iter_mut().peekable();
        for (number, value) in Options::new(stored_options) {
            while let Some((managed_number, managed_value)) =
                managed_iter.next_if(|(managed_number, _)| *managed_number < number)
            {
                if let Some(value) = managed_value.take() {
                    writer.uint_option(*managed_number, value)?;
                }
            }
            writer.option(number, value)?;
        }
        for (managed_number, managed_value) in managed_iter {
            if let Some(value) = managed_value.take() {
                writer.uint_option(*managed_number, value)?;
            }
        }
        let body = match (exchange.block1, exchange.block2) {
            (Some(_), _) if exchange.caller_block1 => payload,
            (Some(block), _) => {
                let end = (block.offset() + block.size()).min(payload.len());
                payload.get(block.offset()..end).unwrap_or(&[])
            }
            // A follow-up for the next response block repeats the request with its body,
            // unless the body went out in blocks, as in RFC 7959 §3.3's example.
            (None, Some(block)) if block.num > 0 && payload.len() > self.block_size() => &[],
            _ => payload,
        };
        writer.payload(body)?;
        Ok(writer.finish())
    }

    fn block_size(&self) -> usize {
        1usize << (self.config.block_szx.min(option::MAX_SZX) + 4)
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
                    if confirmable {
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
                    Some(Disposition::Deferred) => {}
                    // Unknown token or unprocessable: RST, which also ends a stale
                    // observation at the server (RFC 7641 §3.6).
                    None => self.push_control(MessageType::Reset, header.message_id),
                }
            }
        }
    }

    fn remember_message_id(&mut self, message_id: u16) {
        if self.recent_ids.is_full() {
            self.recent_ids.pop_front();
        }
        let _ = self.recent_ids.push_back(message_id);
    }

    fn handle_ack(&mut self, message: &Message<'_>, now: Instant) {
        let Some(exchange) = self.exchange else {
            return;
        };
        let matches = exchange.message_id == message.header.message_id
            && matches!(exchange.phase, Phase::AwaitingAck { .. });
        if !matches {
            // A duplicate or late ACK of a message already settled.
            self.stats.duplicates += 1;
            return;
        }
        if message.header.code.is_empty() {
            if let Some(exchange) = self.exchange.as_mut() {
                exchange.phase = Phase::AwaitingResponse {
                    deadline: now.plus_millis(self.config.response_timeout_ms),
                };
            }
        } else if message.header.token == exchange.token && !has_unknown_critical_option(message) {
            // Deferred piggybacked responses are dropped; the CON's retransmission brings
            // them again from the gateway's duplicate cache.
            let _ = self.handle_response(message, now);
        }
    }

    /// A response matching the exchange in flight.
    fn handle_response(&mut self, message: &Message<'_>, now: Instant) -> Disposition {
        let Some(exchange) = self.exchange else {
            return Disposition::Processed;
        };
        let code = message.header.code;
        if let Some(sent) = exchange.block1.filter(|_| !exchange.caller_block1) {
            let acknowledged = message
                .option(option::BLOCK1)
                .and_then(BlockValue::from_option);
            if code == Code::CONTINUE {
                let Some(acknowledged) = acknowledged.filter(|b| b.num == sent.num && sent.more)
                else {
                    self.fail_exchange(ExchangeError::BlockwiseMismatch, now);
                    return Disposition::Processed;
                };
                // The server may ask for smaller blocks from now on (RFC 7959 §2.5).
                let szx = acknowledged.szx.min(sent.szx);
                let next_offset = sent.offset() + sent.size();
                self.next_block1(next_offset, szx);
                return Disposition::Processed;
            }
            if code == Code::REQUEST_ENTITY_TOO_LARGE
                && sent.num == 0
                && let Some(smaller) = acknowledged.filter(|b| b.szx < sent.szx)
            {
                // RFC 7959 §2.9.3: start over with the size the server names.
                self.next_block1(0, smaller.szx);
                return Disposition::Processed;
            }
        }
        self.take_response_block(message, now, exchange)
    }

    /// Moves the exchange to the request block starting at `offset`.
    fn next_block1(&mut self, offset: usize, szx: u8) {
        let total = match self.queue.front() {
            Some(head) => usize::from(head.payload_len),
            None => 0,
        };
        let size = 1usize << (szx + 4);
        let num = (offset / size) as u32;
        let message_id = self.fresh_message_id();
        let token = self.fresh_token();
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.block1 = Some(BlockValue {
                num,
                more: offset + size < total,
                szx,
            });
            exchange.message_id = message_id;
            exchange.token = token;
            exchange.phase = Phase::Unsent;
        }
    }

    /// Stores a (block of a) response body and either completes the exchange or asks
    /// for the next block.
    fn take_response_block(
        &mut self,
        message: &Message<'_>,
        now: Instant,
        exchange: Exchange,
    ) -> Disposition {
        let block = message
            .option(option::BLOCK2)
            .and_then(BlockValue::from_option);
        let first = exchange.received == 0 && exchange.block2.is_none_or(|b| b.num == 0);
        let streamed = exchange.delivery == BodyDelivery::Streamed;
        match self.body_state {
            BodyState::Free => {}
            BodyState::Filling if !streamed => {}
            _ => return Disposition::Deferred,
        }
        if let Some(block) = block {
            // The block must be the one asked for, and a next one must be expressible.
            if block.offset() != exchange.received
                || (block.more && block.num >= option::MAX_BLOCK_NUM)
            {
                self.fail_exchange(ExchangeError::BlockwiseMismatch, now);
                return Disposition::Processed;
            }
            // Blocks of two versions of a resource must not be mixed (RFC 7959 §2.4).
            let etag = message.option(option::ETAG).unwrap_or(&[]);
            let expected = exchange
                .etag
                .as_ref()
                .and_then(|stored| stored.get(..usize::from(exchange.etag_len)));
            if expected.is_some_and(|expected| expected != etag) {
                self.fail_exchange(ExchangeError::BlockwiseMismatch, now);
                return Disposition::Processed;
            }
            if !streamed && first {
                let announced = message.uint_option(option::SIZE2).unwrap_or(0) as usize;
                if announced > RESPONSE_BYTES {
                    self.fail_exchange(ExchangeError::ResponseTooLarge, now);
                    return Disposition::Processed;
                }
            }
        }
        // The options are kept from the first block, or from each block when streamed.
        if first || streamed {
            self.body.clear();
            if self.body.extend_from_slice(message.raw_options()).is_err() {
                self.fail_exchange(ExchangeError::ResponseTooLarge, now);
                return Disposition::Processed;
            }
            self.body_options_len = message.raw_options().len();
        }
        if self.body.extend_from_slice(message.payload).is_err() {
            self.fail_exchange(ExchangeError::ResponseTooLarge, now);
            return Disposition::Processed;
        }
        let received = exchange.received + message.payload.len();
        let more = block.is_some_and(|b| b.more);
        if streamed {
            self.body_state = BodyState::Pending;
            self.push_event(EventRecord::ResponseBlock {
                id: exchange.id,
                code: message.header.code,
                offset: exchange.received,
                last: !more,
            });
        } else {
            self.body_state = BodyState::Filling;
        }
        match block {
            Some(block) if more => {
                let message_id = self.fresh_message_id();
                // Each block request has its own token, so that a late answer to an
                // earlier block never passes for this one.
                let token = self.fresh_token();
                let etag = message.option(option::ETAG).unwrap_or(&[]);
                let sequence = message.uint_option(option::OBSERVE);
                if let Some(current) = self.exchange.as_mut() {
                    current.received = received;
                    current.block1 = None;
                    current.block2 = Some(BlockValue {
                        num: block.num + 1,
                        more: false,
                        szx: block.szx,
                    });
                    if first {
                        current.observe_sequence = sequence;
                        let mut stored = [0u8; 8];
                        let len = etag.len().min(8);
                        if let (Some(dst), Some(src)) = (stored.get_mut(..len), etag.get(..len)) {
                            dst.copy_from_slice(src);
                        }
                        current.etag = Some(stored);
                        current.etag_len = len as u8;
                    }
                    current.message_id = message_id;
                    current.token = token;
                    current.phase = Phase::Unsent;
                }
            }
            _ => self.complete_exchange(message, exchange, now),
        }
        Disposition::Processed
    }

    /// The response is complete in the body buffer: report it and free the slot.
    fn complete_exchange(&mut self, message: &Message<'_>, exchange: Exchange, now: Instant) {
        let code = message.header.code;
        let id = exchange.id;
        let silence_ms = self.config.observe_silence_ms;
        let event = match exchange.purpose {
            Purpose::Request => {
                self.pop_queue_head();
                // A streamed body went out block by block as it came.
                (exchange.delivery == BodyDelivery::Whole)
                    .then_some(EventRecord::Response { id, code })
            }
            Purpose::Register => self.complete_registration(message, &exchange, now),
            Purpose::NotificationBlocks { sequence } => {
                self.observation.as_mut().and_then(|observation| {
                    observation.settle(now, silence_ms);
                    (!observation.cancelled).then_some(EventRecord::Notification {
                        id,
                        sequence,
                        code,
                    })
                })
            }
            Purpose::Deregister => {
                self.observation = None;
                None
            }
        };
        match event {
            Some(event) => {
                self.body_state = BodyState::Pending;
                self.push_event(event);
            }
            None if exchange.delivery == BodyDelivery::Streamed => {}
            None => self.discard_body(),
        }
        self.exchange = None;
    }

    /// Settles the observation after the answer to a (re-)registration; returns the event
    /// the caller should see, if any.
    fn complete_registration(
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
                wanted.then_some(EventRecord::Notification { id, sequence, code })
            }
            // Answered without Observe, or with an error: the resource is not observed.
            _ => {
                self.observation = None;
                wanted.then_some(EventRecord::Response { id, code })
            }
        }
    }

    fn discard_body(&mut self) {
        self.body_state = BodyState::Free;
        self.body.clear();
        self.body_options_len = 0;
    }

    fn pop_queue_head(&mut self) {
        if let Some(head) = self.queue.pop_front() {
            let len = head.len().min(self.arena.len());
            self.arena.copy_within(len.., 0);
            self.arena.truncate(self.arena.len() - len);
        }
    }

    fn fail_exchange(&mut self, error: ExchangeError, now: Instant) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        if self.body_state == BodyState::Filling {
            self.discard_body();
        }
        match exchange.purpose {
            Purpose::Request => {
                self.pop_queue_head();
                self.push_event(EventRecord::Failed {
                    id: exchange.id,
                    error,
                });
            }
            Purpose::Register | Purpose::NotificationBlocks { .. } => {
                if let Some(observation) = self.observation.as_mut() {
                    observation.settle(now, self.config.observe_silence_ms);
                }
                self.push_event(EventRecord::Failed {
                    id: exchange.id,
                    error,
                });
            }
            // The server forgets the observation on its own once notifications go
            // unacknowledged; nothing to report.
            Purpose::Deregister => self.observation = None,
        }
    }

    /// A message carrying the observation's token outside an exchange for it.
    fn handle_notification(&mut self, message: &Message<'_>, now: Instant) -> Disposition {
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
        let stored = !busy
            && room
            && block.is_none_or(|b| b.num == 0)
            && self.store_body(message.raw_options(), message.payload);
        if !stored {
            self.stats.missed_notifications += 1;
            if busy {
                if let Some(observation) = self.observation.as_mut() {
                    observation.missed = true;
                }
            } else {
                self.set_observation_state(ObservationState::RegistrationDue);
            }
            return Disposition::Processed;
        }
        let next_state = match block {
            Some(block) if more => {
                self.body_state = BodyState::Filling;
                ObservationState::FetchDue {
                    sequence,
                    next: BlockValue {
                        num: 1,
                        more: false,
                        szx: block.szx,
                    },
                }
            }
            _ => {
                self.body_state = BodyState::Pending;
                self.push_event(EventRecord::Notification {
                    id,
                    sequence,
                    code: message.header.code,
                });
                ObservationState::Waiting {
                    deadline: now.plus_millis(self.config.observe_silence_ms),
                }
            }
        };
        if let Some(observation) = self.observation.as_mut() {
            observation.last = Some((sequence, now));
            observation.state = next_state;
        }
        Disposition::Processed
    }

    fn set_observation_state(&mut self, state: ObservationState) {
        if let Some(observation) = self.observation.as_mut() {
            observation.state = state;
        }
    }

    /// Puts a response's options and body into the empty buffer; false if they do not fit.
    fn store_body(&mut self, options: &[u8], payload: &[u8]) -> bool {
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

/// Encodes `(number, value)` pairs in ascending order into `out`; returns the bytes used.
fn encode_options<const N: usize>(
    out: &mut Vec<u8, N>,
    options: &[(u16, &[u8])],
) -> Result<usize, RequestError> {
    let start = out.len();
    let mut previous = 0u16;
    for &(number, value) in options {
        if number < previous {
            return Err(RequestError::OptionsOutOfOrder);
        }
        if option::ENGINE_MANAGED.contains(&number) {
            return Err(RequestError::EngineManagedOption);
        }
        let (head, head_len) =
            option_head(number - previous, value.len()).ok_or(RequestError::TooLarge)?;
        out.extend_from_slice(head.get(..head_len).unwrap_or(&[]))
            .map_err(|_| RequestError::TooLarge)?;
        out.extend_from_slice(value)
            .map_err(|_| RequestError::TooLarge)?;
        previous = number;
    }
    Ok(out.len() - start)
}

fn has_unknown_critical_option(message: &Message<'_>) -> bool {
    message
        .options()
        .any(|(number, _)| option::is_critical(number) && !option::is_known_in_response(number))
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
        // request may carry a caller's Block1 or starting Block2 (files).
        assert!(bookkeeping <= 864, "bookkeeping grew to {bookkeeping} B");
        assert!(total <= 3_936, "the engine grew to {total} B");
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
