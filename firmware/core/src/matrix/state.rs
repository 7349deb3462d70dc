//! The token's tables and their records on flash.
//!
//! Records are CBOR arrays (minicbor) and, for the states of jeton-olm, a pickle encrypted
//! with the storage key after them: `meta length (2 bytes, big-endian) || meta CBOR ||
//! pickle`. Ids, cursors and the device table are not secret and are stored in the clear;
//! the access token is too (see the crate's known gaps).

use heapless::{Deque, Vec};
use minicbor::Decoder;

use jeton_olm::megolm::{GroupSession, InboundGroupSession, SessionKey};

use super::flash::{Flash, bytes32, corrupt, text};
use super::*;
use crate::platform::{Instant, Rng};
use crate::store::{Store, record};

/// A room's outbound Megolm session and whom it was shared with.
pub(crate) struct Outbound {
    pub(crate) session: GroupSession,
    pub(crate) created: Instant,
    /// Bit `i`: device slot `i` has the key.
    pub(crate) shared: u32,
    /// Bit `i`: device slot `i` had no one-time key to claim; skipped for this session.
    pub(crate) unreachable: u32,
}

/// A room the token is in.
pub(crate) struct Room {
    pub(crate) id: RoomId,
    pub(crate) encrypted: bool,
    pub(crate) rotation_ms: u64,
    pub(crate) rotation_msgs: u32,
    pub(crate) members: Vec<UserId, MAX_MEMBERS>,
    pub(crate) outbound: Option<Outbound>,
}

impl Room {
    pub(crate) fn new(id: RoomId) -> Self {
        Room {
            id,
            encrypted: false,
            rotation_ms: 604_800_000,
            rotation_msgs: 100,
            members: Vec::new(),
            outbound: None,
        }
    }
}

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

// --- Rooms and their outbound sessions --------------------------------------------------

pub(crate) fn save_room<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
    room: &Room,
) -> Result<(), TokenError> {
    flash.put(record::ROOMS + slot as u16, |e| {
        e.array(5)?
            .str(&room.id)?
            .bool(room.encrypted)?
            .u64(room.rotation_ms)?
            .u32(room.rotation_msgs)?
            .array(room.members.len() as u64)?;
        for member in &room.members {
            e.str(member)?;
        }
        Ok(())
    })
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_room<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
) -> Result<Option<Room>, TokenError> {
    let id = record::ROOMS + slot as u16;
    let Some((meta, _)) = flash.get(id)? else {
        return Ok(None);
    };
    let c = corrupt(id);
    let mut d = Decoder::new(meta);
    d.array().map_err(&c)?;
    let mut room = Room::new(text(&mut d, id)?);
    room.encrypted = d.bool().map_err(&c)?;
    room.rotation_ms = d.u64().map_err(&c)?;
    room.rotation_msgs = d.u32().map_err(&c)?;
    let members = d.array().map_err(&c)?.unwrap_or(0);
    for _ in 0..members {
        room.members
            .push(text(&mut d, id)?)
            .map_err(|_| TokenError::CorruptRecord(id))?;
    }
    Ok(Some(room))
}

pub(crate) fn save_outbound<S: Store, R: Rng>(
    flash: &mut Flash<S>,
    rng: &mut R,
    slot: usize,
    outbound: Option<&Outbound>,
) -> Result<(), TokenError> {
    let id = record::OUTBOUND + slot as u16;
    let Some(outbound) = outbound else {
        return flash.remove(id);
    };
    flash.put_pickled(
        id,
        |e| {
            e.array(2)?
                .u32(outbound.shared)?
                .u32(outbound.unreachable)
                .map(drop)
        },
        &outbound.session,
        rng,
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_outbound<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
    now: Instant,
) -> Result<Option<Outbound>, TokenError> {
    let id = record::OUTBOUND + slot as u16;
    flash.read(id, |meta, pickle| {
        let c = corrupt(id);
        let mut d = Decoder::new(meta);
        d.array().map_err(&c)?;
        let shared = d.u32().map_err(&c)?;
        let unreachable = d.u32().map_err(&c)?;
        Ok(Outbound {
            session: pickle.open()?,
            // The clock restarts at boot; the session's age restarts with it.
            created: now,
            shared,
            unreachable,
        })
    })
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
