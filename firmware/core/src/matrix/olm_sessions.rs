//! The token's Olm sessions with other devices, and the to-device messages it decrypts and
//! encrypts with them.
//!
//! A session lives on flash only ([`record::OLM`] + slot, pickled with the storage key); the
//! table in RAM holds each slot's peer (its Curve25519 key) and when it was last used. Only
//! the session in use is in RAM, decoded in place into one slot of the caller's frame. A new
//! session takes a free slot or the least recently used one. A session is on flash after each
//! encryption, before the message leaves; a session that decrypted a room key is written
//! after the room key ([`super::room_keys`]), so that a power cut between the two lets the
//! redelivered message decrypt again.
//!
//! An Olm message to the token is decrypted with the sender's sessions, most recent first, or
//! starts a new inbound session when it is a pre-key message (the account without the used
//! one-time key is on flash after the session). A room key it carries goes to
//! [`super::room_keys`].
//!
//! Where the table's rules go next (issue 14): sessions created only for known devices, a cap
//! per sender so that one peer cannot push out the others, and unwedging (a new session and
//! `m.dummy` when a known device's message cannot be decrypted, rate limited).

use minicbor::Decoder;

use jeton_olm::Curve25519PublicKey;
use jeton_olm::olm::{MessageType, OlmMessage, Session, olm_message_len};
use jeton_proto::view::{Binary, EncryptedContent};
use jeton_proto::write::{self, OlmToDevice};

use super::bodies::{binary_bytes, binary32};
use super::devices::Device;
use super::flash::{Flash, bytes32, corrupt};
use super::rng::CryptoSource;
use super::room_keys::room_key_payload;
use super::*;
use crate::store::record;

/// Longest Olm or Megolm message the token decrypts.
pub(super) const MAX_CIPHERTEXT: usize = 2048;

/// Where an Olm session lives on flash: its peer and when it was last used.
#[derive(Clone, Copy, Debug)]
struct OlmSlot {
    peer_curve: [u8; 32],
    last_used: u32,
}

/// The Olm session table.
#[derive(Debug)]
pub(super) struct OlmSessions {
    /// Counts uses, for the least recently used slot.
    clock: u32,
    slots: [Option<OlmSlot>; MAX_OLM_SESSIONS],
}

impl OlmSessions {
    /// No sessions.
    pub(super) fn new() -> Self {
        OlmSessions {
            clock: 0,
            slots: [None; MAX_OLM_SESSIONS],
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

    /// A slot for a new session: a free one, or the least recently used.
    fn slot_for_new(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none).or_else(|| {
            self.slots
                .iter()
                .enumerate()
                .min_by_key(|(_, info)| info.as_ref().map_or(0, |i| i.last_used))
                .map(|(slot, _)| slot)
        })
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

    /// Writes a new Olm session to a free slot (or over the least recently used one).
    fn store_new_olm_session(
        &mut self,
        peer_curve: [u8; 32],
        session: &Session,
    ) -> Result<(), TokenError> {
        let slot = self
            .sessions
            .slot_for_new()
            .ok_or(TokenError::LimitReached(Limit::OlmSessions))?;
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

    /// An Olm to-device message: decrypted with an existing session or a new inbound one.
    #[inline(never)]
    pub(super) fn on_olm_event(
        &mut self,
        sender: &str,
        content: EncryptedContent<'_>,
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
        let Some((len, slot)) = self.decrypt_olm(sender, sender_key, content, &mut session)? else {
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
            Ok(None) => Ok(()),
            Err(reason) => reject(self, *reason),
            Ok(Some(payload)) => self.on_room_key(sender, sender_key, payload),
        };
        match slot {
            Some(slot) => self.save_olm_session(slot, sender_key, session)?,
            None => {
                // The session first, then the account without the used one-time key.
                self.store_new_olm_session(sender_key, session)?;
                self.save_account()?;
            }
        }
        result
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
                Err(_) => return reject(self, RejectionReason::Olm),
            }
        }
        match decrypted {
            Some(decrypted) => Ok(Some(decrypted)),
            None => reject(self, RejectionReason::Olm),
        }
    }
}
