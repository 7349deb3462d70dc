//! jeton-core: the token's Matrix client as a sans-I/O state machine.
//!
//! Everything a token decides lives here and is driven by explicit inputs (received
//! datagrams, the current time, user commands), so the same code runs on RIOT, in the host
//! simulator and inside a deterministic test harness. This crate never names RIOT, `std` or
//! a socket; the platform comes in through the traits of [`platform`].
//!
//! - [`matrix`]: the Matrix client ([`matrix::Token`]): login, device and one-time keys
//!   signed over canonical JSON, sync by Observe (long-poll fallback), room keys over Olm,
//!   messages over Megolm with replay detection, device tracking, an outbox that survives
//!   power cuts, SAS device verification ([`matrix::verification`]), and
//!   [`matrix::UiEvent`]s for the user.
//! - [`console`]: the shell commands over a token, their help and the room log, one home for
//!   jeton-sim's shell and the RIOT firmware's.
//! - [`files`]: end-to-end encrypted attachments (AES-256-CTR, SHA-256 checked before use),
//!   streamed block by block through the platform's [`files::FileStore`]; the token sends and
//!   receives them with [`matrix::Token::send_file`] and [`matrix::UiEvent::FileReceived`];
//!   with the `voice` feature, a recorded Ogg Opus goes out as a voice message
//!   (`Token::send_voice`, `files::voice`) and a received one is shown as such
//!   (`UiEvent::VoiceReceived`).
//! - [`coap`]: the CoAP client engine under it (RFC 7252 with Block-wise transfers of
//!   RFC 7959 and Observe of RFC 7641).
//! - [`store`]: the [`store::Store`] trait (atomic, durable, ordered records) and an
//!   in-memory store that simulates power cuts; [`platform`]: clock and RNG traits, and the
//!   [`platform::Platform`] a token is generic over.
//! - [`json`]: canonical JSON for signatures and a bounded reader of decrypted payloads.
//! - [`link`]: the link to the gateway under the Matrix client, the token's second type
//!   parameter: [`link::PlainLink`], or (feature `link`) `link::ProtectedLink`: EDHOC, then
//!   OSCORE on every exchange, the context kept on flash across power cuts.
//!
//! The token's whole state with the default capacities takes about 33 KB on a 64-bit host, and
//! 1.6 KB more on the protected link (the test `state_size_with_default_capacities_is_pinned`
//! prints and pins both).
//!
//! # Usage
//!
//! ```
//! use jeton_core::coap::{Client, ClientConfig, Code, Event, Request, option};
//! use jeton_core::platform::{Instant, Rng};
//!
//! # struct OsRng(u32);
//! # impl Rng for OsRng {
//! #     fn fill_bytes(&mut self, dest: &mut [u8]) {
//! #         for b in dest {
//! #             self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
//! #             *b = (self.0 >> 24) as u8;
//! #         }
//! #     }
//! # }
//! let mut client: Client<OsRng> = Client::new(ClientConfig::default(), OsRng(7));
//! let versions = [
//!     (option::URI_PATH, &b"_matrix"[..]),
//!     (option::URI_PATH, &b"client"[..]),
//!     (option::URI_PATH, &b"versions"[..]),
//! ];
//! let id = client.request(&Request::new(Code::GET, &versions, &[])).unwrap();
//!
//! // The platform's event loop: send what the engine wants sent ...
//! let now = Instant::from_millis(0);
//! let mut datagram = [0u8; 1152];
//! while let Some(len) = client.poll_transmit(now, &mut datagram).unwrap() {
//!     // socket.send(&datagram[..len]);
//!     # let _ = len;
//! }
//! // ... feed it what arrives, and wake it when its timer is due ...
//! # let piggybacked = [0x60, 0x45, datagram[2], datagram[3]];
//! # let mut reply = piggybacked.to_vec(); reply[0] |= datagram[0] & 0x0F;
//! # reply.extend_from_slice(&datagram[4..4 + usize::from(datagram[0] & 0x0F)]);
//! client.handle_datagram(&reply, now);
//! if let Some(deadline) = client.poll_timeout() {
//!     client.handle_timeout(deadline);
//! }
//! // ... and hand its events to the layer above.
//! while let Some(event) = client.poll_event() {
//!     if let Event::Response { id: done, code, .. } = event {
//!         assert_eq!((done, code), (id, Code::CONTENT));
//!     }
//! }
//! ```
//!
//! # Features
//!
//! - `link` (off by default): the protected link to the gateway
//!   (`link::ProtectedLink`: EDHOC and OSCORE, on `jeton-link`), booted with
//!   `matrix::Token::with_link`. Without it the token speaks plain CoAP ([`link::PlainLink`])
//!   and its image carries none of that code (about 50 KB of flash on Cortex-M4).
//!
//! The crate is `no_std` and never allocates; every capacity is a constant or a const
//! generic parameter, and running into one is an error value.
//!
//! # Specifications
//!
//! - CoAP: <https://www.rfc-editor.org/rfc/rfc7252>
//! - Block-wise transfers: <https://www.rfc-editor.org/rfc/rfc7959>
//! - Observe: <https://www.rfc-editor.org/rfc/rfc7641>
//! - EDHOC: <https://www.rfc-editor.org/rfc/rfc9528>; OSCORE:
//!   <https://www.rfc-editor.org/rfc/rfc8613>
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
pub mod console;
pub mod files;
pub mod json;
pub mod link;
pub mod matrix;
pub mod platform;
pub mod store;
