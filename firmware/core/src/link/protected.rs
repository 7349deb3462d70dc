//! The token's end of the protected link to its gateway ([`ProtectedLink`]): EDHOC (RFC 9528)
//! to agree on keys, then OSCORE (RFC 8613) on every CoAP request and response, between the
//! Matrix client ([`crate::matrix::Token`]) and the CoAP engine ([`crate::coap::Client`]).
//!
//! This module owns the token's pairing material (its identity and the gateway credential it
//! pins), the handshake, the OSCORE security context and its record on flash, and what ties
//! each outstanding exchange to the Partial IVs its request went out with.
//!
//! # Where it sits
//!
//! The CoAP engine keeps doing retransmission, block-wise transfers and Observe on plain
//! messages; the link rewrites datagrams on their way out ([`Link::outgoing`]: a request
//! becomes its OSCORE form) and in ([`Link::incoming`]: a protected response is verified and
//! decrypted before the engine sees it). The EDHOC messages are ordinary engine requests to
//! `/.well-known/edhoc` (RFC 9528 appendix A.2) which the link leaves unprotected; message_3
//! goes ahead of any waiting request ([`Client::request_first`]).
//!
//! # Crash safety (RFC 8613 appendix B.1.1)
//!
//! The context lives on flash in one record ([`record::LINK`](crate::store::record::LINK)):
//! the derived keys and ids, and a high-water mark of the sender sequence number, sealed with
//! the storage key (the token hands the link a sealing store). No number
//! at or above the stored mark is used before a higher mark is on flash, and after a power
//! cut numbering resumes at the mark, so a nonce is never used twice. A token that boots with
//! a stored context uses it without a new handshake; a gateway that lost it answers 4.01
//! unprotected, and the link runs EDHOC again by itself.
//!
//! # Retransmissions
//!
//! Every transmission of a request, retransmissions included, is protected afresh with a
//! new sequence number, so the wire never shows one Partial IV twice. The gateway answers
//! whichever copy it processed, so a response is checked against each Partial IV its
//! request went out with ([`MAX_TRANSMISSIONS`] kept per exchange).

use core::fmt;

use heapless::Vec;
use jeton_link::oscore::{ECHO_OPTION, OSCORE_OPTION, RECORD_LEN};
use jeton_link::{
    ContextRecord, Credential, HandshakeError, Identity, Initiator, OptionList, OscoreError,
    PartialIv, RequestBinding, SecurityContext, encode_connection_id,
};
use zeroize::Zeroize;

pub use jeton_link::pairing::KeyFile;

use super::{Incoming, Link, LinkStats, Outgoing};

use crate::coap::message::{Code, Header, Message, MessageType, MessageWriter, Token};
use crate::coap::{Client, Event, Request, RequestId, option};
use crate::platform::{Instant, Rng};
use crate::store::{Store, StoreError, record};

/// Exchanges whose request bindings are kept: the one in flight, the observation, and
/// late answers to ones before.
pub const MAX_EXCHANGES: usize = 4;
/// Partial IVs kept per exchange: its first transmission and retransmissions.
pub const MAX_TRANSMISSIONS: usize = 6;
/// How long after a failed handshake the next one starts.
pub const HANDSHAKE_RETRY_MS: u64 = 10_000;
/// The largest datagram the link writes or rewrites.
pub const MAX_DATAGRAM: usize = 1280;

/// The Content-Format of EDHOC requests on CoAP: application/cid-edhoc+cbor-seq (RFC 9528
/// §10.9).
const CONTENT_FORMAT_CID_EDHOC: u8 = 65;
/// The path of the EDHOC resource.
const EDHOC_PATH: [&[u8]; 2] = [b".well-known", b"edhoc"];
/// The CBOR `true` that marks message_1 on CoAP (no connection id ahead of it).
const CBOR_TRUE: u8 = 0xF5;
/// What a gateway's OSCORE layer answers, unprotected, to a request it cannot verify
/// (RFC 8613 §8.2): 4.01 for an unknown kid or a replay, 4.00 when decryption fails (its
/// context under that kid is another token's, made after it lost this one's), 4.02 for a
/// malformed OSCORE option.
const OSCORE_ERRORS: [Code; 3] = [Code::new(4, 0), Code::new(4, 1), Code::new(4, 2)];

