//! The Megolm ratchet: four 32-byte parts R0..R3 and a 32-bit counter. R3 changes on every
//! step, R2 every 2^8, R1 every 2^16 and R0 every 2^24 steps, so any later index is reached in
//! at most 1,020 HMAC operations.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::cipher::hmac_sha256;

/// The size of the ratchet's key material.
pub(crate) const RATCHET_LEN: usize = 128;
const PARTS: usize = 4;

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MegolmRatchet {
    parts: [[u8; 32]; PARTS],
    counter: u32,
}

impl MegolmRatchet {
    pub(crate) fn from_bytes(bytes: &[u8; RATCHET_LEN], counter: u32) -> Self {
        let mut parts = [[0u8; 32]; PARTS];
        for (part, chunk) in parts.iter_mut().zip(bytes.chunks_exact(32)) {
            part.copy_from_slice(chunk);
        }
        Self { parts, counter }
    }

    pub(crate) const fn index(&self) -> u32 {
        self.counter
    }

    /// The ratchet bytes R0 || R1 || R2 || R3.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.parts.as_flattened()
    }

    /// A copy of the ratchet bytes; the caller zeroizes it.
    pub(crate) fn to_bytes(&self) -> [u8; RATCHET_LEN] {
        let mut out = [0u8; RATCHET_LEN];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// Sets R_to = HMAC(R_from, [to]) for every `to` from 3 down to `from`; R_from goes last
    /// because the others are derived from its old value.
    fn rehash_from(&mut self, from: usize) {
        let mut to = PARTS;
        while to > from {
            to -= 1;
            let Some(source) = self.parts.get(from) else {
                return;
            };
            let next = hmac_sha256(source, &[to as u8]);
            if let Some(target) = self.parts.get_mut(to) {
                *target = next;
            }
        }
    }

    /// Moves forward by one step.
    pub(crate) fn advance(&mut self) {
        self.counter = self.counter.wrapping_add(1);
        // The highest part whose byte of the counter changed.
        let from = if self.counter & 0x00ff_ffff == 0 {
            0
        } else if self.counter & 0x0000_ffff == 0 {
            1
        } else if self.counter & 0x0000_00ff == 0 {
            2
        } else {
            3
        };
        self.rehash_from(from);
    }

    /// Moves forward to `target`, part by part from the most significant, as the Megolm
    /// specification describes. A `target` below the counter wraps around 2^32.
    pub(crate) fn advance_to(&mut self, target: u32) {
        for part in 0..PARTS {
            let shift = (PARTS - 1 - part) * 8;
            let mut steps = ((target >> shift).wrapping_sub(self.counter >> shift)) & 0xff;
            if steps == 0 {
                if target < self.counter {
                    steps = 0x100;
                } else {
                    continue;
                }
            }
            // All but the last step only need this part itself to move.
            for _ in 1..steps {
                if let Some(p) = self.parts.get_mut(part) {
                    *p = hmac_sha256(p, &[part as u8]);
                }
            }
            self.rehash_from(part);
            self.counter = target & (u32::MAX << shift);
        }
    }
}

