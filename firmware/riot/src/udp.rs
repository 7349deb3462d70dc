//! The network adapter: one UDP socket on GNRC, through riot-wrappers' embedded-nal stack.
//!
//! The token is a CoAP client, so it needs exactly one socket: bound to [`LOCAL_PORT`] on all
//! interfaces, sending to the gateway and receiving its answers. riot-wrappers' stack never
//! frees a socket slot, so the socket is opened once at boot and kept.

use embedded_nal::{SocketAddr, UdpClientStack, UdpFullStack};
use riot_wrappers::socket_embedded_nal::{StackAccessor, UdpSocket};

/// The local UDP port the token's socket is bound to (the first IANA dynamic port).
pub(crate) const LOCAL_PORT: u16 = 49152;

/// Socket slots riot-wrappers reserves: the one the token uses.
pub(crate) const SOCKET_SLOTS: usize = 1;

/// A GNRC sock operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpError {
    /// GNRC returned this negative errno.
    Sock(isize),
}

impl core::fmt::Display for UdpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sock(errno) => write!(f, "the UDP socket operation failed with error {errno}"),
        }
    }
}

impl core::error::Error for UdpError {}

impl From<riot_wrappers::error::NumericError> for UdpError {
    fn from(err: riot_wrappers::error::NumericError) -> Self {
        Self::Sock(err.number())
    }
}

/// The token's bound UDP socket.
pub(crate) struct TokenSocket<'a> {
    stack: StackAccessor<'a, SOCKET_SLOTS>,
    socket: UdpSocket<'a>,
}

impl<'a> TokenSocket<'a> {
    /// Opens the socket on [`LOCAL_PORT`].
    pub(crate) fn bind(mut stack: StackAccessor<'a, SOCKET_SLOTS>) -> Result<Self, UdpError> {
        let mut socket = stack.socket()?;
        stack.bind(&mut socket, LOCAL_PORT)?;
        Ok(Self { stack, socket })
    }

    /// Sends one datagram.
    pub(crate) fn send_to(&mut self, remote: SocketAddr, datagram: &[u8]) -> Result<(), UdpError> {
        nb::block!(self.stack.send_to(&mut self.socket, remote, datagram)).map_err(UdpError::from)
    }

    /// Takes one received datagram if there is one, without waiting.
    pub(crate) fn try_receive(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddr)>, UdpError> {
        match self.stack.receive(&mut self.socket, buf) {
            Ok(received) => Ok(Some(received)),
            Err(nb::Error::WouldBlock) => Ok(None),
            // riot-wrappers 0.9.2's stack reports an empty socket as -EAGAIN (its own
            // `again_is_wouldblock` compares with +EAGAIN and so never matches).
            Err(nb::Error::Other(err)) if err.number() == -(riot_sys::EAGAIN as isize) => Ok(None),
            Err(nb::Error::Other(err)) => Err(err.into()),
        }
    }
}

impl core::fmt::Debug for TokenSocket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenSocket")
            .field("local_port", &LOCAL_PORT)
            .finish_non_exhaustive()
    }
}