/// Why the link could not be (or stay) established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// EDHOC failed on the token's side; with [`HandshakeError::UnexpectedCredential`] or
    /// [`HandshakeError::AuthenticationFailed`] on message_2, the gateway is not the one
    /// this token was paired with.
    Handshake(HandshakeError),
    /// The gateway refused the handshake with this CoAP code (`class * 100 + detail`): it
    /// does not know this token's credential (4.01 or 4.03), or failed (5.xx).
    Refused(u16),
    /// OSCORE could not protect a request.
    Oscore(OscoreError),
    /// The context record could not be written or read.
    Store(StoreError),
    /// The gateway could not start a handshake (this CoAP code): it may run without the
    /// link, or be failing.
    Unavailable(u16),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Handshake(
                HandshakeError::UnexpectedCredential | HandshakeError::AuthenticationFailed,
            ) => f.write_str(
                "the gateway's key is not the one this token was paired with (handshake refused)",
            ),
            LinkError::Handshake(error) => write!(f, "the link handshake failed: {error}"),
            LinkError::Refused(code) => write!(
                f,
                "the gateway refused this token's credential ({}.{:02}): pair the token with it",
                code / 100,
                code % 100
            ),
            LinkError::Oscore(error) => write!(f, "the link could not protect a message: {error}"),
            LinkError::Store(error) => write!(f, "the link context could not be stored: {error}"),
            LinkError::Unavailable(code) => write!(
                f,
                "the gateway could not start a link handshake ({}.{:02})",
                code / 100,
                code % 100
            ),
        }
    }
}

impl core::error::Error for LinkError {}

/// Where the handshake stands.
// No heap to box into: the EDHOC state is as large as lakers makes it, and it takes the
// place of the others rather than adding to them.
#[allow(clippy::large_enum_variant)]
enum State {
    /// No pairing material: plain CoAP, as before the link existed.
    Plain,
    /// A handshake is to start (at `not_before`, after a failure).
    Due { not_before: Instant },
    /// The gateway answered message_1 with a 4.01 and an Echo value (RFC 9175, the return
    /// routability check of RFC 9528 §9.7): message_1 is to go again at once, with it.
    Challenged { echo: Vec<u8, MAX_ECHO> },
    /// message_1 is out (`echoed`: with the gateway's Echo value).
    AwaitingMessage2 {
        id: RequestId,
        initiator: Initiator,
        echoed: bool,
    },
    /// message_2 verified; `C_R || message_3` is to be queued.
    Message3Due {
        payload: Vec<u8, EDHOC_PAYLOAD_BYTES>,
        context: SecurityContext,
    },
    /// message_3 is out; the context is ready once the gateway confirms it.
    AwaitingConfirmation {
        id: RequestId,
        context: SecurityContext,
    },
    /// The context protects every exchange.
    Ready,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Plain => "Plain",
            State::Due { .. } => "Due",
            State::Challenged { .. } => "Challenged",
            State::AwaitingMessage2 { .. } => "AwaitingMessage2",
            State::Message3Due { .. } => "Message3Due",
            State::AwaitingConfirmation { .. } => "AwaitingConfirmation",
            State::Ready => "Ready",
        })
    }
}

/// The Partial IVs one exchange's request went out with.
#[derive(Clone, Debug)]
struct Exchange {
    token: Token,
    /// A (re-)registration of the observation: its notifications come for long.
    observe: bool,
    sequences: Vec<u64, MAX_TRANSMISSIONS>,
    /// The Partial IV of the last notification accepted (they must increase).
    last_notification: Option<u64>,
}

/// The protected link: see the [module documentation](self).
pub struct ProtectedLink {
    identity: Option<Identity>,
    gateway: Option<Credential>,
    state: State,
    context: Option<SecurityContext>,
    exchanges: Vec<Exchange, MAX_EXCHANGES>,
    /// The token of the EDHOC request in flight: its answer passes unprotected.
    edhoc_token: Option<Token>,
    /// A context was established since the last [`Link::take_established`].
    established: bool,
    stats: LinkStats,
}

impl fmt::Debug for ProtectedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedLink")
            .field("state", &self.state)
            .field("context", &self.context)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// The entry points the token calls are out of line (`#[inline(never)]`): the handshake's and
// OSCORE's buffers then take stack only while they run, not in every frame of the Matrix code
// that calls them, and a token's stack is sized by its deepest path.
impl Link for ProtectedLink {
    type Material = Option<KeyFile>;
    type Error = LinkError;
    const PROTECTS: bool = true;

