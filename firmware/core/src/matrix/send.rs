//! What the token sends: login, filter, key uploads, device queries and claims, room keys
//! over Olm, and messages over Megolm through the outbox.

use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_olm::megolm::GroupSession;
use jeton_olm::olm::olm_message_len;
use jeton_olm::{Ed25519PublicKey, Ed25519Signature};
use jeton_proto::TableVersion;
use jeton_proto::keys::key_for_name;
use jeton_proto::view::{Binary, KeysClaimResponse, KeysUploadResponse};
use jeton_proto::write::{
    self, DeviceKeysUpload, OlmToDevice, SIGNED_CURVE25519, SignedKeyUpload, Signer,
};

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

/// The `/login` body for a password login, keeping the device id when there is one.
pub(super) fn login_body(
    out: &mut [u8],
    user: &str,
    password: &str,
    device_id: Option<&str>,
    display_name: &str,
) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(if device_id.is_some() { 5 } else { 4 }))?;
    key(&mut e, "type")?;
    cbor(e.str("m.login.password"))?;
    key(&mut e, "identifier")?;
    cbor(e.map(2))?;
    key(&mut e, "type")?;
    cbor(e.str("m.id.user"))?;
    key(&mut e, "user")?;
    cbor(e.str(user))?;
    key(&mut e, "password")?;
    cbor(e.str(password))?;
    if let Some(device_id) = device_id {
        key(&mut e, "device_id")?;
        cbor(e.str(device_id))?;
    }
    key(&mut e, "initial_device_display_name")?;
    cbor(e.str(display_name))?;
    Ok(e.writer().position())
}

/// Event types the token reads from a room's state and timeline.
const ROOM_EVENT_TYPES: [&str; 4] = [
    "m.room.encrypted",
    "m.room.encryption",
    "m.room.member",
    "m.room.message",
];

/// A filter that keeps sync small: only the event fields and room event types the token
/// reads, short timelines, no presence, account data, receipts or typing.
pub(super) fn filter_body(out: &mut [u8]) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    let types = |e: &mut BodyEncoder<'_>, list: &[&str]| -> Result<(), TokenError> {
        key(e, "types")?;
        cbor(e.array(list.len() as u64))?;
        for item in list {
            cbor(e.str(item))?;
        }
        Ok(())
    };
    let none = |e: &mut BodyEncoder<'_>| -> Result<(), TokenError> {
        cbor(e.map(1))?;
        types(e, &[])
    };
    cbor(e.map(4))?;
    key(&mut e, "event_fields")?;
    // Inside `content`, only what the token reads: the homeserver leaves out the rest (the
    // deprecated Megolm sender_key and device_id, 49 bytes an event, formatting, relations).
    let fields = [
        "type",
        "sender",
        "state_key",
        "event_id",
        "room_id",
        "content.membership",
        "content.algorithm",
        "content.rotation_period_ms",
        "content.rotation_period_msgs",
        "content.ciphertext",
        "content.session_id",
        "content.msgtype",
        "content.body",
    ];
    cbor(e.array(fields.len() as u64))?;
    for field in fields {
        cbor(e.str(field))?;
    }
    key(&mut e, "presence")?;
    none(&mut e)?;
    key(&mut e, "account_data")?;
    none(&mut e)?;
    key(&mut e, "room")?;
    cbor(e.map(4))?;
    key(&mut e, "ephemeral")?;
    none(&mut e)?;
    key(&mut e, "account_data")?;
    none(&mut e)?;
    key(&mut e, "state")?;
    cbor(e.map(1))?;
    types(&mut e, &ROOM_EVENT_TYPES)?;
    key(&mut e, "timeline")?;
    cbor(e.map(2))?;
    key(&mut e, "limit")?;
    cbor(e.u8(10))?;
    types(&mut e, &ROOM_EVENT_TYPES)?;
    Ok(e.writer().position())
}

