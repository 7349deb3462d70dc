//! The token's tables and their records on flash.
//!
//! Records are CBOR arrays (minicbor) and, for the states of jeton-olm, a pickle encrypted
//! with the storage key after them: `meta length (2 bytes, big-endian) || meta CBOR ||
//! pickle`. Ids, cursors and the device table are not secret and are stored in the clear;
//! the access token is too (see the crate's known gaps).

use core::mem::MaybeUninit;

use heapless::{Deque, String, Vec};
use minicbor::Decoder;
use minicbor::data::Type;

use jeton_olm::Curve25519PublicKey;
use jeton_olm::megolm::{GroupSession, InboundGroupSession, SessionKey};
use jeton_olm::olm::{Account, Session};

use super::flash::{Flash, bytes32, corrupt, text};
use super::*;
use crate::platform::{Instant, Rng};
use crate::store::{Store, record};

/// Login state kept in [`record::LOGIN`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Login {
    pub(crate) user_id: UserId,
    pub(crate) device_id: DeviceId,
    pub(crate) access_token: String<MAX_ACCESS_TOKEN_LEN>,
    pub(crate) filter_id: String<MAX_CURSOR_LEN>,
    pub(crate) keys_uploaded: bool,
}

/// A device of a tracked user whose self-signature verified.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) user_id: UserId,
    pub(crate) device_id: DeviceId,
    pub(crate) curve: [u8; 32],
    pub(crate) ed: [u8; 32],
    /// Verified by SAS with these keys (a device whose keys change is rejected).
    pub(crate) verified: bool,
}

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

/// Where an Olm session lives on flash: its peer and when it was last used.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OlmSlot {
    pub(crate) peer_curve: [u8; 32],
    pub(crate) last_used: u32,
}

// --- Account -------------------------------------------------------------------------

pub(crate) fn save_account<S: Store, R: Rng>(
    flash: &mut Flash<S>,
    rng: &mut R,
    account: &Account<ONE_TIME_KEYS>,
) -> Result<(), TokenError> {
    flash.put_pickled(record::ACCOUNT, |_| Ok(()), account, rng)
}

/// Reads the account into `slot` (left as it was when there is none or on an error).
pub(crate) fn load_account_into<'a, S: Store>(
    flash: &mut Flash<S>,
    slot: &'a mut MaybeUninit<Account<ONE_TIME_KEYS>>,
) -> Result<Option<&'a mut Account<ONE_TIME_KEYS>>, TokenError> {
    flash.read(record::ACCOUNT, |_, pickle| Ok(slot.write(pickle.open()?)))
}

// --- Login, cursor, transactions ------------------------------------------------------

