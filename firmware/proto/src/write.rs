//! Writers of the v2 CBOR bodies a token sends, into a caller's buffer (no allocator).
//!
//! Each writer produces exactly the canonical CBOR that `transcode::json_to_cbor(.., TableVersion::V2)`
//! produces for the equivalent Matrix JSON (the tests check this), so the gateway's JSON is the one the
//! Matrix spec describes. Binary arguments are raw bytes; the gateway turns them into unpadded base64.
//! String values of the well-known value table are written as their simple values ([`crate::values`]).
//! Map keys are written in canonical order (integer keys by value, then text keys by length and bytes);
//! lists the caller passes in any order are sorted into a fixed-capacity index array.

use minicbor::Encoder;
use minicbor::encode::write::{Cursor, Write};

use crate::TableVersion;
use crate::keys::key_for_name;
use crate::values::simple_for_value;
use crate::view::{MAX_USERS, MEGOLM_ALGORITHM, OLM_ALGORITHM};

/// Most one-time keys one `keys/upload` body may carry.
pub const MAX_UPLOAD_ONE_TIME_KEYS: usize = 64;

/// The one-time key algorithm a token uploads and claims.
pub const SIGNED_CURVE25519: &str = "signed_curve25519";

/// Why a body could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The caller's buffer is too small for the body.
    BufferTooSmall,
    /// More items than the writer's capacity.
    CapacityExceeded {
        /// The capacity.
        capacity: usize,
    },
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall => write!(f, "the output buffer is too small for the body"),
            Self::CapacityExceeded { capacity } => {
                write!(f, "more items than the capacity of {capacity}")
            }
        }
    }
}

impl core::error::Error for WriteError {}

impl<E> From<minicbor::encode::Error<E>> for WriteError {
    fn from(_: minicbor::encode::Error<E>) -> Self {
        // Writing into a slice fails only when the slice is full.
        Self::BufferTooSmall
    }
}

/// Canonical CBOR into a caller's buffer, with the v2 key table.
struct BodyWriter<'b> {
    out: Encoder<Cursor<&'b mut [u8]>>,
}

impl<'b> BodyWriter<'b> {
    fn new(buffer: &'b mut [u8]) -> Self {
        Self {
            out: Encoder::new(Cursor::new(buffer)),
        }
    }

    fn finish(self) -> usize {
        self.out.writer().position()
    }

    fn map(&mut self, entries: usize) -> Result<&mut Self, WriteError> {
        self.out.map(entries as u64)?;
        Ok(self)
    }

    fn array(&mut self, items: usize) -> Result<&mut Self, WriteError> {
        self.out.array(items as u64)?;
        Ok(self)
    }

    /// A map key: its v2 integer if the table has one, else text.
    fn key(&mut self, name: &str) -> Result<&mut Self, WriteError> {
        match key_for_name(name, TableVersion::V2) {
            Some(key) => self.out.u16(key)?,
            None => self.out.str(name)?,
        };
        Ok(self)
    }

    /// A text map key that is not in the key table (a user id, a device id, a key id).
    fn text(&mut self, text: &str) -> Result<&mut Self, WriteError> {
        self.out.str(text)?;
        Ok(self)
    }

    /// A string value: its v2 well-known simple value if the table has one, else text.
    fn value(&mut self, text: &str) -> Result<&mut Self, WriteError> {
        match simple_for_value(text) {
            Some(simple) => self.out.simple(simple)?,
            None => self.out.str(text)?,
        };
        Ok(self)
    }

