//! What the token sends: login, filter, key uploads, device queries and claims, room keys
//! over Olm, and messages over Megolm through the outbox.

use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_olm::megolm::GroupSession;
use jeton_olm::{Ed25519PublicKey, Ed25519Signature};
use jeton_proto::TableVersion;
use jeton_proto::keys::key_for_name;
use jeton_proto::view::{Binary, KeysClaimResponse};
use jeton_proto::write::{self};

use super::rng::CryptoSource;
use super::state::*;
use super::*;
use crate::json::{JsonWriter, write_canonical};

type BodyEncoder<'b> = Encoder<Cursor<&'b mut [u8]>>;

pub(super) fn key(e: &mut BodyEncoder<'_>, name: &str) -> Result<(), TokenError> {
    let result = match key_for_name(name, TableVersion::V2) {
        Some(k) => e.u16(k).map(drop),
        None => e.str(name).map(drop),
    };
    result.map_err(|_| TokenError::Write(write::WriteError::BufferTooSmall))
}

pub(super) fn cbor<T>(
    r: Result<T, minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>,
) -> Result<T, TokenError> {
    r.map_err(|_| TokenError::Write(write::WriteError::BufferTooSmall))
}

/// Verifies `signatures.<user_id>.ed25519:<device_id>` of a CBOR object with `ed25519`.
pub(super) fn verify_object(
    object: jeton_proto::view::Map<'_>,
    signature: Option<Binary<'_>>,
    ed25519: &[u8; 32],
    scratch: &mut [u8],
) -> bool {
    let Some(signature) = signature else {
        return false;
    };
    let mut decoded = [0u8; 64];
    let signature = match signature {
        Binary::Bytes(bytes) => Ed25519Signature::from_slice(bytes),
        Binary::Base64(text) => match jeton_olm::base64::decode(text.as_bytes(), &mut decoded) {
            Ok(bytes) => Ed25519Signature::from_slice(bytes),
            Err(e) => Err(e),
        },
    };
    let Ok(signature) = signature else {
        return false;
    };
    let mut w = JsonWriter::new(scratch);
    if write_canonical(&mut w, object, &["signatures", "unsigned"]).is_err() {
        return false;
    }
    let Ok(key) = Ed25519PublicKey::from_slice(ed25519) else {
        return false;
    };
    key.verify(w.as_bytes(), &signature).is_ok()
}

/// Raw bytes of a binary field (v2 bytes, or base64 text) into `out`.
pub(super) fn binary_bytes<'o>(binary: Binary<'_>, out: &'o mut [u8]) -> Option<&'o [u8]> {
    match binary {
        Binary::Bytes(bytes) => {
            let target = out.get_mut(..bytes.len())?;
            target.copy_from_slice(bytes);
            Some(target)
        }
        Binary::Base64(text) => jeton_olm::base64::decode(text.as_bytes(), out).ok(),
    }
}

