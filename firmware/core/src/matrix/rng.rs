//! Randomness for the two consumers inside the token: key material (the platform's
//! [`Rng`] handed to jeton-olm through [`CryptoSource`]) and the CoAP engine's message ids,
//! tokens and jitter ([`TransportRng`], a hash DRBG seeded from the platform's generator so
//! that the engine can own one while the Matrix layer keeps the platform's).

use core::convert::Infallible;

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::platform::Rng;

/// The platform's [`Rng`] as the `rand_core` generator jeton-olm takes.
pub(crate) struct CryptoSource<'a, R: Rng>(pub(crate) &'a mut R);

impl<R: Rng> rand_core::TryRng for CryptoSource<'_, R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.0.fill_bytes(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: Rng> rand_core::TryCryptoRng for CryptoSource<'_, R> {}

/// SHA-256 in counter mode over a 32-byte seed: unpredictable without the seed, which
/// never leaves this struct.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TransportRng {
    seed: [u8; 32],
    counter: u64,
}

impl core::fmt::Debug for TransportRng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TransportRng(..)")
    }
}

impl TransportRng {
    /// A generator seeded from `source`.
    pub fn seeded_from<R: Rng>(source: &mut R) -> Self {
        let mut seed = [0u8; 32];
        source.fill_bytes(&mut seed);
        TransportRng { seed, counter: 0 }
    }
}

impl Rng for TransportRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut block: [u8; 32] = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_le_bytes())
                .finalize()
                .into();
            self.counter = self.counter.wrapping_add(1);
            for (out, byte) in chunk.iter_mut().zip(block.iter()) {
                *out = *byte;
            }
            block.zeroize();
        }
    }
}
