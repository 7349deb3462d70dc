//! The token's CoAP client: message codec and client engine.
//!
//! - [`message`] owns the RFC 7252 bytes: header, token, options, payload.
//! - [`option`] names the option numbers and decodes the structured values (Block, Observe).
//! - [`client`] owns the exchanges: retransmission, block-wise transfers, the observation.
pub mod client;
pub mod message;
pub mod option;

pub use client::{
    BodyDelivery, Client, ClientConfig, ClientStats, Event, ExchangeError, Request, RequestError,
    RequestId,
};
pub use message::{
    Code, DecodeError, EncodeError, Header, Message, MessageType, MessageWriter, Options, Token,
};
