//! The gateway's one memory budget (`memory_budget`): what every peer, observer and block-wise
//! transfer holds, counted against one limit and enforced by admission, so that a flood meets
//! a 5.03 with Max-Age rather than the kernel's OOM killer.
//!
//! What is counted:
//!
//! - each peer a fixed [`PEER_CHARGE`] (its table entry, rate bucket, sticky state and the
//!   answers of its duplicate cache, which are at most one block each);
//! - each observer a fixed [`OBSERVER_CHARGE`] (its state, the notification kept for
//!   retransmission, and its long-poll's upstream connection);
//! - the bytes of Block1 assemblies, finished uploads (last block and answer) and stored Block2
//!   bodies, media files included.
//!
//! When the budget is full a new plain peer gets 5.03 Max-Age 30, a Block1 block 5.03 Max-Age
//! 1, an Observe registration a plain answer without Observe, and a large answer is not stored
//! (its later blocks are fetched again). Tokens on the link (OSCORE contexts) are counted but
//! never refused: the tokens file bounds them, and they are the gateway's reason to exist.
//!
//! A [`Charge`] is what one holder counts; dropping it gives the bytes back, so state that is
//! forgotten by any path (sweep, eviction, draining) leaves nothing counted behind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// What one peer with state costs: the transport's per-peer state with one cached answer
/// measures about 1.4 KB of RSS (`cargo bench -p jeton-gateway --bench observer_memory`,
/// "per peer"); rounded up for a fuller duplicate cache.
pub(super) const PEER_CHARGE: usize = 4 * 1024;

/// What one observer costs: its transport state and kept notification (under 1 KB) and its
/// long-poll's upstream HTTP/1.1 connection (`--bench observer_memory`: about 21 KB of RSS per
/// observer in all).
pub(super) const OBSERVER_CHARGE: usize = 21 * 1024;

/// The bytes held now against one limit, kept in the `memory_held_bytes` gauge itself (so the
/// metric is exact), and the refusals in `memory_refusals`. Cloning shares both.
#[derive(Debug, Clone)]
pub(super) struct MemoryBudget {
    held: Gauge,
    refusals: Counter,
    limit: usize,
}

impl MemoryBudget {
    /// An empty budget of `limit` bytes, reporting to `metrics`.
    pub(super) fn new(limit: usize, metrics: &Metrics) -> Self {
        metrics.memory_held.set(0);
        Self {
            held: metrics.memory_held.clone(),
            refusals: metrics.memory_refusals.clone(),
            limit,
        }
    }

    /// Bytes counted now.
    pub(super) fn held(&self) -> usize {
        usize::try_from(self.held.get()).unwrap_or(0)
    }

    /// Whether `more` bytes still fit; a refusal is counted when they do not.
    pub(super) fn fits(&self, more: usize) -> bool {
        let fits = self.held().saturating_add(more) <= self.limit;
        if !fits {
            self.refusals.inc();
        }
        fits
    }

    /// A charge of `bytes` if they fit; `linked`: a token on the link, counted whether they
    /// fit or not.
    pub(super) fn admit(&self, bytes: usize, linked: bool) -> Option<Charge> {
        (linked || self.fits(bytes)).then(|| self.charge(bytes))
    }

    /// A charge of `bytes`, fitting or not.
    pub(super) fn charge(&self, bytes: usize) -> Charge {
        self.held.inc_by(signed(bytes));
        Charge {
            budget: self.clone(),
            bytes,
        }
    }
}

/// A byte count as the gauge counts.
fn signed(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Bytes one holder counts against the budget, given back when it is dropped.
#[derive(Debug)]
pub(super) struct Charge {
    budget: MemoryBudget,
    bytes: usize,
}

impl Charge {
    /// The budget the charge counts against.
    pub(super) fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Counts `bytes` now instead of what was counted before.
    pub(super) fn resize(&mut self, bytes: usize) {
        let held = &self.budget.held;
        if bytes >= self.bytes {
            held.inc_by(signed(bytes - self.bytes));
        } else {
            held.dec_by(signed(self.bytes - bytes));
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.held.dec_by(signed(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_while_held_and_linked_ones_beyond_the_limit() {
        let metrics = Metrics::default();
        let budget = MemoryBudget::new(100, &metrics);
        let mut a = budget.admit(60, false).unwrap();
        assert!(budget.admit(50, false).is_none(), "beyond the limit");
        let b = budget.admit(50, true).unwrap();
        assert_eq!(
            budget.held(),
            110,
            "a linked charge counts beyond the limit"
        );
        a.resize(10);
        assert_eq!(budget.held(), 60);
        drop(b);
        drop(a);
        assert_eq!(budget.held(), 0);
        assert_eq!(metrics.memory_refusals.get(), 1);
    }
}
