//! The sender sequence number and its persistence (RFC 8613 appendix B.1.1).
//!
//! A context whose sender side outlives RAM (the token keeps its context across power cuts)
//! must never use a sequence number twice. The number is reserved in chunks of
//! [`SEQUENCE_CHUNK`]: before a number at or above the persisted high-water mark is used,
//! the caller persists a new mark; after a restart, numbering resumes at the stored mark, so
//! at most one chunk is skipped and none is reused.

use crate::OscoreError;

/// How many sequence numbers one persisted high-water mark covers.
pub const SEQUENCE_CHUNK: u64 = 64;

/// The largest sequence number: Partial IVs are at most 5 bytes (RFC 8613 §7.2.1).
pub const MAX_SEQUENCE: u64 = (1 << 40) - 1;

/// The sender's next sequence number and the mark up to which it may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SenderSequence {
    pub(crate) next: u64,
    /// `None`: the context lives in RAM only and needs no persistence (the gateway's).
    /// `Some(mark)`: numbers below `mark` are covered by a persisted high-water mark.
    pub(crate) durable_until: Option<u64>,
}

impl SenderSequence {
    /// The number to use now; it is consumed.
    pub(crate) fn take(&mut self) -> Result<u64, OscoreError> {
        if self.next > MAX_SEQUENCE {
            return Err(OscoreError::SequenceExhausted);
        }
        if self.durable_until.is_some_and(|mark| self.next >= mark) {
            return Err(OscoreError::SequenceNotPersisted);
        }
        let number = self.next;
        self.next += 1;
        Ok(number)
    }

    /// The mark the caller should persist now, if any: when less than half a chunk is left
    /// (so saving it can happen ahead of need) or none is.
    pub(crate) fn mark_to_persist(&self) -> Option<u64> {
        let mark = self.durable_until?;
        (mark.saturating_sub(self.next) <= SEQUENCE_CHUNK / 2)
            .then(|| (self.next + SEQUENCE_CHUNK).min(MAX_SEQUENCE + 1))
    }

    /// Records that `mark` is on durable storage.
    pub(crate) fn persisted(&mut self, mark: u64) {
        if let Some(current) = &mut self.durable_until {
            *current = (*current).max(mark);
        }
    }
}
