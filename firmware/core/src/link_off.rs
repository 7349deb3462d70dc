//! The link of a jeton-core built without its `link` feature: plain CoAP to the gateway,
//! and none of the EDHOC and OSCORE code in the image (a board that does not pair keeps
//! its flash). The types mirror those of the protected link so that the Matrix client is
//! the same code either way; [`KeyFile`] and [`LinkError`] have no values.

use core::fmt;

use crate::coap::{Client, Event};
use crate::platform::{Instant, Rng};
use crate::store::Store;

pub use crate::link_types::LinkStats;
pub(crate) use crate::link_types::{Incoming, Outgoing};

/// Pairing material, which a build without the link cannot take.
#[derive(Clone, Debug)]
pub enum KeyFile {}

/// Why the link failed: it cannot, without the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {}

impl fmt::Display for LinkError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl core::error::Error for LinkError {}

/// The plain link: every datagram passes as it is.
#[derive(Debug)]
pub(crate) struct Link;

impl Link {
    pub(crate) const fn plain() -> Link {
        Link
    }

    pub(crate) fn load<S: Store>(
        &mut self,
        _material: Option<KeyFile>,
        _store: &mut S,
        _scratch: &mut [u8],
        _now: Instant,
    ) -> Result<(), LinkError> {
        Ok(())
    }

    pub(crate) fn is_ready(&self) -> bool {
        true
    }

    pub(crate) fn is_enabled(&self) -> bool {
        false
    }

    pub(crate) fn take_established(&mut self) -> bool {
        false
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats::default()
    }

    pub(crate) fn sender_id(&self) -> Option<&[u8]> {
        None
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub(crate) fn plan<R: Rng, C: Rng, const Q: usize, const P: usize>(
        &mut self,
        _coap: &mut Client<C, Q, P>,
        _rng: &mut R,
        _now: Instant,
    ) -> Result<(), LinkError> {
        Ok(())
    }

    pub(crate) fn owns(&self, _event: &Event<'_>) -> bool {
        false
    }

    pub(crate) fn on_event<S: Store>(
        &mut self,
        _event: Event<'_>,
        _store: &mut S,
        _now: Instant,
    ) -> Result<(), LinkError> {
        Ok(())
    }

    pub(crate) fn outgoing<S: Store>(
        &mut self,
        _datagram: &mut [u8],
        len: usize,
        _store: &mut S,
        _scratch: &mut [u8],
    ) -> Result<Outgoing, LinkError> {
        Ok(Outgoing::Send(len))
    }

    pub(crate) fn incoming(
        &mut self,
        _datagram: &[u8],
        _scratch: &mut [u8],
        _now: Instant,
    ) -> Incoming {
        Incoming::Pass
    }
}
