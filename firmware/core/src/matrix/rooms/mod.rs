//! The rooms the token is in, with their members and encryption settings, and the rooms it
//! is invited to or joining.
//!
//! A room enters the table when a sync lists it as joined (after the person accepted an
//! invite, or an invite from a user of [`Config::auto_join_from`]) and is on flash
//! ([`record::ROOMS`] + slot) with its members and its encryption state; its outbound Megolm
//! session is [`super::outbound`]'s. Membership and `m.room.encryption` events of the room's
//! state and timeline update it before the sync's room keys and messages are read: the person
//! sees who joined and who left ([`UiEvent::MemberJoined`], [`UiEvent::MemberLeft`]), a new
//! member is tracked ([`super::devices`]), a member who left (or whom the homeserver lists
//! under `device_lists.left`) ends the room's outbound session so that the next message uses
//! one they never saw. The rotation period `m.room.encryption` sets is capped at the spec's
//! week and 100 messages. Invites wait in RAM for the person
//! ([`Token::join`](super::Token::join), [`Token::refuse`](super::Token::refuse)); an invite
//! lost to a power cut comes back with the next initial sync.
//!
//! A room leaves the table when the token leaves it or is removed from it (its own membership
//! event, or the room under `rooms.leave`): at the end of that sync, so that the room's last
//! messages are still read, its slot, its outbound session and the room keys for it go, and
//! the person sees [`UiEvent::Left`]; members it was the last shared room with are let go
//! ([`super::lifecycles`]).

mod invites;

use core::fmt;

use heapless::Vec;
use minicbor::Decoder;

use jeton_proto::ids::TEXT_LEN;
use jeton_proto::view::{Event, MEGOLM_ALGORITHM, SyncResponse, Value};

use super::flash::{Flash, corrupt, text};
use super::outbound::Outbound;
use super::sync::{Item, events_of, stub_size};
use super::*;
use crate::store::record;

pub use invites::Invite;

/// A room the token is in.
pub(super) struct Room {
    pub(super) id: RoomId,
    pub(super) encrypted: bool,
    pub(super) rotation_ms: u64,
    pub(super) rotation_msgs: u32,
    pub(super) members: Vec<UserId, MAX_MEMBERS>,
    /// The room's outbound Megolm session ([`super::outbound`]).
    pub(super) outbound: Option<Outbound>,
    /// The token left the room: it goes at the end of the sync that said so.
    pub(super) left: bool,
}

impl Room {
    fn new(id: RoomId) -> Self {
        Room {
            id,
            encrypted: false,
            rotation_ms: MAX_ROTATION_MS,
            rotation_msgs: MAX_ROTATION_MSGS,
            members: Vec::new(),
            outbound: None,
            left: false,
        }
    }

    /// Writes the room (without its outbound session) to flash.
    fn save<S: Store>(&self, flash: &mut Flash<S>, slot: usize) -> Result<(), TokenError> {
        flash.put(record::ROOMS + slot as u16, |e| {
            e.array(5)?
                .str(&self.id)?
                .bool(self.encrypted)?
                .u64(self.rotation_ms)?
                .u32(self.rotation_msgs)?
                .array(self.members.len() as u64)?;
            for member in &self.members {
                e.str(member)?;
            }
            Ok(())
        })
    }

    /// Reads room slot `slot` from flash. Out of line: its temporaries stay out of the boot's
    /// frame, under which every other load of a boot runs.
    #[inline(never)]
    fn load<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Room>, TokenError> {
        let id = record::ROOMS + slot as u16;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(None);
        };
        let c = corrupt(id);
        let mut d = Decoder::new(meta);
        d.array().map_err(&c)?;
        let mut room = Room::new(text(&mut d, id)?);
        room.encrypted = d.bool().map_err(&c)?;
        room.rotation_ms = rotation_ms(d.u64().map_err(&c)?);
        room.rotation_msgs = rotation_msgs(d.u32().map_err(&c)?);
        let members = d.array().map_err(&c)?.unwrap_or(0);
        for _ in 0..members {
            room.members
                .push(text(&mut d, id)?)
                .map_err(|_| TokenError::CorruptRecord(id))?;
        }
        Ok(Some(room))
    }

    /// Applies `m.room.encryption` (`content`): the room is encrypted with Megolm and its
    /// rotation period. True when the room changed.
    fn apply_encryption(
        &mut self,
        content: &jeton_proto::view::Map<'_>,
    ) -> Result<bool, TokenError> {
        let Some(Value::Text(MEGOLM_ALGORITHM)) = content.get("algorithm")? else {
            return Ok(false);
        };
        self.encrypted = true;
        if let Some(Value::Integer(ms)) = content.get("rotation_period_ms")? {
            self.rotation_ms = u64::try_from(ms).map_or(MAX_ROTATION_MS, rotation_ms);
        }
        if let Some(Value::Integer(n)) = content.get("rotation_period_msgs")? {
            self.rotation_msgs = u32::try_from(n).map_or(MAX_ROTATION_MSGS, rotation_msgs);
        }
        Ok(true)
    }
}

