//! The outbox: the messages the person queued, until the homeserver took them, and the
//! transaction ids every PUT carries.
//!
//! An entry is on flash ([`record::OUTBOX`] + slot) before [`UiEvent::Queued`]; it holds the
//! text (or a file's event content) until the entry is encrypted, then the Megolm ciphertext,
//! which is sent again with the same transaction id after a power cut (the homeserver
//! deduplicates). Its Megolm session is written with the advanced index before the ciphertext
//! is written to the entry. The head of the outbox goes first: its room's key to every device
//! that lacks it ([`super::outbound`]), then the message; [`UiEvent::Delivered`] follows the
//! homeserver's answer and the removal of the entry, [`UiEvent::SendFailed`] a refusal the
//! homeserver will not change its mind about.
//!
//! Transaction ids are never reused, even across power cuts: a random prefix drawn at the
//! first boot and a counter whose reserved ceiling is on flash ([`record::TRANSACTIONS`])
//! before any id below it is used.

use heapless::String;
use minicbor::Decoder;
use minicbor::Encoder;
use minicbor::data::Type;
use minicbor::encode::write::Cursor;

use jeton_olm::megolm::megolm_message_len;
use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::write;

use super::bodies::{cbor, key};
use super::calls::{self, Reply};
use super::flash::{Flash, corrupt};
use super::*;
use crate::json::JsonWriter;
use crate::store::record;

/// Reserve transaction ids in blocks, so that the counter is written once per block.
const TXN_BLOCK: u64 = 16;

/// A transaction id: 7 to 9 URL-safe characters.
pub(super) type TxnId = String<24>;

/// A message in the outbox; the text and ciphertext stay on flash.
#[derive(Clone, Debug)]
struct OutboxSlot {
    local_id: u32,
    room_id: RoomId,
}

/// An outbox record as read from flash.
struct OutboxEntry<'a> {
    local_id: u32,
    room_id: &'a str,
    txn_id: &'a str,
    text: &'a str,
    /// `(session id, Megolm message)` once encrypted.
    encrypted: Option<(&'a [u8], &'a [u8])>,
}

/// What the outbox numbers messages with: the number the person sees for each queued
/// message, and the transaction id counter (the prefix of this flash's life, the next id, the
/// ceiling reserved on flash).
#[derive(Debug)]
pub(super) struct Numbering {
    /// The number the next queued message gets ([`UiEvent::Queued`]).
    next_local_id: u32,
    prefix: u32,
    next: u64,
    ceiling: u64,
}

impl Numbering {
    /// The transaction counter a boot read from flash, or a new one with a fresh `prefix`.
    pub(super) fn booted(prefix: u32, next: u64) -> Self {
        Numbering {
            next_local_id: 1,
            prefix,
            next,
            ceiling: next,
        }
    }

    /// Reads the counter: the prefix and the reserved ceiling, where the next id starts.
    pub(super) fn load<S: Store>(flash: &mut Flash<S>) -> Result<Option<(u32, u64)>, TokenError> {
        let id = record::TRANSACTIONS;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(None);
        };
        let mut d = Decoder::new(meta);
        d.array().map_err(corrupt(id))?;
        Ok(Some((
            d.u32().map_err(corrupt(id))?,
            d.u64().map_err(corrupt(id))?,
        )))
    }

    /// A transaction id never used before, even across power cuts: the random prefix of this
    /// flash's life (6 URL-safe radix-64 digits for 32 bits) and the counter (radix 64), 7 to
    /// 9 characters (every byte of it crosses the air with each send).
    fn next_id<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<TxnId, TokenError> {
        if self.next >= self.ceiling {
            let ceiling = self.next + TXN_BLOCK;
            let prefix = self.prefix;
            flash.put(record::TRANSACTIONS, |e| {
                e.array(2)?.u32(prefix)?.u64(ceiling).map(drop)
            })?;
            self.ceiling = ceiling;
        }
        let n = self.next;
        self.next += 1;
        let mut id = String::new();
        push_number(&mut id, u64::from(self.prefix), 64, 6)?;
        push_number(&mut id, n, 64, 0)?;
        Ok(id)
    }
}

/// The outbox and its numbering.
#[derive(Debug)]
pub(super) struct Outbox {
    slots: [Option<OutboxSlot>; OUTBOX_DEPTH],
    numbers: Numbering,
}

impl Outbox {
    /// An empty outbox.
    pub(super) fn new(numbers: Numbering) -> Self {
        Outbox {
            slots: [const { None }; OUTBOX_DEPTH],
            numbers,
        }
    }

