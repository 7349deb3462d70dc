//! The platform traits: what jeton-core needs from the board or host it runs on.
//!
//! jeton-core never reads a clock, a random source or a flash chip by itself. A platform
//! crate (jeton-firmware on RIOT, jeton-sim on a host, the test harness) implements these
//! traits and passes the values in. This module owns the traits and the [`Instant`] type
//! that every time-driven input of jeton-core takes.
//!
//! # Implementing the traits
//!
//! - [`Clock`] returns a monotonic millisecond count. It must never go backwards; it may
//!   jump forwards (a board waking from deep sleep). On RIOT, `ztimer_now(ZTIMER_MSEC)`
//!   widened to 64 bits is a good source; on a host, `std::time::Instant` measured from
//!   program start.
//! - [`Rng`] fills buffers with random bytes from a cryptographically secure generator.
//!   The same generator later feeds key generation, so a weak source is a security bug,
//!   not merely a protocol one. On RIOT, `random_bytes()` with a hardware-seeded CSPRNG
//!   module (`prng_sha256prng` seeded from `periph_hwrng`); on a host, `getrandom`.
//!   Tests use a seeded generator so that every run is reproducible.
//!
//! Persistent storage is the [`Store`](crate::store::Store) trait of [`store`](crate::store),
//! what the person sees the [`Ui`](crate::matrix::Ui) trait of [`matrix`](crate::matrix).
//! [`Platform`] names the three a token is built with.

/// What a token runs on: its random source, its flash and its display, named once.
///
/// [`Token`](crate::matrix::Token) is generic over one `Platform` (and its link to the
/// gateway) rather than over each part, so that a platform crate names its token in one type
/// and a part added here reaches every token without changing its users' signatures. A
/// platform is usually a type that exists only to name its parts:
///
/// ```
/// use jeton_core::matrix::{Token, Ui, UiEvent};
/// use jeton_core::platform::{Platform, Rng};
/// use jeton_core::store::MemoryStore;
///
/// # struct BoardRng;
/// # impl Rng for BoardRng { fn fill_bytes(&mut self, dest: &mut [u8]) { dest.fill(4) } }
/// # struct Display;
/// # impl Ui for Display { fn event(&mut self, _: &UiEvent<'_>) {} }
/// /// The board: its hardware RNG, its flash, its display.
/// struct Board;
///
/// impl Platform for Board {
///     type Rng = BoardRng;
///     type Store = MemoryStore;
///     type Ui = Display;
/// }
///
/// type BoardToken = Token<Board>;
/// ```
pub trait Platform {
    /// The cryptographically secure generator keys and protocol nonces are drawn from.
    type Rng: Rng;
    /// The flash the token's records (and, through it, its files) live in.
    type Store: crate::store::Store;
    /// Where what the person must see goes.
    type Ui: crate::matrix::Ui;
}

/// A point on the platform's monotonic clock, in milliseconds since an arbitrary origin
/// (usually boot).
///
/// Only differences between instants mean something. All arithmetic saturates instead of
/// overflowing: a `u64` of milliseconds lasts 584 million years, so saturation only ever
/// hides a bug in a test's virtual clock, never a real wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant moved `millis` milliseconds later.
    #[must_use]
    pub const fn plus_millis(self, millis: u64) -> Instant {
        Instant(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub const fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A monotonic millisecond clock.
///
/// jeton-core's state machines take the time as an argument of each input rather than
/// calling a clock, so the platform's event loop is the one user of this trait: it reads
/// the clock once per wake-up and passes the same [`Instant`] to every input it delivers.
///
/// ```
/// use jeton_core::platform::{Clock, Instant};
///
/// /// A clock a test moves by hand.
/// struct ManualClock(u64);
///
/// impl Clock for ManualClock {
///     fn now(&self) -> Instant {
///         Instant::from_millis(self.0)
///     }
/// }
///
/// let mut clock = ManualClock(0);
/// let start = clock.now();
/// clock.0 += 2_500;
/// assert_eq!(clock.now().millis_since(start), 2_500);
/// ```
pub trait Clock {
    /// The current time. Successive calls never return a smaller value.
    fn now(&self) -> Instant;
}

/// A cryptographically secure random number generator.
///
/// The CoAP engine draws message tokens, the first message id and the retransmission
/// jitter from it; the Olm and Megolm code will draw key material from it. Implement
/// [`fill_bytes`](Rng::fill_bytes); the other methods derive from it.
///
/// ```
/// use jeton_core::platform::Rng;
///
/// /// Deterministic and NOT secure: for tests only.
/// struct CountingRng(u8);
///
/// impl Rng for CountingRng {
///     fn fill_bytes(&mut self, dest: &mut [u8]) {
///         for byte in dest {
///             self.0 = self.0.wrapping_add(1);
///             *byte = self.0;
///         }
///     }
/// }
///
/// let mut rng = CountingRng(0);
/// assert_eq!(rng.next_u32(), u32::from_be_bytes([1, 2, 3, 4]));
/// ```
pub trait Rng {
    /// Fills `dest` entirely with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);

    /// A uniformly random `u32`.
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_be_bytes(bytes)
    }

    /// A random value in `0..bound`, or 0 when `bound` is 0.
    ///
    /// Uses rejection sampling so that no value is favoured.
    fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            return 0;
        }
        // The largest multiple of `bound` that fits; draws at or above it are retried.
        let zone = u32::MAX - (u32::MAX % bound);
        loop {
            let draw = self.next_u32();
            if draw < zone {
                return draw % bound;
            }
        }
    }
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (**self).fill_bytes(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SequenceRng<'a>(&'a [u32], usize);

    impl Rng for SequenceRng<'_> {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            let value = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            for (byte, source) in dest.iter_mut().zip(value.to_be_bytes().iter().cycle()) {
                *byte = *source;
            }
        }
    }

    #[test]
    fn below_rejects_draws_from_the_incomplete_last_zone() {
        // With bound 3, u32::MAX itself lies in the incomplete zone and must be redrawn.
        let mut rng = SequenceRng(&[u32::MAX, 7], 0);
        assert_eq!(rng.below(3), 1);
        assert_eq!(rng.1, 2, "the first draw was rejected");
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let late = Instant::from_millis(u64::MAX - 1);
        assert_eq!(late.plus_millis(10), Instant::from_millis(u64::MAX));
        assert_eq!(Instant::ZERO.millis_since(late), 0);
        assert_eq!(late.millis_since(Instant::ZERO), u64::MAX - 1);
    }
}
