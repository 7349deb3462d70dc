//! The invites and the joins: invites waiting for the person's decision, rooms being joined
//! (accepted by the person or from a user of [`Config::auto_join_from`]), and the join
//! requests to the homeserver.

use core::fmt;

use jeton_proto::ids::TEXT_LEN;
use jeton_proto::path::endpoint;
use jeton_proto::view::SyncResponse;

use super::super::sync::{Item, events_of};
use super::*;

impl Rooms {
    /// The person accepts the invite to `room_id` (or joins a room by id).
    pub(in crate::matrix) fn join(&mut self, room_id: &str) -> Result<(), TokenError> {
        let room: RoomId = bounded(room_id)?;
        self.invites.retain(|(id, _)| *id != room);
        if !self.joins.contains(&room) {
            self.joins
                .push(room)
                .map_err(|_| TokenError::LimitReached(Limit::Invites))?;
        }
        Ok(())
    }

    /// The person refuses the invite to `room_id`: false when there was none.
    pub(in crate::matrix) fn refuse(&mut self, room_id: &str) -> bool {
        let before = self.invites.len();
        self.invites.retain(|(id, _)| id.as_str() != room_id);
        self.invites.len() != before
    }

    /// The pending invites: the room and who invited.
    pub(in crate::matrix) fn invites(&self) -> impl Iterator<Item = &(RoomId, UserId)> {
        self.invites.iter()
    }

    /// The room to join next.
    pub(in crate::matrix) fn next_join(&self) -> Option<&RoomId> {
        self.joins.first()
    }

    /// The join in progress is over (done or refused).
    fn end_join(&mut self) -> Option<RoomId> {
        (!self.joins.is_empty()).then(|| self.joins.remove(0))
    }

    /// Whether the token is in, joining or invited to `room_id`.
    pub(in crate::matrix) fn knows(&self, room_id: &RoomId) -> bool {
        self.slot(room_id).is_some()
            || self.joins.contains(room_id)
            || self.invites.iter().any(|(r, _)| r == room_id)
    }
}

/// A pending invite, for the `invites` command. Its `Display` is the line jeton-sim and the
/// RIOT shell print: `invite <room> <inviter>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invite<'a> {
    /// The room the token is invited to.
    pub room_id: &'a str,
    /// Who invited it.
    pub inviter: &'a str,
}

impl fmt::Display for Invite<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invite {} {}", self.room_id, self.inviter)
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Joins the next room the person accepted.
    pub(in crate::matrix) fn start_join(
        &mut self,
        coap: &mut Coap,
        room: &str,
    ) -> Result<(), TokenError> {
        if let Some(first) = self.env.work.first_mut() {
            // An empty CBOR map.
            *first = 0xa0;
        }
        self.start(
            coap,
            Operation::Join,
            Code::POST,
            &[endpoint::JOIN, room],
            1,
        )
    }

    /// The homeserver joined the token to the room.
    pub(in crate::matrix) fn on_joined(&mut self) -> Result<(), TokenError> {
        if let Some(room) = self.rooms.end_join() {
            self.add_room(&room)?;
            self.env.ui.event(&UiEvent::Joined { room_id: &room });
        }
        Ok(())
    }

    /// The homeserver refused the join.
    pub(in crate::matrix) fn on_join_refused(&mut self, error: TokenError) {
        self.rooms.end_join();
        self.error(error);
    }

    /// The invites of a sync: shown to the person, or accepted at once when they come from a
    /// user of [`Config::auto_join_from`]. An invite that cannot be read is skipped.
    pub(in crate::matrix) fn apply_invites(
        &mut self,
        sync: &SyncResponse<'_>,
        own_user: &str,
    ) -> Result<(), TokenError> {
        for room in sync.invited_rooms()? {
            let (room_id, room) = room?;
            let mut text = [0; TEXT_LEN];
            let room_id = room_id.as_text(&mut text);
            let invite = self.apply_invite(room_id, &room, own_user);
            self.item(
                Item {
                    room_id,
                    ..Item::of("invite")
                },
                invite,
            )?;
        }
        Ok(())
    }

    /// The invite to `room_id`.
    fn apply_invite(
        &mut self,
        room_id: &str,
        room: &jeton_proto::view::Room<'_>,
        own_user: &str,
    ) -> Result<(), TokenError> {
        let mut inviter: Option<&str> = None;
        for event in events_of(Some(room.0), "invite_state")? {
            let event = event?;
            if event.event_type()? == "m.room.member" && event.state_key()? == Some(own_user) {
                inviter = Some(event.sender()?);
            }
        }
        let inviter = inviter.unwrap_or("");
        let room_id: RoomId = bounded(room_id)?;
        if self.rooms.knows(&room_id) {
            return Ok(());
        }
        let auto_join = &self.env.settings.auto_join_from;
        if auto_join.iter().any(|u| u.as_str() == inviter) {
            let _ = self.rooms.joins.push(room_id);
            return Ok(());
        }
        self.rooms
            .invites
            .push((room_id.clone(), bounded(inviter)?))
            .map_err(|_| TokenError::LimitReached(Limit::Invites))?;
        self.env.ui.event(&UiEvent::Invited {
            room_id: &room_id,
            inviter,
        });
        Ok(())
    }
}