    /// Reads the entries from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if let Some((meta, _)) = flash.get(record::OUTBOX + slot as u16)? {
                let parsed = parse_entry(meta, slot)?;
                let numbers = &mut self.numbers;
                numbers.next_local_id = numbers.next_local_id.max(parsed.local_id.wrapping_add(1));
                *entry = Some(OutboxSlot {
                    local_id: parsed.local_id,
                    room_id: bounded(parsed.room_id)?,
                });
            }
        }
        Ok(())
    }

    /// Messages in the outbox.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The oldest entry's slot and the room its message is for.
    fn head(&self) -> Option<(usize, &RoomId)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| entry.as_ref().map(|e| (slot, e)))
            .min_by_key(|(_, entry)| entry.local_id)
            .map(|(slot, entry)| (slot, &entry.room_id))
    }

    /// The room of the oldest entry.
    pub(super) fn head_room(&self) -> Option<&RoomId> {
        self.head().map(|(_, room)| room)
    }

    /// Removes entry `slot` from flash and the table.
    fn remove<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        slot: usize,
    ) -> Result<Option<OutboxSlot>, TokenError> {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) else {
            return Ok(None);
        };
        flash.remove(record::OUTBOX + slot as u16)?;
        Ok(Some(entry))
    }

    /// Drops entry `slot` unsent and tells the person why.
    fn fail<S: Store, U: Ui>(
        &mut self,
        flash: &mut Flash<S>,
        ui: &mut U,
        slot: usize,
        error: TokenError,
    ) -> Result<(), TokenError> {
        if let Some(entry) = self.remove(flash, slot)? {
            ui.event(&UiEvent::SendFailed {
                local_id: entry.local_id,
                error,
            });
        }
        Ok(())
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// A transaction id never used before.
    pub(super) fn next_transaction_id(&mut self) -> Result<TxnId, TokenError> {
        self.outbox.numbers.next_id(&mut self.env.flash)
    }

    /// Puts a message in the outbox on flash.
    pub(super) fn enqueue(&mut self, room_id: &str, text: &str) -> Result<u32, CommandError> {
        if text.starts_with([super::transfer::CONTENT_MARKER, super::calls::ANSWER_MARKER]) {
            return Err(CommandError::ReservedText);
        }
        self.enqueue_content(room_id, text)
    }

    /// Queues an outbox entry: a text, (after [`super::transfer::CONTENT_MARKER`]) a whole
    /// event content, or (after [`super::calls::ANSWER_MARKER`]) the answer to a call.
    pub(super) fn enqueue_content(
        &mut self,
        room_id: &str,
        text: &str,
    ) -> Result<u32, CommandError> {
        if self.login.is_none() {
            return Err(CommandError::NotLoggedIn);
        }
        if self.room_slot(room_id).is_none() {
            return Err(CommandError::UnknownRoom);
        }
        let limit = if text.starts_with(super::transfer::CONTENT_MARKER) {
            MAX_CONTENT_LEN
        } else {
            MAX_MESSAGE_LEN
        };
        if text.len() > limit {
            return Err(TokenError::LimitReached(Limit::MessageLength).into());
        }
        let outbox = &mut self.outbox;
        let slot = outbox
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(TokenError::LimitReached(Limit::Outbox))?;
        let txn = outbox.numbers.next_id(&mut self.env.flash)?;
        let local_id = outbox.numbers.next_local_id;
        let entry = OutboxEntry {
            local_id,
            room_id,
            txn_id: &txn,
            text,
            encrypted: None,
        };
        save_entry(&mut self.env.flash, slot, &entry)?;
        outbox.numbers.next_local_id = local_id.wrapping_add(1);
        if let Some(entry) = outbox.slots.get_mut(slot) {
            *entry = Some(OutboxSlot {
                local_id,
                room_id: bounded(room_id)?,
            });
        }
        self.env.ui.event(&UiEvent::Queued { local_id, room_id });
        Ok(local_id)
    }

    /// Advances the outbox head by one step: the room key to one device, or the message.
    pub(super) fn plan_send(&mut self, coap: &mut Coap, now: Instant) -> Result<(), TokenError> {
        let Some((slot, room_id)) = self.outbox.head() else {
            return Ok(());
        };
        let Some(room_slot) = self.room_slot(room_id) else {
            // Left the room: the message cannot go.
            let error = TokenError::LimitReached(Limit::Rooms);
            return self
                .outbox
                .fail(&mut self.env.flash, &mut self.env.ui, slot, error);
        };
        let encrypted = self.rooms.is_encrypted(room_slot);
        if encrypted {
            // The room key must reach every device of every member first.
            self.ensure_outbound(room_slot, now)?;
            if let Some(device) = self.next_recipient(room_slot) {
                return self.share_with(coap, room_slot, device);
            }
            // ... and every device it is kept from hears why, once per session.
            if let Some(device) = self.next_withheld(room_slot) {
                return self.withhold_from(coap, room_slot, device);
            }
        }
        self.send_entry(coap, slot, room_slot, encrypted)
    }

    /// The short handle of the room in `room_slot`, once the gateway holds its id (PROFILE.md
    /// section 1.1).
    fn room_handle(&self, room_slot: usize) -> Option<gateway::RoomHandle> {
        let room = self.rooms.get(room_slot)?;
        let ids = self.rooms.iter().map(|r| r.id.as_str());
        self.gateway.room_handle(room_slot, &room.id, ids)
    }

    /// Encrypts the outbox entry if it is still plaintext (session written with its advanced
    /// index first, then the ciphertext into the entry), then sends it. Out of line: its
    /// ciphertext buffer would otherwise sit under every room key share.
    #[inline(never)]
    fn send_entry(
        &mut self,
        coap: &mut Coap,
        slot: usize,
        room_slot: usize,
        encrypted_room: bool,
    ) -> Result<(), TokenError> {
        // Only the send started now may teach the token what the gateway holds.
        self.gateway.begin_send();
        let handle = self.room_handle(room_slot);
        let id = record::OUTBOX + slot as u16;
        let Some((meta, _)) = self.env.flash.get(id)? else {
            return Err(TokenError::CorruptRecord(id));
        };
        let entry = parse_entry(meta, slot)?;
        let txn: TxnId = bounded(entry.txn_id)?;
        let room_id: RoomId = bounded(entry.room_id)?;
        let room_segment = handle.as_deref().unwrap_or(&room_id);
        let (own_curve, own_device) = sender_fields(&self.login, &self.account);
        if !encrypted_room {
            let (event_type, len) = plain_event(&mut self.env.work, entry.text, &own_device)?;
            return self.start(
                coap,
                Operation::Send { slot },
                Code::PUT,
                &[endpoint::SEND, room_segment, event_type, &txn],
                len,
            );
        }
        // The deprecated sender_key and device_id must reach the homeserver (matrix-nio
        // rejects Megolm events without sender_key), but the gateway keeps them with the
        // access token: they go along until it holds them.
        let sender =
            (!self.gateway.holds_sender()).then_some((&own_curve[..], own_device.as_str()));
        // The session id too, once the gateway holds it for this room (PROFILE.md 1.1).
        let held = self.gateway.session(room_slot);
        let omitted = |session_id: &[u8]| held.is_some_and(|h| h[..] == *session_id);
        let (len, session_id, omit) = match entry.encrypted {
            Some((session_id, message)) => {
                let omit = omitted(session_id);
                let sent = (!omit).then_some(session_id);
                let len = write::megolm_send_body(&mut self.env.work, sent, message, sender)?;
                (len, session_id.try_into().unwrap_or([0; 32]), omit)
            }
            None => {
                let local_id = entry.local_id;
                // The event payload as JSON goes into `work`, the text being borrowed from
                // the record buffer.
                let plaintext_len =
                    event_json(&mut self.env.work, entry.text, &room_id, &own_device)?;
                let text: String<MAX_CONTENT_LEN> = bounded(entry.text)?;
                let mut message = [0u8; megolm_message_len(MAX_MESSAGE_LEN * 2 + 160)];
                let pending = Pending {
                    slot,
                    local_id,
                    room_id: &room_id,
                    txn: &txn,
                    text: &text,
                };
                let Some((session_id, message)) =
                    self.encrypt_entry(&pending, room_slot, plaintext_len, &mut message)?
                else {
                    return Ok(());
                };
                let omit = omitted(&session_id);
                let sent = (!omit).then_some(&session_id[..]);
                let len = write::megolm_send_body(&mut self.env.work, sent, message, sender)?;
                (len, session_id, omit)
            }
        };
        self.gateway.sending_session(room_slot, session_id, omit);
        self.start(
            coap,
            Operation::Send { slot },
            Code::PUT,
            &[endpoint::SEND_ENCRYPTED, room_segment, &txn],
            len,
        )
    }

    /// Encrypts the event payload in `work` with the room's outbound session into `message`:
    /// the session is on flash with its advanced index first, then the ciphertext replaces
    /// the plaintext in the outbox entry. The session id and the ciphertext, or `None` when
    /// the room has no outbound session.
    fn encrypt_entry<'m>(
        &mut self,
        pending: &Pending<'_>,
        room_slot: usize,
        plaintext_len: usize,
        message: &'m mut [u8],
    ) -> Result<Option<Encrypted<'m>>, TokenError> {
        let Some(room) = self.rooms.get_mut(room_slot) else {
            return Ok(None);
        };
        let Some(outbound) = &mut room.outbound else {
            return Ok(None);
        };
        let plaintext = self.env.work.get(..plaintext_len).unwrap_or_default();
        let message_len = outbound
            .session
            .encrypt(plaintext, message)
            .map_err(|_| TokenError::Crypto)?;
        let session_id = *outbound.session.session_id().as_bytes();
        // 1. The next index is on flash before the ciphertext exists anywhere else.
        outbound.save(&mut self.env.flash, &mut self.env.rng, room_slot)?;
        // 2. The ciphertext replaces the plaintext in the outbox entry.
        let message = message.get(..message_len).unwrap_or_default();
        let entry = OutboxEntry {
            local_id: pending.local_id,
            room_id: pending.room_id,
            txn_id: pending.txn,
            text: pending.text,
            encrypted: Some((&session_id, message)),
        };
        save_entry(&mut self.env.flash, pending.slot, &entry)?;
        Ok(Some((session_id, message)))
    }

    /// The homeserver took the message of entry `slot`.
    pub(super) fn on_sent(&mut self, body: &[u8], slot: usize) -> Result<(), TokenError> {
        let response = jeton_proto::view::SendEventResponse::parse(body, TableVersion::V2)?;
        let mut text = [0; jeton_proto::ids::TEXT_LEN];
        let event_id = response.event_id()?.as_text(&mut text);
        let Some(entry) = self.outbox.remove(&mut self.env.flash, slot)? else {
            return Ok(());
        };
        // The send named the room and (encrypted) the sender fields, in full or as the
        // gateway already held them: it holds them now.
        let room_slot = self.room_slot(&entry.room_id);
        let encrypted = room_slot.is_some_and(|slot| self.rooms.is_encrypted(slot));
        self.gateway.on_sent(room_slot, encrypted);
        self.env.ui.event(&UiEvent::Delivered {
            local_id: entry.local_id,
            room_id: &entry.room_id,
            event_id,
        });
        Ok(())
    }

    /// The send of entry `slot` was refused with `code` (not 4.12): a 4.xx but 4.01 and 4.29
    /// means the homeserver will never take the message, which is dropped.
    pub(super) fn on_send_refused(&mut self, slot: usize, code: Code) {
        let error = TokenError::Server(code_number(code));
        if code.class() == 4 && !matches!(code_number(code), 401 | 429) {
            let outbox = &mut self.outbox;
            if let Some(entry) = outbox.slots.get_mut(slot).and_then(Option::take) {
                let _ = self.env.flash.remove(record::OUTBOX + slot as u16);
                self.env.ui.event(&UiEvent::SendFailed {
                    local_id: entry.local_id,
                    error,
                });
                return;
            }
        }
        self.error(error);
    }
}

