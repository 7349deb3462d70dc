//! Room keys arriving: the `m.room_key` payload of an Olm message, the checks it must pass,
//! and the keys that wait for their room, their sender's membership or their sender's device
//! keys.
//!
//! A room key is taken when every field the spec's Olm payload carries agrees with the Olm
//! message it came in (sender, recipient, recipient keys, the session id of the key, and
//! MSC4147's `sender_device_keys` when present), when it is for a room the token is in, when
//! its sender is a member of that room, and when the sending device, found by the sender and
//! the Olm session's Curve25519 key, is known with the Ed25519 key the payload claims; then it
//! goes to [`super::room_keys`]. A key for a room the token is not in, nor joining, nor
//! invited to, is refused at once ([`RejectionReason::NotInRoom`]).
//!
//! A key that could still become acceptable waits instead of being refused or trusted: for a
//! room the token is joining or invited to, from a sender not (yet) a member, or from a member's
//! device the token does not know yet (whose user's devices are then asked for,
//! [`super::devices`]). It waits on flash ([`record::PENDING`] + slot, the session pickled
//! with the storage key) and is decided again after every sync and every device query: taken,
//! refused with the reason, or, after [`PENDING_KEY_SYNCS`] syncs, refused as expired. At most
//! [`MAX_PENDING_PER_SENDER`] keys of one sender wait; when the area is full, a new key makes
//! the oldest waiting key of a non-member go first, a member's only for another member's
//! ([`RejectionReason::Crowded`]). An event encrypted with a waiting key is shown as
//! [`UndecryptableReason::AwaitingKey`] and fetched again once the key is taken (not when it
//! is refused: the event stays unreadable); so is one whose key has not arrived at all
//! ([`UndecryptableReason::UnknownSession`]), if the key comes later.
//!
//! Where this goes next: issue 13's `m.room_key.withheld` arrives here too.

use heapless::{String, Vec};
use minicbor::Decoder;

use jeton_olm::megolm::{InboundGroupSession, SessionKey};
use jeton_proto::path::endpoint;
use jeton_proto::view::MEGOLM_ALGORITHM;

use super::flash::{Flash, bytes32, corrupt, text};
use super::room_keys::{Inbound, fnv, id_prefix};
use super::*;
use crate::json::{JsonObject, JsonStr};
use crate::store::record;

/// A room key payload read out of an Olm plaintext: the fields the spec's Olm payload carries
/// (`sender`, `recipient`, `recipient_keys`, `keys`) and the `m.room_key` content. The sending
/// device is found by the sender and the Olm session's Curve25519 key, not by a device id: the
/// spec's payload names none.
pub(super) struct RoomKeyPayload {
    sender: UserId,
    claimed_ed: [u8; 32],
    /// The keys of `sender_device_keys` (MSC4147), when the sender included them.
    sender_device_keys: Option<SenderDeviceKeys>,
    recipient: UserId,
    recipient_ed: [u8; 32],
    room_id: RoomId,
    session_id: [u8; 32],
    key: SessionKey,
}

/// The Curve25519 and Ed25519 keys a sender states for its own device in the Olm payload
/// (`sender_device_keys`, MSC4147).
struct SenderDeviceKeys {
    user_id: UserId,
    curve: [u8; 32],
    ed: [u8; 32],
}

/// Reads `sender_device_keys`: `None` when absent, an error when present but unreadable.
fn sender_device_keys(
    object: &JsonObject<'_>,
) -> Result<Option<SenderDeviceKeys>, RejectionReason> {
    let Some(keys) = object.object("sender_device_keys") else {
        return Ok(None);
    };
    let mismatch = RejectionReason::Mismatch("sender_device_keys");
    let device: DeviceId = plain(keys.string("device_id")).ok_or(mismatch)?;
    let key_of = |algorithm: &str| {
        let mut name: String<{ MAX_ID_LEN + 12 }> = String::new();
        name.push_str(algorithm).ok()?;
        name.push_str(&device).ok()?;
        base64_32(keys.object("keys")?.string(&name))
    };
    Ok(Some(SenderDeviceKeys {
        user_id: plain(keys.string("user_id")).ok_or(mismatch)?,
        curve: key_of("curve25519:").ok_or(mismatch)?,
        ed: key_of("ed25519:").ok_or(mismatch)?,
    }))
}

