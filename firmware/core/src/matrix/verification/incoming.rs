//! What the peer sends: the `m.key.verification.*` messages of a verification, checked and
//! answered.

use heapless::{String, Vec};
use minicbor::Encoder;
use minicbor::encode::write::Cursor;
use subtle::ConstantTimeEq;

use jeton_olm::Curve25519PublicKey;
use jeton_olm::sas::{MacEncoding, MacMethod, Sas, commitment};
use jeton_proto::TableVersion;
use jeton_proto::view::{Map, Value};

use super::outgoing::write_start_content;
use super::*;
use crate::json::{JsonWriter, write_canonical};
use crate::matrix::rng::CryptoSource;

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// An `m.key.verification.*` to-device event from `sender`. Problems are answered with
    /// a cancel or reported; they never stop the sync that carried the event.
    // Not inlined into the sync's to-device loop, which also runs the Olm decryption.
    #[inline(never)]
    pub(in crate::matrix) fn on_verification_event(
        &mut self,
        sender: &str,
        event_type: &str,
        content: Map<'_>,
        now: Instant,
    ) {
        let Some(kind) = event_type.strip_prefix(EVENT_PREFIX) else {
            return;
        };
        // In-room verification (`m.relates_to`) is not spoken: without a transaction id
        // there is nothing to answer.
        let Some(txn) = text(&content, "transaction_id") else {
            return;
        };
        let ours = self
            .verification
            .active
            .as_ref()
            .is_some_and(|v| v.txn.as_str() == txn);
        let result = if ours {
            self.on_active_event(sender, kind, &content, now)
        } else {
            self.on_new_event(sender, kind, txn, &content, now)
        };
        if let Err(error) = result {
            // Something over a capacity (an id, a key id list): the transaction cannot go on.
            if ours {
                self.cancel_active(CancelCode::InvalidMessage);
            }
            self.error(error);
        }
    }

    fn on_new_event(
        &mut self,
        sender: &str,
        kind: &str,
        txn: &str,
        content: &Map<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        match kind {
            "request" | "start" => {}
            // Nothing to answer to the end of a transaction the token does not run.
            "cancel" | "done" => return Ok(()),
            _ => {
                self.verification.stray_cancel = Some(StrayCancel {
                    user: bounded(sender)?,
                    txn: bounded(txn)?,
                    code: CancelCode::UnknownTransaction,
                });
                return Ok(());
            }
        }
        if self
            .verification
            .active
            .as_ref()
            .is_some_and(|v| v.phase != Phase::Finished)
        {
            // One verification at a time: the other one waits for its timeout.
            return Ok(());
        }
        let Some(device) = text(content, "from_device") else {
            return Ok(());
        };
        let (Ok(peer_user), Ok(peer_device), Ok(txn)) =
            (bounded(sender), bounded(device), bounded(txn))
        else {
            return Err(TokenError::LimitReached(Limit::IdLength));
        };
        let mut v = Verification::new(txn, peer_user, peer_device, now);
        if kind == "request" {
            v.phase = Phase::RequestReceived;
            self.verification.active = Some(v);
            if !texts(content, "methods").any(|m| m == SAS_METHOD) {
                self.cancel_active(CancelCode::UnknownMethod);
                return Ok(());
            }
        } else {
            v.phase = Phase::StartReceived;
            self.verification.active = Some(v);
            if let Err(code) = self.take_start(content) {
                self.cancel_active(code);
                return Ok(());
            }
        }
        self.track_for_verification(sender, device);
        if let Some(v) = &self.verification.active {
            self.env.ui.event(&UiEvent::VerificationRequested {
                user_id: &v.peer_user,
                device_id: &v.peer_device,
            });
        }
        Ok(())
    }

    /// Reads the peer's `start`: the methods, a fresh ephemeral key and the commitment to
    /// it over the canonical JSON of the start.
    fn take_start(&mut self, content: &Map<'_>) -> Result<(), CancelCode> {
        let choice = choose_from_start(content)?;
        let sas = Sas::new(&mut CryptoSource(&mut self.env.rng));
        let canonical = {
            let mut w = JsonWriter::new(&mut self.env.flash.scratch);
            write_canonical(&mut w, *content, &[]).map_err(|_| CancelCode::InvalidMessage)?;
            w.len()
        };
        let json = self.env.flash.scratch.get(..canonical).unwrap_or_default();
        let ours = commitment(&sas.public_key(), json);
        let Some(v) = &mut self.verification.active else {
            return Ok(());
        };
        v.we_started = false;
        v.mac_method = choice.mac_method;
        v.mac_encoding = default_encoding(choice.mac_method);
        v.emoji = choice.emoji;
        v.commitment = ours;
        v.keys = Keys::Ephemeral(sas);
        Ok(())
    }

    fn on_active_event(
        &mut self,
        sender: &str,
        kind: &str,
        content: &Map<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(v) = &mut self.verification.active else {
            return Ok(());
        };
        if v.peer_user.as_str() != sender {
            if kind != "cancel" {
                self.cancel_active(CancelCode::UserMismatch);
            }
            return Ok(());
        }
        if v.phase == Phase::Finished {
            // The peer's `done` or `cancel` after ours: nothing left to do.
            if v.outgoing.is_empty() {
                self.verification.active = None;
            }
            return Ok(());
        }
        v.step = now;
        let phase = v.phase;
        match (kind, phase) {
            ("cancel", _) => self.on_peer_cancel(content),
            ("start", Phase::ReadySent) => self.on_start_after_ready(content),
            ("ready", Phase::RequestSent) => self.on_ready(content),
            ("start", Phase::StartSent) => self.on_concurrent_start(content),
            ("accept", Phase::StartSent) => self.on_accept(content),
            ("key", Phase::KeySent | Phase::AcceptSent) => self.on_key(content)?,
            ("mac", Phase::Comparing) if !v.their_mac_ok => self.on_mac(content)?,
            // `ready` answers a request, which the token never sends; `done` before the MACs
            // and anything else out of order is unexpected.
            _ => self.cancel_active(CancelCode::UnexpectedMessage),
        }
        Ok(())
    }

    /// The peer cancelled.
    fn on_peer_cancel(&mut self, content: &Map<'_>) {
        let Some(v) = &self.verification.active else {
            return;
        };
        let code = text(content, "code").unwrap_or("m.unknown");
        self.env.ui.event(&UiEvent::VerificationCancelled {
            user_id: &v.peer_user,
            device_id: &v.peer_device,
            code,
            by_peer: true,
        });
        self.verification.active = None;
    }

    /// The peer's `start` after the token's `ready`: the token accepts.
    fn on_start_after_ready(&mut self, content: &Map<'_>) {
        let Some(v) = &self.verification.active else {
            return;
        };
        if text(content, "from_device") != Some(v.peer_device.as_str()) {
            self.cancel_active(CancelCode::UserMismatch);
        } else {
            self.accept_start(content);
        }
    }

    /// Takes the peer's `start` and accepts it, or cancels.
    fn accept_start(&mut self, content: &Map<'_>) {
        if let Err(code) = self.take_start(content) {
            self.cancel_active(code);
        } else if let Some(v) = &mut self.verification.active {
            v.send(Outgoing::Accept);
            v.phase = Phase::AcceptSent;
        }
    }

    /// The peer's `ready` to the token's request: the token starts.
    fn on_ready(&mut self, content: &Map<'_>) {
        let Some(v) = &mut self.verification.active else {
            return;
        };
        if text(content, "from_device") != Some(v.peer_device.as_str()) {
            self.cancel_active(CancelCode::UserMismatch);
        } else if !texts(content, "methods").any(|m| m == SAS_METHOD) {
            self.cancel_active(CancelCode::UnknownMethod);
        } else {
            v.keys = Keys::Ephemeral(Sas::new(&mut CryptoSource(&mut self.env.rng)));
            v.send(Outgoing::Start);
            v.phase = Phase::StartSent;
        }
    }

    /// Both sides started: the start of the smaller user id (device id for the same user)
    /// stands.
    fn on_concurrent_start(&mut self, content: &Map<'_>) {
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &mut self.verification.active else {
            return;
        };
        let theirs_wins = (v.peer_user.as_str(), v.peer_device.as_str())
            < (own_user.as_str(), own_device.as_str());
        if !theirs_wins {
            return;
        }
        // A start on its way still leaves; the peer drops it by the same rule.
        let in_flight = v.sending && v.outgoing.front() == Some(&Outgoing::Start);
        if !in_flight {
            v.outgoing.retain(|m| *m != Outgoing::Start);
        }
        self.accept_start(content);
    }

    /// The peer's `accept` of the token's `start`: the methods it chose and its commitment;
    /// the token sends its key.
    fn on_accept(&mut self, content: &Map<'_>) {
        let accepted = choice_of_accept(content).and_then(|choice| {
            let commitment = text(content, "commitment")
                .and_then(decode_commitment)
                .ok_or(CancelCode::InvalidMessage)?;
            Ok((choice, commitment))
        });
        let Some(v) = &mut self.verification.active else {
            return;
        };
        match accepted {
            Err(code) => self.cancel_active(code),
            Ok((choice, commitment)) => {
                v.mac_method = choice.mac_method;
                v.mac_encoding = default_encoding(choice.mac_method);
                v.emoji = choice.emoji;
                v.commitment = commitment;
                v.send(Outgoing::Key);
                v.phase = Phase::KeySent;
            }
        }
    }

    /// The peer's ephemeral key: checked against its commitment (the token started), the
    /// shared secret agreed, the strings shown.
    fn on_key(&mut self, content: &Map<'_>) -> Result<(), TokenError> {
        let mut decoded = [0u8; 33];
        let their_key = text(content, "key")
            .and_then(|k| jeton_olm::base64::decode(k.as_bytes(), &mut decoded).ok())
            .and_then(|k| Curve25519PublicKey::from_slice(k).ok());
        let Some(their_key) = their_key else {
            self.cancel_active(CancelCode::InvalidMessage);
            return Ok(());
        };
        let we_started = self
            .verification
            .active
            .as_ref()
            .is_some_and(|v| v.we_started);
        if we_started {
            let expected = self.verification.active.as_ref().map(|v| v.commitment);
            let computed = self.own_start_commitment(&their_key)?;
            let equal = expected.is_some_and(|e| bool::from(e.ct_eq(&computed)));
            if !equal {
                self.cancel_active(CancelCode::MismatchedCommitment);
                return Ok(());
            }
        }
        let Some(v) = &mut self.verification.active else {
            return Ok(());
        };
        let Keys::Ephemeral(sas) = core::mem::replace(&mut v.keys, Keys::None) else {
            self.cancel_active(CancelCode::UnexpectedMessage);
            return Ok(());
        };
        let our_key = sas.public_key();
        let Ok(established) = sas.diffie_hellman(&their_key) else {
            self.cancel_active(CancelCode::KeyMismatch);
            return Ok(());
        };
        v.keys = Keys::Established(established);
        if !v.we_started {
            v.send(Outgoing::Key);
        }
        v.phase = Phase::Comparing;
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &self.verification.active else {
            return Ok(());
        };
        let mut ours = [0u8; 43];
        let mut theirs = [0u8; 43];
        let ours = our_key.to_base64(&mut ours);
        let theirs = their_key.to_base64(&mut theirs);
        let own = [own_user.as_str(), own_device.as_str(), ours];
        let peer = [v.peer_user.as_str(), v.peer_device.as_str(), theirs];
        let (first, second) = if v.we_started {
            (own, peer)
        } else {
            (peer, own)
        };
        let mut info: String<320> = String::new();
        concat(&mut info, &["MATRIX_KEY_VERIFICATION_SAS|"])?;
        for part in first.iter().chain(second.iter()) {
            concat(&mut info, &[part, "|"])?;
        }
        concat(&mut info, &[&v.txn])?;
        let Keys::Established(established) = &v.keys else {
            return Ok(());
        };
        let bytes = established.bytes(info.as_bytes());
        self.env.ui.event(&UiEvent::ShortAuthString {
            user_id: &v.peer_user,
            device_id: &v.peer_device,
            decimals: bytes.decimals(),
            emoji: v.emoji.then(|| bytes.emoji_indices()),
        });
        Ok(())
    }

    /// The commitment a peer must have sent to `their_key` for the token's own `start`.
    fn own_start_commitment(
        &mut self,
        their_key: &Curve25519PublicKey,
    ) -> Result<[u8; 32], TokenError> {
        let (_, own_device) = self.own_ids();
        let txn = self
            .verification
            .active
            .as_ref()
            .map(|v| v.txn.clone())
            .unwrap_or_default();
        let len = {
            let mut e = Encoder::new(Cursor::new(&mut self.env.work[..]));
            write_start_content(&mut e, &own_device, &txn)?;
            e.writer().position()
        };
        let start = Value::parse(
            self.env.work.get(..len).unwrap_or_default(),
            TableVersion::V2,
        )?;
        let Value::Map(start) = start else {
            return Err(TokenError::Json(crate::json::JsonError::Malformed));
        };
        let mut w = JsonWriter::new(&mut self.env.flash.scratch);
        write_canonical(&mut w, start, &[])?;
        Ok(commitment(their_key, w.as_bytes()))
    }

    /// The peer's MAC over its device key and the list of key ids.
    fn on_mac(&mut self, content: &Map<'_>) -> Result<(), TokenError> {
        let encoding = match self.check_peer_mac(content)? {
            MacVerdict::Valid(encoding) => encoding,
            MacVerdict::Cancel(code) => {
                self.cancel_active(code);
                return Ok(());
            }
            MacVerdict::Ignore => return Ok(()),
        };
        let Some(v) = &mut self.verification.active else {
            return Ok(());
        };
        v.their_mac_ok = true;
        if v.mac_method == MacMethod::HkdfHmacSha256 {
            // Answer in the encoding the peer used (see the module documentation); the
            // person's confirmation may already be waiting for this.
            v.mac_encoding = encoding;
            if v.confirmed {
                v.send(Outgoing::Mac);
            }
        }
        if v.confirmed {
            self.finish_verified()?;
        }
        Ok(())
    }

    /// Checks the peer's MACs (`content`): the one over the sorted list of key ids, and the
    /// one over its device key, the Ed25519 key the device table holds for it.
    fn check_peer_mac(&self, content: &Map<'_>) -> Result<MacVerdict, TokenError> {
        let (own_user, own_device) = self.own_ids();
        let Some(v) = &self.verification.active else {
            return Ok(MacVerdict::Ignore);
        };
        let Some(device) = self.devices.find(&v.peer_user, &v.peer_device) else {
            // The device keys never arrived: nothing to check the MAC against.
            return Ok(MacVerdict::Cancel(CancelCode::KeyMismatch));
        };
        let Keys::Established(established) = &v.keys else {
            return Ok(MacVerdict::Ignore);
        };
        let info = mac_info(
            (&v.peer_user, &v.peer_device),
            (&own_user, &own_device),
            &v.txn,
        )?;
        let (Ok(Some(Value::Map(macs))), Some(keys_mac)) =
            (content.get("mac"), content.get("keys").ok().flatten())
        else {
            return Ok(MacVerdict::Cancel(CancelCode::InvalidMessage));
        };
        let Some(key_ids) = key_id_list(&macs)? else {
            return Ok(MacVerdict::Cancel(CancelCode::InvalidMessage));
        };
        let mut device_key_id: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
        concat(&mut device_key_id, &["ed25519:", &v.peer_device])?;
        let method = v.mac_method;
        let check = |input: &str, suffix: &str, tag: Value<'_>| -> Option<MacEncoding> {
            let mut full: String<400> = String::new();
            concat(&mut full, &[&info, suffix]).ok()?;
            let mut text = [0u8; 88];
            let tag = base64_text(tag, &mut text)?;
            established
                .verify_mac(input.as_bytes(), full.as_bytes(), method, tag)
                .ok()
        };
        let mut verdict = check(&key_ids, "KEY_IDS", keys_mac);
        let mut device_key_seen = false;
        let mut ed_text = [0u8; 43];
        let ed_text = jeton_olm::base64::encode(&device.ed, &mut ed_text).unwrap_or_default();
        for entry in macs.entries().flatten() {
            let (id, tag) = entry;
            if id == device_key_id.as_str() {
                device_key_seen = true;
                let encoding = check(ed_text, id, tag);
                if encoding.is_none() {
                    verdict = None;
                }
            }
            // Other keys (a cross-signing master key) are not known to the token: covered
            // by the key-id MAC, not checked one by one.
        }
        Ok(match verdict.filter(|_| device_key_seen) {
            Some(encoding) => MacVerdict::Valid(encoding),
            None => MacVerdict::Cancel(CancelCode::KeyMismatch),
        })
    }
}

