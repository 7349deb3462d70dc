//! jeton-olm: the [Olm] and [Megolm] ratchets of Matrix end-to-end encryption for `no_std`
//! targets without a heap, byte-compatible with vodozemac and libolm, and the cryptography of
//! SAS device verification ([`sas`]: key agreement, decimal and emoji strings, MACs,
//! commitment).
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
//! A [`Session`](olm::Session) is about 3 KB (its skipped message keys). On a small stack,
//! [`Account::create_outbound_session_in`](olm::Account::create_outbound_session_in),
//! [`Account::create_inbound_session_in`](olm::Account::create_inbound_session_in) and
//! [`Pickle::from_pickle_into`] build it in a caller's `Option<Session>` slot, overwriting
//! (and zeroizing) what it held, instead of returning it by value through several frames.
//!
//! # Features
//!
//! - `precomputed-tables`: curve25519-dalek's basepoint tables. Key generation and signing get
//!   about three times faster for about 40 KB of flash. Off by default (the device); the host
//!   benchmarks turn it on, as vodozemac does by default.
//! - `cortex-m4-asm`: X25519 public keys and Diffie-Hellman, Ed25519 public keys, signing and
//!   verification on the [`salty`](https://crates.io/crates/salty) crate, whose field
//!   multiplication is Björn Haase's Cortex-M4 assembly on `thumbv7em` and `thumbv8m.main`
//!   (salty's build script picks it by target), with salty's arithmetic modulo ℓ: a Cortex-M4
//!   image then links no curve25519-dalek at all. Verification keeps ed25519-dalek's
//!   `verify_strict` rules (canonical `s`, no small-order key or `R`), so what is accepted does
//!   not change. Every result and verdict is the dalek crates' (RFC 7748 and RFC 8032 vectors
//!   and property tests with small-order points, non-canonical encodings and `s` past ℓ on the
//!   host; the `backend-check` image of `tests/cortex-m` on the Cortex-M4 itself).
//!
//!   A feature rather than a target `cfg`: on other targets salty falls back to a slow
//!   portable field, so the choice belongs to whoever builds for a Cortex-M4, who may also
//!   prefer dalek with its tables when flash is plentiful; and a feature lets the host run
//!   the differential tests against the very code the device uses (bar the assembly).
//!
//!   Give salty `opt-level = 3` in the profile of the image or firmware that links it (as
//!   `tests/cortex-m/Cargo.toml` does): at opt-level "s" its Rust glue around the assembly
//!   makes X25519 1.06 M instead of 0.65 M instructions and Ed25519 signing 2.3 M instead of
//!   1.2 M, slower than dalek; opt-level 3 costs 3.3 KB of flash.
//!
//! # Speed and flash on a Cortex-M4
//!
//! Instructions counted by `tests/cortex-m/build` (`thumbv7em-none-eabihf`, opt-level "s",
//! LTO, LLVM's machine outliner, `qemu-system-arm -M mps2-an386 -icount shift=0`); flash is the `olm` image less an
//! empty image. Targets of issue 6: Megolm encrypt ≤ 1.5 M, Olm outbound session ≤ 4 M. The
//! two middle columns were measured on an earlier `olm` image and give their flash as the
//! difference to plain dalek there.
//!
//! | operation | dalek | dalek, opt 3 | dalek, opt 3 + tables | `cortex-m4-asm` |
//! | --- | ---: | ---: | ---: | ---: |
//! | Megolm encrypt 100 B (incl. Ed25519 sign) | 1,884,200 | 1,701,040 | 697,080 | 1,427,560 |
//! | Ed25519 sign 100 B | 1,713,000 | 1,580,960 | 577,000 | 1,256,440 |
//! | Olm outbound session (2 key pairs, 3 X25519) | 8,546,080 | 7,452,480 | 5,444,560 | 3,420,920 |
//! | Olm inbound session + decrypt 100 B | 5,482,120 | 4,547,560 | 4,547,560 | 2,281,680 |
//! | Account creation | 3,293,880 | 3,075,480 | 1,067,560 | 1,893,160 |
//! | Ed25519 verify 100 B | 1,973,760 | 1,745,600 | 1,627,680 | 2,923,440 |
//! | flash of the `olm` image | 64,180 B | +18 KB | +58 KB | 58,740 B |
//! | peak stack | 7,296 B | 7,400 B | 6,016 B | 8,284 B |
//!
//! "opt 3" is `opt-level = 3` for the three dalek crates in the image's profile, "tables"
//! curve25519-dalek's `precomputed-tables`: neither meets the Olm target (the tables speed up
//! only fixed-base multiplication, not Diffie-Hellman). `cortex-m4-asm` meets both targets
//! with 5.4 KB less flash than plain dalek; its X25519 takes about 0.65 M instructions (dalek
//! 1.7 M). Its verification runs the two scalar multiplications one after the other with the
//! signing code's 4-bit windows (1.5 times dalek's instructions, which shares the doublings,
//! for 2.6 KB less stack). Its peak stack is account creation, whose 8.3 KB include the 3.9 KB
//! `Account` it returns; Ed25519 signing takes 4.3 KB (a 2 KB table of multiples),
//! verification 4.8 KB (dalek's 7.3 KB).
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
//! - Not implemented: libolm pickle import, dehydrated devices, ECIES/HPKE, PK
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
#[doc(hidden)]
pub mod primitives;
mod protobuf;
pub mod sas;

pub use error::{
    DecodeError, DecryptionError, EncodeError, EncryptionError, PickleError, SessionCreationError,
};
pub use keys::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature, Ed25519SigningKey};
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