/// A rotation period from room state, capped at the spec's week (0 is no period: the cap).
fn rotation_ms(ms: u64) -> u64 {
    if ms == 0 {
        MAX_ROTATION_MS
    } else {
        ms.min(MAX_ROTATION_MS)
    }
}

/// A rotation message count from room state, capped at the spec's 100 (0 is no count: the
/// cap).
fn rotation_msgs(n: u32) -> u32 {
    if n == 0 {
        MAX_ROTATION_MSGS
    } else {
        n.min(MAX_ROTATION_MSGS)
    }
}

/// What a membership event did to a room.
enum Membership {
    Unchanged,
    /// A member joined (`track`: not the token's own user).
    Joined {
        user: UserId,
        track: bool,
    },
    /// A member left (`rotate`: the room's outbound session ended).
    Left {
        user: UserId,
        rotate: bool,
    },
    /// The token itself left, or was removed.
    OwnLeft,
}

/// The rooms, invites and joins. Boot lays the table out in place ([`super::boot`]), so its
/// fields are visible there; everything else goes through the methods.
#[repr(C)]
pub(super) struct Rooms {
    /// Invites waiting for the person's decision: the room and who invited.
    pub(super) invites: Vec<(RoomId, UserId), MAX_INVITES>,
    /// Rooms being joined, the first one's request next.
    pub(super) joins: Vec<RoomId, MAX_INVITES>,
    pub(super) slots: [Option<Room>; MAX_ROOMS],
}

impl Rooms {
    /// Reads the rooms and their outbound sessions (whose age restarts at `now`) from flash.
    pub(super) fn load<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        now: Instant,
    ) -> Result<(), TokenError> {
        for (slot, room) in self.slots.iter_mut().enumerate() {
            *room = Room::load(flash, slot)?;
            if let Some(room) = room {
                room.outbound = Outbound::load(flash, slot, now)?;
            }
        }
        Ok(())
    }

    /// The slot of `room_id`.
    pub(super) fn slot(&self, room_id: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|room| room.as_ref().is_some_and(|r| r.id.as_str() == room_id))
    }

    /// The room in slot `slot`.
    pub(super) fn get(&self, slot: usize) -> Option<&Room> {
        self.slots.get(slot)?.as_ref()
    }

    /// The room in slot `slot`.
    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut Room> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// The rooms.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Room> {
        self.slots.iter().flatten()
    }

    /// The rooms.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Room> {
        self.slots.iter_mut().flatten()
    }

    /// Whether the room in slot `slot` is encrypted.
    pub(super) fn is_encrypted(&self, slot: usize) -> bool {
        self.get(slot).is_some_and(|r| r.encrypted)
    }

    /// Adds `room_id` (on flash first): its slot, and whether the room is new.
    fn add<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        room_id: &str,
    ) -> Result<(usize, bool), TokenError> {
        if let Some(slot) = self.slot(room_id) {
            return Ok((slot, false));
        }
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(TokenError::LimitReached(Limit::Rooms))?;
        let room = Room::new(bounded(room_id)?);
        room.save(flash, slot)?;
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(room);
        }
        Ok((slot, true))
    }

    /// A membership event of `state_key` (`content`) in the room in slot `slot`; `own_user`
    /// is the token's user, who is not tracked.
    fn apply_membership(
        &mut self,
        slot: usize,
        state_key: &str,
        content: &jeton_proto::view::Map<'_>,
        own_user: &str,
    ) -> Result<Membership, TokenError> {
        let Some(room) = self.get_mut(slot) else {
            return Ok(Membership::Unchanged);
        };
        let membership = content.get("membership")?;
        let joined = matches!(membership, Some(Value::Text("join")));
        let present = room.members.iter().any(|m| m.as_str() == state_key);
        // The token's own invite (or knock) in a room it is in is history from before its
        // join, which may come in a later part of a split sync: only a leave or a ban ends it.
        let gone = matches!(membership, Some(Value::Text("leave" | "ban")));
        if !joined && !gone && state_key == own_user {
            return Ok(Membership::Unchanged);
        }
        if gone && state_key == own_user {
            room.members.retain(|m| m.as_str() != state_key);
            room.left = true;
            return Ok(Membership::OwnLeft);
        }
        if joined && state_key == own_user {
            // Back in a room left earlier in the same sync.
            room.left = false;
        }
        if joined && !present {
            let user: UserId = bounded(state_key)?;
            room.members
                .push(user.clone())
                .map_err(|_| TokenError::LimitReached(Limit::Members))?;
            let track = state_key != own_user;
            return Ok(Membership::Joined { user, track });
        }
        if !joined && present {
            return Ok(Membership::Left {
                user: bounded(state_key)?,
                rotate: room.remove_member(state_key),
            });
        }
        Ok(Membership::Unchanged)
    }
}

