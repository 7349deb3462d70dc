//! The lifecycle of every table of the token: what enters, what leaves, and what is evicted
//! when it is full; and the tidying that applies the leaving rules after every sync.
//!
//! A token lives for years next to strangers, who can send it to-device messages, invite it,
//! and ask it to verify them. Only what a legitimate peer could cause enters a table: a room
//! key for a room the token is in, from a current member's known device, over an Olm session
//! that device owns; a tracked user only while a room is shared, a verification runs or one
//! of their devices is verified. What a stranger sends is read and refused, or forgotten once
//! read. Every table has a capacity ([`super::limits`]); running into it is an error value the
//! person sees, never a panic; what is evicted makes way by a rule, and the person is told
//! of anything of theirs that goes.
//!
//! | table | capacity | enters | leaves | when full |
//! | --- | --- | --- | --- | --- |
//! | rooms ([`super::rooms`]) | [`MAX_ROOMS`] | the sync lists the room as joined (the person accepted the invite, or an inviter of [`Config::auto_join_from`]) | the token leaves or is removed: at the end of that sync, with its outbound session and room keys; [`UiEvent::Left`] | the room is not entered; [`Limit::Rooms`] |
//! | members (per room) | [`MAX_MEMBERS`] | a `join` membership event; [`UiEvent::MemberJoined`] | another membership, or the user under `device_lists.left`; [`UiEvent::MemberLeft`], the room's outbound session ends | the member is not entered; [`Limit::Members`] |
//! | invites | [`MAX_INVITES`] | an invite from anyone | the person joins or refuses; RAM only | the invite is not shown; [`Limit::Invites`] |
//! | tracked users ([`super::devices`]) | [`MAX_TRACKED_USERS`] | a member of a room the token is in, the peer of a verification, the token's own user | after each sync, unless one of those or the owner of a verified device; their devices go, remembered by their keys | the user is not tracked; [`Limit::TrackedUsers`] |
//! | devices | [`MAX_DEVICES`] | a tracked user's device whose self-signature verifies (a removed or known device id with other keys is refused); [`UiEvent::NewDevice`] | the homeserver no longer lists it, or lists it with other keys; its user is let go; [`UiEvent::DeviceRemoved`], the outbound sessions it received end | the device is not entered; [`Limit::Devices`] |
//! | removed devices | [`MAX_REMOVED_DEVICES`] | a device that leaves the table, by its ids and keys | it comes back with the same keys | the oldest is forgotten |
//! | Olm sessions ([`super::olm_sessions`]) | [`MAX_OLM_SESSIONS`], [`MAX_OLM_PER_DEVICE`] per device | a session the token starts with a known device; one a pre-key message starts when its peer is a known device or it carried a member's key that waits for that device (anyone else's is forgotten once read) | evicted only | a free slot, else a device no longer known, else the device's own oldest, else the least recently used; [`UiEvent::OlmSessionDropped`] for a known device's |
//! | inbound Megolm sessions ([`super::room_keys`]) | [`MAX_INBOUND_SESSIONS`], [`MAX_INBOUND_PER_SENDER`] per device | a room key that passed [`super::pending_keys`]'s checks | its room is left; its sender is no longer a member with that device (after each sync and device query) | a free slot while there is one; when full, never one in use (the newest of its room and sender): the sender's own least recently used when it holds its share, else that of a sender over its share, else the least recently used; [`UiEvent::RoomKeyDropped`]; when all are in use the key is refused, [`Limit::InboundSessions`] |
//! | waiting room keys ([`super::pending_keys`]) | [`MAX_PENDING_ROOM_KEYS`], [`MAX_PENDING_PER_SENDER`] per sender | a key for a room the token is joining or invited to, from a sender not yet a member, or from a member's device not yet known | taken or refused once decided, after each sync and device query; refused after [`PENDING_KEY_SYNCS`] syncs | the sender's own oldest when it holds its share, else a non-member's oldest, a member's only for another member's key; [`UiEvent::RoomKeyRejected`] ([`RejectionReason::Crowded`]) |
//! | gaps being back-filled ([`super::backfill`]) | [`MAX_BACKFILLS`], one per room | a `limited` timeline with a `prev_batch`, after the first sync, in a room without a gap open | the forward walk caught up with the room's newest event; the room is left; given up after a refusal, [`BACKFILL_FAILURES`] failures in a row or an event too large alone ([`UiEvent::Gap`]) | the gap is not back-filled; [`UiEvent::Gap`] |
//! | events to fetch again | [`MAX_RETRY_EVENTS`] | an encrypted event whose room key waits, or has not arrived | fetched once the key is taken; forgotten when it is refused, or with its room | the oldest event whose key none waits for makes way, else the event is not fetched again (it was shown as undecryptable) |
//! | outbound sessions ([`super::outbound`]) | one per room | the first message of a room, or the first after the session ended | rotated after the room's period or message count (capped at [`MAX_ROTATION_MS`] and [`MAX_ROTATION_MSGS`]); a member left; a member has a new device; a device that received it was removed or changed | one per room: never full |
//! | ringing calls ([`super::calls`]) | [`MAX_RINGING_CALLS`] | an `m.call.invite` (not the token's user's, for no one else) or a MatrixRTC ring in a room the token is in, within its lifetime (less its `unsigned.age`; at most [`MAX_RING_MS`]); [`UiEvent::CallIncoming`] | the caller's hangup, an answer, reject or hangup from another device of the user, the caller's `select_answer`, the person's decline, its lifetime's end (the token wakes for it), the room left; [`UiEvent::CallEnded`]; RAM only | the call does not ring; [`Limit::RingingCalls`] |
//! | outbox ([`super::outbox`]) | [`OUTBOX_DEPTH`] | the person queues a message | the homeserver took it, or refused it for good ([`UiEvent::SendFailed`]) | the message is refused; [`Limit::Outbox`] |
//!
//! Order within a sync: membership and device lists first, then to-device messages (room
//! keys), then timelines, then the tidying below, so that a member's last messages before
//! leaving still decrypt with their keys. The calls of a left room end before the room goes.