    /// A link that protects nothing until [`Link::load`] gives it pairing material.
    fn unloaded() -> Self {
        ProtectedLink::plain()
    }

    /// Gives the [unloaded](Link::unloaded) link a token boots with this pairing material (`None`:
    /// it stays plain CoAP), resuming the context stored in `store` if there is one. In place,
    /// so that no second link passes through the boot's stack.
    #[inline(never)]
    fn load<S: Store>(
        &mut self,
        material: Option<KeyFile>,
        store: &mut S,
        scratch: &mut [u8],
        now: Instant,
    ) -> Result<(), LinkError> {
        let Some(material) = material else {
            return Ok(());
        };
        let Some(gateway) = material.peer else {
            return Err(LinkError::Handshake(HandshakeError::MalformedCredential));
        };
        self.gateway = Some(gateway);
        self.identity = Some(material.identity);
        self.context = load_context(store, scratch)?;
        self.state = if self.context.is_some() {
            State::Ready
        } else {
            State::Due { not_before: now }
        };
        Ok(())
    }

    /// Whether requests can go out: a context is ready, or the link is off.
    fn is_ready(&self) -> bool {
        matches!(self.state, State::Plain | State::Ready)
    }

    /// Whether the link protects the exchanges (false: plain CoAP).
    fn is_enabled(&self) -> bool {
        !matches!(self.state, State::Plain)
    }

    /// True once after each new context: the gateway holds none of the token's earlier
    /// per-context state (its access token, its observation).
    fn take_established(&mut self) -> bool {
        core::mem::take(&mut self.established)
    }

