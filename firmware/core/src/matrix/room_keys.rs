//! The room keys the token received: inbound Megolm sessions with who sent them, keys that
//! wait for their sender's device keys, and events to fetch again once such a key is decided.
//!
//! A room key arrives over Olm ([`super::olm_sessions`]) as an `m.room_key` payload. It is
//! kept when every field the spec's Olm payload carries agrees with the Olm message it came in
//! (sender, recipient, recipient keys, the session id of the key, and MSC4147's
//! `sender_device_keys` when present) and when the sending device, found by the sender and the
//! Olm session's Curve25519 key, is known with the Ed25519 key the payload claims. A key from
//! a device not known yet waits in RAM while the sender's devices are asked for
//! ([`super::devices`]); an event encrypted with it meanwhile is shown as
//! [`UndecryptableReason::AwaitingKey`] and fetched again once the key is decided. Of two keys
//! of the same session, the one that reaches further back is kept. A session is on flash
//! ([`record::INBOUND`] + slot, pickled with the storage key) with the message indexes it
//! decrypted last: the same index under another event id is a replay.
//!
//! A sender's device that keeps a key from the token says so with `m.room_key.withheld` (a
//! to-device event in the clear): the notice is shown ([`UiEvent::RoomKeyWithheld`]) and
//! remembered against its session (or, for `m.no_olm` without one, against the sender), so that
//! the session's messages say why they cannot be read ([`UndecryptableReason::Withheld`]) rather
//! than that no key came. A key that does come for the session forgets the notice.
//!
//! Known gaps: pending keys live in RAM only (a power cut drops them; the sender's client
//! sends the key again when asked, which the token does not yet do); the replay window is the
//! last [`REPLAY_WINDOW`] indexes of a session; withheld notices live in RAM only, the last
//! [`MAX_WITHHELD_NOTICES`] of them.
//!
//! Where the table's rules go next (issue 14): sessions found by the sender's key as well as
//! the room and session id, and one sender's session never overwritten by another's; a
//! lifecycle with eviction (never a session in use, a cap per sender) and an event for the
//! person when a key is dropped; a bounded pending area for keys that arrive before their room
//! or member; a per-session low-water mark instead of the window.

use heapless::{Deque, Vec};
use minicbor::Decoder;
use sha2::{Digest, Sha256};

use jeton_olm::megolm::{InboundGroupSession, MegolmMessage, SessionKey};
use jeton_proto::path::endpoint;
use jeton_proto::view::{Binary, EncryptedContent, MEGOLM_ALGORITHM, Map, Value};

use super::bodies::{binary_bytes, binary32};
use super::flash::{Flash, bytes32, corrupt, text};
use super::olm_sessions::MAX_CIPHERTEXT;
use super::*;
use crate::json::{JsonObject, JsonStr};
use crate::store::record;

/// A room key received, with who sent it.
pub(super) struct Inbound {
    room_id: RoomId,
    sender: UserId,
    /// The Curve25519 key of the device that sent the key.
    pub(super) sender_curve: [u8; 32],
    session: InboundGroupSession,
    /// `(message index, hash of the event id)` of recent messages.
    seen: Deque<(u32, u32), REPLAY_WINDOW>,
}

impl Inbound {
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
                e.array(4)?
                    .str(&self.room_id)?
                    .str(&self.sender)?
                    .bytes(&self.sender_curve)?
                    .array(self.seen.len() as u64)?;
                for (index, hash) in &self.seen {
                    e.array(2)?.u32(*index)?.u32(*hash)?;
                }
                Ok(())
            },
            &self.session,
            rng,
        )
    }

    /// Reads slot `slot`'s session. Out of line: its temporaries stay out of the boot's
    /// frame, under which every other load of a boot runs.
    #[inline(never)]
    fn load<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Inbound>, TokenError> {
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
}

/// A decrypted room key waiting for its sender's device keys.
pub(super) struct PendingKey {
    sender: UserId,
    sender_curve: [u8; 32],
    claimed_ed: [u8; 32],
    room_id: RoomId,
    key: SessionKey,
}