    /// A text string made of `parts` (e.g. `ed25519:` and a device id), without concatenating first.
    fn text_parts(&mut self, parts: &[&str]) -> Result<&mut Self, WriteError> {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        // The header of a text string is the header of an unsigned integer with major type 3.
        let start = self.out.writer().position();
        self.out.u64(length as u64)?;
        let buffer = self.out.writer_mut().get_mut();
        if let Some(initial) = buffer.get_mut(start) {
            *initial |= 0x60;
        }
        for part in parts {
            self.out
                .writer_mut()
                .write_all(part.as_bytes())
                .map_err(|_| WriteError::BufferTooSmall)?;
        }
        Ok(self)
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<&mut Self, WriteError> {
        self.out.bytes(bytes)?;
        Ok(self)
    }

    fn uint(&mut self, value: u64) -> Result<&mut Self, WriteError> {
        self.out.u64(value)?;
        Ok(self)
    }

    fn bool(&mut self, value: bool) -> Result<&mut Self, WriteError> {
        self.out.bool(value)?;
        Ok(self)
    }

    /// `signatures: {<user_id>: {"ed25519:<device_id>": <signature>}}` (the key included).
    fn signatures(
        &mut self,
        signer: &Signer<'_>,
        signature: &[u8],
    ) -> Result<&mut Self, WriteError> {
        self.key("signatures")?
            .map(1)?
            .text(signer.user_id)?
            .map(1)?
            .text_parts(&["ed25519:", signer.device_id])?
            .bytes(signature)
    }
}

/// Canonical order of text keys: by length, then bytewise (the order of their CBOR encodings).
fn canonical_text_order(a: &str, b: &str) -> core::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The indices `0..count` in a fixed-capacity array, to be sorted by [`sort_by_name`].
fn indices<const N: usize>(count: usize) -> Result<([usize; N], usize), WriteError> {
    if count > N {
        return Err(WriteError::CapacityExceeded { capacity: N });
    }
    let mut indices = [0usize; N];
    for (slot, index) in indices.iter_mut().zip(0..count) {
        *slot = index;
    }
    Ok((indices, count))
}

/// Sorts `indices` by the canonical order of `name(index)`.
///
/// An insertion sort: the lists are at most a few dozen long, and core's generic sort costs
/// about 3 KB of flash per call site on a Cortex-M, twice that for the two writers.
fn sort_by_name<'n>(indices: &mut [usize], name: impl Fn(usize) -> &'n str) {
    for sorted in 1..indices.len() {
        let mut i = sorted;
        while i > 0 {
            let (Some(&before), Some(&here)) = (indices.get(i - 1), indices.get(i)) else {
                break;
            };
            if canonical_text_order(name(before), name(here)).is_le() {
                break;
            }
            indices.swap(i - 1, i);
            i -= 1;
        }
    }
}

/// Who signs uploaded keys: the token's user and device.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The Matrix user id, e.g. `@alice:example.org`.
    pub user_id: &'a str,
    /// The device id.
    pub device_id: &'a str,
}

/// The device keys of a `keys/upload` body.
#[derive(Debug, Clone, Copy)]
pub struct DeviceKeysUpload<'a> {
    /// The device's Curve25519 identity key.
    pub curve25519: &'a [u8],
    /// The device's Ed25519 fingerprint key.
    pub ed25519: &'a [u8],
    /// The Ed25519 signature of the device-keys object's canonical JSON.
    pub signature: &'a [u8],
}

/// One signed Curve25519 key of a `keys/upload` body (one-time or fallback).
#[derive(Debug, Clone, Copy)]
pub struct SignedKeyUpload<'a> {
    /// The key id after `signed_curve25519:`, e.g. `AAAAAQ`.
    pub key_id: &'a str,
    /// The Curve25519 public key.
    pub key: &'a [u8],
    /// The Ed25519 signature of the key object's canonical JSON.
    pub signature: &'a [u8],
}

/// A Megolm `m.room.encrypted` send body (`PUT /rooms/{roomId}/send/m.room.encrypted/{txnId}`):
/// `{algorithm, ciphertext, session_id}`, plus the deprecated `sender_key` and `device_id` when
/// `deprecated_sender` is given. `session_id` is left out when `None` (the gateway fills in the one
/// it keeps for the room, PROFILE.md section 1.1). Returns the number of bytes written.
pub fn megolm_send_body(
    out: &mut [u8],
    session_id: Option<&[u8]>,
    ciphertext: &[u8],
    deprecated_sender: Option<(&[u8], &str)>,
) -> Result<usize, WriteError> {
    let mut w = BodyWriter::new(out);
    // Key order: device_id 71, algorithm 84, sender_key 85, session_id 86, ciphertext 87.
    let fields =
        2 + usize::from(session_id.is_some()) + 2 * usize::from(deprecated_sender.is_some());
    w.map(fields)?;
    if let Some((_, device_id)) = deprecated_sender {
        w.key("device_id")?.value(device_id)?;
    }
    w.key("algorithm")?.value(MEGOLM_ALGORITHM)?;
    if let Some((sender_key, _)) = deprecated_sender {
        w.key("sender_key")?.bytes(sender_key)?;
    }
    if let Some(session_id) = session_id {
        w.key("session_id")?.bytes(session_id)?;
    }
    w.key("ciphertext")?.bytes(ciphertext)?;
    Ok(w.finish())
}