/// The Megolm sender fields: the device's Curve25519 key and its id.
fn sender_fields(login: &Option<Login>, account: &account::OwnAccount) -> ([u8; 32], DeviceId) {
    let own_device = login
        .as_ref()
        .map(|l| l.device_id.clone())
        .unwrap_or_default();
    (*account.olm.curve25519_key().as_bytes(), own_device)
}

/// An entry's session id and Megolm ciphertext.
type Encrypted<'m> = ([u8; 32], &'m [u8]);

/// An entry being encrypted: where it is and what it holds.
struct Pending<'a> {
    slot: usize,
    local_id: u32,
    room_id: &'a str,
    txn: &'a str,
    text: &'a str,
}

/// Writes outbox entry `slot`.
fn save_entry<S: Store>(
    flash: &mut Flash<S>,
    slot: usize,
    entry: &OutboxEntry<'_>,
) -> Result<(), TokenError> {
    flash.put(record::OUTBOX + slot as u16, |e| {
        e.array(5)?
            .u32(entry.local_id)?
            .str(entry.room_id)?
            .str(entry.txn_id)?
            .str(entry.text)?;
        match entry.encrypted {
            None => e.null().map(drop),
            Some((session_id, message)) => e.array(2)?.bytes(session_id)?.bytes(message).map(drop),
        }
    })
}