fn plain<const N: usize>(value: Option<JsonStr<'_>>) -> Option<String<N>> {
    String::try_from(value?.plain()?).ok()
}

fn base64_32(value: Option<JsonStr<'_>>) -> Option<[u8; 32]> {
    let mut out = [0u8; 33];
    let bytes = jeton_olm::base64::decode(value?.plain()?.as_bytes(), &mut out).ok()?;
    bytes.try_into().ok()
}

/// Reads an `m.room_key` Olm payload; `Ok(None)` for other to-device types.
pub(super) fn room_key_payload(
    plaintext: &[u8],
) -> Result<Option<RoomKeyPayload>, RejectionReason> {
    let object = JsonObject::parse(plaintext).map_err(|_| RejectionReason::Malformed)?;
    if object.string("type").and_then(|t| t.plain()) != Some("m.room_key") {
        return Ok(None);
    }
    let content = object.object("content").ok_or(RejectionReason::Malformed)?;
    if content.string("algorithm").and_then(|a| a.plain()) != Some(MEGOLM_ALGORITHM) {
        return Err(RejectionReason::Malformed);
    }
    let key = content
        .string("session_key")
        .and_then(|k| k.plain())
        .and_then(|k| SessionKey::from_base64(k).ok())
        .ok_or(RejectionReason::Malformed)?;
    let field = |name: &'static str| RejectionReason::Mismatch(name);
    Ok(Some(RoomKeyPayload {
        sender: plain(object.string("sender")).ok_or(field("sender"))?,
        sender_device_keys: sender_device_keys(&object)?,
        claimed_ed: base64_32(object.object("keys").and_then(|k| k.string("ed25519")))
            .ok_or(field("keys"))?,
        recipient: plain(object.string("recipient")).ok_or(field("recipient"))?,
        recipient_ed: base64_32(
            object
                .object("recipient_keys")
                .and_then(|k| k.string("ed25519")),
        )
        .ok_or(field("recipient_keys"))?,
        room_id: plain(content.string("room_id")).ok_or(field("room_id"))?,
        session_id: base64_32(content.string("session_id")).ok_or(field("session_id"))?,
        key,
    }))
}

/// What the area keeps of a waiting key in RAM: enough to decide which one goes first and
/// whether an event's session waits, without reading flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Waiting {
    /// [`fnv`] of the sender's user id.
    sender: u32,
    /// [`fnv`] of the sending device's Curve25519 key.
    curve: u32,
    /// [`id_prefix`] of the session id.
    session: [u8; 8],
    /// When it arrived, on the area's clock.
    arrived: u32,
    /// Syncs processed since it arrived (in RAM: a boot starts the count again).
    waited: u8,
    /// The sender is a member of the key's room.
    member: bool,
    /// The sender's devices were asked for since it arrived.
    queried: bool,
}

/// A waiting key as on flash.
struct WaitingKey {
    sender: UserId,
    sender_curve: [u8; 32],
    claimed_ed: [u8; 32],
    room_id: RoomId,
    session: InboundGroupSession,
}

impl WaitingKey {
    fn save<S: Store, R: Rng>(
        &self,
        flash: &mut Flash<S>,
        rng: &mut R,
        slot: usize,
    ) -> Result<(), TokenError> {
        flash.put_pickled(
            record::PENDING + slot as u16,
            |e| {
                e.array(4)?
                    .str(&self.sender)?
                    .bytes(&self.sender_curve)?
                    .bytes(&self.claimed_ed)?
                    .str(&self.room_id)
                    .map(drop)
            },
            &self.session,
            rng,
        )
    }

    #[inline(never)]
    fn load<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Self>, TokenError> {
        let id = record::PENDING + slot as u16;
        flash.read(id, |meta, pickle| {
            let mut d = Decoder::new(meta);
            d.array().map_err(corrupt(id))?;
            Ok(WaitingKey {
                sender: text(&mut d, id)?,
                sender_curve: bytes32(&mut d, id)?,
                claimed_ed: bytes32(&mut d, id)?,
                room_id: text(&mut d, id)?,
                session: pickle.open()?,
            })
        })
    }

