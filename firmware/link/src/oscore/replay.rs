//! The recipient's replay window (RFC 8613 §7.4): a sliding window over the Partial IVs of
//! requests accepted in this context, and the Echo state of RFC 8613 appendix B.1.2 for a
//! server that lost the window.

use crate::OscoreError;

/// How many sequence numbers behind the highest accepted one are still accepted once.
pub const REPLAY_WINDOW: u64 = 32;

/// The replay state of a recipient context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayWindow {
    /// A window over accepted Partial IVs: `highest` and a bitmap of the 32 below it
    /// (bit `i` set: `highest - 1 - i` was accepted).
    Active { highest: Option<u64>, seen: u32 },
    /// The window was lost (a restored context): a request is accepted only after it echoes
    /// this challenge, and then starts the window.
    AwaitingEcho { challenge: [u8; ECHO_LEN] },
}

/// Bytes of an Echo challenge.
pub const ECHO_LEN: usize = 8;

impl ReplayWindow {
    pub(crate) const fn fresh() -> Self {
        ReplayWindow::Active {
            highest: None,
            seen: 0,
        }
    }

    /// The window of a context restored with a persisted high-water mark: everything at or
    /// below `highest` counts as seen, so after a restart only newer requests pass.
    pub(crate) const fn after_restart(highest: Option<u64>) -> Self {
        match highest {
            Some(highest) => ReplayWindow::Active {
                highest: Some(highest),
                seen: u32::MAX,
            },
            None => ReplayWindow::fresh(),
        }
    }

    /// Whether a request with this sequence number would be new.
    pub(crate) fn check(&self, sequence: u64) -> Result<(), OscoreError> {
        match *self {
            ReplayWindow::Active { highest: None, .. } | ReplayWindow::AwaitingEcho { .. } => {
                Ok(())
            }
            ReplayWindow::Active {
                highest: Some(highest),
                seen,
            } => {
                if sequence > highest {
                    Ok(())
                } else if sequence == highest {
                    Err(OscoreError::Replay)
                } else {
                    let behind = highest - sequence;
                    if behind > REPLAY_WINDOW || seen & (1 << (behind - 1)) != 0 {
                        Err(OscoreError::Replay)
                    } else {
                        Ok(())
                    }
                }
            }
        }
    }

    /// Marks a verified request's sequence number as seen.
    pub(crate) fn accept(&mut self, sequence: u64) {
        match self {
            ReplayWindow::AwaitingEcho { .. } => {}
            ReplayWindow::Active { highest, seen } => match *highest {
                None => *highest = Some(sequence),
                Some(h) if sequence > h => {
                    let shift = sequence - h;
                    *seen = if shift > REPLAY_WINDOW {
                        0
                    } else {
                        // The old highest becomes bit shift - 1.
                        (seen.checked_shl(shift as u32).unwrap_or(0)) | (1 << (shift - 1))
                    };
                    *highest = Some(sequence);
                }
                Some(h) => {
                    let behind = h - sequence;
                    if (1..=REPLAY_WINDOW).contains(&behind) {
                        *seen |= 1 << (behind - 1);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_accepted_once_within_the_window() {
        let mut window = ReplayWindow::fresh();
        for seq in [5u64, 3, 7, 6, 40] {
            window.check(seq).unwrap();
            window.accept(seq);
            assert_eq!(window.check(seq), Err(OscoreError::Replay), "{seq}");
        }
        // 40 - 32 = 8 is the oldest still in the window; 7 fell out.
        window.check(8).unwrap();
        assert_eq!(window.check(7), Err(OscoreError::Replay));
        assert_eq!(window.check(3), Err(OscoreError::Replay));
        window.accept(8);
        assert_eq!(window.check(8), Err(OscoreError::Replay));
        window.check(39).unwrap();
    }

    #[test]
    fn after_a_restart_nothing_at_or_below_the_mark_passes() {
        let window = ReplayWindow::after_restart(Some(100));
        for seq in [0u64, 67, 68, 99, 100] {
            assert_eq!(window.check(seq), Err(OscoreError::Replay), "{seq}");
        }
        window.check(101).unwrap();
        ReplayWindow::after_restart(None).check(0).unwrap();
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut window = ReplayWindow::fresh();
        window.accept(1);
        window.accept(1000);
        window.check(999).unwrap();
        assert_eq!(window.check(1), Err(OscoreError::Replay));
    }
}