    /// The counters.
    fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The OSCORE sender id (the kid of the token's requests), once a context exists.
    fn sender_id(&self) -> Option<&[u8]> {
        self.context
            .as_ref()
            .map(|context| context.sender_id().as_bytes())
    }

    /// When [`Link::plan`] next has something to do.
    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Due { not_before } => Some(not_before),
            _ => None,
        }
    }

    /// Queues the handshake's next request when one is due.
    #[inline(never)]
    fn plan<R: Rng, C: Rng, const Q: usize, const P: usize>(
        &mut self,
        coap: &mut Client<C, Q, P>,
        rng: &mut R,
        now: Instant,
    ) -> Result<(), LinkError> {
        if let State::Message3Due { payload, .. } = &self.state {
            let Ok(id) = coap.request_first(&edhoc_request(payload)) else {
                // The queue is full: the next input tries again.
                return Ok(());
            };
            let retry = State::Due { not_before: now };
            if let State::Message3Due { context, .. } = core::mem::replace(&mut self.state, retry) {
                self.state = State::AwaitingConfirmation { id, context };
            }
            return Ok(());
        }
        let echo = match &self.state {
            State::Due { not_before } if now >= *not_before => None,
            State::Challenged { echo } => Some(echo.clone()),
            _ => return Ok(()),
        };
        if self.identity.is_none() {
            return Ok(());
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let started = Initiator::start(seed);
        seed.zeroize();
        let retry = State::Due {
            not_before: now.plus_millis(HANDSHAKE_RETRY_MS),
        };
        let (initiator, message_1) = match started {
            Ok(started) => started,
            Err(error) => {
                self.state = retry;
                return Err(LinkError::Handshake(error));
            }
        };
        let mut payload: Vec<u8, EDHOC_PAYLOAD_BYTES> = Vec::new();
        let queued = payload
            .push(CBOR_TRUE)
            .ok()
            .and_then(|()| payload.extend_from_slice(message_1.as_bytes()).ok())
            .and_then(|()| {
                let mut options = EDHOC_OPTIONS;
                let len = match echo.as_deref() {
                    Some(value) => {
                        options[3] = (ECHO_OPTION, value);
                        4
                    }
                    None => 3,
                };
                let options = options.get(..len).unwrap_or_default();
                let request = Request::new(Code::POST, options, &payload);
                coap.request_first(&request).ok()
            });
        self.state = match queued {
            Some(id) => State::AwaitingMessage2 {
                id,
                initiator,
                echoed: echo.is_some(),
            },
            // The queue is full: try again later.
            None => retry,
        };
        Ok(())
    }

    /// Whether `event` answers one of the link's own requests.
    fn owns(&self, event: &Event<'_>) -> bool {
        let id = match event {
            Event::Response { id, .. }
            | Event::ResponseBlock { id, .. }
            | Event::Notification { id, .. }
            | Event::Failed { id, .. } => *id,
        };
        match &self.state {
            State::AwaitingMessage2 { id: own, .. }
            | State::AwaitingConfirmation { id: own, .. } => *own == id,
            _ => false,
        }
    }

    /// Takes the answer to one of the link's requests ([`Link::owns`]); what it asks to
    /// send next goes out from [`Link::plan`].
    #[inline(never)]
    fn on_event<S: Store>(
        &mut self,
        event: Event<'_>,
        store: &mut S,
        now: Instant,
    ) -> Result<(), LinkError> {
        // Whatever happens below but success starts over after a pause.
        let state = core::mem::replace(
            &mut self.state,
            State::Due {
                not_before: now.plus_millis(HANDSHAKE_RETRY_MS),
            },
        );
        self.edhoc_token = None;
        let Event::Response {
            code,
            body,
            options,
            ..
        } = event
        else {
            // Timed out or reset: try again after the pause.
            return Ok(());
        };
        match state {
            State::AwaitingMessage2 {
                initiator, echoed, ..
            } => {
                // Asked to prove its address: once, at once (a second challenge means the
                // value did not help, so the pause above applies).
                let mut options = options;
                let echo = options.find(|(number, _)| *number == ECHO_OPTION);
                if let (Code::UNAUTHORIZED, false, Some((_, echo))) = (code, echoed, echo)
                    && let Ok(echo) = Vec::from_slice(echo)
                {
                    self.state = State::Challenged { echo };
                    return Ok(());
                }
                if code != Code::CHANGED {
                    return Err(LinkError::Unavailable(code_number(code)));
                }
                let (Some(identity), Some(gateway)) = (&self.identity, &self.gateway) else {
                    return Ok(());
                };
                let (message_3, material) = initiator
                    .process_message_2(identity, gateway, body)
                    .map_err(LinkError::Handshake)?;
                let context = material
                    .security_context()
                    .map_err(LinkError::Oscore)?
                    .with_persisted_sequence();
                let mut c_r = [0u8; 9];
                let c_r_len = encode_connection_id(material.sender_id().as_bytes(), &mut c_r)
                    .map_err(LinkError::Handshake)?;
                let mut payload: Vec<u8, EDHOC_PAYLOAD_BYTES> = Vec::new();
                payload
                    .extend_from_slice(c_r.get(..c_r_len).unwrap_or_default())
                    .and_then(|()| payload.extend_from_slice(message_3.as_bytes()))
                    .map_err(|_| LinkError::Handshake(HandshakeError::BufferTooSmall))?;
                self.state = State::Message3Due { payload, context };
                Ok(())
            }
            State::AwaitingConfirmation { context, .. } => {
                if code.class() != 2 {
                    return Err(LinkError::Refused(code_number(code)));
                }
                save_context(store, &context, context.next_sequence())?;
                self.context = Some(context);
                self.exchanges.clear();
                self.state = State::Ready;
                self.established = true;
                self.stats.handshakes = self.stats.handshakes.saturating_add(1);
                Ok(())
            }
            other => {
                self.state = other;
                Ok(())
            }
        }
    }

    /// Rewrites a datagram the engine wrote into `datagram[..len]` for the wire: a request
    /// becomes its OSCORE form (in place). EDHOC requests, empty ACKs and RSTs go as they
    /// are. `scratch` must hold two datagrams ([`MAX_DATAGRAM`] each).
    #[inline(never)]
    fn outgoing<S: Store>(
        &mut self,
        datagram: &mut [u8],
        len: usize,
        store: &mut S,
        scratch: &mut [u8],
    ) -> Result<Outgoing, LinkError> {
        if !self.is_enabled() {
            return Ok(Outgoing::Send(len));
        }
        let too_large = LinkError::Oscore(OscoreError::BufferTooSmall);
        let (sealed, rewritten) = scratch
            .get_mut(..2 * MAX_DATAGRAM)
            .ok_or(too_large)?
            .split_at_mut(MAX_DATAGRAM);
        let (out_len, token, observe, sequence) = {
            let Some(Ok(message)) = datagram.get(..len).map(Message::decode) else {
                return Ok(Outgoing::Send(len));
            };
            let header = message.header;
            if !header.code.is_request() {
                return Ok(Outgoing::Send(len));
            }
            if is_edhoc(&message) {
                self.edhoc_token = Some(header.token);
                self.count_handshake_bytes(len);
                return Ok(Outgoing::Send(len));
            }
            let (State::Ready, Some(context)) = (&self.state, self.context.as_mut()) else {
                self.stats.held = self.stats.held.saturating_add(1);
                return Ok(Outgoing::Hold);
            };
            if let Some(mark) = context.sequence_to_persist() {
                save_context(store, context, mark)?;
                context.sequence_persisted(mark);
            }
            let mut options = OptionList::new();
            for (number, value) in message.options() {
                options.push(number, value).map_err(LinkError::Oscore)?;
            }
            let observe = options.get(option::OBSERVE).is_some();
            let inner = jeton_link::Message {
                code: header.code.0,
                options,
                payload: message.payload,
            };
            let sequence = context.next_sequence();
            let (outer, _) = context
                .protect_request(&inner, sealed)
                .map_err(LinkError::Oscore)?;
            let out_len = write(rewritten, &header, &outer).map_err(|_| too_large)?;
            (out_len, header.token, observe, sequence)
        };
        datagram
            .get_mut(..out_len)
            .ok_or(too_large)?
            .copy_from_slice(rewritten.get(..out_len).unwrap_or_default());
        self.remember(token, observe, sequence);
        self.stats.protected = self.stats.protected.saturating_add(1);
        Ok(Outgoing::Send(out_len))
    }

    /// Checks a datagram from the gateway: a protected response is verified and decrypted
    /// into `scratch[..n]` ([`Incoming::Rewritten`]); an unprotected one passes only if it
    /// is empty (ACK, RST) or answers an EDHOC request. An unprotected 4.00, 4.01 or 4.02 to
    /// a protected request means the gateway lost the context: the link starts a new
    /// handshake and asks the engine to fail the exchange ([`Incoming::Fail`]), so the layer
    /// above retries it under the new context.
    #[inline(never)]
    fn incoming(&mut self, datagram: &[u8], scratch: &mut [u8], now: Instant) -> Incoming {
        if !self.is_enabled() {
            return Incoming::Pass;
        }
        let Ok(message) = Message::decode(datagram) else {
            // The engine counts it and answers a malformed CON with RST.
            return Incoming::Pass;
        };
        let header = message.header;
        if header.code.is_empty() {
            return Incoming::Pass;
        }
        let oscore = message.option(OSCORE_OPTION);
        if oscore.is_none() && self.edhoc_token == Some(header.token) {
            self.count_handshake_bytes(datagram.len());
            return Incoming::Pass;
        }
        let Some(exchange) = self.exchanges.iter_mut().find(|e| e.token == header.token) else {
            return self.reject();
        };
        let Some(oscore) = oscore else {
            if OSCORE_ERRORS.contains(&header.code)
                && header.message_type == MessageType::Acknowledgement
            {
                self.context = None;
                self.exchanges.clear();
                self.state = State::Due { not_before: now };
                return Incoming::Fail(header.message_id);
            }
            return self.reject();
        };
        let Some(context) = self.context.as_mut() else {
            return self.reject();
        };
        let notification = match jeton_link::OscoreOption::parse(oscore) {
            Ok(parsed) => parsed.piv.map(piv_number),
            Err(_) => return self.reject(),
        };
        if let (true, Some(number), Some(last)) =
            (exchange.observe, notification, exchange.last_notification)
            && number < last
        {
            // An older notification, replayed or reordered. The last one again is a
            // retransmission (its ACK was lost, or the engine deferred it): it passes, and the
            // engine recognises the duplicate by its message id.
            return self.reject();
        }
        let mut options = OptionList::new();
        for (number, value) in message.options() {
            if options.push(number, value).is_err() {
                return self.reject();
            }
        }
        let outer = jeton_link::Message {
            code: header.code.0,
            options,
            payload: message.payload,
        };
        let Some((rewritten, plain)) = scratch
            .get_mut(..2 * MAX_DATAGRAM)
            .map(|both| both.split_at_mut(MAX_DATAGRAM))
        else {
            return self.reject();
        };
        let mut verified = None;
        for sequence in exchange.sequences.iter().rev() {
            let binding = RequestBinding {
                kid: *context.sender_id(),
                piv: PartialIv::from_sequence(*sequence),
            };
            if let Ok(inner) = context.unprotect_response(&binding, &outer, plain) {
                let mut inner = inner;
                if inner.options.get(option::OBSERVE).is_none()
                    && let Some(observe) = message.option(option::OBSERVE)
                {
                    // Observe is read from the outer message (RFC 8613 §4.1.3.5.2).
                    if inner.options.insert(option::OBSERVE, observe).is_err() {
                        break;
                    }
                }
                verified = write(rewritten, &header, &inner).ok();
                break;
            }
        }
        plain.zeroize();
        let Some(len) = verified else {
            return self.reject();
        };
        if exchange.observe && notification.is_some() {
            exchange.last_notification = notification;
        }
        self.stats.verified = self.stats.verified.saturating_add(1);
        Incoming::Rewritten(len)
    }
}

