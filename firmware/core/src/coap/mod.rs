//! The token's CoAP client: message codec and client engine.
//!
//! - [`message`] owns the RFC 7252 bytes: header, token, options, payload.
//! - [`option`] names the option numbers and decodes the structured values (Block, Observe).
pub mod message;
pub mod option;

pub use message::{
    Code, DecodeError, EncodeError, Header, Message, MessageType, MessageWriter, Token,
};
