//! What the gateway holds for this token, as far as the token knows for sure.
//!
//! The gateway keeps state per peer (PROFILE.md section 1.1): the access token (CoAP option
//! 256 is sticky), and with it, once a send named them in full, the id of each room (then the
//! room travels as its short handle), the device's Megolm sender fields and each room's Megolm
//! session id. What the gateway holds is left out of the next requests; what it may have lost
//! goes in full again. This module owns that knowledge and the rules that move it: a request
//! carrying the token that succeeded, a send that succeeded, a 4.01 to a request without the
//! token (the gateway restarted), a 4.12 (it cannot resolve a room handle), a new login or a
//! new security context of the link.

use heapless::String;

use super::{Code, MAX_ROOMS, code_number};

/// Room id characters (after the `!`) in a room handle: 66 bits, more than anyone can grind a
/// colliding room id for (the gateway's `MIN_HANDLE_CHARS`).
const ROOM_HANDLE_CHARS: usize = 11;

/// A room's short handle: `~` and [`ROOM_HANDLE_CHARS`] characters.
pub(super) type RoomHandle = String<{ ROOM_HANDLE_CHARS + 1 }>;

/// What the gateway holds for this token.
#[derive(Debug)]
pub(super) struct Gateway {
    /// Whether the gateway holds the access token.
    token: bool,
    /// Whether the gateway binds the access token to the link's security context: then the
    /// /sync registration leaves it out too once the gateway holds it.
    bound_to_link: bool,
    /// Room slots whose room id the gateway holds with the access token: a send that named
    /// the room in full succeeded since the token last went out.
    rooms: u32,
    /// Whether the gateway holds this device's Megolm sender fields with the access token.
    sender: bool,
    /// The Megolm session id the gateway holds for each room slot, as far as the token knows
    /// for sure: set when a send carrying it succeeded, cleared when one that carried another
    /// went out (the gateway keeps it whether the send succeeds or not).
    sessions: [Option<[u8; 32]>; MAX_ROOMS],
    /// The room slot and session id of the encrypted send in flight.
    send_session: Option<(usize, [u8; 32])>,
}

impl Gateway {
    /// A gateway that holds nothing of this token.
    pub(super) const fn new() -> Self {
        Gateway {
            token: false,
            bound_to_link: false,
            rooms: 0,
            sender: false,
            sessions: [None; MAX_ROOMS],
            send_session: None,
        }
    }

    /// Whether the gateway binds the access token to the link's security context.
    pub(super) fn set_bound_to_link(&mut self, bound: bool) {
        self.bound_to_link = bound;
    }

    /// Whether a request carries the access token: until a request carrying it succeeded, and
    /// again after a 4.01.
    pub(super) fn wants_token(&self) -> bool {
        !self.token
    }

    /// Whether the /sync registration carries the access token.
    pub(super) fn registration_wants_token(&self) -> bool {
        !(self.bound_to_link && self.token)
    }

    /// Learns from an answer to a request that did or did not carry the access token. False
    /// when the gateway refused a request without it for the lack of it: it lost its state for
    /// this peer (it restarted), and the request must be made again with everything in full.
    pub(super) fn note_answer(&mut self, code: Code, with_token: bool) -> bool {
        if code_number(code) == 401 && !with_token {
            self.forget_all();
            return false;
        }
        if code.class() == 2 && with_token {
            self.token = true;
        }
        true
    }

    /// A notification of the /sync observation, whose registration carried the token.
    pub(super) fn note_notification(&mut self) {
        self.token = true;
    }

    /// The access token is no longer held (a new security context of the link).
    pub(super) fn token_lost(&mut self) {
        self.token = false;
    }

    /// The gateway holds nothing of this token any more, or may not: a new login, a restart.
    pub(super) fn forget_all(&mut self) {
        self.token = false;
        self.forget();
    }

    /// What the gateway holds with the access token is gone, or may be (a 4.12): rooms, sender
    /// fields and sessions go in full again.
    pub(super) fn forget(&mut self) {
        self.rooms = 0;
        self.sender = false;
        self.sessions = [None; MAX_ROOMS];
    }

    /// Room slot `slot` holds a new room: the gateway holds nothing of it.
    pub(super) fn on_room_added(&mut self, slot: usize) {
        self.rooms &= !(1 << slot);
        if let Some(session) = self.sessions.get_mut(slot) {
            *session = None;
        }
    }

    /// The short handle of `room_id` in room slot `slot` (PROFILE.md section 1.1): `~` and the
    /// first [`ROOM_HANDLE_CHARS`] characters after the `!`, if the gateway holds the room's id
    /// and no other of the token's rooms (`rooms`) has an id that starts the same.
    pub(super) fn room_handle<'r>(
        &self,
        slot: usize,
        room_id: &str,
        rooms: impl Iterator<Item = &'r str>,
    ) -> Option<RoomHandle> {
        if !self.token || self.rooms & (1 << slot) == 0 {
            return None;
        }
        let prefix = room_id.get(1..=ROOM_HANDLE_CHARS)?;
        // A short id is cheap already; and the handle must name one room only.
        if room_id.len() < 2 * ROOM_HANDLE_CHARS {
            return None;
        }
        let shared = rooms
            .filter(|id| id.get(1..=ROOM_HANDLE_CHARS) == Some(prefix))
            .count();
        if shared != 1 {
            return None;
        }
        let mut handle = String::new();
        handle.push('~').ok()?;
        handle.push_str(prefix).ok()?;
        Some(handle)
    }

    /// Whether the gateway holds the device's Megolm sender fields (they go along until then).
    pub(super) fn holds_sender(&self) -> bool {
        self.token && self.sender
    }

    /// The Megolm session id the gateway holds for room slot `slot`.
    pub(super) fn session(&self, slot: usize) -> Option<[u8; 32]> {
        self.sessions
            .get(slot)
            .copied()
            .flatten()
            .filter(|_| self.token)
    }

    /// A send starts: only it may teach the token what the gateway holds.
    pub(super) fn begin_send(&mut self) {
        self.send_session = None;
    }

    /// An encrypted send to room slot `slot` with session `session_id` goes out, the session id
    /// `omitted` because the gateway holds it, or carried.
    pub(super) fn sending_session(&mut self, slot: usize, session_id: [u8; 32], omitted: bool) {
        if !omitted && let Some(held) = self.sessions.get_mut(slot) {
            // The gateway keeps what this send carries, whatever its outcome.
            *held = None;
        }
        self.send_session = Some((slot, session_id));
    }

    /// The send succeeded: it named the room (in room slot `slot`, if the token is still in
    /// it) and, `encrypted`, the sender fields and the session, in full or as the gateway
    /// already held them: it holds them now.
    pub(super) fn on_sent(&mut self, slot: Option<usize>, encrypted: bool) {
        if let Some((room_slot, session_id)) = self.send_session.take()
            && let Some(held) = self.sessions.get_mut(room_slot)
        {
            *held = Some(session_id);
        }
        if let Some(slot) = slot {
            self.rooms |= 1 << slot;
            self.sender |= encrypted;
        }
    }
}
