//! The room keys the token sends: each encrypted room's outbound Megolm session, which
//! devices have its key, and how the key reaches them over Olm.
//!
//! A room's session is made before the first message that needs it, and again when it is due
//! for rotation (the room's period or message count), when a member left, or when a member
//! has a new device ([`super::devices`]). It is on flash ([`record::OUTBOUND`] + room slot,
//! pickled with the storage key) with a bit per device slot that has the key, and one per
//! device that could not be reached (no one-time key to claim, or the homeserver refused the
//! message); each message advances its index on flash before the ciphertext exists anywhere
//! else ([`super::outbox`]). Before the outbox head's message goes, its room key goes to
//! every device of every member that lacks it (optionally verified devices only,
//! [`Config::share_keys_only_with_verified`]): over the Olm session with the device, or,
//! when there is none, after claiming one of its one-time keys and starting one
//! ([`super::olm_sessions`]). A device the key is kept from gets `m.room_key.withheld` with
//! code `m.unverified` instead, once per session (it is then skipped for the session, until
//! it is verified), so that its person reads why the token's messages stay closed.
//!
//! A session ends, and the next message uses a new one, when a device that received it is
//! removed or comes back with other keys ([`super::devices`]); the room's rotation period is
//! capped at the spec's week and 100 messages ([`MAX_ROTATION_MS`], [`MAX_ROTATION_MSGS`]).
//!
//! Known gap: the age of a session restarts at boot (`rotation_period_ms` counts from boot);
//! its message count survives.

use minicbor::Decoder;

use jeton_olm::megolm::GroupSession;
use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::KeysClaimResponse;
use jeton_proto::write;

use super::bodies::{BodyEncoder, binary32, cbor, key, to_device_body, verify_object};
use super::devices::Device;
use super::flash::{Flash, corrupt};
use super::rng::CryptoSource;
use super::room_keys::WITHHELD_EVENT;
use super::*;
use crate::store::record;

/// A room's outbound Megolm session and whom it was shared with.
pub(super) struct Outbound {
    pub(super) session: GroupSession,
    pub(super) created: Instant,
    /// Bit `i`: device slot `i` has the key.
    pub(super) shared: u32,
    /// Bit `i`: device slot `i` is skipped for this session: it had no one-time key to claim,
    /// the homeserver refused its message, or it was told the key is withheld from it.
    pub(super) unreachable: u32,
}

