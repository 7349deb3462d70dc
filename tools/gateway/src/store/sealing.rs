//! The key that seals secrets in the state database (OSCORE keys, access tokens): derived
//! with HKDF-SHA-256 from the gateway's identity (its private key), used with
//! ChaCha20-Poly1305, a fresh random nonce per value and the value's place in the database
//! as associated data, so a sealed value cannot be moved to another row or column.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::StoreError;

const NONCE_LEN: usize = 12;

/// The database's sealing key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SealingKey {
    key: [u8; 32],
}

impl core::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// The key for the identity whose private key is `private_key`.
    pub fn from_identity(private_key: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(b"jeton-gateway state"), private_key);
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's limit of 255 blocks.
        let _ = hkdf.expand(b"sealing key v1", &mut key);
        SealingKey { key }
    }

    /// `secret` sealed for the place `aad` names: nonce, then ciphertext and tag.
    pub(super) fn seal(&self, aad: &[u8], secret: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let cipher = ChaCha20Poly1305::new(&self.key.into());
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: secret, aad })
            .ok()?;
        Some([nonce.as_slice(), &sealed].concat())
    }

    /// [`Self::seal`] for the stores: the place named as text, no randomness an error.
    pub(super) fn seal_at(&self, aad: &str, secret: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal(aad.as_bytes(), secret)
            .ok_or_else(|| StoreError::Database("no randomness to seal a secret".into()))
    }

    /// [`Self::open`] for the stores: a value that does not open is the identity's fault
    /// (`store` names the database in the error).
    pub(super) fn open_at(
        &self,
        store: &str,
        aad: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.open(aad.as_bytes(), sealed)
            .ok_or_else(|| StoreError::WrongIdentity(format!("{store} ({aad})")))
    }

    /// The secret a [`Self::seal`] made for `aad`; `None` when it was sealed under another
    /// key, for another place, or altered.
    pub(super) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let cipher = ChaCha20Poly1305::new(&self.key.into());
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_place() {
        let key = SealingKey::from_identity(&[7; 32]);
        let sealed = key.seal(b"contexts/1/record", b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open(b"contexts/1/record", &sealed).unwrap().as_slice(),
            b"secret"
        );
        assert!(key.open(b"contexts/2/record", &sealed).is_none());
        let other = SealingKey::from_identity(&[8; 32]);
        assert!(other.open(b"contexts/1/record", &sealed).is_none());
        assert!(!format!("{key:?}").contains('7'));
    }
}