impl Room {
    /// `user` is no longer a member: true when that ended the room's outbound session (the
    /// next message uses one they never saw).
    fn remove_member(&mut self, user: &str) -> bool {
        self.members.retain(|m| m.as_str() != user);
        self.outbound.take().is_some()
    }
}

/// A summary of one room, for the `rooms` command. Its `Display` is the line jeton-sim and
/// the RIOT shell print: `room <id> encrypted|unencrypted members=<n>`, to which the console
/// adds the room's number (`#<n>`) that commands take in place of its id.
#[derive(Clone, Copy, Debug)]
pub struct RoomSummary<'a> {
    /// The room id.
    pub room_id: &'a str,
    /// Whether the room is end-to-end encrypted.
    pub encrypted: bool,
    /// Joined members known.
    pub members: usize,
}

impl fmt::Display for RoomSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        };
        write!(f, "room {} {kind} members={}", self.room_id, self.members)
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// The room slot of `room_id`.
    pub(super) fn room_slot(&self, room_id: &str) -> Option<usize> {
        self.rooms.slot(room_id)
    }

    /// Adds `room_id` to the rooms: its slot, and whether it is new (the gateway holds
    /// nothing of it).
    fn add_room(&mut self, room_id: &str) -> Result<(usize, bool), TokenError> {
        let (slot, new) = self.rooms.add(&mut self.env.flash, room_id)?;
        if new {
            self.gateway.on_room_added(slot);
        }
        Ok((slot, new))
    }
    /// The joined rooms of a sync: new ones enter the table, and their membership and
    /// encryption state is applied, room by room and event by event.
    pub(super) fn apply_joined_rooms(
        &mut self,
        sync: &SyncResponse<'_>,
        own_user: &str,
    ) -> Result<(), TokenError> {
        for room in sync.joined_rooms()? {
            let (room_id, room) = room?;
            let mut text = [0; TEXT_LEN];
            let room_id = room_id.as_text(&mut text);
            let joined = self.apply_joined_room(room_id, &room, own_user);
            self.item(
                Item {
                    room_id,
                    ..Item::of("room")
                },
                joined,
            )?;
        }
        Ok(())
    }

    /// Joined room `room_id` of a sync: in the table, with its state applied.
    fn apply_joined_room(
        &mut self,
        room_id: &str,
        room: &jeton_proto::view::Room<'_>,
        own_user: &str,
    ) -> Result<(), TokenError> {
        let (slot, new) = self.add_room(room_id)?;
        if new {
            self.rooms.joins.retain(|r| r.as_str() != room_id);
            self.env.ui.event(&UiEvent::Joined { room_id });
        }
        // A stub of the state is shown here, one of the timeline with the timeline.
        let mut own_join = false;
        for (section, show_stub) in [("state", true), ("timeline", false)] {
            for event in events_of(Some(room.0), section)? {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        self.item(
                            Item {
                                room_id,
                                ..Item::of("state")
                            },
                            Err(error.into()),
                        )?;
                        continue;
                    }
                };
                let mut text = [0; TEXT_LEN];
                let id = match event.event_id() {
                    Ok(Some(id)) => id.as_text(&mut text),
                    _ => "",
                };
                own_join |= is_own_join(&event, own_user);
                let applied = match stub_size(&event) {
                    Ok(Some(size)) => {
                        if show_stub {
                            self.show_stub(room_id, &event, id, size);
                        }
                        Ok(())
                    }
                    Ok(None) => self.apply_state(slot, &event, own_user),
                    Err(error) => Err(error.into()),
                };
                self.item(Item::event("state", room_id, &event, id), applied)?;
            }
        }
        // In the sync of the token's own join the gap reaches back to its arrival.
        {
            let gap = self.note_gap(slot, room_id, room, new || own_join);
            self.item(
                Item {
                    room_id,
                    ..Item::of("gap")
                },
                gap,
            )?;
        }
        Ok(())
    }

    /// Membership and encryption changes of a room.
    fn apply_state(
        &mut self,
        slot: usize,
        event: &Event<'_>,
        own_user: &str,
    ) -> Result<(), TokenError> {
        let Some(state_key) = event.state_key()? else {
            return Ok(());
        };
        let content = event.content()?;
        let membership = match event.event_type()? {
            "m.room.encryption" => {
                let changed = match self.rooms.get_mut(slot) {
                    Some(room) => room.apply_encryption(&content)?,
                    None => false,
                };
                if !changed {
                    return Ok(());
                }
                Membership::Unchanged
            }
            "m.room.member" => {
                match self
                    .rooms
                    .apply_membership(slot, state_key, &content, own_user)?
                {
                    Membership::Unchanged => return Ok(()),
                    changed => changed,
                }
            }
            _ => return Ok(()),
        };
        if let Some(room) = self.rooms.get(slot) {
            room.save(&mut self.env.flash, slot)?;
        }
        let room_id = self
            .rooms
            .get(slot)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        match membership {
            Membership::Joined { user, track } => {
                if user.as_str() != own_user {
                    self.env.ui.event(&UiEvent::MemberJoined {
                        room_id: &room_id,
                        user_id: &user,
                    });
                }
                if track && !self.devices.is_tracked(&user) {
                    self.track(&user);
                }
            }
            Membership::Left { user, rotate } => {
                if rotate {
                    Outbound::remove(&mut self.env.flash, slot)?;
                }
                self.env.ui.event(&UiEvent::MemberLeft {
                    room_id: &room_id,
                    user_id: &user,
                });
            }
            Membership::Unchanged | Membership::OwnLeft => {}
        }
        Ok(())
    }

    /// The rooms of a sync's `rooms.leave`: the token left them, or was removed.
    pub(super) fn apply_left_rooms(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        for room in sync.left_rooms()? {
            let (room_id, _) = room?;
            let mut text = [0; TEXT_LEN];
            if let Some(slot) = self.rooms.slot(room_id.as_text(&mut text))
                && let Some(room) = self.rooms.get_mut(slot)
            {
                room.left = true;
            }
        }
        Ok(())
    }

    /// The homeserver lists `user` under `device_lists.left`: the token shares no room with
    /// them any more, whatever its member lists say.
    pub(super) fn on_user_left(&mut self, user: &str) -> Result<(), TokenError> {
        for slot in 0..MAX_ROOMS {
            let Some(room) = self.rooms.get_mut(slot) else {
                continue;
            };
            if !room.members.iter().any(|m| m.as_str() == user) {
                continue;
            }
            if room.remove_member(user) {
                Outbound::remove(&mut self.env.flash, slot)?;
            }
            if let Some(room) = self.rooms.get(slot) {
                room.save(&mut self.env.flash, slot)?;
                self.env.ui.event(&UiEvent::MemberLeft {
                    room_id: &room.id,
                    user_id: user,
                });
            }
        }
        Ok(())
    }

    /// Removes the rooms the token left in this sync: their slots, outbound sessions and room
    /// keys; the person sees each go.
    pub(super) fn remove_left_rooms(&mut self) -> Result<(), TokenError> {
        for slot in 0..MAX_ROOMS {
            if !self.rooms.get(slot).is_some_and(|r| r.left) {
                continue;
            }
            Outbound::remove(&mut self.env.flash, slot)?;
            self.room_keys.forget_room(&mut self.env.flash, slot)?;
            self.pending_keys.forget_room(slot);
            self.forget_gaps_of(slot)?;
            self.env.flash.remove(record::ROOMS + slot as u16)?;
            if let Some(room) = self.rooms.slots.get_mut(slot).and_then(Option::take) {
                self.env.ui.event(&UiEvent::Left { room_id: &room.id });
            }
        }
        Ok(())
    }
}

/// Whether `event` is `own_user`'s join of the room.
fn is_own_join(event: &Event<'_>, own_user: &str) -> bool {
    let member = matches!(event.event_type(), Ok("m.room.member"))
        && matches!(event.state_key(), Ok(Some(key)) if key == own_user);
    member
        && event
            .content()
            .is_ok_and(|c| matches!(c.get("membership"), Ok(Some(Value::Text("join")))))
}