/// One Olm message for one device of a `sendToDevice` body.
#[derive(Debug, Clone, Copy)]
pub struct OlmToDevice<'a> {
    /// The recipient's user id.
    pub user_id: &'a str,
    /// The recipient's device id.
    pub device_id: &'a str,
    /// The recipient's Curve25519 identity key as unpadded base64 (it is a map key, so it stays text).
    pub recipient_key: &'a str,
    /// Olm message type: 0 pre-key, 1 normal.
    pub message_type: u8,
    /// The Olm message.
    pub body: &'a [u8],
}

/// A `sendToDevice` body (`PUT /sendToDevice/m.room.encrypted/{txnId}`) carrying one Olm message to one
/// device: `{messages: {<user>: {<device>: {algorithm, ciphertext: {<key>: {type, body}}, sender_key}}}}`.
pub fn olm_send_to_device_body(
    out: &mut [u8],
    sender_key: &[u8],
    message: &OlmToDevice<'_>,
) -> Result<usize, WriteError> {
    let mut w = BodyWriter::new(out);
    w.map(1)?
        .key("messages")?
        .map(1)?
        .text(message.user_id)?
        .map(1)?
        .text(message.device_id)?;
    // Key order: algorithm 84, sender_key 85, ciphertext 87; inside: type 2, body 27.
    w.map(3)?
        .key("algorithm")?
        .value(OLM_ALGORITHM)?
        .key("sender_key")?
        .bytes(sender_key)?
        .key("ciphertext")?
        .map(1)?
        .text(message.recipient_key)?
        .map(2)?
        .key("type")?
        .uint(u64::from(message.message_type))?
        .key("body")?
        .bytes(message.body)?;
    Ok(w.finish())
}