impl ProtectedLink {
    /// A link that protects nothing (no pairing material).
    pub const fn plain() -> ProtectedLink {
        ProtectedLink {
            identity: None,
            gateway: None,
            state: State::Plain,
            context: None,
            exchanges: Vec::new(),
            edhoc_token: None,
            established: false,
            stats: LinkStats::new(),
        }
    }

    fn reject(&mut self) -> Incoming {
        self.stats.rejected = self.stats.rejected.saturating_add(1);
        Incoming::Drop
    }

    fn count_handshake_bytes(&mut self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.stats.handshake_bytes = self.stats.handshake_bytes.saturating_add(len);
    }

    /// Notes that a request with this token went out with this sequence number.
    fn remember(&mut self, token: Token, observe: bool, sequence: u64) {
        if let Some(exchange) = self.exchanges.iter_mut().find(|e| e.token == token) {
            if exchange.sequences.is_full() {
                exchange.sequences.remove(0);
            }
            let _ = exchange.sequences.push(sequence);
            exchange.observe |= observe;
            return;
        }
        if self.exchanges.is_full() {
            // The oldest exchange goes, but the observation only for a new observation:
            // its notifications keep coming long after its request.
            let victim = self
                .exchanges
                .iter()
                .position(|e| !e.observe || observe)
                .unwrap_or(0);
            self.exchanges.remove(victim);
        }
        let mut sequences = Vec::new();
        let _ = sequences.push(sequence);
        let _ = self.exchanges.push(Exchange {
            token,
            observe,
            sequences,
            last_notification: None,
        });
    }
}

