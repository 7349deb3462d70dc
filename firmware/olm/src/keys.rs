//! Key types: Curve25519 and Ed25519 public keys and signatures (plain bytes, `Copy`), and the
//! secret key pairs, which zeroize on drop and never print.

use core::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    base64,
    error::DecodeError,
    primitives::{SharedSecret, active},
};

/// Decodes base64 `text` of at most 64 bytes and hands the bytes to `parse`.
pub(crate) fn decode_base64<T>(
    text: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut bytes = [0u8; 66];
    parse(base64::decode(text.as_bytes(), &mut bytes)?)
}

pub(crate) fn fmt_base64(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    let mut text = [0u8; 86];
    match base64::encode(bytes, &mut text) {
        Ok(t) => write!(f, "{name}({t})"),
        Err(_) => write!(f, "{name}(..)"),
    }
}

/// The parts every byte-string key type shares: length, slice and base64 conversions, and a
/// `Debug` that prints base64.
macro_rules! public_bytes_type {
    ($name:ident, $len:literal, $what:literal) => {
        impl $name {
            #[doc = concat!("The length of ", $what, " in bytes.")]
            pub const LENGTH: usize = $len;

            #[doc = concat!("Reads ", $what, " from its base64 text.")]
            pub fn from_base64(text: &str) -> Result<Self, $crate::error::DecodeError> {
                $crate::keys::decode_base64(text, Self::from_slice)
            }

            #[doc = concat!("The raw bytes of ", $what, ".")]
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            #[doc = concat!("Writes ", $what, " as unpadded base64 into `out`.")]
            pub fn to_base64<'o>(
                &self,
                out: &'o mut [u8; $crate::base64::encoded_len($len)],
            ) -> &'o str {
                $crate::base64::encode(&self.0, out).unwrap_or_default()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                $crate::keys::fmt_base64(f, stringify!($name), &self.0)
            }
        }
    };
}
pub(crate) use public_bytes_type;

/// A Curve25519 public key: an identity, one-time, fallback, base or ratchet key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Curve25519PublicKey(pub(crate) [u8; 32]);

public_bytes_type!(Curve25519PublicKey, 32, "a Curve25519 public key");

impl Curve25519PublicKey {
    /// Wraps raw key bytes. Every 32-byte string is accepted, as by vodozemac; unsafe points are
    /// caught when a Diffie-Hellman exchange with them is non-contributory.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a key from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| DecodeError::InvalidKeyLength)
    }
}

/// An Ed25519 public key, checked to be a valid point when it is made.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey(pub(crate) [u8; 32]);

public_bytes_type!(Ed25519PublicKey, 32, "an Ed25519 public key");

impl Ed25519PublicKey {
    /// Reads a key, checking that it decompresses to a curve point.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DecodeError::InvalidKeyLength)?;
        if !active::ed25519_is_point(&bytes) {
            return Err(DecodeError::InvalidPublicKey);
        }
        Ok(Self(bytes))
    }

    /// Verifies `signature` over `message` with the strict rules vodozemac uses
    /// (`verify_strict`: no small-order keys, canonical `s`).
    pub fn verify(&self, message: &[u8], signature: &Ed25519Signature) -> Result<(), DecodeError> {
        if !active::ed25519_is_point(&self.0) {
            return Err(DecodeError::InvalidPublicKey);
        }
        if active::ed25519_verify(&self.0, message, &signature.0) {
            Ok(())
        } else {
            Err(DecodeError::InvalidSignature)
        }
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ed25519Signature(pub(crate) [u8; 64]);

public_bytes_type!(Ed25519Signature, 64, "an Ed25519 signature");

impl Ed25519Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// Reads a signature from a slice that must be exactly 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| DecodeError::InvalidKeyLength)
    }

    /// The raw signature bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

/// A Curve25519 secret key with its public key cached, since computing it costs a scalar
/// multiplication.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Curve25519Keypair {
    secret: [u8; 32],
    #[zeroize(skip)]
    public: Curve25519PublicKey,
}

