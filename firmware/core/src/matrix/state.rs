//! The token's tables and their records on flash.
//!
//! Records are CBOR arrays (minicbor) and, for the states of jeton-olm, a pickle encrypted
//! with the storage key after them: `meta length (2 bytes, big-endian) || meta CBOR ||
//! pickle`. Ids, cursors and the device table are not secret and are stored in the clear;
//! the access token is too (see the crate's known gaps).

use core::mem::MaybeUninit;

use heapless::{Deque, String, Vec};
use minicbor::data::Type;
use minicbor::encode::write::Cursor;
use minicbor::{Decoder, Encoder};

use jeton_olm::megolm::{GroupSession, InboundGroupSession, SessionKey};
use jeton_olm::olm::{Account, Session};
use jeton_olm::{Curve25519PublicKey, Pickle};

use super::rng::CryptoSource;
use super::*;
use crate::platform::{Instant, Rng};
use crate::store::{MAX_RECORD_SIZE, RecordId, Store, record};

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

/// A message in the outbox; the text and ciphertext stay on flash.
#[derive(Clone, Debug)]
pub(crate) struct OutboxSlot {
    pub(crate) local_id: u32,
    pub(crate) room_id: RoomId,
}

/// An outbox record as read from flash.
pub(crate) struct OutboxEntry<'a> {
    pub(crate) local_id: u32,
    pub(crate) room_id: &'a str,
    pub(crate) txn_id: &'a str,
    pub(crate) text: &'a str,
    /// `(session id, Megolm message)` once encrypted.
    pub(crate) encrypted: Option<(&'a [u8], &'a [u8])>,
}

pub(crate) type Enc<'b> = Encoder<Cursor<&'b mut [u8]>>;

fn corrupt(id: RecordId) -> impl Fn(minicbor::decode::Error) -> TokenError {
    move |_| TokenError::CorruptRecord(id)
}

fn enc_err<E>(_: minicbor::encode::Error<E>) -> TokenError {
    TokenError::Store(crate::store::StoreError::TooLarge)
}

/// Encodes `meta` (and appends a pickle when `pickle` writes one) into `scratch` and stores
/// it as record `id`.
pub(crate) fn put_record<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    id: RecordId,
    meta: impl FnOnce(
        &mut Enc<'_>,
    ) -> Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>,
    pickle: impl FnOnce(&mut [u8]) -> Result<usize, TokenError>,
) -> Result<(), TokenError> {
    let (head, rest) = scratch.split_at_mut(2);
    let meta_len = {
        let mut e = Encoder::new(Cursor::new(&mut *rest));
        meta(&mut e).map_err(enc_err)?;
        e.writer().position()
    };
    let tail = rest.get_mut(meta_len..).ok_or(TokenError::Crypto)?;
    let pickle_len = pickle(tail)?;
    head.copy_from_slice(&(meta_len as u16).to_be_bytes());
    let total = 2 + meta_len + pickle_len;
    store.put(id, scratch.get(..total).unwrap_or_default())?;
    Ok(())
}

/// Reads record `id` into `scratch`: `(meta, pickle)`, or `None` if absent.
/// A record's meta CBOR and its pickle, borrowed from the scratch buffer.
pub(crate) type RecordParts<'s> = (&'s [u8], &'s mut [u8]);

pub(crate) fn get_record<'s, S: Store>(
    store: &mut S,
    scratch: &'s mut [u8; MAX_RECORD_SIZE],
    id: RecordId,
) -> Result<Option<RecordParts<'s>>, TokenError> {
    let Some(len) = store.get(id, scratch)? else {
        return Ok(None);
    };
    let record = scratch
        .get_mut(..len)
        .ok_or(TokenError::CorruptRecord(id))?;
    let (head, rest) = record
        .split_at_mut_checked(2)
        .ok_or(TokenError::CorruptRecord(id))?;
    let meta_len = usize::from(u16::from_be_bytes([
        head.first().copied().unwrap_or(0),
        head.get(1).copied().unwrap_or(0),
    ]));
    let (meta, pickle) = rest
        .split_at_mut_checked(meta_len)
        .ok_or(TokenError::CorruptRecord(id))?;
    Ok(Some((meta, pickle)))
}

fn no_pickle(_: &mut [u8]) -> Result<usize, TokenError> {
    Ok(0)
}

fn pickled<P: Pickle, R: Rng>(
    value: &P,
    rng: &mut R,
    key: &[u8; 32],
) -> impl FnOnce(&mut [u8]) -> Result<usize, TokenError> {
    move |out| {
        value
            .pickle(&mut CryptoSource(rng), key, out)
            .map_err(|_| TokenError::Store(crate::store::StoreError::TooLarge))
    }
}

fn unpickle<P: Pickle>(bytes: &mut [u8], key: &[u8; 32], id: RecordId) -> Result<P, TokenError> {
    P::from_pickle(bytes, key).map_err(|_| TokenError::CorruptRecord(id))
}

fn text<'a, const N: usize>(d: &mut Decoder<'a>, id: RecordId) -> Result<String<N>, TokenError> {
    let t = d.str().map_err(corrupt(id))?;
    String::try_from(t).map_err(|_| TokenError::CorruptRecord(id))
}

