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
pub mod pickle;
mod protobuf;

pub use error::{
    DecodeError, DecryptionError, EncodeError, EncryptionError, PickleError, SessionCreationError,
};
pub use keys::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};
pub use pickle::Pickle;

#[cfg(test)]
mod tests {
    use core::convert::Infallible;

    use crate::{
        megolm::{GroupSession, InboundGroupSession},
        olm::{Account, OlmMessage},
    };

    /// A "random" source that yields only 0x42 bytes, so secrets are recognisable in output.
    struct Constant;

    impl rand_core::TryRng for Constant {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(0x4242_4242)
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            Ok(0x4242_4242_4242_4242)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            dst.fill(0x42);
            Ok(())
        }
    }

    impl rand_core::TryCryptoRng for Constant {}

    fn assert_no_secret(text: &str) {
        // The secret bytes as Debug prints arrays, as hex, and as base64 of 0x42 0x42 0x42.
        for needle in ["66, 66", "4242", "QkJC", "[66"] {
            assert!(!text.contains(needle), "{text} contains {needle}");
        }
    }

    #[test]
    fn debug_prints_no_secret() {
        let mut rng = Constant;
        let mut account: Account = Account::new(&mut rng);
        account.generate_one_time_keys(&mut rng, 2);
        account.generate_fallback_key(&mut rng);
        assert_no_secret(&format!("{account:?}"));
        let otk = account.one_time_keys().next().unwrap().1;
        let mut session = account
            .create_outbound_session(&mut rng, account.curve25519_key(), otk)
            .unwrap();
        assert_no_secret(&format!("{session:?}"));
        let mut wire = [0u8; 200];
        let sent = session
            .encrypt(&mut rng, b"secret plaintext", &mut wire)
            .unwrap();
        let message = OlmMessage::from_parts(sent.message_type, &wire[..sent.len]).unwrap();
        assert_no_secret(&format!("{message:?}"));

        let group = GroupSession::new(&mut rng);
        assert_no_secret(&format!("{group:?}"));
        let key = group.session_key();
        assert_no_secret(&format!("{key:?}"));
        let mut inbound = InboundGroupSession::new(&key);
        assert_no_secret(&format!("{inbound:?}"));
        assert_no_secret(&format!("{:?}", inbound.export_at(5).unwrap()));
        // The check itself can fail: the raw ratchet does contain the pattern.
        assert!(format!("{:?}", key.to_bytes()).contains("66, 66"));
    }
}