impl fmt::Debug for MegolmRatchet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegolmRatchet")
            .field("index", &self.counter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stepped(start: &MegolmRatchet, steps: u32) -> MegolmRatchet {
        let mut r = start.clone();
        for _ in 0..steps {
            r.advance();
        }
        r
    }

    /// libolm's known answers (tests/test_megolm.cpp): the ratchet from the 128 bytes
    /// "0123456789ABCDEF" x 8, stepped once, jumped to 0x1000000, then to 0x1041506.
    #[test]
    fn libolm_known_answers() {
        let start =
            MegolmRatchet::from_bytes(&[*b"0123456789ABCDEF"; 8].concat().try_into().unwrap(), 0);
        let hex = |parts: [&str; 4]| {
            let joined = parts.concat();
            (0..128)
                .map(|i| u8::from_str_radix(&joined[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<_>>()
        };
        let expected1 = hex([
            "3031323334353637383941424344454630313233343536373839414243444546",
            "3031323334353637383941424344454630313233343536373839414243444546",
            "3031323334353637383941424344454630313233343536373839414243444546",
            "ba9cd955741d1c162323ec825e7c5ce889bbb423a18f23828fb2090d6e2af86a",
        ]);
        let expected2 = hex([
            "54022d7dc0298e1637e21c97153092f933c056ff74fe1b922d971f2482c2859c",
            "7004c01ee49bd6efe0073525af9b1632c5be726d12349cc5bd472bdc2df6540f",
            "3112591194fda617e568c683101eaecd7eddd6de1fbc0767ae34da1a09a54eab",
            "ba9cd955741d1c162323ec825e7c5ce889bbb423a18f23828fb2090d6e2af86a",
        ]);
        let expected3 = hex([
            "54022d7dc0298e1637e21c97153092f933c056ff74fe1b922d971f2482c2859c",
            "55588df5b7a48878428927868164589f3663447b51edc3595b036ca604c46dcd",
            "5c54850bfa98a1fd79a9df1cbe8fc5681937d30c85c8c31f7bb828816cf9ff3b",
            "956cbf807e65126a49558d45c84a2e4cd56f03e24416b98e1cfd97c206aa907a",
        ]);
        assert_eq!(stepped(&start, 1).as_bytes(), expected1.as_slice());
        let mut jumped = start.clone();
        jumped.advance_to(1);
        assert_eq!(jumped.as_bytes(), expected1.as_slice());
        jumped.advance_to(0x0100_0000);
        assert_eq!(
            (jumped.index(), jumped.as_bytes()),
            (0x0100_0000, expected2.as_slice())
        );
        jumped.advance_to(0x0104_1506);
        assert_eq!(
            (jumped.index(), jumped.as_bytes()),
            (0x0104_1506, expected3.as_slice())
        );

        // Wrapping past 2^32 to 0x1000000 lands where 0 -> 0x2000000 does (libolm's
        // "advance wraparound" case).
        let mut wrapped = MegolmRatchet::from_bytes(&start.to_bytes(), u32::MAX);
        wrapped.advance_to(0x0100_0000);
        let mut direct = start.clone();
        direct.advance_to(0x0200_0000);
        assert_eq!(wrapped.as_bytes(), direct.as_bytes());
    }

    #[test]
    fn jumping_equals_stepping_across_boundaries() {
        let start = MegolmRatchet::from_bytes(&[3; 128], 0xfe);
        for target in [0xff, 0x100, 0x101, 0x1ff, 0x10000, 0x10001 + 0x300] {
            let mut jumped = start.clone();
            jumped.advance_to(target);
            let walked = stepped(&start, target - 0xfe);
            assert_eq!(jumped.index(), target);
            assert_eq!(jumped.to_bytes(), walked.to_bytes(), "target {target:#x}");
        }
    }

    #[test]
    fn crossing_2_pow_24_rehashes_r0() {
        let start = MegolmRatchet::from_bytes(&[9; 128], 0x00ff_ffff);
        let next = stepped(&start, 1);
        assert_eq!(next.index(), 0x0100_0000);
        assert_ne!(next.to_bytes()[..32], start.to_bytes()[..32]);
        let mut jumped = start.clone();
        jumped.advance_to(0x0100_0000);
        assert_eq!(jumped.to_bytes(), next.to_bytes());
    }

    proptest! {
        #[test]
        fn two_jumps_equal_one(seed in any::<[u8; 32]>(), start in 0u32..5000, a in 0u32..70000, b in 0u32..70000) {
            let mut bytes = [0u8; 128];
            for chunk in bytes.chunks_exact_mut(32) { chunk.copy_from_slice(&seed); }
            let base = MegolmRatchet::from_bytes(&bytes, start);
            let mut once = base.clone();
            once.advance_to(start + a + b);
            let mut twice = base.clone();
            twice.advance_to(start + a);
            twice.advance_to(start + a + b);
            prop_assert_eq!(once.to_bytes(), twice.to_bytes());
        }
    }
}
