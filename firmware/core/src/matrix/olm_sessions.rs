//! The token's Olm sessions with other devices, and the to-device messages it decrypts and
//! encrypts with them.
//!
//! A session lives on flash only ([`record::OLM`] + slot, pickled with the storage key); the
//! table in RAM holds each slot's peer (its Curve25519 key) and when it was last used. Only
//! the session in use is in RAM, decoded in place into one slot of the caller's frame. A
//! session is on flash after each encryption, before the message leaves; a session that
//! decrypted a room key is written after the room key ([`super::pending_keys`]), so that a
//! power cut between the two lets the redelivered message decrypt again.
//!
//! An Olm message to the token is decrypted with the sender's sessions, most recent first, or
//! starts a new inbound session when it is a pre-key message (the account without the used
//! one-time key is on flash after the session). A room key it carries goes to
//! [`super::pending_keys`].
//!
//! Lifecycle ([`super::lifecycles`]): a new inbound session is kept only when its peer is a
//! known device, or it carried a member's room key that waits for that device; anyone else's
//! pre-key message is read and its session forgotten, so strangers never take a slot. A new
//! session takes a free slot; else that of a device no longer known, then the oldest of a
//! device that has [`MAX_OLM_PER_DEVICE`] already, then the least recently used one, which the
//! person is told of ([`UiEvent::OlmSessionDropped`]).
//!
//! Unwedging, as the spec describes: when a known device's Olm message cannot be decrypted,
//! the token claims one of its one-time keys, starts a new session and sends it an `m.dummy`
//! over it, at most once per [`UNWEDGE_INTERVAL_MS`] per device.

use minicbor::Decoder;

use jeton_olm::Curve25519PublicKey;
use jeton_olm::olm::{MessageType, OlmMessage, Session, olm_message_len};
use jeton_proto::view::{Binary, EncryptedContent};
use jeton_proto::write::{self, OlmToDevice};

use jeton_proto::path::endpoint;

use super::bodies::{binary_bytes, binary32};
use super::devices::Device;
use super::flash::{Flash, bytes32, corrupt};
use super::pending_keys::room_key_payload;
use super::rng::CryptoSource;
use super::*;
use crate::json::{JsonError, JsonWriter};
use crate::store::record;

/// Longest Olm or Megolm message the token decrypts.
pub(super) const MAX_CIPHERTEXT: usize = 2048;

/// Where an Olm session lives on flash: its peer and when it was last used.
#[derive(Clone, Copy, Debug)]
struct OlmSlot {
    peer_curve: [u8; 32],
    last_used: u32,
}

/// The Olm session table, and the devices to unwedge.
#[derive(Debug)]
pub(super) struct OlmSessions {
    /// Counts uses, for the least recently used slot.
    clock: u32,
    slots: [Option<OlmSlot>; MAX_OLM_SESSIONS],
    /// Bit `i`: a message of device slot `i` could not be decrypted; a new session is due.
    wedged: u32,
    /// Bit `i`: the new session with device slot `i` exists; its `m.dummy` is due.
    dummy_due: u32,
    /// When the token last started a session to unwedge each device slot: seconds since boot
    /// plus one (0: not since boot).
    unwedged_at: [u32; MAX_DEVICES],
}

impl OlmSessions {
    /// No sessions.
    pub(super) fn new() -> Self {
        OlmSessions {
            clock: 0,
            slots: [None; MAX_OLM_SESSIONS],
            wedged: 0,
            dummy_due: 0,
            unwedged_at: [0; MAX_DEVICES],
        }
    }

    /// Sessions held.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// A message of device slot `device` could not be decrypted at `now`: unwedge it, unless
    /// that was done within [`UNWEDGE_INTERVAL_MS`].
    fn wedged(&mut self, device: usize, now: Instant) {
        let seconds = u32::try_from(now.as_millis() / 1000).unwrap_or(u32::MAX);
        let Some(at) = self.unwedged_at.get_mut(device) else {
            return;
        };
        let interval = (UNWEDGE_INTERVAL_MS / 1000) as u32;
        if *at != 0 && seconds.saturating_add(1).saturating_sub(*at) < interval {
            return;
        }
        *at = seconds.saturating_add(1);
        self.wedged |= 1 << device;
    }

