//! jeton-core: the token's Matrix client as a sans-I/O state machine.
//!
//! Everything a token decides lives here and is driven by explicit inputs (received
//! datagrams, the current time, user commands), so the same code runs on RIOT, in the host
//! simulator and inside a deterministic test harness. This crate never names RIOT, `std` or
//! a socket; the platform comes in through the traits of [`platform`].
//!
//! Today the crate holds the transport: [`coap`], a CoAP client engine (RFC 7252 with
//! Block-wise transfers of RFC 7959 and Observe of RFC 7641). The Matrix flows will sit on
//! top of it.
//!
//! # Usage
//!
//! ```
//! use jeton_core::coap::{Code, Header, Message, MessageType, MessageWriter, Token, option};
//!
//! let mut datagram = [0u8; 64];
//! let header = Header {
//!     message_type: MessageType::Confirmable,
//!     code: Code::GET,
//!     message_id: 0x7d34,
//!     token: Token::EMPTY,
//! };
//! let mut writer = MessageWriter::new(&mut datagram, &header).unwrap();
//! writer.option(option::URI_PATH, b"temperature").unwrap();
//! let len = writer.finish();
//! let message = Message::decode(&datagram[..len]).unwrap();
//! assert_eq!(message.option(option::URI_PATH), Some(&b"temperature"[..]));
//! ```
//!
//! # Features
//!
//! None yet. The crate is `no_std` and never allocates; every capacity is a constant or a
//! const generic parameter, and running into one is an error value.
//!
//! # Specifications
//!
//! - CoAP: <https://www.rfc-editor.org/rfc/rfc7252>
//! - Block-wise transfers: <https://www.rfc-editor.org/rfc/rfc7959>
//! - Observe: <https://www.rfc-editor.org/rfc/rfc7641>
//! - The Matrix profile: MSC3079, <https://github.com/matrix-org/matrix-spec-proposals/pull/3079>
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod coap;
pub mod platform;
