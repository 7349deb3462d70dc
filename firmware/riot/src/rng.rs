//! The random-number adapter: RIOT's `random` module, accepted for key material only when it
//! reads the board's hardware RNG (`prng_hwrng`; on native64 that is the host's
//! `/dev/random`). It serves both jeton-core's [`Rng`](jeton_core::platform::Rng) and the
//! `rand_core` traits jeton-olm's key generation takes.

use core::convert::Infallible;

/// Why no random source for key material is available.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RngError {
    /// The build uses a seeded software PRNG instead of the hardware RNG.
    NotHardware,
}

impl core::fmt::Display for RngError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotHardware => f.write_str(
                "RIOT's random module is not backed by a hardware RNG (build with prng_hwrng)",
            ),
        }
    }
}

impl core::error::Error for RngError {}

/// RIOT's hardware-backed `random` module as a `rand_core` cryptographic RNG.
#[derive(Debug)]
pub(crate) struct HardwareRng(());

impl HardwareRng {
    /// The RNG, if this build reads the hardware RNG.
    pub(crate) fn new() -> Result<Self, RngError> {
        if crate::board::rng_is_hardware() {
            Ok(Self(()))
        } else {
            Err(RngError::NotHardware)
        }
    }
}

impl rand_core::TryRng for HardwareRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut word = [0u8; 4];
        self.try_fill_bytes(&mut word)?;
        Ok(u32::from_le_bytes(word))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut word = [0u8; 8];
        self.try_fill_bytes(&mut word)?;
        Ok(u64::from_le_bytes(word))
    }

    #[allow(unsafe_code)]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        // SAFETY: random_bytes writes exactly dst.len() bytes into the valid, exclusively
        // borrowed buffer; auto_init has initialised the random module before main runs.
        unsafe { riot_sys::random_bytes(dst.as_mut_ptr().cast(), dst.len() as _) };
        Ok(())
    }
}

/// Constructed only when `prng_hwrng` is in the build, see [`HardwareRng::new`].
impl rand_core::TryCryptoRng for HardwareRng {}

impl jeton_core::platform::Rng for HardwareRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::Rng::fill_bytes(self, dest);
    }
}
