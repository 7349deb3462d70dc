//! A security context's record on flash: the derived keys and ids written once when the
//! context is made, and the context restored from it after a restart.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::OscoreError;

use super::replay::ReplayWindow;
use super::sequence::SenderSequence;
use super::{ECHO_LEN, Id, KEY_LEN, MAX_ID_LEN, NONCE_LEN, SecurityContext};

/// A security context's stored form: the derived keys and ids (see
/// [`SecurityContext::to_record`]). Persist it once when a context is made; the
/// sequence number's high-water mark is stored next to it, separately.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContextRecord {
    bytes: [u8; RECORD_LEN],
}

/// Bytes of a [`ContextRecord`].
pub const RECORD_LEN: usize = 1 + 2 * KEY_LEN + NONCE_LEN + 2 * (1 + MAX_ID_LEN);
const RECORD_VERSION: u8 = 1;

impl ContextRecord {
    /// The record's bytes.
    pub fn as_bytes(&self) -> &[u8; RECORD_LEN] {
        &self.bytes
    }

    /// A record read back from storage.
    pub fn from_bytes(bytes: &[u8; RECORD_LEN]) -> Self {
        ContextRecord { bytes: *bytes }
    }
}

impl core::fmt::Debug for ContextRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ContextRecord(..)")
    }
}

impl SecurityContext {
    /// The stored form of this context, without its sequence number.
    pub fn to_record(&self) -> ContextRecord {
        let mut bytes = [0u8; RECORD_LEN];
        let mut at = 0;
        let mut write = |chunk: &[u8]| {
            if let Some(dst) = bytes.get_mut(at..at + chunk.len()) {
                dst.copy_from_slice(chunk);
            }
            at += chunk.len();
        };
        write(&[RECORD_VERSION]);
        write(&self.sender_key);
        write(&self.recipient_key);
        write(&self.common_iv);
        for id in [&self.sender_id, &self.recipient_id] {
            write(&[id.len]);
            write(&id.bytes);
        }
        ContextRecord { bytes }
    }

    /// A context restored from its record and the last persisted high-water mark: sending
    /// resumes at the mark (never below it), and, as a server, the first request must
    /// pass the Echo round trip with `echo_challenge` (fresh random bytes) before the replay
    /// window starts again (RFC 8613 appendix B.1.2). A client (the token), which receives
    /// no requests, may pass any bytes.
    pub fn restore(
        record: &ContextRecord,
        persisted_mark: u64,
        echo_challenge: [u8; ECHO_LEN],
    ) -> Result<Self, OscoreError> {
        let b = &record.bytes;
        let take =
            |from: usize, len: usize| b.get(from..from + len).ok_or(OscoreError::MalformedRecord);
        if b.first() != Some(&RECORD_VERSION) {
            return Err(OscoreError::MalformedRecord);
        }
        let mut context = SecurityContext {
            sender_key: [0; KEY_LEN],
            recipient_key: [0; KEY_LEN],
            common_iv: [0; NONCE_LEN],
            sender_id: Id::default(),
            recipient_id: Id::default(),
            sequence: SenderSequence {
                next: persisted_mark,
                durable_until: Some(persisted_mark),
            },
            replay: ReplayWindow::AwaitingEcho {
                challenge: echo_challenge,
            },
        };
        context.sender_key.copy_from_slice(take(1, KEY_LEN)?);
        context
            .recipient_key
            .copy_from_slice(take(1 + KEY_LEN, KEY_LEN)?);
        context
            .common_iv
            .copy_from_slice(take(1 + 2 * KEY_LEN, NONCE_LEN)?);
        let ids = 1 + 2 * KEY_LEN + NONCE_LEN;
        for (i, id) in [&mut context.sender_id, &mut context.recipient_id]
            .into_iter()
            .enumerate()
        {
            let at = ids + i * (1 + MAX_ID_LEN);
            let len = usize::from(*take(at, 1)?.first().ok_or(OscoreError::MalformedRecord)?);
            if len > MAX_ID_LEN {
                return Err(OscoreError::MalformedRecord);
            }
            *id = Id::new(take(at + 1, len)?)?;
        }
        Ok(context)
    }

    /// A server's context restored from its record, the last persisted sequence mark and the
    /// persisted high-water mark of its replay window (the highest Partial IV it accepted,
    /// stored before the request was acted on): requests at or below that mark are replays,
    /// newer ones pass at once, without the Echo round trip of [`Self::restore`].
    pub fn restore_with_replay_mark(
        record: &ContextRecord,
        persisted_mark: u64,
        replay_high_water: Option<u64>,
    ) -> Result<Self, OscoreError> {
        let mut context = Self::restore(record, persisted_mark, [0; ECHO_LEN])?;
        context.replay = ReplayWindow::after_restart(replay_high_water);
        Ok(context)
    }
}
