//! The message cipher Olm and Megolm share: keys expanded with HKDF-SHA-256, AES-256-CBC with
//! PKCS#7 padding, and an HMAC-SHA-256 tag truncated to 8 bytes on the wire.

use aes::Aes256;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{DecodeError, DecryptionError};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HKDF info for Olm message keys.
const OLM_KEYS_INFO: &[u8] = b"OLM_KEYS";
/// HKDF info for Megolm message keys.
const MEGOLM_KEYS_INFO: &[u8] = b"MEGOLM_KEYS";

/// The length of the MAC Olm and Megolm (version 3 messages) put on the wire.
pub(crate) const TRUNCATED_MAC_LEN: usize = 8;
/// The length of an untruncated HMAC-SHA-256 tag.
pub(crate) const MAC_LEN: usize = 32;
const BLOCK: usize = 16;

/// The message version with a truncated MAC: what vodozemac and libolm send, for Olm and Megolm.
pub(crate) const VERSION_TRUNCATED_MAC: u8 = 3;
/// The message version with a full MAC (vodozemac's experimental session config).
pub(crate) const VERSION_FULL_MAC: u8 = 4;

/// The version byte of a message and the MAC length that version carries.
pub(crate) fn message_version(bytes: &[u8]) -> Result<(u8, usize), DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::MissingVersion),
        Some(&VERSION_TRUNCATED_MAC) => Ok((VERSION_TRUNCATED_MAC, TRUNCATED_MAC_LEN)),
        Some(&VERSION_FULL_MAC) => Ok((VERSION_FULL_MAC, MAC_LEN)),
        Some(&got) => Err(DecodeError::InvalidVersion {
            expected: VERSION_FULL_MAC,
            got,
        }),
    }
}

/// The length of the AES-256-CBC PKCS#7 ciphertext of `plaintext_len` bytes.
pub(crate) const fn ciphertext_len(plaintext_len: usize) -> usize {
    (plaintext_len / BLOCK + 1) * BLOCK
}

/// One HMAC-SHA-256 step keyed by `key` over `data`, as the chain and Megolm ratchets use.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA-256 keyed by `key`, to feed.
pub(crate) fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac())
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // Hmac::new_from_slice never fails; this keeps the code free of panics anyway.
    <HmacSha256 as KeyInit>::new(&Default::default())
}

/// The AES key, HMAC key and IV expanded from one message key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct CipherKeys {
    aes_key: [u8; 32],
    mac_key: [u8; 32],
    iv: [u8; 16],
}

impl CipherKeys {
    /// Expands `ikm` with HKDF-SHA-256 (salt: one zero byte, as libolm) and `info` into 80 bytes.
    pub(crate) fn expand(ikm: &[u8], info: &[u8], salt: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(salt), ikm);
        let mut okm = [0u8; 80];
        // 80 bytes is far below HKDF-SHA-256's limit of 8160, so expand cannot fail.
        let _ = hkdf.expand(info, &mut okm);
        let mut keys = Self {
            aes_key: [0; 32],
            mac_key: [0; 32],
            iv: [0; 16],
        };
        let (aes, rest) = okm.split_at(32);
        let (mac, iv) = rest.split_at(32);
        keys.aes_key.copy_from_slice(aes);
        keys.mac_key.copy_from_slice(mac);
        keys.iv.copy_from_slice(iv);
        okm.zeroize();
        keys
    }

    /// The keys for one Olm message.
    pub(crate) fn olm(message_key: &[u8; 32]) -> Self {
        Self::expand(message_key, OLM_KEYS_INFO, &[0])
    }

    /// The keys for one Megolm message, from the whole 128-byte ratchet.
    pub(crate) fn megolm(ratchet: &[u8]) -> Self {
        Self::expand(ratchet, MEGOLM_KEYS_INFO, &[0])
    }

    /// Encrypts `plaintext` into the front of `out`; returns the ciphertext length.
    pub(crate) fn encrypt(&self, plaintext: &[u8], out: &mut [u8]) -> Option<usize> {
        let enc = cbc::Encryptor::<Aes256>::new(&self.aes_key.into(), &self.iv.into());
        enc.encrypt_padded_b2b::<Pkcs7>(plaintext, out)
            .ok()
            .map(<[u8]>::len)
    }

    /// Encrypts the first `plaintext_len` bytes of `buf` in place; returns the ciphertext length.
    pub(crate) fn encrypt_in_place(&self, buf: &mut [u8], plaintext_len: usize) -> Option<usize> {
        let enc = cbc::Encryptor::<Aes256>::new(&self.aes_key.into(), &self.iv.into());
        enc.encrypt_padded::<Pkcs7>(buf, plaintext_len)
            .ok()
            .map(<[u8]>::len)
    }

    /// Decrypts `buf` in place; returns the plaintext length.
    ///
    /// One block at a time: the cbc crate's many-blocks path inlines a parallel AES decryption
    /// of about 5 KB of flash on a Cortex-M, and Olm's messages are a few blocks long. The MAC
    /// is checked before anything is decrypted, so the padding check leaks nothing.
    pub(crate) fn decrypt_in_place(&self, buf: &mut [u8]) -> Result<usize, DecryptionError> {
        if buf.is_empty() || !buf.len().is_multiple_of(BLOCK) {
            return Err(DecryptionError::InvalidPadding);
        }
        let mut dec = cbc::Decryptor::<Aes256>::new(&self.aes_key.into(), &self.iv.into());
        for block in buf.chunks_exact_mut(BLOCK) {
            let block = <&mut cbc::cipher::Block<cbc::Decryptor<Aes256>>>::try_from(block)
                .map_err(|_| DecryptionError::InvalidPadding)?;
            dec.decrypt_block(block);
        }
        pkcs7_unpadded_len(buf).ok_or(DecryptionError::InvalidPadding)
    }

    /// Decrypts `ciphertext` into `out`; returns the plaintext length.
    pub(crate) fn decrypt(
        &self,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DecryptionError> {
        if out.len() < ciphertext.len() {
            return Err(DecryptionError::BufferTooSmall);
        }
        let out = out
            .get_mut(..ciphertext.len())
            .ok_or(DecryptionError::BufferTooSmall)?;
        out.copy_from_slice(ciphertext);
        self.decrypt_in_place(out)
    }

    /// HMAC-SHA-256 over the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable_hmac());
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks, in constant time, that `tag` is the truncated MAC of `data`.
    pub(crate) fn verify_truncated_mac(
        &self,
        data: &[u8],
        tag: &[u8],
    ) -> Result<(), DecryptionError> {
        let full = self.mac(&[data]);
        let expected = full
            .get(..TRUNCATED_MAC_LEN)
            .ok_or(DecryptionError::InvalidMac)?;
        if tag.len() == TRUNCATED_MAC_LEN && bool::from(expected.ct_eq(tag)) {
            Ok(())
        } else {
            Err(DecryptionError::InvalidMac)
        }
    }
}