/// What the peer's MACs say.
enum MacVerdict {
    /// Both verify, in this encoding.
    Valid(MacEncoding),
    /// The verification ends with this code.
    Cancel(CancelCode),
    /// Nothing to check (no verification, or no shared secret yet).
    Ignore,
}

/// The key ids a `mac` message lists, sorted and joined with commas (what the key-id MAC
/// covers), or `None` for a malformed or too long list.
fn key_id_list(
    macs: &Map<'_>,
) -> Result<Option<String<{ MAX_MAC_KEYS * (MAX_ID_LEN + 1) }>>, TokenError> {
    let mut ids: Vec<&str, MAX_MAC_KEYS> = Vec::new();
    for entry in macs.entries() {
        let Ok((id, _)) = entry else {
            return Ok(None);
        };
        if ids.push(id).is_err() {
            return Ok(None);
        }
    }
    sort_ids(&mut ids);
    let mut key_ids = String::new();
    for (at, id) in ids.iter().enumerate() {
        concat(&mut key_ids, &[if at > 0 { "," } else { "" }, id])?;
    }
    Ok(Some(key_ids))
}

/// What a peer's `start` or `accept` chose.
struct Choice {
    mac_method: MacMethod,
    emoji: bool,
}

fn text<'a>(map: &Map<'a>, name: &str) -> Option<&'a str> {
    match map.get(name) {
        Ok(Some(Value::Text(text))) => Some(text),
        _ => None,
    }
}

