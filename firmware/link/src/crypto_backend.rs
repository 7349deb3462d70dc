//! lakers' cryptography (its `Crypto` trait) on the RustCrypto versions the rest of the
//! firmware links (`sha2` 0.11, `hkdf` 0.13, `aes` 0.9, `ccm` 0.6), so a token image carries
//! one SHA-256, one HMAC and one AES; and without the panics of lakers-crypto-rustcrypto 0.8
//! on a point off the curve or a ciphertext shorter than its tag (they become errors or an
//! all-zero secret that no MAC verifies with).

use ccm::aead::{AeadInOut, KeyInit};
use lakers_shared::{
    AES_CCM_TAG_LEN, BufferCiphertext3, BufferPlaintext3, BytesCcmIvLen, BytesCcmKeyLen,
    BytesHashLen, BytesMaxBuffer, BytesMaxInfoBuffer, BytesP256ElemLen, Crypto, EDHOCError,
    MAX_BUFFER_LEN,
};
use sha2::{Digest, Sha256};

use crate::seeded_rng::SeededRng;

use crate::aead::AesCcm16_64_128;

/// lakers' crypto backend for the link, drawing randomness from a [`SeededRng`].
pub(crate) struct LinkCrypto {
    rng: SeededRng,
}

impl LinkCrypto {
    pub(crate) fn new(rng: SeededRng) -> Self {
        LinkCrypto { rng }
    }
}

impl core::fmt::Debug for LinkCrypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LinkCrypto")
    }
}

impl Crypto for LinkCrypto {
    fn sha256_digest(&mut self, message: &BytesMaxBuffer, message_len: usize) -> BytesHashLen {
        let mut hasher = Sha256::new();
        hasher.update(message.get(..message_len).unwrap_or(&[]));
        hasher.finalize().into()
    }

    fn hkdf_expand(
        &mut self,
        prk: &BytesHashLen,
        info: &BytesMaxInfoBuffer,
        info_len: usize,
        length: usize,
    ) -> BytesMaxBuffer {
        let mut output: BytesMaxBuffer = [0; MAX_BUFFER_LEN];
        // A 32-byte PRK always fits; lengths come from lakers' own constants. On an
        // impossible error the output stays zero, which no peer's MAC verifies with.
        if let Ok(hkdf) = hkdf::Hkdf::<Sha256>::from_prk(prk)
            && let (Some(info), Some(out)) = (info.get(..info_len), output.get_mut(..length))
        {
            let _ = hkdf.expand(info, out);
        }
        output
    }

    fn hkdf_extract(&mut self, salt: &BytesHashLen, ikm: &BytesP256ElemLen) -> BytesHashLen {
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(salt), ikm);
        prk.into()
    }

    fn aes_ccm_encrypt_tag_8(
        &mut self,
        key: &BytesCcmKeyLen,
        iv: &BytesCcmIvLen,
        ad: &[u8],
        plaintext: &BufferPlaintext3,
    ) -> BufferCiphertext3 {
        let cipher = AesCcm16_64_128::new(key.into());
        let mut out = BufferCiphertext3::new();
        let len = plaintext.len;
        let fits = len + AES_CCM_TAG_LEN <= out.content.len();
        if let (true, Some(body)) = (fits, out.content.get_mut(..len)) {
            body.copy_from_slice(plaintext.as_slice());
            if let Ok(tag) = cipher.encrypt_inout_detached(iv.into(), ad, body.into())
                && let Some(slot) = out.content.get_mut(len..len + AES_CCM_TAG_LEN)
            {
                slot.copy_from_slice(&tag);
                out.len = len + AES_CCM_TAG_LEN;
            }
        }
        out
    }

    fn aes_ccm_decrypt_tag_8(
        &mut self,
        key: &BytesCcmKeyLen,
        iv: &BytesCcmIvLen,
        ad: &[u8],
        ciphertext: &BufferCiphertext3,
    ) -> Result<BufferPlaintext3, EDHOCError> {
        let len = ciphertext
            .len
            .checked_sub(AES_CCM_TAG_LEN)
            .ok_or(EDHOCError::MacVerificationFailed)?;
        let tag = ciphertext
            .content
            .get(len..len + AES_CCM_TAG_LEN)
            .ok_or(EDHOCError::MacVerificationFailed)?;
        let mut out = BufferPlaintext3::new();
        let body = out
            .content
            .get_mut(..len)
            .ok_or(EDHOCError::MacVerificationFailed)?;
        body.copy_from_slice(
            ciphertext
                .content
                .get(..len)
                .ok_or(EDHOCError::MacVerificationFailed)?,
        );
        let tag = tag
            .try_into()
            .map_err(|_| EDHOCError::MacVerificationFailed)?;
        AesCcm16_64_128::new(key.into())
            .decrypt_inout_detached(iv.into(), ad, body.into(), tag)
            .map_err(|_| EDHOCError::MacVerificationFailed)?;
        out.len = len;
        Ok(out)
    }

    fn p256_ecdh(
        &mut self,
        private_key: &BytesP256ElemLen,
        public_key: &BytesP256ElemLen,
    ) -> BytesP256ElemLen {
        // An invalid point (the link refuses those before lakers sees them): a secret no MAC
        // verifies with, instead of a panic.
        crate::p256::ecdh(private_key, public_key).unwrap_or([0; 32])
    }

    fn get_random_byte(&mut self) -> u8 {
        self.rng.next_byte()
    }

    fn p256_generate_key_pair(&mut self) -> (BytesP256ElemLen, BytesP256ElemLen) {
        let (secret, x, _) = crate::p256::generate(&mut self.rng);
        (secret, x)
    }
}