fn bytes32(d: &mut Decoder<'_>, id: RecordId) -> Result<[u8; 32], TokenError> {
    d.bytes()
        .map_err(corrupt(id))?
        .try_into()
        .map_err(|_| TokenError::CorruptRecord(id))
}

// --- Account -------------------------------------------------------------------------

pub(crate) fn save_account<S: Store, R: Rng>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    rng: &mut R,
    key: &[u8; 32],
    account: &Account<ONE_TIME_KEYS>,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::ACCOUNT,
        |_| Ok(()),
        pickled(account, rng, key),
    )
}

/// Reads the account into `slot` (left as it was when there is none or on an error).
pub(crate) fn load_account_into<'a, S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
    slot: &'a mut MaybeUninit<Account<ONE_TIME_KEYS>>,
) -> Result<Option<&'a mut Account<ONE_TIME_KEYS>>, TokenError> {
    let Some((_, pickle)) = get_record(store, scratch, record::ACCOUNT)? else {
        return Ok(None);
    };
    Ok(Some(slot.write(unpickle(pickle, key, record::ACCOUNT)?)))
}

// --- Login, cursor, transactions ------------------------------------------------------

pub(crate) fn save_login<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    login: &Login,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::LOGIN,
        |e| {
            e.array(5)?
                .str(&login.user_id)?
                .str(&login.device_id)?
                .str(&login.access_token)?
                .str(&login.filter_id)?
                .bool(login.keys_uploaded)?;
            Ok(())
        },
        no_pickle,
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_login<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
) -> Result<Option<Login>, TokenError> {
    let id = record::LOGIN;
    let Some((meta, _)) = get_record(store, scratch, id)? else {
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

pub(crate) fn save_cursor<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    since: &str,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::SYNC_CURSOR,
        |e| e.str(since).map(drop),
        no_pickle,
    )
}

pub(crate) fn load_cursor<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
) -> Result<String<MAX_CURSOR_LEN>, TokenError> {
    let id = record::SYNC_CURSOR;
    match get_record(store, scratch, id)? {
        None => Ok(String::new()),
        Some((meta, _)) => text(&mut Decoder::new(meta), id),
    }
}

/// Transaction ids: a random prefix chosen at first boot and a counter whose reserved
/// ceiling is on flash before any id below it is used.
pub(crate) fn save_transactions<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    prefix: u32,
    ceiling: u64,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::TRANSACTIONS,
        |e| e.array(2)?.u32(prefix)?.u64(ceiling).map(drop),
        no_pickle,
    )
}

pub(crate) fn load_transactions<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
) -> Result<Option<(u32, u64)>, TokenError> {
    let id = record::TRANSACTIONS;
    let Some((meta, _)) = get_record(store, scratch, id)? else {
        return Ok(None);
    };
    let mut d = Decoder::new(meta);
    d.array().map_err(corrupt(id))?;
    Ok(Some((
        d.u32().map_err(corrupt(id))?,
        d.u64().map_err(corrupt(id))?,
    )))
}

// --- Devices ---------------------------------------------------------------------------

pub(crate) fn save_devices<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    tracked: &[UserId],
    devices: &[Option<Device>; MAX_DEVICES],
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::DEVICES,
        |e| {
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
        },
        no_pickle,
    )
}

pub(crate) fn load_devices<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    tracked: &mut Vec<UserId, MAX_TRACKED_USERS>,
    devices: &mut [Option<Device>; MAX_DEVICES],
) -> Result<(), TokenError> {
    let id = record::DEVICES;
    let Some((meta, _)) = get_record(store, scratch, id)? else {
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
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    slot: usize,
    room: &Room,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::ROOMS + slot as u16,
        |e| {
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
        },
        no_pickle,
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_room<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    slot: usize,
) -> Result<Option<Room>, TokenError> {
    let id = record::ROOMS + slot as u16;
    let Some((meta, _)) = get_record(store, scratch, id)? else {
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn save_outbound<S: Store, R: Rng>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    rng: &mut R,
    key: &[u8; 32],
    slot: usize,
    outbound: Option<&Outbound>,
) -> Result<(), TokenError> {
    let id = record::OUTBOUND + slot as u16;
    let Some(outbound) = outbound else {
        store.remove(id)?;
        return Ok(());
    };
    put_record(
        store,
        scratch,
        id,
        |e| {
            e.array(2)?
                .u32(outbound.shared)?
                .u32(outbound.unreachable)
                .map(drop)
        },
        pickled(&outbound.session, rng, key),
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_outbound<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
    slot: usize,
    now: Instant,
) -> Result<Option<Outbound>, TokenError> {
    let id = record::OUTBOUND + slot as u16;
    let Some((meta, pickle)) = get_record(store, scratch, id)? else {
        return Ok(None);
    };
    let c = corrupt(id);
    let mut d = Decoder::new(meta);
    d.array().map_err(&c)?;
    let shared = d.u32().map_err(&c)?;
    let unreachable = d.u32().map_err(&c)?;
    Ok(Some(Outbound {
        session: unpickle(pickle, key, id)?,
        // The clock restarts at boot; the session's age restarts with it.
        created: now,
        shared,
        unreachable,
    }))
}

// --- Inbound sessions ------------------------------------------------------------------

pub(crate) fn save_inbound<S: Store, R: Rng>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    rng: &mut R,
    key: &[u8; 32],
    slot: usize,
    inbound: &Inbound,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
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
        pickled(&inbound.session, rng, key),
    )
}

// Out of line: its temporaries stay out of `Token::load`'s frame, under which every
// other load of a boot runs.
#[inline(never)]
pub(crate) fn load_inbound<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
    slot: usize,
) -> Result<Option<Inbound>, TokenError> {
    let id = record::INBOUND + slot as u16;
    let Some((meta, pickle)) = get_record(store, scratch, id)? else {
        return Ok(None);
    };
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
    Ok(Some(Inbound {
        room_id,
        sender,
        sender_curve,
        session: unpickle(pickle, key, id)?,
        seen,
    }))
}