/// Room for `C_R || message_3` or `true || message_1` (RFC 9528 appendix A.2).
const EDHOC_PAYLOAD_BYTES: usize = 160;

/// The number a Partial IV encodes (big-endian, at most 5 bytes).
fn piv_number(piv: &[u8]) -> u64 {
    piv.iter().fold(0, |n, byte| n << 8 | u64::from(*byte))
}

/// The largest Echo value (RFC 9175 §2.2.1).
const MAX_ECHO: usize = 40;

/// The options of a POST to the gateway's EDHOC resource, the last a place for an Echo value.
const EDHOC_OPTIONS: [(u16, &[u8]); 4] = [
    (option::URI_PATH, EDHOC_PATH[0]),
    (option::URI_PATH, EDHOC_PATH[1]),
    (option::CONTENT_FORMAT, &[CONTENT_FORMAT_CID_EDHOC]),
    (ECHO_OPTION, &[]),
];

/// A POST of an EDHOC message to the gateway's EDHOC resource.
fn edhoc_request(payload: &[u8]) -> Request<'_> {
    Request::new(Code::POST, &EDHOC_OPTIONS[..3], payload)
}

/// Whether a request goes to the EDHOC resource (and so stays unprotected).
fn is_edhoc(message: &Message<'_>) -> bool {
    let mut path = message
        .options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| value);
    path.next() == Some(EDHOC_PATH[0])
        && path.next() == Some(EDHOC_PATH[1])
        && path.next().is_none()
}

/// Writes a message with `header`'s type, id and token and `body`'s code, options and
/// payload; returns its length.
fn write(
    out: &mut [u8],
    header: &Header,
    body: &jeton_link::Message<'_>,
) -> Result<usize, crate::coap::message::EncodeError> {
    let mut writer = MessageWriter::new(
        out,
        &Header {
            code: Code(body.code),
            ..*header
        },
    )?;
    for (number, value) in body.options.iter() {
        writer.option(number, value)?;
    }
    writer.payload(body.payload)?;
    Ok(writer.finish())
}

/// The class and detail of a CoAP code as a number (`4.01` is 401).
fn code_number(code: Code) -> u16 {
    u16::from(code.class()) * 100 + u16::from(code.detail())
}

/// The stored context: its record, then the sequence number's high-water mark.
const STORED_LEN: usize = RECORD_LEN + 8;

