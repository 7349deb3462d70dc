//! The `cortex-m4-asm` backend: the `salty` crate's curve arithmetic, whose field
//! multiplication and squaring are Björn Haase's Cortex-M4 assembly (UMAAL) on `thumbv7em`
//! and `thumbv8m.main`, and a portable TweetNaCl field everywhere else.
//!
//! - X25519 is salty's Montgomery ladder as it stands.
//! - Ed25519 (RFC 8032, section 5.1.6) is put together here from salty's Edwards point
//!   addition, SHA-512 from `sha2` and arithmetic modulo ℓ from curve25519-dalek, because
//!   salty's own signing multiplies the base point bit by bit (two point additions per bit)
//!   and misses the Megolm budget on a Cortex-M4; [`mul_base`] uses 4-bit windows instead
//!   (five additions per four bits). Every step is deterministic, so the differential tests
//!   hold it byte for byte against ed25519-dalek.
//!
//! salty zeroizes its X25519 secret and shared secret on drop; the Ed25519 secrets here are
//! zeroized by [`Ed25519Secret`]. Neither backend wipes the intermediate points a scalar
//! multiplication leaves on the stack.

use curve25519_dalek::Scalar;
use salty::EdwardsPoint;
use sha2::{Digest, Sha512};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::SharedSecret;

pub(crate) fn x25519_public_key(secret: &[u8; 32]) -> [u8; 32] {
    salty::agreement::SecretKey::from_seed(secret)
        .public()
        .to_bytes()
}

pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Option<SharedSecret> {
    let secret = salty::agreement::SecretKey::from_seed(secret);
    let shared = secret.agree(&salty::agreement::PublicKey::from(*public));
    SharedSecret::contributory(shared.to_bytes())
}

/// `scalar` times the Ed25519 base point, compressed. Fixed 4-bit windows over a table of
/// the 16 multiples 0·B … 15·B, each window picked in constant time, so the run time does not
/// depend on the scalar. salty's point addition is complete (it also doubles and adds the
/// neutral element), which the windows rely on.
fn mul_base(scalar: &Scalar) -> [u8; 32] {
    let base = EdwardsPoint::basepoint();
    let mut table = [EdwardsPoint::neutral_element(); 16];
    let mut multiple = EdwardsPoint::neutral_element();
    for entry in &mut table {
        *entry = multiple;
        multiple = &multiple + &base;
    }
    let bytes = Zeroizing::new(scalar.to_bytes());
    let mut sum = EdwardsPoint::neutral_element();
    let mut first = true;
    for byte in bytes.iter().rev() {
        for window in [byte >> 4, byte & 0x0f] {
            // The top window starts from the neutral element: nothing to double yet.
            if !first {
                for _ in 0..4 {
                    sum = &sum + &sum;
                }
            }
            first = false;
            let mut pick = EdwardsPoint::neutral_element();
            for (index, entry) in (0u8..).zip(&table) {
                pick.conditional_assign(entry, index.ct_eq(&window));
            }
            sum = &sum + &pick;
        }
    }
    sum.compressed().to_bytes()
}

fn sha512(parts: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    let mut hash = Sha512::new();
    for part in parts {
        hash.update(part);
    }
    Zeroizing::new(hash.finalize().into())
}

/// An Ed25519 signing key: the seed, its expansion (RFC 8032, section 5.1.5) and the public
/// key, kept so that signing costs one base-point multiplication.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Ed25519Secret {
    seed: [u8; 32],
    /// The clamped secret scalar `s`, reduced modulo ℓ (the same point and signatures).
    scalar: Scalar,
    /// The second half of SHA-512(seed), which makes the nonces.
    prefix: [u8; 32],
    #[zeroize(skip)]
    public: [u8; 32],
}

impl Ed25519Secret {
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let hash = sha512(&[seed]);
        let mut lower = Zeroizing::new([0u8; 32]);
        let mut prefix = [0u8; 32];
        for (out, byte) in lower.iter_mut().chain(&mut prefix).zip(hash.iter()) {
            *out = *byte;
        }
        let scalar = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(*lower));
        Self {
            seed: *seed,
            public: mul_base(&scalar),
            scalar,
            prefix,
        }
    }

    pub(crate) const fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub(crate) const fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut nonce = Scalar::from_bytes_mod_order_wide(&sha512(&[&self.prefix, message]));
        let r = mul_base(&nonce);
        let challenge = Scalar::from_bytes_mod_order_wide(&sha512(&[&r, &self.public, message]));
        let s = challenge * self.scalar + nonce;
        nonce.zeroize();
        let mut signature = [0u8; 64];
        let (r_half, s_half) = signature.split_at_mut(32);
        r_half.copy_from_slice(&r);
        s_half.copy_from_slice(s.as_bytes());
        signature
    }
}
