//! jeton-olm: the [Olm] and [Megolm] ratchets of Matrix end-to-end encryption for `no_std`
//! targets without a heap, byte-compatible with vodozemac and libolm.
//!
//! Every state is a fixed-size value whose capacities are consts; running into a capacity is
//! an error value, never a panic. The caller passes the random number generator (any
//! `rand_core` 0.10 [`CryptoRng`](rand_core::CryptoRng)) and the output buffers. Secrets are
//! zeroized on drop, MACs are compared in constant time, and `Debug` prints public parts only.
//!
//! # Usage
//!
//! ```
//! use jeton_olm::megolm::{GroupSession, InboundGroupSession, MegolmMessage, megolm_message_len};
//!
//! let mut rng = rand::rng();
//! let mut outbound = GroupSession::new(&mut rng);
//! let mut inbound = InboundGroupSession::new(&outbound.session_key());
//!
//! let mut wire = [0u8; megolm_message_len(5)];
//! let len = outbound.encrypt(b"Hello", &mut wire).unwrap();
//! let message = MegolmMessage::from_bytes(&wire[..len]).unwrap();
//! let mut plaintext = [0u8; 16];
//! let decrypted = inbound.decrypt(&message, &mut plaintext).unwrap();
//! assert_eq!(&plaintext[..decrypted.plaintext_len], b"Hello");
//! ```
//!
//! # Features
//!
//! - `precomputed-tables`: curve25519-dalek's basepoint tables. Key generation and signing get
//!   about three times faster for about 40 KB of flash. Off by default (the device); the host
//!   benchmarks turn it on, as vodozemac does by default.
//!
//! [Olm]: https://spec.matrix.org/latest/olm-megolm/olm/
//! [Megolm]: https://spec.matrix.org/latest/olm-megolm/megolm/
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

pub mod base64;
mod cipher;
pub mod error;
mod fifo;
mod keys;
pub mod megolm;
pub mod olm;
mod protobuf;

pub use error::{
    DecodeError, DecryptionError, EncodeError, EncryptionError, PickleError, SessionCreationError,
};
pub use keys::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};
