//! What request and response bodies share: CBOR map keys written by the profile's table,
//! binary fields (v2 byte strings, or base64 text), and objects signed over their canonical
//! JSON.

use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_olm::{Ed25519PublicKey, Ed25519Signature};
use jeton_proto::TableVersion;
use jeton_proto::keys::key_for_name;
use jeton_proto::view::Binary;
use jeton_proto::write::{self};

use super::*;
use crate::json::{JsonWriter, write_canonical};

pub(super) type BodyEncoder<'b> = Encoder<Cursor<&'b mut [u8]>>;

/// Writes map key `name`: its integer under table v2 when it has one, else its text.
pub(super) fn key(e: &mut BodyEncoder<'_>, name: &str) -> Result<(), TokenError> {
    let result = match key_for_name(name, TableVersion::V2) {
        Some(k) => e.u16(k).map(drop),
        None => e.str(name).map(drop),
    };
    result.map_err(|_| TokenError::Write(write::WriteError::BufferTooSmall))
}

/// A `sendToDevice` body with one message: `{"messages": {user: {device: content}}}`.
pub(super) fn to_device_body(
    out: &mut [u8],
    user: &str,
    device: &str,
    content: impl FnOnce(&mut BodyEncoder<'_>) -> Result<(), TokenError>,
) -> Result<usize, TokenError> {
    let mut e = Encoder::new(Cursor::new(out));
    cbor(e.map(1))?;
    key(&mut e, "messages")?;
    cbor(e.map(1))?;
    cbor(e.str(user))?;
    cbor(e.map(1))?;
    cbor(e.str(device))?;
    content(&mut e)?;
    Ok(e.writer().position())
}

/// A CBOR write's result, a full buffer as [`TokenError::Write`].
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

/// A 32-byte binary field (a key or session id).
pub(super) fn binary32(binary: Binary<'_>) -> Option<[u8; 32]> {
    let mut out = [0u8; 48];
    binary_bytes(binary, &mut out)?.try_into().ok()
}
