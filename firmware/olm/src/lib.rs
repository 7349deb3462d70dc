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
//! An Olm session, from Alice's outbound session to Bob's inbound one:
//!
//! ```
//! use jeton_olm::olm::{Account, MessageType, OlmMessage, PreKeyMessage, olm_message_len};
//!
//! let mut rng = rand::rng();
//! let alice: Account = Account::new(&mut rng);
//! let mut bob: Account = Account::new(&mut rng);
//! bob.generate_one_time_keys(&mut rng, 1);
//! let (_key_id, one_time_key) = bob.one_time_keys().next().unwrap();
//! bob.mark_keys_as_published();
//!
//! let mut to_bob = alice.create_outbound_session(&mut rng, bob.curve25519_key(), one_time_key)?;
//! let mut wire = [0u8; olm_message_len(5)];
//! let sent = to_bob.encrypt(&mut rng, b"Hello", &mut wire)?;
//! assert_eq!(sent.message_type, MessageType::PreKey);
//!
//! let pre_key = PreKeyMessage::from_bytes(&wire[..sent.len])?;
//! let mut plaintext = [0u8; 16];
//! let created = bob.create_inbound_session(alice.curve25519_key(), &pre_key, &mut plaintext)?;
//! assert_eq!(&plaintext[..created.plaintext_len], b"Hello");
//! let mut to_alice = created.session;
//! assert_eq!(to_alice.session_id(), to_bob.session_id());
//!
//! let sent = to_alice.encrypt(&mut rng, b"Hi!", &mut wire)?;
//! let reply = OlmMessage::from_parts(sent.message_type, &wire[..sent.len])?;
//! let len = to_bob.decrypt(&reply, &mut plaintext)?;
//! assert_eq!(&plaintext[..len], b"Hi!");
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `precomputed-tables`: curve25519-dalek's basepoint tables. Key generation and signing get
//!   about three times faster for about 40 KB of flash. Off by default (the device); the host
//!   benchmarks turn it on, as vodozemac does by default.
//!
//! # Capacities and sizes
//!
//! | state | capacity | `size_of` (x86-64) | pickle at most |
//! | --- | --- | --- | --- |
//! | [`olm::Account`] | 50 one-time keys, current and previous fallback key | 4,048 B | [`pickle::MAX_ACCOUNT_PICKLE_SIZE`] |
//! | [`olm::Session`] | 5 receiving chains, 40 skipped keys per chain, 64 in all | 3,176 B | [`pickle::MAX_SESSION_PICKLE_SIZE`] |
//! | [`megolm::GroupSession`] | | 360 B | [`pickle::MAX_GROUP_SESSION_PICKLE_SIZE`] |
//! | [`megolm::InboundGroupSession`] | | 300 B | [`pickle::MAX_INBOUND_GROUP_SESSION_PICKLE_SIZE`] |
//!
//! # Where it knowingly differs from vodozemac
//!
//! Messages, session keys, exported keys and session ids are byte-compatible, and the
//! differential tests check that both libraries accept and reject the same messages. The
//! behaviour differs here:
//!
//! - Skipped message keys: vodozemac keeps 40 per receiving chain (up to 200); this crate
//!   keeps 40 per chain but 64 in all, dropping the oldest first (libolm keeps 40 in all).
//! - One-time keys: the store holds 50 (vodozemac 100), so
//!   [`olm::Account::max_number_of_one_time_keys`] is 25 (vodozemac 50).
//! - The previous fallback key is dropped when the current one is first used (and by
//!   [`olm::Account::forget_fallback_key`]); vodozemac drops it only when told.
//! - MACs and signatures are checked over the bytes received; vodozemac checks them over its
//!   re-encoding of the decoded protobuf. The two agree for every canonically encoded message
//!   (all that vodozemac and libolm send); a message with unknown fields or non-minimal
//!   varints is accepted by one and rejected by the other. Protobuf groups are rejected.
//! - A session key or exported key with trailing bytes is rejected (vodozemac ignores trailing
//!   bytes of an exported key).
//! - An Olm message under an unknown ratchet key while we have not yet replied is refused
//!   without changing the session; vodozemac makes the next sending ratchet key first.
//! - Olm chain indices are 32-bit: a chain stops at 2^32 - 1 messages
//!   ([`EncryptionError::IndexExhausted`]); a Megolm session stops at index 2^32 - 1 instead
//!   of wrapping.
//! - Encrypting needs the caller's RNG and buffers, so the API takes `&mut R` and `&mut [u8]`
//!   where vodozemac allocates; Olm decryption needs no RNG.
//! - Pickles are this crate's own format; vodozemac's and libolm's pickles are not read.
//! - Not implemented: libolm pickle import, dehydrated devices, SAS, ECIES/HPKE, PK
//!   encryption, `InboundGroupSession::{compare, merge, connected}`, session config version 2.
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
#[doc(hidden)]
pub mod fuzz_targets;
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