pub(crate) fn save_login<S: Store>(flash: &mut Flash<S>, login: &Login) -> Result<(), TokenError> {
    flash.put(record::LOGIN, |e| {
        e.array(5)?
            .str(&login.user_id)?
            .str(&login.device_id)?
            .str(&login.access_token)?
            .str(&login.filter_id)?
            .bool(login.keys_uploaded)?;
        Ok(())
    })
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_login<S: Store>(flash: &mut Flash<S>) -> Result<Option<Login>, TokenError> {
    let id = record::LOGIN;
    let Some((meta, _)) = flash.get(id)? else {
        return Ok(None);
    };
    let mut d = Decoder::new(meta);
    d.array().map_err(corrupt(id))?;
    Ok(Some(Login {
        user_id: text(&mut d, id)?,
        device_id: text(&mut d, id)?,
        access_token: text(&mut d, id)?,
        filter_id: text(&mut d, id)?,
        keys_uploaded: d.bool().map_err(corrupt(id))?,
    }))
}

// --- Devices ---------------------------------------------------------------------------

pub(crate) fn save_devices<S: Store>(
    flash: &mut Flash<S>,
    tracked: &[UserId],
    devices: &[Option<Device>; MAX_DEVICES],
) -> Result<(), TokenError> {
    flash.put(record::DEVICES, |e| {
        e.array(2)?.array(tracked.len() as u64)?;
        for user in tracked {
            e.str(user)?;
        }
        e.array(MAX_DEVICES as u64)?;
        for slot in devices {
            match slot {
                None => {
                    e.null()?;
                }
                Some(d) => {
                    e.array(5)?
                        .str(&d.user_id)?
                        .str(&d.device_id)?
                        .bytes(&d.curve)?
                        .bytes(&d.ed)?
                        .bool(d.verified)?;
                }
            }
        }
        Ok(())
    })
}

pub(crate) fn load_devices<S: Store>(
    flash: &mut Flash<S>,
    tracked: &mut Vec<UserId, MAX_TRACKED_USERS>,
    devices: &mut [Option<Device>; MAX_DEVICES],
) -> Result<(), TokenError> {
    let id = record::DEVICES;
    let Some((meta, _)) = flash.get(id)? else {
        return Ok(());
    };
    let c = corrupt(id);
    let mut d = Decoder::new(meta);
    d.array().map_err(&c)?;
    let users = d.array().map_err(&c)?.unwrap_or(0);
    for _ in 0..users {
        tracked
            .push(text(&mut d, id)?)
            .map_err(|_| TokenError::CorruptRecord(id))?;
    }
    let slots = d.array().map_err(&c)?.unwrap_or(0);
    for slot in devices.iter_mut().take(slots as usize) {
        if d.datatype().map_err(&c)? == Type::Null {
            d.null().map_err(&c)?;
            continue;
        }
        // Four fields before verification existed, five since.
        let fields = d.array().map_err(&c)?.unwrap_or(0);
        *slot = Some(Device {
            user_id: text(&mut d, id)?,
            device_id: text(&mut d, id)?,
            curve: bytes32(&mut d, id)?,
            ed: bytes32(&mut d, id)?,
            verified: fields > 4 && d.bool().map_err(&c)?,
        });
    }
    Ok(())
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

// --- Olm sessions ------------------------------------------------------------------------

pub(crate) fn save_olm<S: Store, R: Rng>(
    flash: &mut Flash<S>,
    rng: &mut R,
    slot: usize,
    info: &OlmSlot,
    session: &Session,
) -> Result<(), TokenError> {
    flash.put_pickled(
        record::OLM + slot as u16,
        |e| {
            e.array(2)?
                .bytes(&info.peer_curve)?
                .u32(info.last_used)
                .map(drop)
        },
        session,
        rng,
    )
}

pub(crate) fn load_olm_info<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
) -> Result<Option<OlmSlot>, TokenError> {
    let id = record::OLM + slot as u16;
    let Some((meta, _)) = flash.get(id)? else {
        return Ok(None);
    };
    let mut d = Decoder::new(meta);
    d.array().map_err(corrupt(id))?;
    Ok(Some(OlmSlot {
        peer_curve: bytes32(&mut d, id)?,
        last_used: d.u32().map_err(corrupt(id))?,
    }))
}

/// Reads the Olm session of `slot` into `session`, decoded in place (a session is 3 KB: no
/// copy of it on the stack).
pub(crate) fn load_olm<'s, S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
    session: &'s mut Option<Session>,
) -> Result<&'s mut Session, TokenError> {
    let id = record::OLM + slot as u16;
    flash
        .read(id, |_, pickle| pickle.open_session_into(session))?
        .ok_or(TokenError::CorruptRecord(id))
}

/// A 32-bit FNV-1a hash of an event id, for the replay window.
pub(crate) fn event_hash(event_id: &str) -> u32 {
    event_id.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// A Curve25519 key from raw bytes.
pub(crate) fn curve_key(bytes: &[u8; 32]) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_device_table_written_before_verification_existed_reads_as_unverified() {
        let mut flash = Flash::new(MemoryStore::<16>::new(), [0; 32]);
        // The four-field device entry the token wrote before SAS verification.
        flash
            .put(record::DEVICES, |e| {
                e.array(2)?.array(1)?.str("@a:s")?.array(1)?;
                e.array(4)?
                    .str("@a:s")?
                    .str("DEV")?
                    .bytes(&[1; 32])?
                    .bytes(&[2; 32])?;
                Ok(())
            })
            .unwrap();
        let mut tracked = Vec::new();
        let mut devices = [const { None }; MAX_DEVICES];
        load_devices(&mut flash, &mut tracked, &mut devices).unwrap();
        let device = devices[0].clone().unwrap();
        assert_eq!((device.device_id.as_str(), device.verified), ("DEV", false));

        // Verified, written and read back.
        devices[0] = Some(Device {
            verified: true,
            ..device
        });
        save_devices(&mut flash, &tracked, &devices).unwrap();
        let mut again = [const { None }; MAX_DEVICES];
        load_devices(&mut flash, &mut Vec::new(), &mut again).unwrap();
        assert!(again[0].as_ref().unwrap().verified);
        assert!(again[1].is_none());
    }
}
