//! The AEAD of cipher suite 2 (EDHOC) and of OSCORE's default algorithm:
//! AES-CCM-16-64-128 (RFC 8152 §10.2: AES-128, an 8-byte tag, a 13-byte nonce), the `ccm`
//! crate over [`Aes128OneBlock`].
//!
//! `Aes128OneBlock` is AES-128 handing `ccm` one block per call to a single out-of-line
//! encryption, so CCM's CBC-MAC and its counter mode share one copy of the AES code. Given
//! `aes::Aes128` itself, the `ctr` crate's keystream loop inlines AES for its two-block and
//! its tail paths: 4 KB more flash on a Cortex-M4 for no speed a token needs (a few hundred
//! bytes per message). The bytes are the same (the unit tests hold it against `ccm` over
//! `aes::Aes128`).

use aes::Aes128;
use aes::cipher::consts::{U1, U8, U13, U16};
use aes::cipher::{
    Block, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, InOut,
    Key, KeyInit, KeySizeUser, ParBlocksSizeUser,
};

/// AES-CCM-16-64-128.
pub(crate) type AesCcm16_64_128 = ccm::Ccm<Aes128OneBlock, U8, U13>;

/// AES-128 that encrypts one block per call (see the module documentation). Its key schedule
/// is wiped on drop (`aes`' `zeroize` feature).
#[derive(Clone)]
pub(crate) struct Aes128OneBlock(Aes128);

impl KeySizeUser for Aes128OneBlock {
    type KeySize = U16;
}

impl KeyInit for Aes128OneBlock {
    fn new(key: &Key<Self>) -> Self {
        Aes128OneBlock(Aes128::new(key))
    }
}

impl BlockSizeUser for Aes128OneBlock {
    type BlockSize = U16;
}

impl BlockCipherEncrypt for Aes128OneBlock {
    fn encrypt_with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = U16>) {
        f.call(&OneBlock(&self.0));
    }
}

/// The backend `ccm` drives: one block at a time.
struct OneBlock<'a>(&'a Aes128);

impl BlockSizeUser for OneBlock<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for OneBlock<'_> {
    type ParBlocksSize = U1;
}

impl BlockCipherEncBackend for OneBlock<'_> {
    fn encrypt_block(&self, block: InOut<'_, '_, Block<Self>>) {
        encrypt(self.0, block);
    }
}

/// The one copy of AES-128 encryption that CCM calls.
#[inline(never)]
fn encrypt(cipher: &Aes128, block: InOut<'_, '_, Block<Aes128>>) {
    cipher.encrypt_block_inout(block);
}

#[cfg(test)]
mod tests {
    use ccm::aead::AeadInOut;
    use proptest::prelude::*;

    use super::*;

    type Reference = ccm::Ccm<Aes128, U8, U13>;

    proptest! {
        /// Ciphertext and tag as `ccm` over `aes::Aes128` makes them, and opened again; a
        /// flipped bit anywhere is refused.
        #[test]
        fn the_same_bytes_as_ccm_over_aes(
            key in any::<[u8; 16]>(),
            nonce in any::<[u8; 13]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..40),
            plaintext in proptest::collection::vec(any::<u8>(), 0..100),
            flip in any::<usize>(),
        ) {
            let ours = AesCcm16_64_128::new(&key.into());
            let reference = Reference::new(&key.into());
            let mut sealed = plaintext.clone();
            let tag = ours
                .encrypt_inout_detached(&nonce.into(), &aad, sealed.as_mut_slice().into())
                .unwrap();
            let mut expected = plaintext.clone();
            let expected_tag = reference
                .encrypt_inout_detached(&nonce.into(), &aad, expected.as_mut_slice().into())
                .unwrap();
            prop_assert_eq!(&sealed, &expected);
            prop_assert_eq!(tag, expected_tag);

            let mut opened = sealed.clone();
            ours.decrypt_inout_detached(&nonce.into(), &aad, opened.as_mut_slice().into(), &tag)
                .unwrap();
            prop_assert_eq!(&opened, &plaintext);

            let mut tampered = sealed.clone();
            let mut bad_tag = tag;
            let bits = 8 * (tampered.len() + bad_tag.len());
            let bit = flip % bits;
            if bit < 8 * tampered.len() {
                tampered[bit / 8] ^= 1 << (bit % 8);
            } else {
                let bit = bit - 8 * tampered.len();
                bad_tag[bit / 8] ^= 1 << (bit % 8);
            }
            prop_assert!(ours
                .decrypt_inout_detached(&nonce.into(), &aad, tampered.as_mut_slice().into(), &bad_tag)
                .is_err());
        }
    }
}