impl Curve25519Keypair {
    /// All zeros: the value of an unused slot in a list of keys (never used as a key).
    pub(crate) const EMPTY: Self = Self {
        secret: [0; 32],
        public: Curve25519PublicKey([0; 32]),
    };

    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let keypair = Self::from_secret(&secret);
        secret.zeroize();
        keypair
    }

    pub(crate) fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            secret: *secret,
            public: Curve25519PublicKey(active::x25519_public_key(secret)),
        }
    }

    /// Rebuilds a key pair whose public key was stored alongside; the caller vouches that they
    /// belong together (they come from an authenticated pickle).
    pub(crate) fn from_parts(secret: &[u8; 32], public: Curve25519PublicKey) -> Self {
        Self {
            secret: *secret,
            public,
        }
    }

    pub(crate) const fn public_key(&self) -> Curve25519PublicKey {
        self.public
    }

    pub(crate) const fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// X25519 with `public`; `None` when the result is all zero (non-contributory).
    pub(crate) fn diffie_hellman(&self, public: &Curve25519PublicKey) -> Option<SharedSecret> {
        active::x25519(&self.secret, &public.0)
    }
}

impl fmt::Debug for Curve25519Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Curve25519Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 signing key of the active backend, which zeroizes it on drop.
#[derive(Clone)]
pub(crate) struct Ed25519Keypair(active::Ed25519Secret);

impl Ed25519Keypair {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let keypair = Self::from_secret(&secret);
        secret.zeroize();
        keypair
    }

    pub(crate) fn from_secret(secret: &[u8; 32]) -> Self {
        Self(active::Ed25519Secret::from_seed(secret))
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        self.0.seed()
    }

    pub(crate) fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey(self.0.public_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Ed25519Signature {
        Ed25519Signature(self.0.sign(message))
    }
}

impl fmt::Debug for Ed25519Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Keypair")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 signing key of its own, not an account's: a cross-signing key (master,
/// self-signing, user-signing). Its secret is the 32-byte seed, which the caller keeps sealed;
/// it zeroizes on drop and never prints.
#[derive(Clone, Debug)]
pub struct Ed25519SigningKey(Ed25519Keypair);

impl Ed25519SigningKey {
    /// A new key from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(Ed25519Keypair::generate(rng))
    }

    /// The key of `seed` (RFC 8032's 32-byte secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(Ed25519Keypair::from_secret(seed))
    }

    /// The seed, for the caller to store sealed.
    pub fn seed(&self) -> &[u8; 32] {
        self.0.secret_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.0.public_key()
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Ed25519Signature {
        self.0.sign(message)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn rfc7748_diffie_hellman_vector() {
        // RFC 7748, section 6.1: Alice's and Bob's keys and their shared secret.
        let alice = Curve25519Keypair::from_secret(&hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = Curve25519Keypair::from_secret(&hex32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            alice.public_key().0,
            hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let shared = alice.diffie_hellman(&bob.public_key()).unwrap();
        assert_eq!(
            shared.as_bytes(),
            &hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
        assert!(
            alice
                .diffie_hellman(&Curve25519PublicKey([0; 32]))
                .is_none()
        );
    }

    #[test]
    fn rfc8032_ed25519_vector() {
        // RFC 8032, section 7.1, TEST 1 (empty message).
        let key = Ed25519Keypair::from_secret(&hex32(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        ));
        assert_eq!(
            key.public_key().0,
            hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let sig = key.sign(b"");
        assert_eq!(
            &sig.0[..32],
            &hex32("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155")
        );
        key.public_key().verify(b"", &sig).unwrap();
        assert_eq!(
            key.public_key().verify(b"x", &sig),
            Err(DecodeError::InvalidSignature)
        );
    }

    #[test]
    fn a_signing_key_of_its_own_signs_as_rfc8032_says_and_keeps_its_seed() {
        let seed = hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = Ed25519SigningKey::from_seed(&seed);
        assert_eq!(key.seed(), &seed);
        assert_eq!(
            key.public_key().0,
            hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        key.public_key().verify(b"m", &key.sign(b"m")).unwrap();
        assert!(!format!("{key:?}").contains("9d61"));
    }

    #[test]
    fn debug_prints_public_parts_only() {
        let key = Curve25519Keypair::from_secret(&[0x42; 32]);
        let text = format!("{key:?}");
        assert!(text.contains("Curve25519PublicKey("));
        assert!(!text.contains("66, 66"));
        let signing = Ed25519Keypair::from_secret(&[0x42; 32]);
        let text = format!("{signing:?}");
        assert!(!text.contains("66, 66") && !text.contains("QkJCQkJC"));
    }

    pub(crate) fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