pub(super) fn binary32(binary: Binary<'_>) -> Option<[u8; 32]> {
    let mut out = [0u8; 48];
    binary_bytes(binary, &mut out)?.try_into().ok()
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Drops the outbound sessions of the rooms `user` is in.
    pub(super) fn rotate_rooms_of(&mut self, user: &str) -> Result<(), TokenError> {
        for slot in 0..MAX_ROOMS {
            let Some(Some(room)) = self.rooms.get_mut(slot) else {
                continue;
            };
            if room.outbound.is_some() && room.members.iter().any(|m| m.as_str() == user) {
                room.outbound = None;
                save_outbound(&mut self.env.flash, &mut self.env.rng, slot, None)?;
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
        let Some(Some(room)) = self.rooms.get_mut(room_slot) else {
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
        save_outbound(
            &mut self.env.flash,
            &mut self.env.rng,
            room_slot,
            Some(&outbound),
        )?;
        room.outbound = Some(outbound);
        Ok(())
    }

    /// A device of a member of the room that does not have the room key yet.
    pub(super) fn next_recipient(&self, room_slot: usize) -> Option<usize> {
        let room = self.rooms.get(room_slot)?.as_ref()?;
        let outbound = room.outbound.as_ref()?;
        self.devices.iter().find_map(|(slot, device)| {
            let bit = 1u32 << slot;
            let member = room.members.contains(&device.user_id);
            // Optionally, room keys go to verified devices only.
            let trusted = device.verified || !self.env.settings.share_keys_only_with_verified;
            (member && trusted && (outbound.shared | outbound.unreachable) & bit == 0)
                .then_some(slot)
        })
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
            let len = write::keys_claim_body(
                &mut self.env.work,
                &device.user_id,
                &device.device_id,
                10_000,
            )?;
            return self.start(
                coap,
                Operation::Claim {
                    device: device_slot,
                },
                Code::POST,
                &[endpoint::KEYS_CLAIM],
                len,
            );
        };
        let Some(login) = &self.login else {
            return Ok(());
        };
        let Some(Some(room)) = self.rooms.get(room_slot) else {
            return Ok(());
        };
        let Some(outbound) = &room.outbound else {
            return Ok(());
        };
        // The m.room_key payload, as JSON, into work (scratch is where the Olm session is
        // read).
        let mut session_id = [0u8; 43];
        let session_id = outbound.session.session_id().to_base64(&mut session_id);
        let mut key_base64 = [0u8; jeton_olm::megolm::SessionKey::BASE64_LENGTH];
        let session_key = outbound
            .session
            .session_key()
            .to_base64(&mut key_base64)
            .map_err(|_| TokenError::Crypto)?;
        let own_ed = self.account.olm.ed25519_key();
        let mut w = JsonWriter::new(&mut self.env.work);
        w.raw(br#"{"content":{"algorithm":"#)?
            .string(jeton_proto::view::MEGOLM_ALGORITHM)?
            .raw(br#","room_id":"#)?
            .string(&room.id)?
            .raw(br#","session_id":"#)?
            .string(session_id)?
            .raw(br#","session_key":"#)?
            .string(session_key)?
            .raw(br#"},"keys":{"ed25519":"#)?
            .base64(own_ed.as_bytes())?
            .raw(br#"},"recipient":"#)?
            .string(&device.user_id)?
            .raw(br#","recipient_keys":{"ed25519":"#)?
            .base64(&device.ed)?
            .raw(br#"},"sender":"#)?
            .string(&login.user_id)?
            .raw(br#","sender_device":"#)?
            .string(&login.device_id)?
            .raw(br#","type":"m.room_key"}"#)?;
        let plaintext_len = w.len();
        key_base64.fill(0);
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
            for room in self.rooms.iter_mut().flatten() {
                if let Some(outbound) = &mut room.outbound {
                    outbound.unreachable |= 1 << device_slot;
                }
            }
            self.env.ui.event(&UiEvent::DeviceRejected {
                user_id: &device.user_id,
                device_id: &device.device_id,
                reason: RejectionReason::UnknownDevice,
            });
            return Ok(());
        };
        self.start_olm_session(device.curve, one_time_key)
    }

    pub(super) fn on_key_shared(&mut self, device_slot: usize) -> Result<(), TokenError> {
        let Some(room_id) = self.outbox.head_room() else {
            return Ok(());
        };
        let Some(room_slot) = self.room_slot(room_id) else {
            return Ok(());
        };
        if let Some(Some(room)) = self.rooms.get_mut(room_slot)
            && let Some(outbound) = &mut room.outbound
        {
            outbound.shared |= 1 << device_slot;
            save_outbound(
                &mut self.env.flash,
                &mut self.env.rng,
                room_slot,
                Some(outbound),
            )?;
        }
        Ok(())
    }
}

/// Clears device slot `slot` from what every outbound session recorded about it.
pub(super) fn forget_slot(rooms: &mut [Option<Room>; MAX_ROOMS], slot: usize) {
    for room in rooms.iter_mut().flatten() {
        if let Some(outbound) = &mut room.outbound {
            outbound.shared &= !(1 << slot);
            outbound.unreachable &= !(1 << slot);
        }
    }
}
