//! jeton-link: the security of the token-gateway link. EDHOC (RFC 9528) establishes keys
//! between a token and its gateway; OSCORE (RFC 8613) then protects every CoAP request and
//! response between them. Both sides use this crate: the token (no_std, no heap) and the
//! gateway.
//!
//! - [`edhoc`]: the handshake on [lakers](https://crates.io/crates/lakers): method 3
//!   (static DH keys on both sides), cipher suite 2 (P-256, AES-CCM-16-64-128, SHA-256),
//!   credentials as CCS referenced by kid. The token is the [`Initiator`], the gateway the
//!   [`Responder`]. The result is an [`OscoreMaterial`] (RFC 9528 appendix A.1).
//! - [`oscore`]: the [`SecurityContext`]: protect/unprotect of requests and responses on
//!   a codec-neutral [`Message`] (code, sorted options, payload), a replay window, sender
//!   sequence persistence (RFC 8613 appendix B.1.1) and the Echo round trip (RFC 9175,
//!   appendix B.1.2) for a server that lost its window.
//! - [`credential`]: [`Credential`] (a peer's CCS) and [`Identity`] (one's own key pair).
//!
//! # Why OSCORE is written here
//!
//! On crates.io, `liboscore` binds a C library (a C toolchain for every target, its own
//! CoAP message traits) and `oscore` is a new single-author crate bundling unrelated
//! schemes. What jeton needs is one AEAD and one KDF on RustCrypto's `ccm`, `aes` and `hkdf`
//! (the workspace's versions, which also serve lakers through the crate's own crypto
//! backend, so the image carries one AES) and ~600 lines, checked against every vector of
//! RFC 8613 appendix C.
//!
//! # Usage
//!
//! ```
//! use jeton_link::{Identity, Initiator, Message, OptionList, Responder};
//!
//! // Provisioning (the `jeton` CLI does this): each side gets a key pair and the peer's CCS.
//! let token = Identity::generate([1; 32], b"\x01", "token-1").unwrap();
//! let gateway = Identity::generate([2; 32], b"\x02", "gateway").unwrap();
//!
//! // EDHOC: message_1 (token) -> message_2 (gateway) -> message_3 (token).
//! let (initiator, message_1) = Initiator::start([3; 32]).unwrap();
//! let (responder, message_2) =
//!     Responder::respond([4; 32], &gateway, message_1.as_bytes(), &[0x05]).unwrap();
//! let (message_3, token_side) = initiator
//!     .process_message_2(&token, gateway.credential(), message_2.as_bytes())
//!     .unwrap();
//! let (gateway_side, _message_4) = responder
//!     .process_message_3(message_3.as_bytes(), |kid| {
//!         (kid == token.credential().kid()).then(|| *token.credential())
//!     })
//!     .unwrap();
//! assert_eq!(gateway_side.peer_kid().as_bytes(), b"\x01");
//!
//! // OSCORE. The token persists its sequence numbers (appendix B.1.1).
//! let mut client = token_side.security_context().unwrap().with_persisted_sequence();
//! let mut server = gateway_side.security_context().unwrap();
//! if let Some(mark) = client.sequence_to_persist() {
//!     // store.save(mark)?;  -- durable before the numbers are used
//!     client.sequence_persisted(mark);
//! }
//! let request = Message {
//!     code: 0x01, // GET
//!     options: OptionList::from_sorted(&[(11, b"_matrix"), (256, b"syt_secret")]).unwrap(),
//!     payload: &[],
//! };
//! let mut protected_buf = [0u8; 256];
//! let (outer, binding) = client.protect_request(&request, &mut protected_buf).unwrap();
//! assert_eq!(outer.options.get(256), None, "the access token is inside the ciphertext");
//!
//! // The gateway finds the context by the kid and decrypts.
//! let mut plain_buf = [0u8; 256];
//! let inner = server.unprotect_request(&outer, &mut plain_buf).unwrap();
//! assert_eq!(inner.message, request);
//! ```
//!
//! On CoAP (RFC 9528 appendix A.2): message_1 travels as POST `/.well-known/edhoc` with
//! the payload `0xF5 || message_1` (CBOR `true`), message_2 in its 2.04 response, and
//! message_3 either as a second POST with the payload `C_R || message_3`
//! ([`split_connection_id`], [`encode_connection_id`]; the gateway answers with message_4),
//! or, saving that round trip (RFC 9668), inside the token's first protected request: add
//! the empty option [`edhoc::EDHOC_OPTION`] to the outer message and send the payload
//! `message_3 || outer.payload`.
//!
//! # The token's side, step by step
//!
//! 1. Provisioning stores the token's private key and CCS and the gateway's CCS
//!    ([`Identity::new`], [`Credential::parse`]).
//! 2. [`Initiator::start`] with 32 fresh random bytes; send message_1; feed message_2 to
//!    [`Initiator::process_message_2`], which checks the gateway against the pinned
//!    credential and yields message_3 and the [`OscoreMaterial`].
//! 3. [`OscoreMaterial::security_context`], then
//!    [`SecurityContext::with_persisted_sequence`]; store [`SecurityContext::to_record`] once.
//! 4. Before each request: if [`SecurityContext::sequence_to_persist`] gives a mark, write it
//!    to flash, then [`SecurityContext::sequence_persisted`]. [`SecurityContext::protect_request`]
//!    fails with [`OscoreError::SequenceNotPersisted`] rather than reuse a number.
//! 5. After a power cut: [`SecurityContext::restore`] from the record and the stored mark.
//! 6. A 4.01 without an OSCORE option ("Security context not found": the gateway restarted)
//!    or [`OscoreError::SequenceExhausted`] means: run EDHOC again. The first protected request
//!    of a context carries option 256 (the access token); later ones need not.
//! 7. Observe notifications after the first carry the gateway's own Partial IV: order them
//!    by it (`OscoreOption::parse` of the outer OSCORE option, [`PartialIv::sequence`]), not
//!    by the outer Observe value, which travels unprotected (RFC 8613 §4.1.3.5.2).
//!
//! # Features
//!
//! - `cortex-m4-asm`: P-256 on `p256-cortex-m4` (P256-Cortex-M4's assembly) when built for a
//!   Cortex-M4 or M33 (`thumbv7em`, `thumbv8m.main`), RustCrypto's `p256` otherwise. Both give
//!   the same keys, secrets and messages; the Cortex-M4 tier checks the device's against
//!   RFC 9529 and the host's.
//!
//! # Specification
//!
//! RFC 9528 (EDHOC), RFC 8613 (OSCORE), RFC 9175 (Echo), RFC 9668 (EDHOC + OSCORE request).

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

mod aead;
pub mod credential;
mod crypto_backend;
pub mod edhoc;
mod error;
pub mod message;
pub mod oscore;
mod p256;
pub mod pairing;
mod seeded_rng;

pub use p256::device_check;

pub use credential::{Credential, Identity, Kid};
pub use edhoc::{
    EdhocMessage, Initiator, OscoreMaterial, Responder, encode_connection_id, split_connection_id,
};
pub use error::{HandshakeError, OscoreError};
pub use message::{MAX_OPTIONS, Message, OptionList};
pub use oscore::{
    ContextRecord, Freshness, Id, MAX_ID_LEN, OscoreOption, PartialIv, RequestBinding,
    SecurityContext, UnprotectedRequest,
};