impl Outbound {
    /// Writes the session as room slot `slot`'s to flash.
    pub(super) fn save<S: Store, R: Rng>(
        &self,
        flash: &mut Flash<S>,
        rng: &mut R,
        slot: usize,
    ) -> Result<(), TokenError> {
        let outbound = self;
        flash.put_pickled(
            record::OUTBOUND + slot as u16,
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

    /// Removes room slot `slot`'s session from flash.
    pub(super) fn remove<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<(), TokenError> {
        flash.remove(record::OUTBOUND + slot as u16)
    }

    /// Reads the outbound session of room slot `slot`. Out of line: its temporaries stay out
    /// of the boot's frame, under which every other load of a boot runs.
    #[inline(never)]
    pub(super) fn load<S: Store>(
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
}

impl Rooms {
    /// Device slot `slot` holds another device, or none: no outbound session recorded
    /// anything about it.
    pub(super) fn forget_device(&mut self, slot: usize) {
        for room in self.iter_mut() {
            if let Some(outbound) = &mut room.outbound {
                outbound.shared &= !(1 << slot);
                outbound.unreachable &= !(1 << slot);
            }
        }
    }

    /// The device in slot `slot` was verified: a session that skipped it because its key
    /// was withheld (or for want of a one-time key) tries it again.
    pub(super) fn retry_device(&mut self, slot: usize) {
        for room in self.iter_mut() {
            if let Some(outbound) = &mut room.outbound {
                outbound.unreachable &= !(1 << slot);
            }
        }
    }

    /// The device in slot `slot` cannot be reached: skip it for the current sessions.
    fn mark_unreachable(&mut self, slot: usize) {
        for room in self.iter_mut() {
            if let Some(outbound) = &mut room.outbound {
                outbound.unreachable |= 1 << slot;
            }
        }
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// The device in slot `slot` is gone, or came back with other keys: every outbound session
    /// it received ends, so that the next message uses one it never saw, and nothing remembers
    /// the slot.
    pub(super) fn drop_device_slot(&mut self, slot: usize) -> Result<(), TokenError> {
        self.end_sessions_shared_with(slot)?;
        self.rooms.forget_device(slot);
        self.sessions.forget_device(slot);
        Ok(())
    }

    /// Ends the outbound sessions the device in slot `slot` received.
    fn end_sessions_shared_with(&mut self, slot: usize) -> Result<(), TokenError> {
        for room_slot in 0..MAX_ROOMS {
            let Some(room) = self.rooms.get_mut(room_slot) else {
                continue;
            };
            if room
                .outbound
                .as_ref()
                .is_some_and(|o| o.shared & (1 << slot) != 0)
            {
                room.outbound = None;
                Outbound::remove(&mut self.env.flash, room_slot)?;
            }
        }
        Ok(())
    }

    /// Drops the outbound sessions of the rooms `user` is in.
    pub(super) fn rotate_rooms_of(&mut self, user: &str) -> Result<(), TokenError> {
        for slot in 0..MAX_ROOMS {
            let Some(room) = self.rooms.get_mut(slot) else {
                continue;
            };
            if room.outbound.is_some() && room.members.iter().any(|m| m.as_str() == user) {
                room.outbound = None;
                Outbound::remove(&mut self.env.flash, slot)?;
            }
        }
        Ok(())
    }

    /// Creates the room's outbound session if it has none or it is due for rotation.
    pub(super) fn ensure_outbound(
        &mut self,
        room_slot: usize,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(room) = self.rooms.get_mut(room_slot) else {
            return Ok(());
        };
        let due = match &room.outbound {
            None => true,
            Some(o) => {
                now.millis_since(o.created) >= room.rotation_ms
                    || o.session.message_index() >= room.rotation_msgs
            }
        };
        if !due {
            return Ok(());
        }
        let session = GroupSession::new(&mut CryptoSource(&mut self.env.rng));
        let outbound = Outbound {
            session,
            created: now,
            shared: 0,
            unreachable: 0,
        };
        outbound.save(&mut self.env.flash, &mut self.env.rng, room_slot)?;
        room.outbound = Some(outbound);
        Ok(())
    }

    /// A device of a member of the room that does not have the room key yet.
    pub(super) fn next_recipient(&self, room_slot: usize) -> Option<usize> {
        self.next_unserved(room_slot, true)
    }

    /// A device of a member of the room the key is kept from (only verified devices get keys,
    /// and it is not one) that has not been told so yet.
    pub(super) fn next_withheld(&self, room_slot: usize) -> Option<usize> {
        self.next_unserved(room_slot, false)
    }

    /// A device of a member of the room that has heard nothing of its session yet, among those
    /// the key goes to (`trusted`) or those it is kept from.
    fn next_unserved(&self, room_slot: usize, trusted: bool) -> Option<usize> {
        let room = self.rooms.get(room_slot)?;
        let outbound = room.outbound.as_ref()?;
        self.devices.iter().find_map(|(slot, device)| {
            let bit = 1u32 << slot;
            let member = room.members.contains(&device.user_id);
            // Optionally, room keys go to verified devices only.
            let gets_key = device.verified || !self.env.settings.share_keys_only_with_verified;
            (member && gets_key == trusted && (outbound.shared | outbound.unreachable) & bit == 0)
                .then_some(slot)
        })
    }

    /// Tells the device in `device_slot` that the room's key is kept from it, as it is not
    /// verified (`m.room_key.withheld`, code `m.unverified`, in the clear as the spec sends it).
    pub(super) fn withhold_from(
        &mut self,
        coap: &mut Coap,
        room_slot: usize,
        device_slot: usize,
    ) -> Result<(), TokenError> {
        let (Some(device), Some(login), Some(room)) = (
            self.devices.get(device_slot),
            &self.login,
            self.rooms.get(room_slot),
        ) else {
            return Ok(());
        };
        let Some(outbound) = &room.outbound else {
            return Ok(());
        };
        let session_id = outbound.session.session_id();
        let sender_key = self.account.olm.curve25519_key();
        let notice = WithheldContent {
            room_id: &room.id,
            session_id: session_id.as_bytes(),
            sender_key: sender_key.as_bytes(),
            from_device: &login.device_id,
        };
        let len = to_device_body(
            &mut self.env.work,
            &device.user_id,
            &device.device_id,
            |e| notice.write(e),
        )?;
        let txn = self.next_transaction_id()?;
        self.start(
            coap,
            Operation::Withhold {
                device: device_slot,
            },
            Code::PUT,
            &[endpoint::SEND_TO_DEVICE, WITHHELD_EVENT, &txn],
            len,
        )
    }

    /// Sends the room key to `device` over Olm, claiming a one-time key first if there is
    /// no Olm session with it.
    #[inline(never)]
    pub(super) fn share_with(
        &mut self,
        coap: &mut Coap,
        room_slot: usize,
        device_slot: usize,
    ) -> Result<(), TokenError> {
        let Some(device) = self.devices.get(device_slot).cloned() else {
            return Ok(());
        };
        let Some(olm_slot) = self.sessions.slot_for(&device.curve) else {
            return self.start_claim(coap, device_slot);
        };
        let Some(plaintext_len) = self.room_key_json(room_slot, &device)? else {
            return Ok(());
        };
        let len = self.encrypt_to_device(olm_slot, &device, plaintext_len);
        if let Some(plaintext) = self.env.work.get_mut(..plaintext_len)
            && len.is_err()
        {
            plaintext.fill(0);
        }
        let len = len?;
        let txn = self.next_transaction_id()?;
        self.start(
            coap,
            Operation::ShareKey {
                device: device_slot,
            },
            Code::PUT,
            &[endpoint::SEND_TO_DEVICE, "m.room.encrypted", &txn],
            len,
        )
    }

    /// Claims a one-time key of the device in `device_slot`, to start an Olm session with it.
    pub(super) fn start_claim(
        &mut self,
        coap: &mut Coap,
        device_slot: usize,
    ) -> Result<(), TokenError> {
        let Some(device) = self.devices.get(device_slot) else {
            return Ok(());
        };
        let len = write::keys_claim_body(
            &mut self.env.work,
            &device.user_id,
            &device.device_id,
            10_000,
        )?;
        self.start(
            coap,
            Operation::Claim {
                device: device_slot,
            },
            Code::POST,
            &[endpoint::KEYS_CLAIM],
            len,
        )
    }

    /// The `m.room_key` Olm payload of the room's session for `device`, as JSON into `work`
    /// (the record buffer is where the Olm session is read): its length, or `None` when the
    /// room has no outbound session.
    fn room_key_json(
        &mut self,
        room_slot: usize,
        device: &Device,
    ) -> Result<Option<usize>, TokenError> {
        let Some(room) = self.rooms.get(room_slot) else {
            return Ok(None);
        };
        let Some(outbound) = &room.outbound else {
            return Ok(None);
        };
        let room_id = room.id.clone();
        let mut session_id = [0u8; 43];
        let session_id = outbound.session.session_id().to_base64(&mut session_id);
        let mut key_base64 = [0u8; jeton_olm::megolm::SessionKey::BASE64_LENGTH];
        let session_key = outbound
            .session
            .session_key()
            .to_base64(&mut key_base64)
            .map_err(|_| TokenError::Crypto)?;
        let written = self.olm_payload_json(device, "m.room_key", |w| {
            w.raw(br#"{"algorithm":"#)?
                .string(jeton_proto::view::MEGOLM_ALGORITHM)?
                .raw(br#","room_id":"#)?
                .string(&room_id)?
                .raw(br#","session_id":"#)?
                .string(session_id)?
                .raw(br#","session_key":"#)?
                .string(session_key)?
                .raw(b"}")
                .map(drop)
        });
        key_base64.fill(0);
        written
    }

    /// The answer to a one-time key claim for the device in `device_slot`: an Olm session
    /// starts with the claimed key if its signature verifies, else the device is skipped for
    /// the current sessions.
    pub(super) fn on_claimed(&mut self, body: &[u8], device_slot: usize) -> Result<(), TokenError> {
        let Some(device) = self.devices.get(device_slot).cloned() else {
            return Ok(());
        };
        let response = KeysClaimResponse::parse(body, TableVersion::V2)?;
        let claimed = response.one_time_key(&device.user_id, &device.device_id)?;
        let mut name: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
        let _ = name.push_str("ed25519:");
        let _ = name.push_str(&device.device_id);
        let verified = match claimed {
            Some(signed) => {
                let signature = signed.signature(&device.user_id, &name)?;
                let key = binary32(signed.key);
                match key {
                    Some(key)
                        if verify_object(
                            signed.object,
                            signature,
                            &device.ed,
                            &mut self.env.flash.scratch,
                        ) =>
                    {
                        Some(key)
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let Some(one_time_key) = verified else {
            // No usable key: skip this device for the current session.
            self.rooms.mark_unreachable(device_slot);
            self.env.ui.event(&UiEvent::DeviceRejected {
                user_id: &device.user_id,
                device_id: &device.device_id,
                reason: RejectionReason::UnknownDevice,
            });
            return Ok(());
        };
        self.start_olm_session(device.curve, one_time_key)?;
        self.sessions.on_new_session(device_slot);
        Ok(())
    }

    /// The room key reached the device in `device_slot`: its bit is on flash.
    pub(super) fn on_key_shared(&mut self, device_slot: usize) -> Result<(), TokenError> {
        self.mark_head_session(|outbound| outbound.shared |= 1 << device_slot)
    }

    /// The device in `device_slot` was told the room key is withheld from it: it is skipped
    /// for the session, on flash.
    pub(super) fn on_key_withheld(&mut self, device_slot: usize) -> Result<(), TokenError> {
        self.mark_head_session(|outbound| outbound.unreachable |= 1 << device_slot)
    }

    /// Records `mark` in the outbound session of the outbox head's room, on flash.
    fn mark_head_session(&mut self, mark: impl FnOnce(&mut Outbound)) -> Result<(), TokenError> {
        let Some(room_id) = self.outbox.head_room() else {
            return Ok(());
        };
        let Some(room_slot) = self.room_slot(room_id) else {
            return Ok(());
        };
        if let Some(room) = self.rooms.get_mut(room_slot)
            && let Some(outbound) = &mut room.outbound
        {
            mark(outbound);
            outbound.save(&mut self.env.flash, &mut self.env.rng, room_slot)?;
        }
        Ok(())
    }

    /// The homeserver refuses the room key message to the device in `device_slot` for good
    /// (4.xx but 4.01 and 4.29): the device is skipped for the current sessions.
    pub(super) fn on_share_refused(&mut self, device_slot: usize, error: TokenError) {
        self.rooms.mark_unreachable(device_slot);
        self.error(error);
    }
}

/// The token's `m.room_key.withheld` content for a device its room key is kept from.
struct WithheldContent<'a> {
    room_id: &'a str,
    session_id: &'a [u8; 32],
    /// The token's Curve25519 key.
    sender_key: &'a [u8; 32],
    from_device: &'a str,
}

impl WithheldContent<'_> {
    /// Writes the content; the binary fields as v2 byte strings.
    fn write(&self, e: &mut BodyEncoder<'_>) -> Result<(), TokenError> {
        cbor(e.map(7))?;
        key(e, "algorithm")?;
        cbor(e.str(jeton_proto::view::MEGOLM_ALGORITHM))?;
        key(e, "code")?;
        cbor(e.str("m.unverified"))?;
        key(e, "reason")?;
        cbor(e.str("This device shares room keys only with devices its person verified."))?;
        key(e, "room_id")?;
        cbor(e.str(self.room_id))?;
        key(e, "session_id")?;
        cbor(e.bytes(self.session_id))?;
        key(e, "sender_key")?;
        cbor(e.bytes(self.sender_key))?;
        key(e, "from_device")?;
        cbor(e.str(self.from_device))?;
        Ok(())
    }
}
