//! The token's CoAP client: message codec and client engine.
//!
//! - [`message`] owns the RFC 7252 bytes: header, token, options, payload (the option
//!   encoding itself is jeton-proto's [`codec`](jeton_proto::coap::codec)).
//! - [`option`] says which options the engine manages and understands, and re-exports the
//!   option numbers and [`BlockValue`](option::BlockValue) of [`jeton_proto::coap`].
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
