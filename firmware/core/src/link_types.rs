//! What the token's link and the Matrix client exchange, whether jeton-core is built with
//! the protected link (feature `link`, [`crate::link`]) or without it.

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

/// What `Link::outgoing` did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Without the `link` feature only the pass-through variants are made.
#[cfg_attr(not(feature = "link"), allow(dead_code))]
pub(crate) enum Outgoing {
    /// Send this many bytes of the buffer.
    Send(usize),
    /// Do not send it: no context yet (the engine will retransmit it).
    Hold,
}

/// What `Link::incoming` made of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "link"), allow(dead_code))]
pub(crate) enum Incoming {
    /// Give the datagram to the engine as it is.
    Pass,
    /// Give the engine the first this many bytes of the scratch buffer instead.
    Rewritten(usize),
    /// Drop it.
    Drop,
    /// Fail the exchange of the ACK with this message id (the engine gets a RST for it).
    Fail(u16),
}
