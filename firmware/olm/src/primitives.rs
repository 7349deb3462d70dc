//! The elliptic-curve operations whose results are fixed by their inputs — X25519 public
//! keys and Diffie-Hellman, Ed25519 public keys, signatures and verification — and which
//! crate computes them. Verification accepts what ed25519-dalek's `verify_strict` accepts,
//! the rules vodozemac has.
//!
//! Two backends give byte-identical results and verdicts (the differential tests compare
//! them):
//! `dalek` (x25519-dalek and ed25519-dalek, the default) and, with the `cortex-m4-asm`
//! feature, `salty` (the `salty` crate's field arithmetic: Björn Haase's Cortex-M4 assembly
//! on `thumbv7em`/`thumbv8m.main`, a portable TweetNaCl field elsewhere).

use zeroize::{Zeroize, ZeroizeOnDrop};

#[cfg(any(test, not(feature = "cortex-m4-asm")))]
pub(crate) mod dalek;
#[cfg(feature = "cortex-m4-asm")]
pub(crate) mod salty;

#[cfg(not(feature = "cortex-m4-asm"))]
pub(crate) use dalek as active;
#[cfg(feature = "cortex-m4-asm")]
pub(crate) use salty as active;

/// The output of an X25519 exchange, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SharedSecret([u8; 32]);

impl SharedSecret {
    pub(crate) const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `None` for the all-zero output of a low-order public key (RFC 7748, section 6.1: a
    /// non-contributory exchange), checked in constant time as x25519-dalek does.
    fn contributory(bytes: [u8; 32]) -> Option<Self> {
        use subtle::ConstantTimeEq;
        let secret = Self(bytes);
        let all_zero: bool = secret.0.ct_eq(&[0u8; 32]).into();
        (!all_zero).then_some(secret)
    }
}

/// What the Cortex-M image needs to check the active backend against the dalek crates on
/// the device itself (the host tests cover the portable build). Not a stable API.
#[doc(hidden)]
pub mod device_check {
    use super::active;

    /// X25519 public key of a secret (clamped as RFC 7748 says).
    pub fn x25519_public_key(secret: &[u8; 32]) -> [u8; 32] {
        active::x25519_public_key(secret)
    }

    /// X25519 of a secret and a public key; `None` when the result is all zero.
    pub fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Option<[u8; 32]> {
        active::x25519(secret, public).map(|s| *s.as_bytes())
    }

    /// Ed25519 public key of a 32-byte seed (RFC 8032).
    pub fn ed25519_public_key(seed: &[u8; 32]) -> [u8; 32] {
        active::Ed25519Secret::from_seed(seed).public_key()
    }

    /// Ed25519 signature of `message` with the key of a 32-byte seed (RFC 8032).
    pub fn ed25519_sign(seed: &[u8; 32], message: &[u8]) -> [u8; 64] {
        active::Ed25519Secret::from_seed(seed).sign(message)
    }

    /// Whether `signature` is `public`'s over `message` (`verify_strict`'s rules).
    pub fn ed25519_verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        active::ed25519_verify(public, message, signature)
    }
}

#[cfg(test)]
mod tests;
