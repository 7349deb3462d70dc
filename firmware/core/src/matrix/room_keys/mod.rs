//! The room keys the token holds: inbound Megolm sessions, each with the room it is for, the
//! device that sent it, and the messages it decrypted; and Megolm decryption with them.
//!
//! A session is on flash ([`record::INBOUND`] + slot, pickled with the storage key, its meta
//! naming the room, the sender, its Curve25519 key and the session id), and the table in RAM
//! is an index of a few bytes per slot: the room's slot, a hash of the sending device's key,
//! the first bytes of the session id, and when the session arrived and was last used. A
//! message loads its session from flash, decrypts, and writes it back with the index it saw.
//!
//! Sessions are keyed by room, sending device and session id: one sender's session is never
//! overwritten by another's, and a message is decrypted only with a session its sender sent.
//! Of two keys of the same session from the same device, the one that reaches further back is
//! kept. Which keys enter, and when a waiting one does, is [`super::pending_keys`]'s; the rules
//! for leaving and eviction are written down in [`super::lifecycles`]: a session leaves when
//! its room is left and when its sender is no longer a member of the room with that device
//! (checked after every sync and device query). A new session takes a free slot while there
//! is one, whoever sent it; when the table is full, the least recently used session that is
//! not in use makes way (in use: the newest of its room and sender, the one the sender
//! encrypts with): the sender's own when it holds [`MAX_INBOUND_PER_SENDER`] sessions, else
//! one of a sender holding more than that, else any. The person sees
//! [`UiEvent::RoomKeyDropped`].
//!
//! Replays are refused by each session's window ([`replay`]); `m.room_key.withheld` notices
//! are kept to say why a session's messages cannot be read ([`withheld`]).

use minicbor::Decoder;

use jeton_olm::megolm::{InboundGroupSession, MegolmMessage};
use jeton_proto::view::{Binary, EncryptedContent, MEGOLM_ALGORITHM};

use super::bodies::{binary_bytes, binary32};
use super::flash::{Flash, bytes32, corrupt, text};
use super::olm_sessions::MAX_CIPHERTEXT;
use super::*;
use crate::store::record;

mod replay;
mod withheld;

use replay::{ReplayWindow, Seen};
pub(super) use withheld::WITHHELD_EVENT;
use withheld::Withheld;

/// A 32-bit FNV-1a hash: of an event id for the replay window, of a key or a user id for the
/// tables' indexes.
pub(super) fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The first bytes of a session id, as the indexes keep it.
pub(super) fn id_prefix(session_id: &[u8; 32]) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(session_id.get(..8).unwrap_or(&[0; 8]));
    prefix
}

/// A room key held, as on flash.
pub(super) struct Inbound {
    pub(super) room_id: RoomId,
    pub(super) sender: UserId,
    /// The Curve25519 key of the device that sent the key.
    pub(super) sender_curve: [u8; 32],
    /// The table's clock when the key arrived, and when it last decrypted a message.
    received: u32,
    used: u32,
    replay: ReplayWindow,
    session: InboundGroupSession,
}

impl Inbound {
    /// A session that just arrived.
    pub(super) fn new(
        room_id: RoomId,
        sender: UserId,
        sender_curve: [u8; 32],
        session: InboundGroupSession,
    ) -> Self {
        Inbound {
            room_id,
            sender,
            sender_curve,
            received: 0,
            used: 0,
            replay: ReplayWindow::new(session.first_known_index()),
            session,
        }
    }

    /// Writes the session as slot `slot`'s to flash.
    fn save<S: Store, R: Rng>(
        &self,
        flash: &mut Flash<S>,
        rng: &mut R,
        slot: usize,
    ) -> Result<(), TokenError> {
        flash.put_pickled(
            record::INBOUND + slot as u16,
            |e| {
                e.array(9)?
                    .str(&self.room_id)?
                    .str(&self.sender)?
                    .bytes(&self.sender_curve)?
                    .bytes(self.session.session_id().as_bytes())?
                    .u32(self.session.first_known_index())?
                    .u32(self.received)?
                    .u32(self.used)?;
                self.replay.encode(e)
            },
            &self.session,
            rng,
        )
    }

