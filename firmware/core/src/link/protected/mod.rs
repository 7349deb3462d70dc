//! The token's end of the protected link to its gateway ([`ProtectedLink`]): EDHOC (RFC 9528)
//! to agree on keys, then OSCORE (RFC 8613) on every CoAP request and response, between the
//! Matrix client ([`crate::matrix::Token`]) and the CoAP engine ([`crate::coap::Client`]).
//!
//! This module owns the token's pairing material (its identity and the gateway credential it
//! pins), the handshake, the OSCORE security context and its record on flash, and what ties
//! each outstanding exchange to the Partial IVs its request went out with: the handshake in
//! `handshake`, the context's record in `context`, the exchanges and OSCORE on them in
//! `exchanges`.
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
use jeton_link::{Credential, HandshakeError, Identity, OscoreError, SecurityContext};

pub use jeton_link::pairing::KeyFile;

use super::{Incoming, Link, LinkStats, Outgoing};

use crate::coap::message::{Code, Header, Message, MessageWriter, Token};
use crate::coap::{Client, Event, Request, RequestId, option};
use crate::platform::{Instant, Rng};
use crate::store::{Store, StoreError};

mod context;
mod exchanges;
mod handshake;

use context::load_context;
use exchanges::Exchange;
use handshake::State;

/// Exchanges whose request bindings are kept: the one in flight, the observation, and
/// late answers to ones before.
pub const MAX_EXCHANGES: usize = 4;
/// Partial IVs kept per exchange: its first transmission and retransmissions.
pub const MAX_TRANSMISSIONS: usize = 6;
/// How long after a failed handshake the next one starts.
pub const HANDSHAKE_RETRY_MS: u64 = 10_000;
/// The largest datagram the link writes or rewrites.
pub const MAX_DATAGRAM: usize = 1280;

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

    /// The key ids of the token's and the gateway's credentials, as `jeton pair` and the
    /// gateway's log name them (not the OSCORE sender id, a connection identifier).
    fn kids(&self) -> Option<(&[u8], &[u8])> {
        Some((
            self.identity.as_ref()?.credential().kid(),
            self.gateway.as_ref()?.kid(),
        ))
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
        self.plan_handshake(coap, rng, now)
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
        self.on_handshake_answer(event, store, now)
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
        self.protect(datagram, len, store, scratch)
    }

    /// Checks a datagram from the gateway: a protected response is verified and decrypted
    /// into `scratch[..n]` ([`Incoming::Rewritten`]); an unprotected one passes only if it
    /// is empty (ACK, RST) or answers an EDHOC request. An unprotected 4.00, 4.01 or 4.02 to
    /// a protected request means the gateway lost the context: the link starts a new
    /// handshake and asks the engine to fail the exchange ([`Incoming::Fail`]), so the layer
    /// above retries it under the new context.
    #[inline(never)]
    fn incoming(&mut self, datagram: &[u8], scratch: &mut [u8], now: Instant) -> Incoming {
        self.verify(datagram, scratch, now)
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
}

/// The class and detail of a CoAP code as a number (`4.01` is 401).
fn code_number(code: Code) -> u16 {
    u16::from(code.class()) * 100 + u16::from(code.detail())
}
