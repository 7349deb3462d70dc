//! What the token receives: sync responses (rooms, invites, device list changes, key
//! counts), to-device Olm messages carrying room keys, and Megolm-encrypted messages.

use jeton_olm::megolm::{InboundGroupSession, MegolmMessage, SessionKey};
use jeton_proto::TableVersion;
use jeton_proto::ids::{Id, TEXT_LEN};
use jeton_proto::view::{Binary, Event, MEGOLM_ALGORITHM, Value};

use super::send::{binary_bytes, binary32};
use super::state::*;
use super::*;
use crate::json::{JsonObject, JsonStr};

use super::olm_sessions::MAX_CIPHERTEXT;

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
            return self.accept_room_key(pending, false);
        }
        // Unknown device: ask the server, decide when the answer is in.
        let user = pending.sender.clone();
        if self.pending_keys.push(pending).is_err() {
            self.error(TokenError::LimitReached(Limit::PendingRoomKeys));
        }
        self.track(&user);
        Ok(())
    }

    /// Decides the room keys that waited for a device query.
    pub(super) fn retry_pending_keys(&mut self) -> Result<(), TokenError> {
        while let Some(pending) = self.pending_keys.pop() {
            self.accept_room_key(pending, true)?;
        }
        Ok(())
    }

    fn accept_room_key(&mut self, pending: PendingKey, queried: bool) -> Result<(), TokenError> {
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
        let _ = queried;
        if let Err(reason) = verdict {
            self.env.ui.event(&UiEvent::RoomKeyRejected {
                sender: &pending.sender,
                reason,
            });
            return Ok(());
        }
        let session = InboundGroupSession::new(&pending.key);
        let session_id = session.session_id();
        // A key for a session already held: keep the one that reaches further back.
        for slot in 0..MAX_INBOUND_SESSIONS {
            if let Some(Some(existing)) = self.inbound.get(slot)
                && existing.session.session_id() == session_id
                && existing.room_id == pending.room_id
                && existing.session.first_known_index() <= session.first_known_index()
            {
                return Ok(());
            }
        }
        let slot = self
            .inbound
            .iter()
            .position(|entry| {
                entry.as_ref().is_some_and(|e| {
                    e.session.session_id() == session_id && e.room_id == pending.room_id
                })
            })
            .or_else(|| self.inbound.iter().position(Option::is_none));
        let Some(slot) = slot else {
            self.error(TokenError::LimitReached(Limit::InboundSessions));
            return Ok(());
        };
        let inbound = Inbound {
            room_id: pending.room_id,
            sender: pending.sender,
            sender_curve: pending.sender_curve,
            session,
            seen: heapless::Deque::new(),
        };
        save_inbound(&mut self.env.flash, &mut self.env.rng, slot, &inbound)?;
        if let Some(entry) = self.inbound.get_mut(slot) {
            *entry = Some(inbound);
        }
        Ok(())
    }

    pub(super) fn on_timeline_event(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
    ) -> Result<(), TokenError> {
        match event.event_type()? {
            "m.room.encrypted" => self.on_megolm_event(room_id, event),
            "m.room.message" if event.state_key()?.is_none() => {
                let content = event.content()?;
                if let (Some(Value::Text("m.text")), Some(Value::Text(body))) =
                    (content.get("msgtype")?, content.get("body")?)
                {
                    let mut text = [0; TEXT_LEN];
                    self.env.ui.event(&UiEvent::Message {
                        room_id,
                        sender: event.sender()?,
                        event_id: id_text(event.event_id()?, &mut text),
                        body,
                        encrypted: false,
                        sender_verified: false,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn on_fetched_event(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let Value::Map(map) = Value::parse(body, TableVersion::V2)? else {
            return Ok(());
        };
        let Some(Value::Text(room_id)) = map.get("room_id")? else {
            return Ok(());
        };
        let event = Event(map);
        let room: RoomId = bounded(room_id)?;
        self.on_megolm_event(&room, &event)
    }

    fn on_megolm_event(&mut self, room_id: &str, event: &Event<'_>) -> Result<(), TokenError> {
        let sender = event.sender()?;
        let mut text = [0; TEXT_LEN];
        let event_id = id_text(event.event_id()?, &mut text);
        let undecryptable = |core: &mut Self, reason| {
            core.env.ui.event(&UiEvent::Undecryptable {
                room_id,
                sender,
                event_id,
                reason,
            });
            Ok(())
        };
        let Some(content) = event.encrypted()? else {
            return Ok(());
        };
        if content.algorithm()? != MEGOLM_ALGORITHM {
            return undecryptable(self, UndecryptableReason::UnsupportedAlgorithm);
        }
        let Some(session_id) = binary32(content.session_id()?) else {
            return undecryptable(self, UndecryptableReason::Malformed);
        };
        let slot = self.inbound.iter().position(|entry| {
            entry.as_ref().is_some_and(|e| {
                e.session.session_id().as_bytes() == &session_id && e.room_id.as_str() == room_id
            })
        });
        let Some(slot) = slot else {
            if self
                .pending_keys
                .iter()
                .any(|p| p.key.signing_key().as_bytes() == &session_id)
            {
                if let (Ok(room), Ok(event)) = (bounded(room_id), bounded(event_id)) {
                    let _ = self.retry.push((room, event));
                }
                return undecryptable(self, UndecryptableReason::AwaitingKey);
            }
            let own = self
                .login
                .as_ref()
                .is_some_and(|l| l.user_id.as_str() == sender);
            if own {
                // Our own message echoed back (the token keeps no inbound copy of its
                // outbound sessions).
                return Ok(());
            }
            return undecryptable(self, UndecryptableReason::UnknownSession);
        };
        // As for Olm: bytes stay in the response, base64 is decoded into `scratch`, which
        // is free again once the message is decrypted.
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
            return undecryptable(self, UndecryptableReason::Malformed);
        };
        let Ok(message) = MegolmMessage::from_bytes(bytes) else {
            return undecryptable(self, UndecryptableReason::Malformed);
        };
        let Some(Some(inbound)) = self.inbound.get_mut(slot) else {
            return Ok(());
        };
        if inbound.sender.as_str() != sender {
            return undecryptable(self, UndecryptableReason::SenderMismatch);
        }
        let decrypted = match inbound.session.decrypt(&message, &mut self.env.work) {
            Ok(decrypted) => decrypted,
            Err(error) => return undecryptable(self, UndecryptableReason::Decryption(error)),
        };
        let hash = event_hash(event_id);
        let index = decrypted.message_index;
        if inbound.seen.iter().any(|(i, h)| *i == index && *h != hash) {
            self.env.work.fill(0);
            return undecryptable(self, UndecryptableReason::Replay);
        }
        if !inbound.seen.iter().any(|(i, _)| *i == index) {
            if inbound.seen.is_full() {
                inbound.seen.pop_front();
            }
            let _ = inbound.seen.push_back((index, hash));
            if let Some(Some(inbound)) = self.inbound.get(slot) {
                save_inbound(&mut self.env.flash, &mut self.env.rng, slot, inbound)?;
            }
        }
        // The shown text is unescaped into `scratch`, free again after the save above.
        let text = self
            .env
            .flash
            .scratch
            .get_mut(..MAX_MESSAGE_LEN * 2)
            .unwrap_or_default();
        let plaintext = self
            .env
            .work
            .get(..decrypted.plaintext_len)
            .unwrap_or_default();
        let carries_file = JsonObject::parse(plaintext)
            .ok()
            .filter(|p| p.string("room_id").and_then(|r| r.plain()) == Some(room_id))
            .and_then(|payload| payload.object("content"))
            .is_some_and(|content| content.object("file").is_some());
        if carries_file {
            // A file: its description is read from a copy, as the download needs `work`.
            let mut copy = [0u8; WORK_BYTES];
            let len = plaintext.len();
            if let Some(to) = copy.get_mut(..len) {
                to.copy_from_slice(plaintext);
            }
            self.env.work.fill(0);
            let content = JsonObject::parse(copy.get(..len).unwrap_or_default())
                .ok()
                .and_then(|payload| payload.object("content"));
            let is_file = content.is_some_and(|c| self.on_file_event(room_id, sender, &c));
            copy.fill(0);
            return if is_file {
                Ok(())
            } else {
                undecryptable(self, UndecryptableReason::Malformed)
            };
        }
        let shown = JsonObject::parse(plaintext).ok().and_then(|payload| {
            let room_ok = payload.string("room_id").and_then(|r| r.plain()) == Some(room_id);
            let content = payload.object("content")?;
            let body = content.string("body")?.unescape(text).ok()?;
            Some((room_ok, body))
        });
        // The session's sender key names the sending device; verified by SAS or not.
        let sender_verified =
            self.inbound
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|inbound| {
                    self.devices
                        .is_verified_by_curve(sender, &inbound.sender_curve)
                });
        let result = match shown {
            None => undecryptable(self, UndecryptableReason::Malformed),
            Some((false, _)) => undecryptable(self, UndecryptableReason::WrongRoom),
            Some((true, body)) => {
                self.env.ui.event(&UiEvent::Message {
                    room_id,
                    sender,
                    event_id,
                    body,
                    encrypted: true,
                    sender_verified,
                });
                Ok(())
            }
        };
        self.env.work.fill(0);
        self.env.flash.scratch.fill(0);
        result
    }
}

/// An event id's text (v2 may send it as its hash), or `""` for an event without one.
pub(super) fn id_text<'t>(id: Option<Id<'t>>, out: &'t mut [u8; TEXT_LEN]) -> &'t str {
    match id {
        Some(id) => id.as_text(out),
        None => "",
    }
}
