//! A session's replay window: which message indexes it decrypted, under which event ids.
//!
//! Replays: each session has a low-water mark and the [`REPLAY_WINDOW`] indexes above it one
//! by one. An index under the mark, or one already seen under another event id, is refused as
//! a replay; one seen under the same event id (a sync delivered again after a power cut) is
//! skipped without a word. The mark rises only when a newer index no longer fits the window.

use heapless::Deque;
use minicbor::Decoder;

use super::super::flash::{Enc, EncError, corrupt};
use super::*;

/// What the replay window says of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not seen before.
    New,
    /// Seen under the same event id: delivered again.
    Again,
    /// Under the low-water mark, or seen under another event id.
    Replay,
}

// The window's bits are a `u128`.
const _: () = assert!(REPLAY_WINDOW <= 128);

/// A session's replay state: the low-water mark, which of the [`REPLAY_WINDOW`] indexes from
/// it were seen, and the event ids of the last few messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    low: u32,
    /// Bit `i`: index `low + i` was seen.
    window: u128,
    /// `(index, hash of the event id)` of the last messages.
    recent: Deque<(u32, u32), REDELIVERY_MEMORY>,
}

impl ReplayWindow {
    /// A window whose mark is the session's first known index.
    pub(super) fn new(first_known: u32) -> Self {
        ReplayWindow {
            low: first_known,
            window: 0,
            recent: Deque::new(),
        }
    }

    pub(super) fn check(&self, index: u32, hash: u32) -> Seen {
        if self.recent.iter().any(|entry| *entry == (index, hash)) {
            return Seen::Again;
        }
        let Some(offset) = index.checked_sub(self.low) else {
            return Seen::Replay;
        };
        if offset < REPLAY_WINDOW as u32 && self.window & (1 << offset) != 0 {
            return Seen::Replay;
        }
        Seen::New
    }

    /// Notes message `index` of event `hash` as seen, raising the mark if it must.
    pub(super) fn record(&mut self, index: u32, hash: u32) {
        let width = REPLAY_WINDOW as u32;
        if index >= self.low.saturating_add(width) {
            let low = index - (width - 1);
            let shift = low - self.low;
            self.window = if shift >= width {
                0
            } else {
                self.window >> shift
            };
            self.low = low;
        }
        if let Some(offset) = index.checked_sub(self.low) {
            self.window |= 1 << offset;
        }
        if self.recent.is_full() {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back((index, hash));
    }

    pub(super) fn encode(&self, e: &mut Enc<'_>) -> Result<(), EncError> {
        e.u32(self.low)?
            .bytes(&self.window.to_be_bytes())?
            .array(self.recent.len() as u64)?;
        for (index, hash) in &self.recent {
            e.array(2)?.u32(*index)?.u32(*hash)?;
        }
        Ok(())
    }

    pub(super) fn decode(d: &mut Decoder<'_>, id: u16) -> Result<Self, TokenError> {
        let c = corrupt(id);
        let low = d.u32().map_err(&c)?;
        let window: [u8; 16] = d
            .bytes()
            .map_err(&c)?
            .try_into()
            .map_err(|_| TokenError::CorruptRecord(id))?;
        let mut replay = ReplayWindow {
            low,
            window: u128::from_be_bytes(window),
            recent: Deque::new(),
        };
        replay.recent = recent(d, id)?;
        Ok(replay)
    }
}

/// A list of `(index, event hash)` pairs of a record's meta.
fn recent(
    d: &mut Decoder<'_>,
    id: u16,
) -> Result<Deque<(u32, u32), REDELIVERY_MEMORY>, TokenError> {
    let c = corrupt(id);
    let mut recent = Deque::new();
    for _ in 0..d.array().map_err(&c)?.unwrap_or(0) {
        d.array().map_err(&c)?;
        let entry = (d.u32().map_err(&c)?, d.u32().map_err(&c)?);
        if recent.is_full() {
            recent.pop_front();
        }
        let _ = recent.push_back(entry);
    }
    Ok(recent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_what_it_saw_and_what_fell_under_its_mark() {
        let mut replay = ReplayWindow::new(0);
        for index in [0, 2, 1, 5] {
            assert_eq!(replay.check(index, index + 100), Seen::New);
            replay.record(index, index + 100);
        }
        // The same index under the same event id is a delivery again, under another a replay.
        assert_eq!(replay.check(2, 102), Seen::Again);
        assert_eq!(replay.check(2, 999), Seen::Replay);
        // An index not seen yet, below the newest: late, not a replay.
        assert_eq!(replay.check(3, 103), Seen::New);
        // A jump past the window raises the mark: what falls under it is refused, however old.
        let far = REPLAY_WINDOW as u32 + 10;
        replay.record(far, 7);
        assert_eq!(replay.check(4, 104), Seen::Replay);
        assert_eq!(replay.check(far - 1, 8), Seen::New);
        assert_eq!(replay.check(far, 9), Seen::Replay);
        // Every index seen above the mark stays refused, long after it left the recent list.
        for index in far + 1..far + 40 {
            replay.record(index, index);
        }
        assert_eq!(replay.check(far, 9), Seen::Replay);
        assert_eq!(replay.check(far - 1, 8), Seen::New);
    }

    #[test]
    fn the_window_survives_its_record() {
        let mut replay = ReplayWindow::new(3);
        for index in [3, 4, 200, 150] {
            replay.record(index, index * 7);
        }
        let mut buf = [0u8; 512];
        let mut e = minicbor::Encoder::new(minicbor::encode::write::Cursor::new(&mut buf[..]));
        replay.encode(&mut e).unwrap();
        let len = e.writer().position();
        let back = ReplayWindow::decode(&mut Decoder::new(&buf[..len]), 1).unwrap();
        assert_eq!(back, replay);
    }
}