// --- Olm sessions ------------------------------------------------------------------------

pub(crate) fn save_olm<S: Store, R: Rng>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    rng: &mut R,
    key: &[u8; 32],
    slot: usize,
    info: &OlmSlot,
    session: &Session,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::OLM + slot as u16,
        |e| {
            e.array(2)?
                .bytes(&info.peer_curve)?
                .u32(info.last_used)
                .map(drop)
        },
        pickled(session, rng, key),
    )
}

pub(crate) fn load_olm_info<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    slot: usize,
) -> Result<Option<OlmSlot>, TokenError> {
    let id = record::OLM + slot as u16;
    let Some((meta, _)) = get_record(store, scratch, id)? else {
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
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    key: &[u8; 32],
    slot: usize,
    session: &'s mut Option<Session>,
) -> Result<&'s mut Session, TokenError> {
    let id = record::OLM + slot as u16;
    let (_, pickle) = get_record(store, scratch, id)?.ok_or(TokenError::CorruptRecord(id))?;
    Session::from_pickle_into(pickle, key, session).map_err(|_| TokenError::CorruptRecord(id))
}

// --- Outbox --------------------------------------------------------------------------------

pub(crate) fn save_outbox<S: Store>(
    store: &mut S,
    scratch: &mut [u8; MAX_RECORD_SIZE],
    slot: usize,
    entry: &OutboxEntry<'_>,
) -> Result<(), TokenError> {
    put_record(
        store,
        scratch,
        record::OUTBOX + slot as u16,
        |e| {
            e.array(5)?
                .u32(entry.local_id)?
                .str(entry.room_id)?
                .str(entry.txn_id)?
                .str(entry.text)?;
            match entry.encrypted {
                None => e.null().map(drop),
                Some((session_id, message)) => {
                    e.array(2)?.bytes(session_id)?.bytes(message).map(drop)
                }
            }
        },
        no_pickle,
    )
}

/// Reads outbox slot `slot` from a record already in `meta`.
pub(crate) fn parse_outbox(meta: &[u8], slot: usize) -> Result<OutboxEntry<'_>, TokenError> {
    let id = record::OUTBOX + slot as u16;
    let c = corrupt(id);
    let mut d = Decoder::new(meta);
    d.array().map_err(&c)?;
    let local_id = d.u32().map_err(&c)?;
    let room_id = d.str().map_err(&c)?;
    let txn_id = d.str().map_err(&c)?;
    let text = d.str().map_err(&c)?;
    let encrypted = if d.datatype().map_err(&c)? == Type::Null {
        None
    } else {
        d.array().map_err(&c)?;
        Some((d.bytes().map_err(&c)?, d.bytes().map_err(&c)?))
    };
    Ok(OutboxEntry {
        local_id,
        room_id,
        txn_id,
        text,
        encrypted,
    })
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
        let mut store: MemoryStore = MemoryStore::new();
        let mut scratch = [0u8; MAX_RECORD_SIZE];
        // The four-field device entry the token wrote before SAS verification.
        put_record(
            &mut store,
            &mut scratch,
            record::DEVICES,
            |e| {
                e.array(2)?.array(1)?.str("@a:s")?.array(1)?;
                e.array(4)?
                    .str("@a:s")?
                    .str("DEV")?
                    .bytes(&[1; 32])?
                    .bytes(&[2; 32])?;
                Ok(())
            },
            no_pickle,
        )
        .unwrap();
        let mut tracked = Vec::new();
        let mut devices = [const { None }; MAX_DEVICES];
        load_devices(&mut store, &mut scratch, &mut tracked, &mut devices).unwrap();
        let device = devices[0].clone().unwrap();
        assert_eq!((device.device_id.as_str(), device.verified), ("DEV", false));

        // Verified, written and read back.
        devices[0] = Some(Device {
            verified: true,
            ..device
        });
        save_devices(&mut store, &mut scratch, &tracked, &devices).unwrap();
        let mut again = [const { None }; MAX_DEVICES];
        load_devices(&mut store, &mut scratch, &mut Vec::new(), &mut again).unwrap();
        assert!(again[0].as_ref().unwrap().verified);
        assert!(again[1].is_none());
    }
}