    /// The next device to unwedge: its slot, and whether its new session is still to be
    /// started (else its `m.dummy` is due).
    pub(super) fn next_unwedge(&self) -> Option<(usize, bool)> {
        let first = |mask: u32| (mask != 0).then(|| mask.trailing_zeros() as usize);
        first(self.wedged)
            .map(|device| (device, true))
            .or_else(|| first(self.dummy_due).map(|device| (device, false)))
    }

    /// A new session with device slot `device` exists: its `m.dummy` is due if it was
    /// wedged.
    pub(super) fn on_new_session(&mut self, device: usize) {
        if self.wedged & (1 << device) != 0 {
            self.wedged &= !(1 << device);
            self.dummy_due |= 1 << device;
        }
    }

    /// Device slot `device` cannot be unwedged now (no one-time key), or its `m.dummy` went.
    pub(super) fn unwedge_done(&mut self, device: usize) {
        self.wedged &= !(1 << device);
        self.dummy_due &= !(1 << device);
    }

    /// Device slot `device` holds another device, or none.
    pub(super) fn forget_device(&mut self, device: usize) {
        self.unwedge_done(device);
        if let Some(at) = self.unwedged_at.get_mut(device) {
            *at = 0;
        }
    }

    /// Reads each slot's peer and last use from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let id = record::OLM + slot as u16;
            *entry = match flash.get(id)? {
                None => None,
                Some((meta, _)) => {
                    let mut d = Decoder::new(meta);
                    d.array().map_err(corrupt(id))?;
                    Some(OlmSlot {
                        peer_curve: bytes32(&mut d, id)?,
                        last_used: d.u32().map_err(corrupt(id))?,
                    })
                }
            };
            if let Some(info) = entry {
                self.clock = self.clock.max(info.last_used);
            }
        }
        Ok(())
    }

    /// The slot of the most recently used session with the device whose key is `curve`.
    pub(super) fn slot_for(&self, curve: &[u8; 32]) -> Option<usize> {
        self.slots
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

    /// Whether slot `slot` holds a session with the device whose key is `curve`.
    fn is_with(&self, slot: usize, curve: &[u8; 32]) -> bool {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|info| info.peer_curve == *curve)
    }

    /// The least recently used slot among those whose peer passes `filter`.
    fn least_recent(&self, filter: impl Fn(&OlmSlot) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, info)| info.filter(|i| filter(i)).map(|i| (slot, i.last_used)))
            .min_by_key(|(_, used)| *used)
            .map(|(slot, _)| slot)
    }

    /// Writes `session` with the device whose key is `peer_curve` to slot `slot` as the most
    /// recently used one.
    fn save<S: Store, R: Rng>(
        &mut self,
        flash: &mut Flash<S>,
        rng: &mut R,
        slot: usize,
        peer_curve: [u8; 32],
        session: &Session,
    ) -> Result<(), TokenError> {
        self.clock = self.clock.wrapping_add(1);
        let info = OlmSlot {
            peer_curve,
            last_used: self.clock,
        };
        flash.put_pickled(
            record::OLM + slot as u16,
            |e| {
                e.array(2)?
                    .bytes(&info.peer_curve)?
                    .u32(info.last_used)
                    .map(drop)
            },
            session,
            rng,
        )?;
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(info);
        }
        Ok(())
    }
}

/// Reads the Olm session of `slot` into `session`, decoded in place (a session is 3 KB: no
/// copy of it on the stack).
fn load_session<'s, S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
    session: &'s mut Option<Session>,
) -> Result<&'s mut Session, TokenError> {
    let id = record::OLM + slot as u16;
    flash
        .read(id, |_, pickle| pickle.open_session_into(session))?
        .ok_or(TokenError::CorruptRecord(id))
}