/// A `keys/upload` body: device keys (if given), one-time keys (any order; written sorted) and a fallback
/// key (if given), all signed by `signer`.
pub fn keys_upload_body(
    out: &mut [u8],
    signer: &Signer<'_>,
    device_keys: Option<&DeviceKeysUpload<'_>>,
    one_time_keys: &[SignedKeyUpload<'_>],
    fallback_key: Option<&SignedKeyUpload<'_>>,
) -> Result<usize, WriteError> {
    let (mut order, count) = indices::<MAX_UPLOAD_ONE_TIME_KEYS>(one_time_keys.len())?;
    let order = order.get_mut(..count).unwrap_or_default();
    sort_by_name(order, |i| one_time_keys.get(i).map_or("", |k| k.key_id));

    let mut w = BodyWriter::new(out);
    let fields = usize::from(!one_time_keys.is_empty())
        + usize::from(device_keys.is_some())
        + usize::from(fallback_key.is_some());
    // Key order: one_time_keys 88, device_keys 93, fallback_keys 109.
    w.map(fields)?;
    if !one_time_keys.is_empty() {
        w.key("one_time_keys")?.map(one_time_keys.len())?;
        for key in order.iter().filter_map(|i| one_time_keys.get(*i)) {
            signed_key(&mut w, signer, key, false)?;
        }
    }
    if let Some(device) = device_keys {
        // Key order: user_id 7, signatures 37, device_id 71, keys 114, algorithms 115.
        w.key("device_keys")?
            .map(5)?
            .key("user_id")?
            .value(signer.user_id)?
            .signatures(signer, device.signature)?
            .key("device_id")?
            .value(signer.device_id)?
            .key("keys")?
            .map(2)?
            // "ed25519:<id>" is shorter than "curve25519:<id>", so it sorts first.
            .text_parts(&["ed25519:", signer.device_id])?
            .bytes(device.ed25519)?
            .text_parts(&["curve25519:", signer.device_id])?
            .bytes(device.curve25519)?
            .key("algorithms")?
            .array(2)?
            .value(OLM_ALGORITHM)?
            .value(MEGOLM_ALGORITHM)?;
    }
    if let Some(fallback) = fallback_key {
        w.key("fallback_keys")?.map(1)?;
        signed_key(&mut w, signer, fallback, true)?;
    }
    Ok(w.finish())
}

/// `"signed_curve25519:<id>": {signatures, [fallback: true,] key}` (keys 37, 110, 120).
fn signed_key(
    w: &mut BodyWriter<'_>,
    signer: &Signer<'_>,
    key: &SignedKeyUpload<'_>,
    fallback: bool,
) -> Result<(), WriteError> {
    w.text_parts(&[SIGNED_CURVE25519, ":", key.key_id])?
        .map(if fallback { 3 } else { 2 })?
        .signatures(signer, key.signature)?;
    if fallback {
        w.key("fallback")?.bool(true)?;
    }
    w.key("key")?.bytes(key.key)?;
    Ok(())
}

/// A `keys/claim` body for one device's `signed_curve25519` one-time key.
pub fn keys_claim_body(
    out: &mut [u8],
    user_id: &str,
    device_id: &str,
    timeout_ms: u64,
) -> Result<usize, WriteError> {
    let mut w = BodyWriter::new(out);
    // Key order: one_time_keys 88, timeout 89.
    w.map(2)?
        .key("one_time_keys")?
        .map(1)?
        .text(user_id)?
        .map(1)?
        .text(device_id)?
        .value(SIGNED_CURVE25519)?
        .key("timeout")?
        .uint(timeout_ms)?;
    Ok(w.finish())
}

/// A `keys/query` body asking for all devices of `user_ids` (any order; written sorted, at most
/// [`MAX_USERS`]).
pub fn keys_query_body(
    out: &mut [u8],
    user_ids: &[&str],
    timeout_ms: u64,
) -> Result<usize, WriteError> {
    const CAPACITY: usize = MAX_USERS as usize;
    let (mut order, count) = indices::<CAPACITY>(user_ids.len())?;
    let order = order.get_mut(..count).unwrap_or_default();
    sort_by_name(order, |i| user_ids.get(i).copied().unwrap_or(""));
    let mut w = BodyWriter::new(out);
    // Key order: timeout 89, device_keys 93.
    w.map(2)?.key("timeout")?.uint(timeout_ms)?;
    w.key("device_keys")?.map(user_ids.len())?;
    for user_id in order.iter().filter_map(|i| user_ids.get(*i)) {
        w.text(user_id)?.array(0)?;
    }
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::json_to_cbor;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde_json::{Value, json};

    fn b64(bytes: &[u8]) -> String {
        STANDARD_NO_PAD.encode(bytes)
    }

    /// The writer's output must equal the transcoder's v2 CBOR of the same JSON, and every buffer one
    /// byte short must give `BufferTooSmall`.
    fn assert_writes(json: Value, write: impl Fn(&mut [u8]) -> Result<usize, WriteError>) {
        let expected = json_to_cbor(&json, TableVersion::V2).unwrap();
        let mut buffer = vec![0u8; expected.len() + 16];
        let written = write(&mut buffer).unwrap();
        assert_eq!(
            hex::encode(&buffer[..written]),
            hex::encode(&expected),
            "{json}"
        );
        for short in 0..expected.len() {
            let mut buffer = vec![0u8; short];
            assert_eq!(
                write(&mut buffer),
                Err(WriteError::BufferTooSmall),
                "{short} bytes"
            );
        }
    }

    const SIGNER: Signer<'static> = Signer {
        user_id: "@alice:localhost",
        device_id: "ALICEDEVIC",
    };

    #[test]
    fn megolm_send_body_matches_the_transcoder() {
        let (session, ciphertext, sender) = ([7u8; 32], [9u8; 238], [5u8; 32]);
        assert_writes(
            json!({"algorithm": MEGOLM_ALGORITHM, "ciphertext": b64(&ciphertext), "session_id": b64(&session)}),
            |out| megolm_send_body(out, Some(&session), &ciphertext, None),
        );
        assert_writes(
            json!({"algorithm": MEGOLM_ALGORITHM, "ciphertext": b64(&ciphertext)}),
            |out| megolm_send_body(out, None, &ciphertext, None),
        );
        assert_writes(
            json!({"algorithm": MEGOLM_ALGORITHM, "ciphertext": b64(&ciphertext),
                   "session_id": b64(&session), "sender_key": b64(&sender), "device_id": "ALICEDEVIC"}),
            |out| {
                megolm_send_body(
                    out,
                    Some(&session),
                    &ciphertext,
                    Some((&sender, "ALICEDEVIC")),
                )
            },
        );
    }

    #[test]
    fn olm_send_to_device_body_matches_the_transcoder() {
        let (sender, recipient, body) = ([1u8; 32], [2u8; 32], [3u8; 700]);
        let recipient_key = b64(&recipient);
        let message = OlmToDevice {
            user_id: "@bob:localhost",
            device_id: "BOBDEVICE1",
            recipient_key: &recipient_key,
            message_type: 0,
            body: &body,
        };
        assert_writes(
            json!({"messages": {"@bob:localhost": {"BOBDEVICE1": {
                "algorithm": OLM_ALGORITHM,
                "ciphertext": {recipient_key.clone(): {"body": b64(&body), "type": 0}},
                "sender_key": b64(&sender)}}}}),
            |out| olm_send_to_device_body(out, &sender, &message),
        );
    }

    #[test]
    fn keys_upload_body_matches_the_transcoder() {
        let device = DeviceKeysUpload {
            curve25519: &[4; 32],
            ed25519: &[5; 32],
            signature: &[6; 64],
        };
        let ids = ["AAAAAw", "AAAAAQ", "AAAAAAB", "AAAAAg"];
        let otks: Vec<SignedKeyUpload<'_>> = ids
            .iter()
            .map(|id| SignedKeyUpload {
                key_id: id,
                key: &[8; 32],
                signature: &[9; 64],
            })
            .collect();
        let fallback = SignedKeyUpload {
            key_id: "AAAAAB",
            key: &[10; 32],
            signature: &[11; 64],
        };
        let signed = |key: &[u8], sig: &[u8]| json!({"key": b64(key), "signatures": {"@alice:localhost": {"ed25519:ALICEDEVIC": b64(sig)}}});
        let one_time_keys: serde_json::Map<String, Value> = ids
            .iter()
            .map(|id| {
                (
                    format!("signed_curve25519:{id}"),
                    signed(&[8; 32], &[9; 64]),
                )
            })
            .collect();
        let mut fallback_json = signed(&[10; 32], &[11; 64]);
        fallback_json["fallback"] = json!(true);
        assert_writes(
            json!({
                "device_keys": {
                    "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
                    "device_id": "ALICEDEVIC",
                    "keys": {"curve25519:ALICEDEVIC": b64(&[4; 32]), "ed25519:ALICEDEVIC": b64(&[5; 32])},
                    "signatures": {"@alice:localhost": {"ed25519:ALICEDEVIC": b64(&[6; 64])}},
                    "user_id": "@alice:localhost",
                },
                "one_time_keys": one_time_keys,
                "fallback_keys": {"signed_curve25519:AAAAAB": fallback_json},
            }),
            |out| keys_upload_body(out, &SIGNER, Some(&device), &otks, Some(&fallback)),
        );
        assert_writes(
            json!({"one_time_keys": {
            "signed_curve25519:AAAAAQ": signed(&[8; 32], &[9; 64])}}),
            |out| keys_upload_body(out, &SIGNER, None, &otks[1..2], None),
        );
        let too_many = vec![otks[0]; MAX_UPLOAD_ONE_TIME_KEYS + 1];
        assert_eq!(
            keys_upload_body(&mut [0; 16], &SIGNER, None, &too_many, None),
            Err(WriteError::CapacityExceeded {
                capacity: MAX_UPLOAD_ONE_TIME_KEYS
            })
        );
    }

    #[test]
    fn keys_claim_and_query_bodies_match_the_transcoder() {
        assert_writes(
            json!({"one_time_keys": {"@bob:localhost": {"BOBDEVICE1": "signed_curve25519"}}, "timeout": 10000}),
            |out| keys_claim_body(out, "@bob:localhost", "BOBDEVICE1", 10000),
        );
        assert_writes(
            json!({"device_keys": {"@bob:localhost": [], "@carol:localhost": [], "@al:x": []}, "timeout": 10000}),
            |out| keys_query_body(out, &["@carol:localhost", "@bob:localhost", "@al:x"], 10000),
        );
    }
}
