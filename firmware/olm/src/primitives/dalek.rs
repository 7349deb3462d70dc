//! The default backend: x25519-dalek and ed25519-dalek (curve25519-dalek's serial backend,
//! its basepoint tables with the `precomputed-tables` feature).

use x25519_dalek::{PublicKey, StaticSecret};

use super::SharedSecret;

pub(crate) fn x25519_public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Option<SharedSecret> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*public));
    SharedSecret::contributory(*shared.as_bytes())
}

/// An Ed25519 signing key (ed25519-dalek's, which zeroizes on drop).
#[derive(Clone)]
pub(crate) struct Ed25519Secret(ed25519_dalek::SigningKey);

impl Ed25519Secret {
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    pub(crate) fn seed(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(message).to_bytes()
    }
}

/// Whether `bytes` decompress to a point of the curve.
pub(crate) fn ed25519_is_point(bytes: &[u8; 32]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(bytes).is_ok()
}

/// Whether `signature` is `public`'s over `message`, by ed25519-dalek's `verify_strict`.
pub(crate) fn ed25519_verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(public).is_ok_and(|key| {
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    })
}