/// The to-device event type by which a sender's device says it keeps a room key from this one.
pub(super) const WITHHELD_EVENT: &str = "m.room_key.withheld";

/// An `m.room_key.withheld` notice, kept to say why a session's messages cannot be read.
pub(super) struct Withheld {
    /// Who sent it about which session: [`withheld_tag`].
    tag: [u8; 8],
    code: WithheldCode,
}

/// Names a withheld notice by its sender and the session it is about (`None`: the sender's
/// device as a whole; `m.no_olm` names no session): the first 8 bytes of SHA-256 over both.
/// Small enough for the token's RAM, and no user can pick an id whose notices pass for
/// another's.
fn withheld_tag(sender: &str, session_id: Option<&[u8; 32]>) -> [u8; 8] {
    let mut hash = Sha256::new();
    // The length first, so that no sender and session read as another sender alone.
    hash.update((sender.len() as u32).to_be_bytes());
    hash.update(sender.as_bytes());
    if let Some(session_id) = session_id {
        hash.update(session_id);
    }
    let digest = hash.finalize();
    let mut tag = [0; 8];
    tag.copy_from_slice(digest.get(..8).unwrap_or_default());
    tag
}

/// The room keys received. Boot lays the table out in place ([`super::boot`]), so its fields
/// are visible there; everything else goes through the methods.
#[repr(C)]
pub(super) struct RoomKeys {
    /// Keys waiting for their sender's device keys.
    pub(super) pending: Vec<PendingKey, MAX_PENDING_ROOM_KEYS>,
    /// Encrypted events whose key was pending, fetched again once it is decided.
    pub(super) retry: Vec<(RoomId, EventId), MAX_RETRY_EVENTS>,
    /// The latest withheld notices, oldest first.
    pub(super) withheld: Vec<Withheld, MAX_WITHHELD_NOTICES>,
    pub(super) inbound: [Option<Inbound>; MAX_INBOUND_SESSIONS],
}

/// What decrypting a Megolm event gave.
pub(super) enum Megolm {
    /// The plaintext is in `work` (this long), from the session in slot `slot`.
    Decrypted { plaintext_len: usize, slot: usize },
    /// It cannot be shown, for this reason.
    Undecryptable(UndecryptableReason),
    /// Nothing to show (the token's own message echoed back).
    Ignored,
}

impl RoomKeys {
    /// Reads the sessions from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        for (slot, entry) in self.inbound.iter_mut().enumerate() {
            *entry = Inbound::load(flash, slot)?;
        }
        Ok(())
    }

    /// The session in slot `slot`.
    pub(super) fn get(&self, slot: usize) -> Option<&Inbound> {
        self.inbound.get(slot)?.as_ref()
    }

    /// The slot of the session `session_id` of `room_id`.
    fn find(&self, room_id: &str, session_id: &[u8; 32]) -> Option<usize> {
        self.inbound.iter().position(|entry| {
            entry.as_ref().is_some_and(|e| {
                e.session.session_id().as_bytes() == session_id && e.room_id.as_str() == room_id
            })
        })
    }

    /// Whether a pending key is for session `session_id`.
    fn is_pending(&self, session_id: &[u8; 32]) -> bool {
        self.pending
            .iter()
            .any(|p| p.key.signing_key().as_bytes() == session_id)
    }

    /// Remembers `notice`, in place of an earlier one of the same sender about the same
    /// session, else pushing out the oldest.
    fn remember_withheld(&mut self, notice: Withheld) {
        self.withheld.retain(|w| w.tag != notice.tag);
        if self.withheld.is_full() {
            self.withheld.remove(0);
        }
        let _ = self.withheld.push(notice);
    }

    /// Why `sender` withheld the key of session `session_id`: its notice about the session, else
    /// one about its device as a whole.
    fn withheld(&self, sender: &str, session_id: &[u8; 32]) -> Option<WithheldCode> {
        let code = |tag: [u8; 8]| self.withheld.iter().find(|w| w.tag == tag).map(|w| w.code);
        code(withheld_tag(sender, Some(session_id))).or_else(|| code(withheld_tag(sender, None)))
    }

    /// Forgets the notices a room key of `sender` for `session_id` answers: the one about that
    /// session, and the sender's about its device as a whole (the key came over Olm after all).
    fn forget_withheld(&mut self, sender: &str, session_id: &[u8; 32]) {
        let answered = [
            withheld_tag(sender, Some(session_id)),
            withheld_tag(sender, None),
        ];
        self.withheld.retain(|w| !answered.contains(&w.tag));
    }

    /// The next event to fetch again, once no key is pending.
    pub(super) fn next_retry(&mut self) -> Option<(RoomId, EventId)> {
        if !self.pending.is_empty() {
            return None;
        }
        let first = self.retry.first().cloned()?;
        self.retry.remove(0);
        Some(first)
    }

    /// The slot a new session `session_id` of `room_id` takes (that of an older copy of it, or
    /// a free one); `Ok(None)` when a copy that reaches as far back is kept already.
    fn slot_for(
        &self,
        room_id: &RoomId,
        session: &InboundGroupSession,
    ) -> Result<Option<usize>, TokenError> {
        let session_id = session.session_id();
        // A key for a session already held: keep the one that reaches further back.
        for existing in self.inbound.iter().flatten() {
            if existing.session.session_id() == session_id
                && existing.room_id == *room_id
                && existing.session.first_known_index() <= session.first_known_index()
            {
                return Ok(None);
            }
        }
        self.inbound
            .iter()
            .position(|entry| {
                entry
                    .as_ref()
                    .is_some_and(|e| e.session.session_id() == session_id && e.room_id == *room_id)
            })
            .or_else(|| self.inbound.iter().position(Option::is_none))
            .map(Some)
            .ok_or(TokenError::LimitReached(Limit::InboundSessions))
    }
}