    /// What the area keeps of it in RAM.
    fn waiting(&self, arrived: u32) -> Waiting {
        Waiting {
            sender: fnv(self.sender.as_bytes()),
            curve: fnv(&self.sender_curve),
            session: id_prefix(self.session.session_id().as_bytes()),
            arrived,
            waited: 0,
            member: false,
            queried: false,
        }
    }
}

/// The waiting keys, and the events to fetch again once their key is decided. Boot lays the
/// area out in place ([`super::boot`]), so its fields are visible there; everything else goes
/// through the methods.
#[repr(C)]
pub(super) struct PendingKeys {
    pub(super) clock: u32,
    pub(super) waiting: [Option<Waiting>; MAX_PENDING_ROOM_KEYS],
    /// Encrypted events whose key waits or has not arrived, by room slot, with the start of
    /// the session id: fetched again once the key is taken. A room is named by its slot, not
    /// its id, so that a burst of messages arriving with a join fits.
    pub(super) retry: Vec<(u8, EventId, [u8; 8]), MAX_RETRY_EVENTS>,
}

/// What becomes of a key.
enum Decision {
    /// Taken, for the room in this slot.
    Take(usize),
    /// It waits; whether its sender is a member of its room.
    Wait {
        member: bool,
    },
    Refuse(RejectionReason),
}