/// The length of a PKCS#7-padded plaintext once its padding is removed, or `None` when the
/// padding is malformed (a last byte of 0 or over a block, or pad bytes that differ).
fn pkcs7_unpadded_len(padded: &[u8]) -> Option<usize> {
    let pad = usize::from(*padded.last()?);
    if pad == 0 || pad > BLOCK || pad > padded.len() {
        return None;
    }
    let (text, padding) = padded.split_at(padded.len() - pad);
    padding
        .iter()
        .all(|&b| usize::from(b) == pad)
        .then_some(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs7_padding_is_checked_byte_for_byte() {
        let mut padded = [0x41u8; 32];
        padded[29..].fill(3);
        assert_eq!(pkcs7_unpadded_len(&padded), Some(29));
        padded[16..].fill(16);
        assert_eq!(pkcs7_unpadded_len(&padded), Some(16));
        padded[30] = 2; // one pad byte differs
        assert_eq!(pkcs7_unpadded_len(&padded), None);
        padded[31] = 0;
        assert_eq!(pkcs7_unpadded_len(&padded), None);
        padded[31] = 17;
        assert_eq!(pkcs7_unpadded_len(&padded), None);
        assert_eq!(pkcs7_unpadded_len(&[]), None);
        assert_eq!(pkcs7_unpadded_len(&[2]), None, "more padding than bytes");
    }

    proptest::proptest! {
        #[test]
        fn decryption_block_by_block_undoes_the_cbc_crate_encryption(
            plaintext in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
            key in proptest::array::uniform32(proptest::num::u8::ANY),
        ) {
            let keys = CipherKeys::olm(&key);
            let mut ct = [0u8; 112];
            let n = keys.encrypt(&plaintext, &mut ct).unwrap();
            let mut out = [0u8; 112];
            let m = keys.decrypt(&ct[..n], &mut out).unwrap();
            proptest::prop_assert_eq!(&out[..m], &plaintext[..]);
        }
    }

    #[test]
    fn ciphertext_is_padded_to_whole_blocks() {
        assert_eq!(ciphertext_len(0), 16);
        assert_eq!(ciphertext_len(15), 16);
        assert_eq!(ciphertext_len(16), 32);
        assert_eq!(ciphertext_len(100), 112);
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let keys = CipherKeys::olm(&[7; 32]);
        let mut ct = [0u8; 48];
        let n = keys
            .encrypt(b"a secret plaintext of 33 bytes..", &mut ct)
            .unwrap();
        assert_eq!(n, 48);
        let mac = keys.mac(&[&ct[..n]]);
        keys.verify_truncated_mac(&ct[..n], &mac[..8]).unwrap();
        ct[3] ^= 1;
        assert_eq!(
            keys.verify_truncated_mac(&ct[..n], &mac[..8]),
            Err(DecryptionError::InvalidMac)
        );
        ct[3] ^= 1;
        let mut pt = [0u8; 48];
        let m = keys.decrypt(&ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"a secret plaintext of 33 bytes..");
        let other = CipherKeys::megolm(&[7; 128]);
        assert_ne!(other.decrypt(&ct[..n], &mut pt).ok(), Some(m));
    }

    #[test]
    fn rejects_small_buffers() {
        let keys = CipherKeys::olm(&[1; 32]);
        let mut small = [0u8; 15];
        assert_eq!(keys.encrypt(b"x", &mut small), None);
        assert_eq!(
            keys.decrypt(&[0; 16], &mut small),
            Err(DecryptionError::BufferTooSmall)
        );
    }
}