/// Reads outbox entry `slot` from a record already in `meta`.
fn parse_entry(meta: &[u8], slot: usize) -> Result<OutboxEntry<'_>, TokenError> {
    let id = record::OUTBOX + slot as u16;
    let c = corrupt(id);
    let mut d = Decoder::new(meta);
    d.array().map_err(&c)?;
    let local_id = d.u32().map_err(&c)?;
    let room_id = d.str().map_err(&c)?;
    let txn_id = d.str().map_err(&c)?;
    let text = d.str().map_err(&c)?;
    let encrypted = if d.datatype().map_err(&c)? == Type::Null {
        None
    } else {
        d.array().map_err(&c)?;
        Some((d.bytes().map_err(&c)?, d.bytes().map_err(&c)?))
    };
    Ok(OutboxEntry {
        local_id,
        room_id,
        txn_id,
        text,
        encrypted,
    })
}

/// The answer to a call an outbox entry holds, with the token's party id (its device id).
struct Answer<'a> {
    reply: Reply,
    call_id: &'a str,
    party_id: &'a str,
}

/// The Megolm event payload of an entry's `text` (or, after [`super::transfer::CONTENT_MARKER`],
/// a file's event content; after [`super::calls::ANSWER_MARKER`], a call's answer from
/// `party_id`) for `room_id`, as JSON into `out`: its length.
fn event_json(
    out: &mut [u8],
    text: &str,
    room_id: &str,
    party_id: &str,
) -> Result<usize, TokenError> {
    let mut w = JsonWriter::new(out);
    if let Some((event_type, reply, call_id)) = calls::answer_of(text) {
        w.raw(br#"{"content":{"call_id":"#)?
            .string(call_id)?
            .raw(br#","party_id":"#)?
            .string(party_id)?;
        match reply {
            Reply::Hangup => w.raw(br#","reason":"user_hangup","version":0}"#)?,
            _ => w.raw(br#","version":"1"}"#)?,
        };
        w.raw(br#","room_id":"#)?
            .string(room_id)?
            .raw(br#","type":"#)?
            .string(event_type)?
            .raw(b"}")?;
        return Ok(w.len());
    }
    match text.strip_prefix(super::transfer::CONTENT_MARKER) {
        // A file's event: its content was written when the upload finished.
        Some(content) => w.raw(br#"{"content":"#)?.raw(content.as_bytes())?,
        None => w
            .raw(br#"{"content":{"body":"#)?
            .string(text)?
            .raw(br#","msgtype":"m.text"}"#)?,
    };
    w.raw(br#","room_id":"#)?
        .string(room_id)?
        .raw(br#","type":"m.room.message"}"#)?;
    Ok(w.len())
}

/// The event an entry sent in the clear makes: a call's answer from `party_id`, or a text
/// message. Its type, and its body's length in `out`.
fn plain_event(
    out: &mut [u8],
    text: &str,
    party_id: &str,
) -> Result<(&'static str, usize), TokenError> {
    Ok(match calls::answer_of(text) {
        Some((event_type, reply, call_id)) => {
            let answer = Answer {
                reply,
                call_id,
                party_id,
            };
            (event_type, answer_body(out, &answer)?)
        }
        None => ("m.room.message", plaintext_body(out, text)?),
    })
}

/// An unencrypted call answer's body: `m.call.reject` (version "1") or `m.call.hangup`
/// (`user_hangup`, version 0).
fn answer_body(out: &mut [u8], answer: &Answer<'_>) -> Result<usize, TokenError> {
    let hangup = answer.reply == Reply::Hangup;
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(if hangup { 4 } else { 3 }))?;
    key(&mut e, "call_id")?;
    cbor(e.str(answer.call_id))?;
    key(&mut e, "party_id")?;
    cbor(e.str(answer.party_id))?;
    if hangup {
        key(&mut e, "reason")?;
        cbor(e.str("user_hangup"))?;
        key(&mut e, "version")?;
        cbor(e.u8(0))?;
    } else {
        key(&mut e, "version")?;
        cbor(e.str("1"))?;
    }
    Ok(e.writer().position())
}

/// An unencrypted `m.room.message` body.
fn plaintext_body(out: &mut [u8], text: &str) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(2))?;
    key(&mut e, "body")?;
    cbor(e.str(text))?;
    key(&mut e, "msgtype")?;
    cbor(e.str("m.text"))?;
    Ok(e.writer().position())
}