    /// Reads slot `slot`'s session. Out of line: its temporaries stay out of the callers'
    /// frames.
    #[inline(never)]
    fn load<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Inbound>, TokenError> {
        let id = record::INBOUND + slot as u16;
        flash.read(id, |meta, pickle| {
            let mut d = Decoder::new(meta);
            let header = Header::decode(&mut d, id)?;
            let replay = ReplayWindow::decode(&mut d, id)?;
            Ok(Inbound {
                room_id: header.room_id,
                sender: header.sender,
                sender_curve: header.sender_curve,
                received: header.received,
                used: header.used,
                replay,
                session: pickle.open()?,
            })
        })
    }
}

/// What the index keeps of a session held: enough to find it, and to choose which one makes
/// way for a new key, without reading flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The slot of its room in the room table.
    room: u8,
    /// [`fnv`] of the sending device's Curve25519 key.
    sender: u32,
    /// [`id_prefix`] of the session id.
    session: [u8; 8],
    /// The table's clock when the key arrived.
    received: u32,
    /// The table's clock when it last decrypted a message (or arrived).
    used: u32,
}

/// What a session's record says before its pickle is opened: its room, its sender and which
/// session it is.
struct Header {
    room_id: RoomId,
    sender: UserId,
    sender_curve: [u8; 32],
    session_id: [u8; 32],
    first_known: u32,
    received: u32,
    used: u32,
}

impl Header {
    /// Reads the header at the start of a session's record meta (`d`) of record `id`.
    fn decode(d: &mut Decoder<'_>, id: u16) -> Result<Header, TokenError> {
        let c = corrupt(id);
        d.array().map_err(&c)?;
        Ok(Header {
            room_id: text(d, id)?,
            sender: text(d, id)?,
            sender_curve: bytes32(d, id)?,
            session_id: bytes32(d, id)?,
            first_known: d.u32().map_err(&c)?,
            received: d.u32().map_err(&c)?,
            used: d.u32().map_err(&c)?,
        })
    }
}

/// Reads slot `slot`'s header.
fn read_header<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Header>, TokenError> {
    let id = record::INBOUND + slot as u16;
    flash.read(id, |meta, _| Header::decode(&mut Decoder::new(meta), id))
}

/// Where a new session goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// A copy of it that reaches as far back is held already.
    Held,
    /// Over an older copy of it, in this slot.
    Replace(usize),
    /// In this free slot.
    Free(usize),
    /// In this slot, whose session makes way.
    Evict(usize),
}

/// The room keys held, indexed. Boot lays the table out in place ([`super::boot`]), so its
/// fields are visible there; everything else goes through the methods.
#[repr(C)]
pub(super) struct RoomKeys {
    /// Counts arrivals and uses, for which session is newest and which least recently used.
    pub(super) clock: u32,
    pub(super) entries: [Option<Entry>; MAX_INBOUND_SESSIONS],
    /// The latest withheld notices, oldest first.
    pub(super) withheld: heapless::Vec<Withheld, MAX_WITHHELD_NOTICES>,
}

/// What decrypting a Megolm event gave.
pub(super) enum Megolm {
    /// The plaintext is in `work` (this long); whether the sending device was verified.
    Decrypted {
        plaintext_len: usize,
        sender_verified: bool,
    },
    /// It cannot be shown, for this reason.
    Undecryptable(UndecryptableReason),
    /// Nothing to show (the token's own message echoed back, or one shown before).
    Ignored,
}

