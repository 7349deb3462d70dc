//! The token's link to its gateway, under the Matrix client ([`crate::matrix::Token`]) and
//! over the CoAP engine ([`crate::coap::Client`]): the [`Link`] trait the token is generic
//! over, and its two implementations.
//!
//! - [`PlainLink`] (always compiled): plain CoAP, every datagram passes as it is. A board
//!   that does not pair keeps its flash: its image carries none of the EDHOC and OSCORE code.
//! - `ProtectedLink` (feature `link`): EDHOC (RFC 9528) to agree on keys, then OSCORE
//!   (RFC 8613) on every request and response, the security context kept on flash across
//!   power cuts. Pairing material of `None` leaves it plain, as a gateway in its plain-MSC3079
//!   compatibility mode expects.
//!
//! The token calls the link around the engine: [`Link::outgoing`] rewrites each datagram the
//! engine writes, [`Link::incoming`] each one that arrives, [`Link::plan`] queues the
//! handshake's requests, [`Link::on_event`] takes their answers.

mod plain;
#[cfg(feature = "link")]
pub mod protected;

pub use plain::PlainLink;
#[cfg(feature = "link")]
pub use protected::{
    HANDSHAKE_RETRY_MS, KeyFile, LinkError, MAX_DATAGRAM, MAX_EXCHANGES, MAX_TRANSMISSIONS,
    ProtectedLink,
};

use crate::coap::{Client, Event};
use crate::matrix::TokenError;
use crate::platform::{Instant, Rng};
use crate::store::Store;

/// A link between the token's CoAP engine and the gateway; see the
/// [module documentation](self).
///
/// The token keeps one in its state and calls it from its input methods; `scratch` is the
/// token's record buffer, which holds two datagrams ([`PlainLink`] never touches it).
pub trait Link: Sized {
    /// What a boot passes in: the pairing material, if the link takes any.
    type Material: Default;
    /// Why the link failed; the token shows it as a [`TokenError`].
    type Error: Into<TokenError>;
    /// The link a boot starts from, before [`Link::load`]. A function rather than a
    /// constant: a constant of a large link would be kept in flash whole, to be copied.
    fn unloaded() -> Self;
    /// Whether this kind of link can protect the exchanges at all (its state and counters
    /// are then worth showing).
    const PROTECTS: bool;

    /// Takes the pairing material a token boots with and resumes what `store` holds, in
    /// place.
    fn load<S: Store>(
        &mut self,
        material: Self::Material,
        store: &mut S,
        scratch: &mut [u8],
        now: Instant,
    ) -> Result<(), Self::Error>;

    /// Whether requests can go out: a context is ready, or the link protects nothing.
    fn is_ready(&self) -> bool;

    /// Whether the link protects the exchanges (false: plain CoAP).
    fn is_enabled(&self) -> bool;

    /// True once after each new security context: the gateway holds none of the token's
    /// earlier per-context state (its access token, its observation).
    fn take_established(&mut self) -> bool;

    /// The counters.
    fn stats(&self) -> LinkStats;

    /// The sender id of the token's requests (the OSCORE kid), once there is one.
    fn sender_id(&self) -> Option<&[u8]>;

    /// When [`Link::plan`] next has something to do.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Queues the link's own next request when one is due.
    fn plan<R: Rng, C: Rng, const Q: usize, const P: usize>(
        &mut self,
        coap: &mut Client<C, Q, P>,
        rng: &mut R,
        now: Instant,
    ) -> Result<(), Self::Error>;

    /// Whether `event` answers one of the link's own requests.
    fn owns(&self, event: &Event<'_>) -> bool;

    /// Takes the answer to one of the link's own requests ([`Link::owns`]).
    fn on_event<S: Store>(
        &mut self,
        event: Event<'_>,
        store: &mut S,
        now: Instant,
    ) -> Result<(), Self::Error>;

    /// Rewrites a datagram the engine wrote into `datagram[..len]` for the wire.
    fn outgoing<S: Store>(
        &mut self,
        datagram: &mut [u8],
        len: usize,
        store: &mut S,
        scratch: &mut [u8],
    ) -> Result<Outgoing, Self::Error>;

    /// Checks a datagram from the gateway before the engine sees it.
    fn incoming(&mut self, datagram: &[u8], scratch: &mut [u8], now: Instant) -> Incoming;
}

/// Counters of the link, for diagnostics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Handshakes completed.
    pub handshakes: u32,
    /// Bytes of EDHOC datagrams sent and received (CoAP headers included).
    pub handshake_bytes: u32,
    /// Requests protected (transmissions, retransmissions included).
    pub protected: u32,
    /// Responses verified.
    pub verified: u32,
    /// Datagrams dropped: unprotected or failing verification, or a stale notification.
    pub rejected: u32,
    /// Requests held back because no context was ready (the engine retransmits them).
    pub held: u32,
}

impl LinkStats {
    /// All zero.
    pub const fn new() -> LinkStats {
        LinkStats {
            handshakes: 0,
            handshake_bytes: 0,
            protected: 0,
            verified: 0,
            rejected: 0,
            held: 0,
        }
    }
}

/// What [`Link::outgoing`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Send this many bytes of the buffer.
    Send(usize),
    /// Do not send it: no context yet (the engine will retransmit it).
    Hold,
}

/// What [`Link::incoming`] made of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Give the datagram to the engine as it is.
    Pass,
    /// Give the engine the first this many bytes of the scratch buffer instead.
    Rewritten(usize),
    /// Drop it.
    Drop,
    /// Fail the exchange of the ACK with this message id (the engine gets a RST for it).
    Fail(u16),
}
