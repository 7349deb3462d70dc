//! The randomness EDHOC consumes (ephemeral keys, connection ids), drawn from a 32-byte seed
//! the caller takes from its CSPRNG, so that the link needs no RNG trait of its own.
//!
//! Output block `i` is SHA-256(seed || i): a hash DRBG without reseeding, which is enough
//! for the few hundred bytes one handshake uses.

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        SeededRng {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    /// The low byte of a 32-bit draw (four bytes, little-endian), as lakers' own backend
    /// takes a random byte, so that a seed gives the same handshake under either backend.
    pub(crate) fn next_byte(&mut self) -> u8 {
        let mut word = [0u8; 4];
        self.fill_bytes(&mut word);
        word[0]
    }

    pub(crate) fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                let mut hash = Sha256::new();
                hash.update(self.seed);
                hash.update(self.counter.to_be_bytes());
                self.block = hash.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block.get(self.used).copied().unwrap_or(0);
            self.used += 1;
        }
    }
}