/// The canonical JSON of the token's device keys object, which it signs.
pub fn device_keys_json<'b>(
    out: &'b mut [u8],
    user_id: &str,
    device_id: &str,
    curve25519: &[u8; 32],
    ed25519: &[u8; 32],
) -> Result<&'b [u8], TokenError> {
    let mut w = JsonWriter::new(out);
    w.raw(br#"{"algorithms":[""#)?
        .raw(jeton_proto::view::OLM_ALGORITHM.as_bytes())?
        .raw(br#"",""#)?
        .raw(jeton_proto::view::MEGOLM_ALGORITHM.as_bytes())?
        .raw(br#""],"device_id":"#)?
        .string(device_id)?
        .raw(br#","keys":{"#)?
        .string_parts(&["curve25519:", device_id])?
        .raw(b":")?
        .base64(curve25519)?
        .raw(b",")?
        .string_parts(&["ed25519:", device_id])?
        .raw(b":")?
        .base64(ed25519)?
        .raw(br#"},"user_id":"#)?
        .string(user_id)?
        .raw(b"}")?;
    let len = w.len();
    Ok(out.get(..len).unwrap_or_default())
}

/// The canonical JSON of a signed one-time (or fallback) key object without signatures.
pub fn one_time_key_json<'b>(
    out: &'b mut [u8],
    key: &[u8; 32],
    fallback: bool,
) -> Result<&'b [u8], TokenError> {
    let mut w = JsonWriter::new(out);
    if fallback {
        w.raw(br#"{"fallback":true,"key":"#)?;
    } else {
        w.raw(br#"{"key":"#)?;
    }
    w.base64(key)?.raw(b"}")?;
    let len = w.len();
    Ok(out.get(..len).unwrap_or_default())
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
    /// Uploads the device keys (first time), new one-time keys and a new fallback key. The
    /// account with the new keys is on flash before the upload leaves.
    pub(super) fn start_upload(
        &mut self,
        coap: &mut Coap,
        with_device_keys: bool,
    ) -> Result<(), TokenError> {
        let Some(login) = self.login.clone() else {
            return Ok(());
        };
        // Bodies stay under the work buffer: a few keys per upload, more uploads until the
        // server holds its share.
        let unpublished = self.account.one_time_keys().count();
        if self.one_time_keys_wanted || with_device_keys {
            let target = ONE_TIME_KEYS / 2;
            let missing = target.saturating_sub(self.server_one_time_keys as usize + unpublished);
            let count = missing.min(UPLOAD_BATCH.saturating_sub(unpublished));
            if count > 0 {
                let mut source = CryptoSource(&mut self.env.rng);
                self.account.generate_one_time_keys(&mut source, count);
            }
        }
        if (self.fallback_wanted || with_device_keys) && self.account.fallback_key().is_none() {
            self.account
                .generate_fallback_key(&mut CryptoSource(&mut self.env.rng));
        }
        self.save_account()?;

        let signer = Signer {
            user_id: &login.user_id,
            device_id: &login.device_id,
        };
        let identity = self.account.identity_keys();
        let device_signature = {
            let json = device_keys_json(
                &mut self.env.flash.scratch,
                &login.user_id,
                &login.device_id,
                identity.curve25519.as_bytes(),
                identity.ed25519.as_bytes(),
            )?;
            self.account.sign(json).to_bytes()
        };
        let device = DeviceKeysUpload {
            curve25519: identity.curve25519.as_bytes(),
            ed25519: identity.ed25519.as_bytes(),
            signature: &device_signature,
        };
        type KeyEntry = ([u8; 11], [u8; 32], [u8; 64]);
        let mut keys: heapless::Vec<KeyEntry, UPLOAD_BATCH> = heapless::Vec::new();
        for (id, public) in self.account.one_time_keys() {
            let json = one_time_key_json(&mut self.env.flash.scratch, public.as_bytes(), false)?;
            let signature = self.account.sign(json).to_bytes();
            let mut name = [0u8; 11];
            id.to_base64(&mut name);
            let _ = keys.push((name, *public.as_bytes(), signature));
        }
        let fallback = match self.account.fallback_key() {
            Some((id, public)) => {
                let json = one_time_key_json(&mut self.env.flash.scratch, public.as_bytes(), true)?;
                let signature = self.account.sign(json).to_bytes();
                let mut name = [0u8; 11];
                id.to_base64(&mut name);
                Some((name, *public.as_bytes(), signature))
            }
            None => None,
        };
        let uploads: heapless::Vec<SignedKeyUpload<'_>, UPLOAD_BATCH> = keys
            .iter()
            .map(|(name, key, signature)| SignedKeyUpload {
                key_id: core::str::from_utf8(name).unwrap_or_default(),
                key,
                signature,
            })
            .collect();
        let fallback_upload = fallback
            .as_ref()
            .map(|(name, key, signature)| SignedKeyUpload {
                key_id: core::str::from_utf8(name).unwrap_or_default(),
                key,
                signature,
            });
        let len = write::keys_upload_body(
            &mut self.env.work,
            &signer,
            with_device_keys.then_some(&device),
            &uploads,
            fallback_upload.as_ref(),
        )?;
        self.one_time_keys_wanted = false;
        self.fallback_wanted = false;
        self.start(
            coap,
            Operation::Upload { with_device_keys },
            Code::POST,
            &[endpoint::KEYS_UPLOAD],
            len,
        )
    }

    pub(super) fn on_uploaded(
        &mut self,
        body: &[u8],
        with_device_keys: bool,
    ) -> Result<(), TokenError> {
        let response = KeysUploadResponse::parse(body, TableVersion::V2)?;
        let count = response.one_time_key_count(SIGNED_CURVE25519)?;
        self.account.mark_keys_as_published();
        self.server_one_time_keys = u32::try_from(count).unwrap_or(0);
        self.one_time_keys_wanted = (count as usize) < ONE_TIME_KEYS / 2;
        self.save_account()?;
        if with_device_keys && let Some(login) = &mut self.login {
            login.keys_uploaded = true;
            save_login(&mut self.env.flash, login)?;
        }
        self.env.ui.event(&UiEvent::KeysPublished {
            one_time_keys: u32::try_from(count).unwrap_or(0),
        });
        Ok(())
    }

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

    fn olm_slot_for(&self, curve: &[u8; 32]) -> Option<usize> {
        self.olm
            .iter()
            .enumerate()
            .filter_map(|(slot, info)| {
                info.as_ref()
                    .filter(|i| i.peer_curve == *curve)
                    .map(|i| (slot, i.last_used))
            })
            .max_by_key(|(_, used)| *used)
            .map(|(slot, _)| slot)
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
        let Some(olm_slot) = self.olm_slot_for(&device.curve) else {
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
        let own_ed = self.account.ed25519_key();
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

    /// Encrypts the plaintext in `work` for `device` with Olm session `olm_slot` and writes
    /// the to-device body over it; the session with its advanced chain key is on flash
    /// before the message leaves. Out of line, so that its session slot is not on the stack
    /// while the room key is signed.
    #[inline(never)]
    fn encrypt_to_device(
        &mut self,
        olm_slot: usize,
        device: &Device,
        plaintext_len: usize,
    ) -> Result<usize, TokenError> {
        let mut slot = None;
        let session = load_olm(&mut self.env.flash, olm_slot, &mut slot)?;
        let plaintext = self
            .env
            .work
            .get_mut(..plaintext_len)
            .ok_or(TokenError::Crypto)?;
        let needed = olm_message_len(plaintext_len);
        let ciphertext = self
            .env
            .flash
            .scratch
            .get_mut(..needed)
            .ok_or(TokenError::Crypto)?;
        let sent = session
            .encrypt(&mut CryptoSource(&mut self.env.rng), plaintext, ciphertext)
            .map_err(|_| TokenError::Crypto)?;
        plaintext.fill(0);
        let mut recipient_key = [0u8; 43];
        let recipient_key = jeton_olm::base64::encode(&device.curve, &mut recipient_key)
            .map_err(|_| TokenError::Crypto)?;
        let identity = self.account.curve25519_key();
        let message = OlmToDevice {
            user_id: &device.user_id,
            device_id: &device.device_id,
            recipient_key,
            message_type: sent.message_type as u8,
            body: ciphertext.get(..sent.len).unwrap_or_default(),
        };
        let len =
            write::olm_send_to_device_body(&mut self.env.work, identity.as_bytes(), &message)?;
        self.save_olm_session(olm_slot, device.curve, session)?;
        Ok(len)
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

    /// Creates and stores an outbound Olm session. Out of line, so that its session slot
    /// is not on the stack while the claimed key's signature is checked.
    #[inline(never)]
    fn start_olm_session(
        &mut self,
        peer_curve: [u8; 32],
        one_time_key: [u8; 32],
    ) -> Result<(), TokenError> {
        let mut slot = None;
        let session = self
            .account
            .create_outbound_session_in(
                &mut CryptoSource(&mut self.env.rng),
                curve_key(&peer_curve),
                curve_key(&one_time_key),
                &mut slot,
            )
            .map_err(|_| TokenError::Crypto)?;
        self.store_new_olm_session(peer_curve, session)
    }

    /// Writes a new Olm session to a free slot (or over the least recently used one).
    pub(super) fn store_new_olm_session(
        &mut self,
        peer_curve: [u8; 32],
        session: &jeton_olm::olm::Session,
    ) -> Result<(), TokenError> {
        let slot = self
            .olm
            .iter()
            .position(Option::is_none)
            .or_else(|| {
                self.olm
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, info)| info.as_ref().map_or(0, |i| i.last_used))
                    .map(|(slot, _)| slot)
            })
            .ok_or(TokenError::LimitReached(Limit::OlmSessions))?;
        self.save_olm_session(slot, peer_curve, session)
    }

    /// Writes `session` to Olm slot `slot` as the most recently used one.
    pub(super) fn save_olm_session(
        &mut self,
        slot: usize,
        peer_curve: [u8; 32],
        session: &jeton_olm::olm::Session,
    ) -> Result<(), TokenError> {
        self.olm_clock = self.olm_clock.wrapping_add(1);
        let info = OlmSlot {
            peer_curve,
            last_used: self.olm_clock,
        };
        save_olm(&mut self.env.flash, &mut self.env.rng, slot, &info, session)?;
        if let Some(entry) = self.olm.get_mut(slot) {
            *entry = Some(info);
        }
        Ok(())
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
