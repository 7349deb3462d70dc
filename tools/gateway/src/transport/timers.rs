//! When the transport wants to run next: one heap of deadlines, each naming what is due.

use super::PeerId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    /// The homeserver has not answered the CON request with this message id in time for a
    /// piggybacked response: acknowledge it now, answer separately later.
    Piggyback(PeerId, u16),
    /// The CON message with this message id may need sending again.
    Retransmit(PeerId, u16),
    /// The observer with this id may have a long-poll to try again, or a confirmation that
    /// did not come.
    Observer(PeerId, u64),
    /// Time to forget expired state.
    Sweep,
}

/// The deadlines, earliest first. A deadline whose state is gone by then does nothing.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
}

impl Timers {
    /// Runs `kind` at `at`.
    pub(super) fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.heap.push(Reverse((at, kind)));
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest deadline if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        let Reverse((at, kind)) = self.heap.peek().copied()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some(kind)
    }
}