impl PendingKeys {
    /// Reads the waiting keys' index from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        for slot in 0..MAX_PENDING_ROOM_KEYS {
            let found = WaitingKey::load(flash, slot)?.map(|key| key.waiting(0));
            if let Some(place) = self.waiting.get_mut(slot) {
                *place = found;
            }
        }
        Ok(())
    }

    /// Keys waiting.
    pub(super) fn len(&self) -> usize {
        self.waiting.iter().flatten().count()
    }

    /// Whether a key of session `session_id` waits.
    pub(super) fn is_pending(&self, session_id: &[u8; 32]) -> bool {
        let prefix = id_prefix(session_id);
        self.waiting.iter().flatten().any(|w| w.session == prefix)
    }

    /// Whether a member's key from the device whose key is `curve` waits: its Olm session is
    /// kept.
    pub(super) fn awaits_device(&self, curve: &[u8; 32]) -> bool {
        let curve = fnv(curve);
        self.waiting
            .iter()
            .flatten()
            .any(|w| w.curve == curve && w.member)
    }

    /// Event `event_id` of the room in slot `room` is fetched again once the key of
    /// `session_id` is taken. When the list is full, the oldest event whose key has not
    /// arrived (none waits for it) makes way.
    pub(super) fn retry_later(&mut self, room: usize, event_id: &str, session_id: &[u8; 32]) {
        let (Ok(room), Ok(event)) = (u8::try_from(room), bounded(event_id)) else {
            return;
        };
        if self.retry.iter().any(|(_, id, _)| *id == event) {
            return;
        }
        if self.retry.is_full() {
            let waiting = &self.waiting;
            let unannounced = self
                .retry
                .iter()
                .position(|(_, _, s)| !waiting.iter().flatten().any(|w| w.session == *s));
            if let Some(at) = unannounced {
                self.retry.remove(at);
            }
        }
        let _ = self.retry.push((room, event, id_prefix(session_id)));
    }

    /// The room in slot `room` is gone: its events are not fetched again.
    pub(super) fn forget_room(&mut self, room: usize) {
        self.retry.retain(|(slot, _, _)| usize::from(*slot) != room);
    }

    /// The key of the session starting with `session` was refused: its events are not
    /// fetched again (they were shown as awaiting it, and stay unreadable).
    fn forget_retries(&mut self, session: [u8; 8]) {
        self.retry
            .retain(|(_, _, waiting_for)| *waiting_for != session);
    }

    /// The next event to fetch again whose key was taken (`held` says whether a room slot
    /// holds a session), with its room's slot.
    pub(super) fn next_retry(
        &mut self,
        held: impl Fn(u8, [u8; 8]) -> bool,
    ) -> Option<(usize, EventId)> {
        let waiting = &self.waiting;
        let at = self.retry.iter().position(|(room, _, session)| {
            !waiting.iter().flatten().any(|w| w.session == *session) && held(*room, *session)
        })?;
        let (room, event, _) = self.retry.remove(at);
        Some((usize::from(room), event))
    }

    /// The devices of the users whose hashes `asked` holds were asked for: their keys that
    /// wait for a device are decided with the answer.
    pub(super) fn note_queried(&mut self, asked: impl Iterator<Item = u32> + Clone) {
        for waiting in self.waiting.iter_mut().flatten() {
            if asked.clone().any(|user| user == waiting.sender) {
                waiting.queried = true;
            }
        }
    }

    /// Where a new waiting key of `sender` goes: the slot, and whether a key waiting there
    /// makes way for it; `None` when it cannot wait.
    fn place(&self, sender: u32, member: bool) -> Option<(usize, bool)> {
        let oldest = |filter: &dyn Fn(&Waiting) -> bool| {
            self.waiting
                .iter()
                .enumerate()
                .filter_map(|(slot, w)| w.filter(|w| filter(w)).map(|w| (slot, w.arrived)))
                .min_by_key(|(_, arrived)| *arrived)
                .map(|(slot, _)| slot)
        };
        let own = self
            .waiting
            .iter()
            .flatten()
            .filter(|w| w.sender == sender)
            .count();
        if own >= MAX_PENDING_PER_SENDER {
            return oldest(&|w| w.sender == sender).map(|slot| (slot, true));
        }
        if let Some(free) = self.waiting.iter().position(Option::is_none) {
            return Some((free, false));
        }
        oldest(&|w| !w.member)
            .or_else(|| if member { oldest(&|_| true) } else { None })
            .map(|slot| (slot, true))
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Checks a room key against the Olm sender, then takes it, lets it wait or refuses it.
    /// True when the Olm session it came in is worth keeping (the key was taken, or waits for
    /// a member's device). The payload is borrowed: passed by value, a second copy of it sat in
    /// the caller's frame.
    pub(super) fn on_room_key(
        &mut self,
        sender: &str,
        sender_key: [u8; 32],
        payload: &RoomKeyPayload,
    ) -> Result<bool, TokenError> {
        let own_ed = *self.account.olm.ed25519_key().as_bytes();
        let own_user = self
            .login
            .as_ref()
            .map(|l| l.user_id.clone())
            .unwrap_or_default();
        let mismatch = if payload.sender.as_str() != sender {
            Some("sender")
        } else if payload.recipient != own_user {
            Some("recipient")
        } else if payload.recipient_ed != own_ed {
            Some("recipient_keys")
        } else if payload.session_id != *payload.key.signing_key().as_bytes() {
            Some("session_id")
        } else if payload.sender_device_keys.as_ref().is_some_and(|keys| {
            keys.user_id != payload.sender
                || keys.curve != sender_key
                || keys.ed != payload.claimed_ed
        }) {
            Some("sender_device_keys")
        } else {
            None
        };
        if let Some(field) = mismatch {
            self.refuse_key(sender, RejectionReason::Mismatch(field));
            return Ok(false);
        }
        let key = WaitingKey {
            sender: payload.sender.clone(),
            sender_curve: sender_key,
            claimed_ed: payload.claimed_ed,
            room_id: payload.room_id.clone(),
            session: InboundGroupSession::new(&payload.key),
        };
        match self.decide(&key, false, 0) {
            Decision::Take(room) => {
                self.take_key(room, key)?;
                Ok(true)
            }
            Decision::Refuse(reason) => {
                self.refuse_key(sender, reason);
                Ok(false)
            }
            Decision::Wait { member } => {
                self.wait(key, member)?;
                Ok(member)
            }
        }
    }

    /// Tells the person a room key from `sender` was refused.
    fn refuse_key(&mut self, sender: &str, reason: RejectionReason) {
        self.env
            .ui
            .event(&UiEvent::RoomKeyRejected { sender, reason });
    }

    /// What becomes of `key` now (`queried`: its sender's devices were asked for since it
    /// arrived; `expired`: it waited long enough).
    fn decide(&self, key: &WaitingKey, queried: bool, waited: u8) -> Decision {
        let expired = waited >= PENDING_KEY_SYNCS;
        let Some(room) = self.rooms.slot(&key.room_id) else {
            let joining =
                bounded::<MAX_ID_LEN>(&key.room_id).is_ok_and(|room| self.rooms.knows(&room));
            return if joining && !expired {
                Decision::Wait { member: false }
            } else {
                Decision::Refuse(RejectionReason::NotInRoom)
            };
        };
        let member = self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.contains(&key.sender));
        if !member {
            return if expired {
                Decision::Refuse(RejectionReason::NotAMember)
            } else {
                Decision::Wait { member: false }
            };
        }
        match self.devices.find_by_curve(&key.sender, &key.sender_curve) {
            Some(device) if device.ed != key.claimed_ed => {
                Decision::Refuse(RejectionReason::Mismatch("keys"))
            }
            Some(_) => Decision::Take(room),
            None if queried => Decision::Refuse(RejectionReason::UnknownDevice),
            // A member's device query is on its way: it outlasts the syncs a split brings.
            None if waited >= MEMBER_DEVICE_WAIT_SYNCS => {
                Decision::Refuse(RejectionReason::UnknownDevice)
            }
            None => Decision::Wait { member: true },
        }
    }

    /// Hands a key whose sender checked out to the room keys.
    fn take_key(&mut self, room: usize, key: WaitingKey) -> Result<(), TokenError> {
        let inbound = Inbound::new(key.room_id, key.sender, key.sender_curve, key.session);
        self.hold_room_key(room, inbound)
    }

    /// Lets `key` wait (a member's key, `member`, asks for the sender's devices).
    fn wait(&mut self, key: WaitingKey, member: bool) -> Result<(), TokenError> {
        let pending = &mut self.pending_keys;
        let Some((slot, displaces)) = pending.place(fnv(key.sender.as_bytes()), member) else {
            self.refuse_key(&key.sender, RejectionReason::Crowded);
            return Ok(());
        };
        if displaces && let Some(old) = WaitingKey::load(&mut self.env.flash, slot)? {
            let session = id_prefix(old.session.session_id().as_bytes());
            self.pending_keys.forget_retries(session);
            self.refuse_key(&old.sender, RejectionReason::Crowded);
        }
        self.pending_keys.clock = self.pending_keys.clock.wrapping_add(1);
        let mut waiting = key.waiting(self.pending_keys.clock);
        waiting.member = member;
        key.save(&mut self.env.flash, &mut self.env.rng, slot)?;
        if let Some(place) = self.pending_keys.waiting.get_mut(slot) {
            *place = Some(waiting);
        }
        if member {
            self.track(&key.sender);
        }
        Ok(())
    }

    /// Decides the waiting keys again: after a sync (`after_sync`: one more sync waited) or a
    /// device query.
    pub(super) fn settle_pending_keys(&mut self, after_sync: bool) -> Result<(), TokenError> {
        for slot in 0..MAX_PENDING_ROOM_KEYS {
            let Some(Some(mut waiting)) = self.pending_keys.waiting.get(slot).copied() else {
                continue;
            };
            if after_sync {
                waiting.waited = waiting.waited.saturating_add(1);
            }
            let Some(key) = WaitingKey::load(&mut self.env.flash, slot)? else {
                self.forget_pending(slot)?;
                continue;
            };
            match self.decide(&key, waiting.queried, waiting.waited) {
                Decision::Take(room) => {
                    self.forget_pending(slot)?;
                    self.take_key(room, key)?;
                }
                Decision::Refuse(reason) => {
                    self.forget_pending(slot)?;
                    self.pending_keys.forget_retries(waiting.session);
                    self.refuse_key(&key.sender, reason);
                }
                Decision::Wait { member } => {
                    if member && !waiting.member {
                        self.track(&key.sender);
                    }
                    waiting.member = member;
                    if let Some(place) = self.pending_keys.waiting.get_mut(slot) {
                        *place = Some(waiting);
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets the waiting key in `slot` (on flash first).
    fn forget_pending(&mut self, slot: usize) -> Result<(), TokenError> {
        self.env.flash.remove(record::PENDING + slot as u16)?;
        if let Some(place) = self.pending_keys.waiting.get_mut(slot) {
            *place = None;
        }
        Ok(())
    }

    /// Fetches an event again whose key was pending.
    pub(super) fn start_fetch(
        &mut self,
        coap: &mut Coap,
        room: &str,
        event: &str,
    ) -> Result<(), TokenError> {
        self.start(
            coap,
            Operation::FetchEvent,
            Code::GET,
            &[endpoint::ROOM_EVENT, room, event],
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::olm_sessions::MAX_CIPHERTEXT;
    use jeton_olm::megolm::MegolmMessage;

    /// What matrix-sdk-crypto sent in one captured run (tests/fixtures/matrix-sdk-crypto): the
    /// Olm plaintext of its `m.room_key`, the Megolm event of that session, and its plaintext.
    macro_rules! sdk_fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/matrix-sdk-crypto/",
                $name
            ))
        };
    }
    const ROOM_KEY: &[u8] = sdk_fixture!("m.room_key.olm-plaintext.json");
    const MEGOLM_EVENT: &[u8] = sdk_fixture!("m.room.encrypted.megolm-event.json");
    const MEGOLM_PLAINTEXT: &[u8] = sdk_fixture!("m.room.message.megolm-plaintext.json");

    fn key32(base64: &str) -> [u8; 32] {
        let mut out = [0u8; 33];
        let bytes = jeton_olm::base64::decode(base64.as_bytes(), &mut out).unwrap();
        bytes.try_into().unwrap()
    }

    #[test]
    fn matrix_sdk_cryptos_room_key_is_read_field_by_field() {
        let payload = room_key_payload(ROOM_KEY).unwrap().unwrap();
        assert_eq!(payload.sender, "@alice370fa5364b:localhost");
        assert_eq!(payload.recipient, "@carol73afe1977c:localhost");
        assert_eq!(
            payload.room_id,
            "!4NqSUKtE5nUTNkjjLnsn3AProGKeuBw0NR1hyzKrCmA"
        );
        let alice_ed = key32("lawFN2mbCSChxOz5lpxP1cMglq4ORTWajC7qEPjOnvk");
        assert_eq!(payload.claimed_ed, alice_ed);
        assert_eq!(
            payload.recipient_ed,
            key32("r4QFhyvtOVXS+6eVmaS0APMmD0jX7L0dLXEw6YIIfWY")
        );
        assert_eq!(payload.session_id, *payload.key.signing_key().as_bytes());
        // MSC4147: the sending device's own keys, which the token checks against the Olm sender.
        let device = payload.sender_device_keys.as_ref().unwrap();
        assert_eq!(device.user_id, payload.sender);
        assert_eq!(
            device.curve,
            key32("ZGXPIkKAvii1zkqEmfSGYRLtXmpIIzYN7MI0McLsDXQ")
        );
        assert_eq!(device.ed, alice_ed);
    }

    #[test]
    fn matrix_sdk_cryptos_room_key_opens_its_megolm_message() {
        let payload = room_key_payload(ROOM_KEY).unwrap().unwrap();
        let event = JsonObject::parse(MEGOLM_EVENT).unwrap();
        let content = event.object("content").unwrap();
        let session_id = content.string("session_id").unwrap().plain().unwrap();
        assert_eq!(key32(session_id), payload.session_id);
        let ciphertext = content.string("ciphertext").unwrap().plain().unwrap();
        let mut bytes = [0u8; MAX_CIPHERTEXT];
        let bytes = jeton_olm::base64::decode(ciphertext.as_bytes(), &mut bytes).unwrap();
        let message = MegolmMessage::from_bytes(bytes).unwrap();
        let mut session = InboundGroupSession::new(&payload.key);
        let mut plaintext = [0u8; WORK_BYTES];
        let decrypted = session.decrypt(&message, &mut plaintext).unwrap();
        // The file ends with a newline; the plaintext does not.
        let expected = MEGOLM_PLAINTEXT.strip_suffix(b"\n").unwrap();
        assert_eq!(&plaintext[..decrypted.plaintext_len], expected);
    }
}