use super::*;

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Applies the leaving rules once a sync's content is in: the rooms the token left go, the
    /// waiting keys are decided again (one more sync waited), the room keys of senders no
    /// longer members go, and the users no one needs tracked any more are let go.
    pub(super) fn tidy_after_sync(&mut self) -> Result<(), TokenError> {
        self.end_calls_of_left_rooms();
        self.remove_left_rooms()?;
        self.settle_pending_keys(true)?;
        self.sweep_tracked_users()?;
        self.sweep_room_keys()
    }

    /// Lets go of the tracked users that are neither the token's own, nor a member of a room
    /// the token is in, nor the peer of a verification that runs, nor the owner of a verified
    /// device; their devices leave the table, remembered by their keys.
    fn sweep_tracked_users(&mut self) -> Result<(), TokenError> {
        let own = self.login.as_ref().map(|l| l.user_id.clone());
        let mut changed = false;
        let mut index = 0;
        while let Some(user) = self.devices.tracked.get(index) {
            let needed = own.as_ref() == Some(user)
                || self.rooms.iter().any(|room| room.members.contains(user))
                || self.verification.peer_user() == Some(user.as_str())
                || self
                    .devices
                    .iter()
                    .any(|(_, d)| d.user_id == *user && d.verified);
            if needed {
                index += 1;
                continue;
            }
            let freed = self.devices.untrack(index);
            for slot in 0..MAX_DEVICES {
                if freed & (1 << slot) != 0 {
                    self.drop_device_slot(slot)?;
                }
            }
            changed = true;
        }
        if changed {
            self.devices.save(&mut self.env.flash)?;
        }
        Ok(())
    }
}
