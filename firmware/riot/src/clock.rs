//! The clock adapter: milliseconds since boot from ztimer's `ZTIMER_MSEC`, widened to 64 bits,
//! as jeton-core's [`Clock`](jeton_core::platform::Clock).

use core::cell::Cell;

use riot_wrappers::ztimer;

/// A monotonic millisecond clock.
///
/// ztimer counts in 32 bits and wraps after 49.7 days; the adapter widens it by counting wraps,
/// which is exact as long as it is read at least once per wrap period (the shell and, later,
/// jeton-core's tick loop read it far more often).
pub(crate) struct MonotonicClock {
    /// Holding the clock keeps `ZTIMER_MSEC` running (ztimer may otherwise power it down).
    clock: ztimer::LockedClock<1000>,
    last: Cell<u32>,
    wraps: Cell<u32>,
}

impl MonotonicClock {
    /// Acquires `ZTIMER_MSEC`. Must be called from a thread (main is one).
    pub(crate) fn new() -> Self {
        let clock = ztimer::Clock::msec().acquire();
        let last = clock.now().0;
        Self {
            clock,
            last: Cell::new(last),
            wraps: Cell::new(0),
        }
    }

    /// Milliseconds since boot.
    pub(crate) fn now_ms(&self) -> u64 {
        let ticks = self.clock.now().0;
        if ticks < self.last.get() {
            self.wraps.set(self.wraps.get().wrapping_add(1));
        }
        self.last.set(ticks);
        (u64::from(self.wraps.get()) << 32) | u64::from(ticks)
    }

    /// Blocks the calling thread for `ms` milliseconds.
    pub(crate) fn sleep_ms(&self, ms: u32) {
        ztimer::Clock::msec().sleep(ztimer::Ticks(ms));
    }
}

impl jeton_core::platform::Clock for MonotonicClock {
    fn now(&self) -> jeton_core::platform::Instant {
        jeton_core::platform::Instant::from_millis(self.now_ms())
    }
}

impl core::fmt::Debug for MonotonicClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MonotonicClock")
            .field("last", &self.last.get())
            .field("wraps", &self.wraps.get())
            .finish_non_exhaustive()
    }
}