fn texts<'a>(map: &Map<'a>, name: &str) -> impl Iterator<Item = &'a str> {
    let array = match map.get(name) {
        Ok(Some(Value::Array(array))) => Some(array),
        _ => None,
    };
    array
        .into_iter()
        .flat_map(|array| array.iter())
        .filter_map(|value| match value {
            Ok(Value::Text(text)) => Some(text),
            _ => None,
        })
}

/// A base64 value that the gateway may have turned into bytes (a v2 binary field).
fn base64_text<'o>(value: Value<'_>, out: &'o mut [u8; 88]) -> Option<&'o str> {
    match value {
        Value::Text(text) => {
            let target = out.get_mut(..text.len())?;
            target.copy_from_slice(text.as_bytes());
            core::str::from_utf8(target).ok()
        }
        Value::Bytes(bytes) => jeton_olm::base64::encode(bytes, out).ok(),
        _ => None,
    }
}

/// The methods of a peer's `start` the token speaks, or `m.unknown_method`.
fn choose_from_start(content: &Map<'_>) -> Result<Choice, CancelCode> {
    let speaks = |name, wanted: &str| texts(content, name).any(|t| t == wanted);
    if text(content, "method") != Some(SAS_METHOD)
        || !speaks("key_agreement_protocols", KEY_AGREEMENT)
        || !speaks("hashes", HASH)
    {
        return Err(CancelCode::UnknownMethod);
    }
    let mac_method = MAC_METHODS
        .into_iter()
        .find(|m| texts(content, "message_authentication_codes").any(|t| t == m.name()))
        .ok_or(CancelCode::UnknownMethod)?;
    let decimal = speaks("short_authentication_string", "decimal");
    let emoji = speaks("short_authentication_string", "emoji");
    if !decimal && !emoji {
        return Err(CancelCode::UnknownMethod);
    }
    Ok(Choice { mac_method, emoji })
}