/// A 32-bit FNV-1a hash of an event id, for the replay window.
fn event_hash(event_id: &str) -> u32 {
    event_id.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

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

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Checks a room key against the Olm sender and the device table, then keeps it. The
    /// payload is borrowed: passed by value, a second copy of it sat in the caller's frame.
    pub(super) fn on_room_key(
        &mut self,
        sender: &str,
        sender_key: [u8; 32],
        payload: &RoomKeyPayload,
    ) -> Result<(), TokenError> {
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
            self.env.ui.event(&UiEvent::RoomKeyRejected {
                sender,
                reason: RejectionReason::Mismatch(field),
            });
            return Ok(());
        }
        let pending = PendingKey {
            sender: payload.sender.clone(),
            sender_curve: sender_key,
            claimed_ed: payload.claimed_ed,
            room_id: payload.room_id.clone(),
            key: payload.key.clone(),
        };
        if self
            .devices
            .find_by_curve(&pending.sender, &pending.sender_curve)
            .is_some()
        {
            return self.accept_room_key(pending);
        }
        // Unknown device: ask the server, decide when the answer is in.
        let user = pending.sender.clone();
        if self.room_keys.pending.push(pending).is_err() {
            self.error(TokenError::LimitReached(Limit::PendingRoomKeys));
        }
        self.track(&user);
        Ok(())
    }

    /// Decides the room keys that waited for a device query.
    pub(super) fn retry_pending_keys(&mut self) -> Result<(), TokenError> {
        while let Some(pending) = self.room_keys.pending.pop() {
            self.accept_room_key(pending)?;
        }
        Ok(())
    }

    /// Keeps a room key whose sending device is known with the keys it claims (on flash).
    fn accept_room_key(&mut self, pending: PendingKey) -> Result<(), TokenError> {
        let verdict = match self
            .devices
            .find_by_curve(&pending.sender, &pending.sender_curve)
        {
            None => Err(RejectionReason::UnknownDevice),
            Some(device) if device.ed != pending.claimed_ed => {
                Err(RejectionReason::Mismatch("keys"))
            }
            Some(_) => Ok(()),
        };
        if let Err(reason) = verdict {
            self.env.ui.event(&UiEvent::RoomKeyRejected {
                sender: &pending.sender,
                reason,
            });
            return Ok(());
        }
        let session = InboundGroupSession::new(&pending.key);
        self.room_keys
            .forget_withheld(&pending.sender, session.session_id().as_bytes());
        let slot = match self.room_keys.slot_for(&pending.room_id, &session) {
            Ok(Some(slot)) => slot,
            Ok(None) => return Ok(()),
            Err(error) => {
                self.error(error);
                return Ok(());
            }
        };
        let inbound = Inbound {
            room_id: pending.room_id,
            sender: pending.sender,
            sender_curve: pending.sender_curve,
            session,
            seen: Deque::new(),
        };
        inbound.save(&mut self.env.flash, &mut self.env.rng, slot)?;
        if let Some(entry) = self.room_keys.inbound.get_mut(slot) {
            *entry = Some(inbound);
        }
        Ok(())
    }

    /// Takes `sender`'s `m.room_key.withheld` notice (`content`): remembered and shown. One
    /// without a `code` is shown as a malformed room key; one without a readable `session_id`
    /// is taken as about the sender's device as a whole, as `m.no_olm` is.
    pub(super) fn on_room_key_withheld(&mut self, sender: &str, content: Map<'_>) {
        let text = |name| match content.get(name) {
            Ok(Some(Value::Text(text))) => Some(text),
            _ => None,
        };
        let Some(code) = text("code").map(WithheldCode::from_code) else {
            self.env.ui.event(&UiEvent::RoomKeyRejected {
                sender,
                reason: RejectionReason::Malformed,
            });
            return;
        };
        let session_id = match content.get("session_id") {
            Ok(Some(Value::Bytes(bytes))) => binary32(Binary::Bytes(bytes)),
            Ok(Some(Value::Text(text))) => binary32(Binary::Base64(text)),
            _ => None,
        };
        self.room_keys.remember_withheld(Withheld {
            tag: withheld_tag(sender, session_id.as_ref()),
            code,
        });
        self.env.ui.event(&UiEvent::RoomKeyWithheld {
            sender,
            room_id: text("room_id"),
            code,
        });
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

    /// Decrypts Megolm event `event_id` of `sender` in `room_id` (`content`) into `work`, with
    /// the session it names: refused when the session is unknown (or its key pending: then
    /// the event is fetched again later), when the session is another sender's, or when the
    /// index was seen under another event id (a replay). A new index is on flash before the
    /// message is shown. Out of line: the decryption's stack is not under the showing's.
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
        let Some(slot) = self.room_keys.find(room_id, &session_id) else {
            if self.room_keys.is_pending(&session_id) {
                if let (Ok(room), Ok(event)) = (bounded(room_id), bounded(event_id)) {
                    let _ = self.room_keys.retry.push((room, event));
                }
                return refused(UndecryptableReason::AwaitingKey);
            }
            let own = self
                .login
                .as_ref()
                .is_some_and(|l| l.user_id.as_str() == sender);
            if own {
                // Our own message echoed back (the token keeps no inbound copy of its
                // outbound sessions).
                return Ok(Megolm::Ignored);
            }
            return refused(self.room_keys.withheld(sender, &session_id).map_or(
                UndecryptableReason::UnknownSession,
                UndecryptableReason::Withheld,
            ));
        };
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
        let Some(Some(inbound)) = self.room_keys.inbound.get_mut(slot) else {
            return Ok(Megolm::Ignored);
        };
        if inbound.sender.as_str() != sender {
            return refused(UndecryptableReason::SenderMismatch);
        }
        let decrypted = match inbound.session.decrypt(&message, &mut self.env.work) {
            Ok(decrypted) => decrypted,
            Err(error) => return refused(UndecryptableReason::Decryption(error)),
        };
        let hash = event_hash(event_id);
        let index = decrypted.message_index;
        if inbound.seen.iter().any(|(i, h)| *i == index && *h != hash) {
            self.env.work.fill(0);
            return refused(UndecryptableReason::Replay);
        }
        if !inbound.seen.iter().any(|(i, _)| *i == index) {
            if inbound.seen.is_full() {
                inbound.seen.pop_front();
            }
            let _ = inbound.seen.push_back((index, hash));
            inbound.save(&mut self.env.flash, &mut self.env.rng, slot)?;
        }
        Ok(Megolm::Decrypted {
            plaintext_len: decrypted.plaintext_len,
            slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