/// A Curve25519 key from raw bytes.
pub(super) fn curve_key(bytes: &[u8; 32]) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(*bytes)
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Writes `session` to Olm slot `slot` as the most recently used one.
    fn save_olm_session(
        &mut self,
        slot: usize,
        peer_curve: [u8; 32],
        session: &Session,
    ) -> Result<(), TokenError> {
        self.sessions.save(
            &mut self.env.flash,
            &mut self.env.rng,
            slot,
            peer_curve,
            session,
        )
    }

    /// Writes a new Olm session with the device whose key is `peer_curve`: to a free slot, or
    /// over that of a device no longer known, the oldest of this device's when it has its
    /// share, or the least recently used one (the person is told).
    fn store_new_olm_session(
        &mut self,
        peer_curve: [u8; 32],
        session: &Session,
    ) -> Result<(), TokenError> {
        let table = &self.sessions;
        let known = |curve: &[u8; 32]| {
            self.devices.iter().any(|(_, d)| d.curve == *curve)
                || self.pending_keys.awaits_device(curve)
        };
        let own = table
            .slots
            .iter()
            .flatten()
            .filter(|i| i.peer_curve == peer_curve)
            .count();
        let free = table.slots.iter().position(Option::is_none);
        let orphan = || table.least_recent(|i| !known(&i.peer_curve));
        let own_oldest = || {
            (own >= MAX_OLM_PER_DEVICE)
                .then(|| table.least_recent(|i| i.peer_curve == peer_curve))
                .flatten()
        };
        let (slot, told) = match free.or_else(orphan).or_else(own_oldest) {
            Some(slot) => (slot, false),
            None => (
                table
                    .least_recent(|_| true)
                    .ok_or(TokenError::LimitReached(Limit::OlmSessions))?,
                true,
            ),
        };
        if told
            && let Some(info) = self.sessions.slots.get(slot).copied().flatten()
            && let Some((_, device)) = self
                .devices
                .iter()
                .find(|(_, d)| d.curve == info.peer_curve)
        {
            self.env.ui.event(&UiEvent::OlmSessionDropped {
                user_id: &device.user_id,
                device_id: &device.device_id,
            });
        }
        self.save_olm_session(slot, peer_curve, session)
    }

    /// Creates and stores an outbound Olm session. Out of line, so that its session slot
    /// is not on the stack while the claimed key's signature is checked.
    #[inline(never)]
    pub(super) fn start_olm_session(
        &mut self,
        peer_curve: [u8; 32],
        one_time_key: [u8; 32],
    ) -> Result<(), TokenError> {
        let mut slot = None;
        let session = self
            .account
            .olm
            .create_outbound_session_in(
                &mut CryptoSource(&mut self.env.rng),
                curve_key(&peer_curve),
                curve_key(&one_time_key),
                &mut slot,
            )
            .map_err(|_| TokenError::Crypto)?;
        self.store_new_olm_session(peer_curve, session)
    }

    /// Encrypts the plaintext in `work` for `device` with Olm session `olm_slot` and writes
    /// the to-device body over it; the session with its advanced chain key is on flash
    /// before the message leaves. Out of line, so that its session slot is not on the stack
    /// while the room key is signed.
    #[inline(never)]
    pub(super) fn encrypt_to_device(
        &mut self,
        olm_slot: usize,
        device: &Device,
        plaintext_len: usize,
    ) -> Result<usize, TokenError> {
        let mut slot = None;
        let session = load_session(&mut self.env.flash, olm_slot, &mut slot)?;
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
        let identity = self.account.olm.curve25519_key();
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

    /// An Olm to-device message: decrypted with an existing session or a new inbound one,
    /// which is kept if its peer is a known device or it carried a key worth waiting for.
    #[inline(never)]
    pub(super) fn on_olm_event(
        &mut self,
        sender: &str,
        content: EncryptedContent<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let reject = |core: &mut Self, reason| {
            core.env
                .ui
                .event(&UiEvent::RoomKeyRejected { sender, reason });
            Ok(())
        };
        let Some(sender_key) = content.sender_key()?.and_then(binary32) else {
            return reject(self, RejectionReason::Malformed);
        };
        // Decrypt in RAM; the session (and the account, for a new one) is written after the
        // room key it carried, so that a power cut in between lets the redelivered message
        // decrypt again instead of losing the key.
        let mut session: Option<Session> = None;
        let Some((len, slot)) = self.decrypt_olm(sender, sender_key, content, &mut session, now)?
        else {
            return Ok(());
        };
        let Some(session) = session.as_ref() else {
            return reject(self, RejectionReason::Olm);
        };
        let payload = room_key_payload(self.env.flash.scratch.get(..len).unwrap_or_default());
        self.env.flash.scratch.fill(0);
        // Matched by reference: moving the payload out would copy its session key to a
        // second place in the frame, which would not be zeroized.
        let result = match &payload {
            Ok(None) => Ok(false),
            Err(reason) => reject(self, *reason).map(|()| false),
            Ok(Some(payload)) => self.on_room_key(sender, sender_key, payload),
        };
        match slot {
            Some(slot) => self.save_olm_session(slot, sender_key, session)?,
            None => {
                // A stranger's session is forgotten once read: only a known device's, or one
                // that brought a member's key, takes a slot.
                let keep = matches!(result, Ok(true))
                    || self.devices.find_by_curve(sender, &sender_key).is_some();
                if keep {
                    // The session first, then the account without the used one-time key.
                    self.store_new_olm_session(sender_key, session)?;
                    if let Some(device) = self.device_slot_by_curve(sender, &sender_key) {
                        self.sessions.on_new_session(device);
                    }
                }
                self.save_account()?;
            }
        }
        result.map(drop)
    }

    /// Decrypts an Olm message to the token into `scratch`, with a session of the sender's
    /// or a new inbound one, left in `session`: the plaintext length and the session's slot
    /// (`None` for a new one). A message it cannot decrypt is reported and gives `None`.
    /// Out of line, so that its locals are off the stack while the room key is checked.
    #[inline(never)]
    fn decrypt_olm(
        &mut self,
        sender: &str,
        sender_key: [u8; 32],
        content: EncryptedContent<'_>,
        session: &mut Option<Session>,
        now: Instant,
    ) -> Result<Option<(usize, Option<usize>)>, TokenError> {
        let reject = |core: &mut Self, reason| {
            core.env
                .ui
                .event(&UiEvent::RoomKeyRejected { sender, reason });
            Ok(None)
        };
        let Some((message_type, body)) = content.olm_message_for(&self.account.curve_b64)? else {
            return Ok(None);
        };
        // The ciphertext stays in the response when it came as bytes; base64 is decoded into
        // `work` (so at most WORK_BYTES of it). The plaintext goes into `scratch`, which is
        // free again once a session is loaded. No 3 KB session or 2 KB buffer is copied
        // around on the stack: one session slot, filled in place.
        let bytes = match body {
            Binary::Bytes(bytes) => Some(bytes),
            Binary::Base64(_) => binary_bytes(body, &mut self.env.work),
        };
        let Some(bytes) = bytes.filter(|bytes| bytes.len() <= MAX_CIPHERTEXT) else {
            return reject(self, RejectionReason::Malformed);
        };
        let message_type = match message_type {
            0 => MessageType::PreKey,
            1 => MessageType::Normal,
            _ => return reject(self, RejectionReason::Malformed),
        };
        let Ok(message) = OlmMessage::from_parts(message_type, bytes) else {
            return reject(self, RejectionReason::Malformed);
        };
        let mut decrypted: Option<(usize, Option<usize>)> = None;
        for slot in 0..MAX_OLM_SESSIONS {
            if !self.sessions.is_with(slot, &sender_key) {
                continue;
            }
            let loaded = load_session(&mut self.env.flash, slot, session)?;
            if let Ok(len) = loaded.decrypt(&message, &mut self.env.flash.scratch) {
                decrypted = Some((len, Some(slot)));
                break;
            }
        }
        if decrypted.is_none()
            && let OlmMessage::PreKey(pre_key) = &message
        {
            match self.account.olm.create_inbound_session_in(
                curve_key(&sender_key),
                pre_key,
                &mut self.env.flash.scratch,
                session,
            ) {
                Ok(len) => decrypted = Some((len, None)),
                Err(_) => {
                    self.wedged(sender, &sender_key, now);
                    return reject(self, RejectionReason::Olm);
                }
            }
        }
        match decrypted {
            Some(decrypted) => Ok(Some(decrypted)),
            None => {
                self.wedged(sender, &sender_key, now);
                reject(self, RejectionReason::Olm)
            }
        }
    }

    /// A message of `sender`'s device with key `curve` could not be decrypted: a known device
    /// is unwedged (rate limited).
    fn wedged(&mut self, sender: &str, curve: &[u8; 32], now: Instant) {
        if let Some(device) = self.device_slot_by_curve(sender, curve) {
            self.sessions.wedged(device, now);
        }
    }

    /// The slot of `user`'s device whose key is `curve`.
    fn device_slot_by_curve(&self, user: &str, curve: &[u8; 32]) -> Option<usize> {
        self.devices
            .iter()
            .find(|(_, d)| d.user_id.as_str() == user && d.curve == *curve)
            .map(|(slot, _)| slot)
    }

    /// Writes the Olm payload of a to-device event of type `event_type` for `device` as JSON
    /// into `work`, its content by `content`: the sender's and recipient's ids and Ed25519
    /// keys the spec asks for. Its length, or `None` before the login.
    pub(super) fn olm_payload_json(
        &mut self,
        device: &Device,
        event_type: &str,
        content: impl FnOnce(&mut JsonWriter<'_>) -> Result<(), JsonError>,
    ) -> Result<Option<usize>, TokenError> {
        let Some(login) = &self.login else {
            return Ok(None);
        };
        let own_ed = self.account.olm.ed25519_key();
        let mut w = JsonWriter::new(&mut self.env.work);
        w.raw(br#"{"content":"#)?;
        content(&mut w)?;
        w.raw(br#","keys":{"ed25519":"#)?
            .base64(own_ed.as_bytes())?
            .raw(br#"},"recipient":"#)?
            .string(&device.user_id)?
            .raw(br#","recipient_keys":{"ed25519":"#)?
            .base64(&device.ed)?
            .raw(br#"},"sender":"#)?
            .string(&login.user_id)?
            .raw(br#","sender_device":"#)?
            .string(&login.device_id)?
            .raw(br#","type":"#)?
            .string(event_type)?
            .raw(b"}")?;
        Ok(Some(w.len()))
    }

    /// Sends the `m.dummy` that tells device slot `device` which new session to use.
    pub(super) fn send_dummy(&mut self, coap: &mut Coap, device: usize) -> Result<(), TokenError> {
        let target = self.devices.get(device).cloned();
        let olm_slot = target
            .as_ref()
            .and_then(|target| self.sessions.slot_for(&target.curve));
        let (Some(target), Some(olm_slot)) = (target, olm_slot) else {
            self.sessions.unwedge_done(device);
            return Ok(());
        };
        let Some(plaintext_len) =
            self.olm_payload_json(&target, "m.dummy", |w| w.raw(b"{}").map(drop))?
        else {
            return Ok(());
        };
        let len = self.encrypt_to_device(olm_slot, &target, plaintext_len)?;
        let txn = self.next_transaction_id()?;
        self.start(
            coap,
            Operation::Dummy { device },
            Code::PUT,
            &[endpoint::SEND_TO_DEVICE, "m.room.encrypted", &txn],
            len,
        )
    }
}