fn save_context<S: Store>(
    store: &mut S,
    context: &SecurityContext,
    mark: u64,
) -> Result<(), LinkError> {
    let mut bytes = [0u8; STORED_LEN];
    let (record, tail) = bytes.split_at_mut(RECORD_LEN);
    record.copy_from_slice(context.to_record().as_bytes());
    tail.copy_from_slice(&mark.to_be_bytes());
    let result = store.put(record::LINK, &bytes).map_err(LinkError::Store);
    bytes.zeroize();
    result
}

/// The context stored by [`save_context`], resuming at its mark; `None` when there is none
/// or it is unreadable (a fresh handshake replaces it).
fn load_context<S: Store>(
    store: &mut S,
    scratch: &mut [u8],
) -> Result<Option<SecurityContext>, LinkError> {
    let Some(len) = (match store.get(record::LINK, scratch) {
        Err(StoreError::Unreadable) => None,
        stored => stored.map_err(LinkError::Store)?,
    }) else {
        return Ok(None);
    };
    let context = scratch
        .get(..len)
        .filter(|_| len == STORED_LEN)
        .and_then(|bytes| bytes.split_first_chunk::<RECORD_LEN>())
        .and_then(|(record, mark)| {
            let mark = u64::from_be_bytes(mark.try_into().ok()?);
            let record = ContextRecord::from_bytes(record);
            // The challenge only matters to a server; the token never asks for Echo.
            SecurityContext::restore(&record, mark, [0; jeton_link::oscore::ECHO_LEN]).ok()
        });
    if let Some(used) = scratch.get_mut(..len) {
        used.zeroize();
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edhoc_resource_is_recognised_by_its_whole_path() {
        let mut buf = [0u8; 64];
        let header = Header {
            message_type: MessageType::Confirmable,
            code: Code::POST,
            message_id: 1,
            token: Token::new(&[1]).unwrap_or_default(),
        };
        let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
        writer.option(option::URI_PATH, b".well-known").unwrap();
        writer.option(option::URI_PATH, b"edhoc").unwrap();
        let len = writer.finish();
        assert!(is_edhoc(&Message::decode(&buf[..len]).unwrap()));
        let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
        writer.option(option::URI_PATH, b".well-known").unwrap();
        writer.option(option::URI_PATH, b"edhoc").unwrap();
        writer.option(option::URI_PATH, b"more").unwrap();
        let len = writer.finish();
        assert!(!is_edhoc(&Message::decode(&buf[..len]).unwrap()));
    }

    /// A link with a ready context that has sent one request with CoAP token `[7, 7]`.
    fn ready_link() -> ProtectedLink {
        let material = KeyFile {
            identity: Identity::generate([1; 32], b"\x01", "token").unwrap(),
            peer: Some(
                *Identity::generate([2; 32], b"\x02", "gw")
                    .unwrap()
                    .credential(),
            ),
        };
        let mut store: crate::store::MemoryStore<4, 256> = crate::store::MemoryStore::new();
        let mut link = ProtectedLink::plain();
        link.load(Some(material), &mut store, &mut [0u8; 256], Instant::ZERO)
            .unwrap();
        link.context = Some(SecurityContext::derive(&[3; 16], &[4; 8], &[5], &[6]).unwrap());
        link.state = State::Ready;
        link.remember(Token::new(&[7, 7]).unwrap_or_default(), true, 0);
        link
    }

    proptest::proptest! {
        /// Nothing without the key reaches the engine: arbitrary bytes, and arbitrary options
        /// and payload behind the header of a response to the outstanding request.
        #[test]
        fn forged_datagrams_never_pass_as_verified(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            raw in proptest::prelude::any::<bool>(),
        ) {
            let mut link = ready_link();
            let mut datagram = if raw {
                Vec::<u8, 320>::new()
            } else {
                // ACK 2.04, message id 1, token [7, 7], then an OSCORE option (delta 9).
                Vec::from_slice(&[0x62, 0x44, 0x00, 0x01, 7, 7, 0x90]).unwrap_or_default()
            };
            let _ = datagram.extend_from_slice(&body);
            let mut scratch = [0u8; 2 * MAX_DATAGRAM];
            let verdict = link.incoming(&datagram, &mut scratch, Instant::ZERO);
            proptest::prop_assert!(!matches!(verdict, Incoming::Rewritten(_)), "{verdict:?}");
        }
    }
}