impl RoomKeys {
    /// Reads the index from flash; `rooms` gives each session's room slot. A session whose room
    /// is not in the table (the room was left, and a power cut came before the session went)
    /// is not indexed: its slot is free, and the next session there replaces it.
    pub(super) fn load<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        rooms: &Rooms,
    ) -> Result<(), TokenError> {
        for slot in 0..MAX_INBOUND_SESSIONS {
            let entry = read_header(flash, slot)?.and_then(|header| {
                Some(Entry {
                    room: u8::try_from(rooms.slot(&header.room_id)?).ok()?,
                    sender: fnv(&header.sender_curve),
                    session: id_prefix(&header.session_id),
                    received: header.received,
                    used: header.used,
                })
            });
            if let Some(found) = &entry {
                self.clock = self.clock.max(found.received).max(found.used);
            }
            if let Some(place) = self.entries.get_mut(slot) {
                *place = entry;
            }
        }
        Ok(())
    }

    /// Advances the clock: its new value.
    fn tick(&mut self) -> u32 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    /// Sessions held.
    pub(super) fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    /// The slots whose sessions are for room slot `room` with an id starting like `session_id`.
    fn candidates(&self, room: usize, session_id: &[u8; 32]) -> impl Iterator<Item = usize> + '_ {
        let prefix = id_prefix(session_id);
        self.entries
            .iter()
            .enumerate()
            .filter(move |(_, entry)| {
                entry.is_some_and(|e| usize::from(e.room) == room && e.session == prefix)
            })
            .map(|(slot, _)| slot)
    }

    /// Whether a session of room slot `room` whose id starts with `prefix` is held.
    pub(super) fn holds(&self, room: u8, prefix: [u8; 8]) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.room == room && e.session == prefix)
    }

    /// Whether the session in `slot` is in use: the newest of its room and sender.
    fn in_use(&self, slot: usize) -> bool {
        let Some(Some(entry)) = self.entries.get(slot) else {
            return false;
        };
        !self.entries.iter().flatten().any(|other| {
            other.room == entry.room
                && other.sender == entry.sender
                && other.received > entry.received
        })
    }

    /// The least recently used slot among `slots` that is not in use.
    fn least_useful(&self, slots: impl Iterator<Item = usize>) -> Option<usize> {
        slots
            .filter(|slot| !self.in_use(*slot))
            .filter_map(|slot| Some((slot, self.entries.get(slot)?.as_ref()?.used)))
            .min_by_key(|(_, used)| *used)
            .map(|(slot, _)| slot)
    }

    /// Where a new session from the device whose key hashes to `sender` goes, among the slots
    /// not held by a copy of it: a free slot while there is one (a burst of keys whose
    /// messages have not come yet must not push out each other); in a full table, the
    /// sender's own least useful one when it holds its share, else the least useful of a
    /// sender holding more than its share, else the least useful of all. `None` when every
    /// candidate is in use.
    fn place_new(&self, sender: u32) -> Option<Placement> {
        if let Some(free) = self.entries.iter().position(Option::is_none) {
            return Some(Placement::Free(free));
        }
        let of = |sender: u32| {
            self.entries
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.is_some_and(|e| e.sender == sender))
                .map(|(slot, _)| slot)
        };
        if of(sender).count() >= MAX_INBOUND_PER_SENDER {
            return self.least_useful(of(sender)).map(Placement::Evict);
        }
        let over_share = (0..MAX_INBOUND_SESSIONS).filter(|slot| {
            self.entries
                .get(*slot)
                .and_then(Option::as_ref)
                .is_some_and(|e| of(e.sender).count() > MAX_INBOUND_PER_SENDER)
        });
        self.least_useful(over_share)
            .or_else(|| self.least_useful(0..MAX_INBOUND_SESSIONS))
            .map(Placement::Evict)
    }

    /// Forgets the session in `slot` (on flash first).
    fn remove<S: Store>(&mut self, flash: &mut Flash<S>, slot: usize) -> Result<(), TokenError> {
        flash.remove(record::INBOUND + slot as u16)?;
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = None;
        }
        Ok(())
    }

    /// Forgets the sessions of room slot `room` (the token left it).
    pub(super) fn forget_room<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        room: usize,
    ) -> Result<(), TokenError> {
        for slot in 0..MAX_INBOUND_SESSIONS {
            if self
                .entries
                .get(slot)
                .is_some_and(|e| e.is_some_and(|e| usize::from(e.room) == room))
            {
                self.remove(flash, slot)?;
            }
        }
        Ok(())
    }

    /// The slots and the room slot and sender hash of each session held.
    pub(super) fn held(&self) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.map(|e| (slot, usize::from(e.room), e.sender)))
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Keeps `inbound` (its sender checked, see [`super::pending_keys`]) for room slot `room`:
    /// over an older copy of the same session from the same device, in a free slot, or over
    /// the least useful session, which the person is told of. A key the table cannot take
    /// (every session in use) is reported as [`Limit::InboundSessions`].
    pub(super) fn hold_room_key(
        &mut self,
        room: usize,
        mut inbound: Inbound,
    ) -> Result<(), TokenError> {
        let sender = fnv(&inbound.sender_curve);
        let session_id = *inbound.session.session_id().as_bytes();
        self.room_keys.forget_withheld(&inbound.sender, &session_id);
        let mut placement = None;
        let candidates: heapless::Vec<usize, MAX_INBOUND_SESSIONS> =
            self.room_keys.candidates(room, &session_id).collect();
        for slot in candidates {
            let Some(held) = read_header(&mut self.env.flash, slot)? else {
                continue;
            };
            if held.session_id != session_id || held.sender_curve != inbound.sender_curve {
                continue;
            }
            placement = Some(if held.first_known <= inbound.session.first_known_index() {
                Placement::Held
            } else {
                Placement::Replace(slot)
            });
        }
        let Some(placement) = placement.or_else(|| self.room_keys.place_new(sender)) else {
            self.error(TokenError::LimitReached(Limit::InboundSessions));
            return Ok(());
        };
        let slot = match placement {
            Placement::Held => return Ok(()),
            Placement::Replace(slot) | Placement::Free(slot) => slot,
            Placement::Evict(slot) => {
                self.tell_dropped(slot)?;
                slot
            }
        };
        let now = self.room_keys.tick();
        inbound.received = now;
        inbound.used = now;
        inbound.save(&mut self.env.flash, &mut self.env.rng, slot)?;
        if let Some(entry) = self.room_keys.entries.get_mut(slot) {
            *entry = Some(Entry {
                room: u8::try_from(room).unwrap_or(u8::MAX),
                sender,
                session: id_prefix(&session_id),
                received: now,
                used: now,
            });
        }
        Ok(())
    }

    /// Tells the person that the session in `slot` makes way for another.
    fn tell_dropped(&mut self, slot: usize) -> Result<(), TokenError> {
        if let Some(held) = read_header(&mut self.env.flash, slot)? {
            self.env.ui.event(&UiEvent::RoomKeyDropped {
                room_id: &held.room_id,
                sender: &held.sender,
            });
        }
        Ok(())
    }

    /// Drops the sessions whose sender is no longer a member of their room with that device
    /// (the member left, the device is gone, the user is no longer tracked). Run after a sync
    /// is processed and after a device query, never between a sync's room state and its
    /// timeline: a member's last messages before leaving still decrypt.
    pub(super) fn sweep_room_keys(&mut self) -> Result<(), TokenError> {
        for slot in 0..MAX_INBOUND_SESSIONS {
            let Some((_, room, sender)) = self.room_keys.held().find(|(s, _, _)| *s == slot) else {
                continue;
            };
            let current = self.rooms.get(room).is_some_and(|room| {
                self.devices
                    .iter()
                    .any(|(_, d)| fnv(&d.curve) == sender && room.members.contains(&d.user_id))
            });
            if !current {
                self.room_keys.remove(&mut self.env.flash, slot)?;
            }
        }
        Ok(())
    }

    /// Decrypts Megolm event `event_id` of `sender` in `room_id` (`content`) into `work`, with
    /// the session it names that `sender` sent: refused when there is none (the event is
    /// fetched again if its key comes or, waiting, is taken), when the session is only another sender's, or
    /// when the index is a replay. A new index is on flash before the message is shown. Out of
    /// line: the decryption's stack is not under the showing's.
    #[inline(never)]
    pub(super) fn decrypt_megolm(
        &mut self,
        room_id: &str,
        sender: &str,
        event_id: &str,
        content: EncryptedContent<'_>,
    ) -> Result<Megolm, TokenError> {
        let refused = |reason| Ok(Megolm::Undecryptable(reason));
        if content.algorithm()? != MEGOLM_ALGORITHM {
            return refused(UndecryptableReason::UnsupportedAlgorithm);
        }
        let Some(session_id) = binary32(content.session_id()?) else {
            return refused(UndecryptableReason::Malformed);
        };
        let room = self.rooms.slot(room_id);
        let candidates: heapless::Vec<usize, MAX_INBOUND_SESSIONS> = match room {
            Some(room) => self.room_keys.candidates(room, &session_id).collect(),
            None => heapless::Vec::new(),
        };
        let mut others = false;
        for slot in candidates {
            match self.decrypt_with(slot, sender, event_id, &session_id, content)? {
                Some(result) => return Ok(result),
                None => others = true,
            }
        }
        if others {
            return refused(UndecryptableReason::SenderMismatch);
        }
        if self.pending_keys.is_pending(&session_id) {
            if let Some(room) = room {
                self.pending_keys.retry_later(room, event_id, &session_id);
            }
            return refused(UndecryptableReason::AwaitingKey);
        }
        let own = self
            .login
            .as_ref()
            .is_some_and(|l| l.user_id.as_str() == sender);
        if own {
            // Our own message echoed back (the token keeps no inbound copy of its outbound
            // sessions).
            return Ok(Megolm::Ignored);
        }
        match self.room_keys.withheld(sender, &session_id) {
            Some(code) => refused(UndecryptableReason::Withheld(code)),
            None => {
                // The key may still come (a to-device message can arrive after the event):
                // the event is fetched again if it does.
                if let Some(room) = room {
                    self.pending_keys.retry_later(room, event_id, &session_id);
                }
                refused(UndecryptableReason::UnknownSession)
            }
        }
    }

    /// Decrypts with the session in `slot` if `sender` sent it (`None` if not).
    fn decrypt_with(
        &mut self,
        slot: usize,
        sender: &str,
        event_id: &str,
        session_id: &[u8; 32],
        content: EncryptedContent<'_>,
    ) -> Result<Option<Megolm>, TokenError> {
        let refused = |reason| Ok(Some(Megolm::Undecryptable(reason)));
        let Some(mut inbound) = Inbound::load(&mut self.env.flash, slot)? else {
            return Ok(None);
        };
        if inbound.sender.as_str() != sender
            || inbound.session.session_id().as_bytes() != session_id
        {
            return Ok(None);
        }
        // As for Olm: bytes stay in the response, base64 is decoded into the record buffer,
        // which is free again once the message is decrypted.
        let bytes = match content.megolm_ciphertext() {
            Ok(Binary::Bytes(bytes)) => Some(bytes),
            Ok(base64) => binary_bytes(
                base64,
                self.env
                    .flash
                    .scratch
                    .get_mut(..MAX_CIPHERTEXT)
                    .unwrap_or_default(),
            ),
            Err(_) => None,
        };
        let Some(bytes) = bytes.filter(|bytes| bytes.len() <= MAX_CIPHERTEXT) else {
            return refused(UndecryptableReason::Malformed);
        };
        let Ok(message) = MegolmMessage::from_bytes(bytes) else {
            return refused(UndecryptableReason::Malformed);
        };
        let decrypted = match inbound.session.decrypt(&message, &mut self.env.work) {
            Ok(decrypted) => decrypted,
            Err(error) => return refused(UndecryptableReason::Decryption(error)),
        };
        let hash = fnv(event_id.as_bytes());
        match inbound.replay.check(decrypted.message_index, hash) {
            Seen::New => {}
            Seen::Again => {
                self.env.work.fill(0);
                return Ok(Some(Megolm::Ignored));
            }
            Seen::Replay => {
                self.env.work.fill(0);
                return refused(UndecryptableReason::Replay);
            }
        }
        inbound.replay.record(decrypted.message_index, hash);
        inbound.used = self.room_keys.tick();
        inbound.save(&mut self.env.flash, &mut self.env.rng, slot)?;
        if let Some(Some(entry)) = self.room_keys.entries.get_mut(slot) {
            entry.used = inbound.used;
        }
        let sender_verified = self
            .devices
            .is_verified_by_curve(sender, &inbound.sender_curve);
        Ok(Some(Megolm::Decrypted {
            plaintext_len: decrypted.plaintext_len,
            sender_verified,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full table: sender 2 sent two sessions, sender 1 one, `hog` the rest, all in room 0,
    /// arriving and used in slot order.
    fn full_table(hog: u32) -> RoomKeys {
        let mut keys = RoomKeys {
            clock: 0,
            entries: [None; MAX_INBOUND_SESSIONS],
            withheld: heapless::Vec::new(),
        };
        for (slot, entry) in keys.entries.iter_mut().enumerate() {
            let sender = match slot {
                0 | 1 => 2,
                2 => 1,
                _ => hog,
            };
            let at = u32::try_from(slot).unwrap_or(0);
            *entry = Some(Entry {
                room: 0,
                sender,
                session: [u8::try_from(slot).unwrap_or(0); 8],
                received: at,
                used: at,
            });
        }
        keys
    }

    #[test]
    fn a_burst_takes_free_slots_and_a_sender_over_its_share_makes_way_first() {
        let mut keys = full_table(9);
        keys.entries[5] = None;
        // A free slot goes to whoever sends, even a sender over its share.
        assert!(matches!(keys.place_new(9), Some(Placement::Free(5))));
        let keys = full_table(9);
        // Full: sender 1, under its share, pushes out the hog's least useful session (slot 3),
        // not sender 2's older one (slot 0), although that one was used longer ago.
        assert!(matches!(keys.place_new(1), Some(Placement::Evict(3))));
        // The hog makes way for itself.
        assert!(matches!(keys.place_new(9), Some(Placement::Evict(3))));
    }
}
