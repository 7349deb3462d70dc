//! The token's tables and their records on flash.
//!
//! Records are CBOR arrays (minicbor) and, for the states of jeton-olm, a pickle encrypted
//! with the storage key after them: `meta length (2 bytes, big-endian) || meta CBOR ||
//! pickle`. Ids, cursors and the device table are not secret and are stored in the clear;
//! the access token is too (see the crate's known gaps).

use heapless::Deque;
use minicbor::Decoder;

use jeton_olm::megolm::{InboundGroupSession, SessionKey};

use super::flash::{Flash, bytes32, corrupt, text};
use super::*;
use crate::platform::Rng;
use crate::store::{Store, record};

/// A room key received, with who sent it.
pub(crate) struct Inbound {
    pub(crate) room_id: RoomId,
    pub(crate) sender: UserId,
    pub(crate) sender_curve: [u8; 32],
    pub(crate) session: InboundGroupSession,
    /// `(message index, hash of the event id)` of recent messages.
    pub(crate) seen: Deque<(u32, u32), REPLAY_WINDOW>,
}

/// A decrypted room key waiting for its sender's device keys.
pub(crate) struct PendingKey {
    pub(crate) sender: UserId,
    pub(crate) sender_curve: [u8; 32],
    pub(crate) claimed_ed: [u8; 32],
    pub(crate) room_id: RoomId,
    pub(crate) key: SessionKey,
}

// --- Inbound sessions ------------------------------------------------------------------

pub(crate) fn save_inbound<S: Store, R: Rng>(
    flash: &mut Flash<S>,
    rng: &mut R,
    slot: usize,
    inbound: &Inbound,
) -> Result<(), TokenError> {
    flash.put_pickled(
        record::INBOUND + slot as u16,
        |e| {
            e.array(4)?
                .str(&inbound.room_id)?
                .str(&inbound.sender)?
                .bytes(&inbound.sender_curve)?
                .array(inbound.seen.len() as u64)?;
            for (index, hash) in &inbound.seen {
                e.array(2)?.u32(*index)?.u32(*hash)?;
            }
            Ok(())
        },
        &inbound.session,
        rng,
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_inbound<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
) -> Result<Option<Inbound>, TokenError> {
    let id = record::INBOUND + slot as u16;
    flash.read(id, |meta, pickle| {
        let c = corrupt(id);
        let mut d = Decoder::new(meta);
        d.array().map_err(&c)?;
        let room_id = text(&mut d, id)?;
        let sender = text(&mut d, id)?;
        let sender_curve = bytes32(&mut d, id)?;
        let mut seen = Deque::new();
        let entries = d.array().map_err(&c)?.unwrap_or(0);
        for _ in 0..entries {
            d.array().map_err(&c)?;
            let entry = (d.u32().map_err(&c)?, d.u32().map_err(&c)?);
            seen.push_back(entry)
                .map_err(|_| TokenError::CorruptRecord(id))?;
        }
        Ok(Inbound {
            room_id,
            sender,
            sender_curve,
            session: pickle.open()?,
            seen,
        })
    })
}

/// A 32-bit FNV-1a hash of an event id, for the replay window.
pub(crate) fn event_hash(event_id: &str) -> u32 {
    event_id.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}