/// The methods of a peer's `accept`, checked against what the token offered.
fn choice_of_accept(content: &Map<'_>) -> Result<Choice, CancelCode> {
    if text(content, "key_agreement_protocol") != Some(KEY_AGREEMENT)
        || text(content, "hash") != Some(HASH)
    {
        return Err(CancelCode::UnknownMethod);
    }
    let mac_method = text(content, "message_authentication_code")
        .and_then(MacMethod::from_name)
        .ok_or(CancelCode::UnknownMethod)?;
    let mut decimal = false;
    let mut emoji = false;
    for string in texts(content, "short_authentication_string") {
        match string {
            "decimal" => decimal = true,
            "emoji" => emoji = true,
            _ => return Err(CancelCode::UnknownMethod),
        }
    }
    if !decimal && !emoji {
        return Err(CancelCode::UnknownMethod);
    }
    Ok(Choice { mac_method, emoji })
}

/// A commitment in unpadded base64 (the specification), or in hex (matrix-nio 0.26,
/// <https://github.com/matrix-nio/matrix-nio/issues/570>): 43 and 64 characters cannot be
/// confused.
fn decode_commitment(text: &str) -> Option<[u8; 32]> {
    if text.len() == 64 {
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = core::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        return Some(out);
    }
    let mut decoded = [0u8; 33];
    let bytes = jeton_olm::base64::decode(text.as_bytes(), &mut decoded).ok()?;
    bytes.try_into().ok()
}

/// The MAC encoding a method starts with (see the module documentation).
fn default_encoding(method: MacMethod) -> MacEncoding {
    match method {
        MacMethod::HkdfHmacSha256V2 => MacEncoding::Base64,
        MacMethod::HkdfHmacSha256 => MacEncoding::LibolmInPlace,
    }
}

/// Sorts key ids by their bytes, the order the MAC's key list is built in.
///
/// An insertion sort: a MAC names a handful of keys, and core's generic sort costs about
/// 7 KB of flash on a Cortex-M.
fn sort_ids(ids: &mut [&str]) {
    for sorted in 1..ids.len() {
        let mut i = sorted;
        while i > 0 {
            let (Some(before), Some(here)) = (ids.get(i - 1), ids.get(i)) else {
                break;
            };
            if before <= here {
                break;
            }
            ids.swap(i - 1, i);
            i -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_ids;

    proptest::proptest! {
        #[test]
        fn key_ids_sort_as_the_standard_sort_does(ids in proptest::collection::vec("[a-zA-Z0-9:_]{0,12}", 0..8)) {
            let mut ours: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut standard = ours.clone();
            sort_ids(&mut ours);
            standard.sort();
            proptest::prop_assert_eq!(ours, standard);
        }
    }
}
