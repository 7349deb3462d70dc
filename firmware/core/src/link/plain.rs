//! The plain link: CoAP to the gateway as the engine writes it, and none of the EDHOC and
//! OSCORE code in the image.

use core::convert::Infallible;

use super::{Incoming, Link, LinkStats, Outgoing};
use crate::coap::{Client, Event};
use crate::platform::{Instant, Rng};
use crate::store::Store;

/// The plain link: every datagram passes as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainLink;

impl Link for PlainLink {
    type Material = ();
    type Error = Infallible;
    const PROTECTS: bool = false;

    fn unloaded() -> Self {
        PlainLink
    }

    fn load<S: Store>(
        &mut self,
        (): (),
        _store: &mut S,
        _scratch: &mut [u8],
        _now: Instant,
    ) -> Result<(), Infallible> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn is_enabled(&self) -> bool {
        false
    }

    fn take_established(&mut self) -> bool {
        false
    }

    fn stats(&self) -> LinkStats {
        LinkStats::new()
    }

    fn sender_id(&self) -> Option<&[u8]> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn plan<R: Rng, C: Rng, const Q: usize, const P: usize>(
        &mut self,
        _coap: &mut Client<C, Q, P>,
        _rng: &mut R,
        _now: Instant,
    ) -> Result<(), Infallible> {
        Ok(())
    }

    fn owns(&self, _event: &Event<'_>) -> bool {
        false
    }

    fn on_event<S: Store>(
        &mut self,
        _event: Event<'_>,
        _store: &mut S,
        _now: Instant,
    ) -> Result<(), Infallible> {
        Ok(())
    }

    fn outgoing<S: Store>(
        &mut self,
        _datagram: &mut [u8],
        len: usize,
        _store: &mut S,
        _scratch: &mut [u8],
    ) -> Result<Outgoing, Infallible> {
        Ok(Outgoing::Send(len))
    }

    fn incoming(&mut self, _datagram: &[u8], _scratch: &mut [u8], _now: Instant) -> Incoming {
        Incoming::Pass
    }
}
