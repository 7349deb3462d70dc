//! What the token sends: the messages of a verification, written into the work buffer one
//! at a time.

use heapless::String;
use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_olm::sas::{MAC_BASE64_LEN, MacMethod};

use super::*;
use crate::matrix::bodies::{cbor, key, to_device_body};

/// The token's ids and Ed25519 key, which its messages name.
struct Own<'a> {
    user: &'a str,
    device: &'a str,
    ed: &'a [u8; 32],
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Writes the next verification message into the work buffer: its body length, event
    /// type and whether it is the stray cancel, or `None`.
    pub(in crate::matrix) fn next_verification_message(
        &mut self,
    ) -> Result<Option<(usize, &'static str, bool)>, TokenError> {
        if let Some(stray) = &self.verification.stray_cancel {
            let len = to_device_body(&mut self.env.work, &stray.user, "*", |e| {
                write_cancel(e, &stray.txn, stray.code)
            })?;
            return Ok(Some((len, Outgoing::Cancel(stray.code).event_type(), true)));
        }
        let (own_user, own_device) = self.own_ids();
        let own_ed = *self.account.olm.ed25519_key().as_bytes();
        let own = Own {
            user: &own_user,
            device: &own_device,
            ed: &own_ed,
        };
        let Some(v) = &self.verification.active else {
            return Ok(None);
        };
        let Some(message) = v.outgoing.front().copied() else {
            return Ok(None);
        };
        let len = to_device_body(&mut self.env.work, &v.peer_user, &v.peer_device, |e| {
            write_content(e, message, v, &own)
        })?;
        if let Some(v) = &mut self.verification.active {
            v.sending = true;
        }
        Ok(Some((len, message.event_type(), false)))
    }
}

/// The content of `message` of verification `v`.
fn write_content(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    message: Outgoing,
    v: &Verification,
    own: &Own<'_>,
) -> Result<(), TokenError> {
    let txn = v.txn.as_str();
    match message {
        Outgoing::Request => write_request(e, own.device, txn, Some(v.requested_at_unix_ms)),
        Outgoing::Ready => write_request(e, own.device, txn, None),
        Outgoing::Start => write_start_content(e, own.device, txn),
        Outgoing::Accept => write_accept(e, v),
        Outgoing::Key => write_key(e, v),
        Outgoing::Mac => write_mac(e, v, own),
        Outgoing::Done => {
            cbor(e.map(1))?;
            key(e, "transaction_id")?;
            cbor(e.str(txn))?;
            Ok(())
        }
        Outgoing::Cancel(code) => write_cancel(e, txn, code),
    }
}

/// The content of `m.key.verification.request` (with the wall-clock time `timestamp`) or,
/// without it, of `ready`.
fn write_request(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    own_device: &str,
    txn: &str,
    timestamp: Option<u64>,
) -> Result<(), TokenError> {
    cbor(e.map(if timestamp.is_some() { 4 } else { 3 }))?;
    key(e, "from_device")?;
    cbor(e.str(own_device))?;
    key(e, "methods")?;
    cbor(e.array(1))?;
    cbor(e.str(SAS_METHOD))?;
    if let Some(timestamp) = timestamp {
        key(e, "timestamp")?;
        cbor(e.u64(timestamp))?;
    }
    key(e, "transaction_id")?;
    cbor(e.str(txn))?;
    Ok(())
}

/// The content of the token's `m.key.verification.accept`: the methods chosen and the
/// commitment to its key.
fn write_accept(e: &mut Encoder<Cursor<&mut [u8]>>, v: &Verification) -> Result<(), TokenError> {
    cbor(e.map(7))?;
    key(e, "transaction_id")?;
    cbor(e.str(&v.txn))?;
    key(e, "method")?;
    cbor(e.str(SAS_METHOD))?;
    key(e, "key_agreement_protocol")?;
    cbor(e.str(KEY_AGREEMENT))?;
    key(e, "hash")?;
    cbor(e.str(HASH))?;
    key(e, "message_authentication_code")?;
    cbor(e.str(v.mac_method.name()))?;
    key(e, "short_authentication_string")?;
    if v.emoji {
        cbor(e.array(2))?;
        cbor(e.str("decimal"))?;
        cbor(e.str("emoji"))?;
    } else {
        cbor(e.array(1))?;
        cbor(e.str("decimal"))?;
    }
    key(e, "commitment")?;
    let mut text = [0u8; 43];
    let text =
        jeton_olm::base64::encode(&v.commitment, &mut text).map_err(|_| TokenError::Crypto)?;
    cbor(e.str(text))?;
    Ok(())
}

/// The content of the token's `m.key.verification.key`: its ephemeral public key.
fn write_key(e: &mut Encoder<Cursor<&mut [u8]>>, v: &Verification) -> Result<(), TokenError> {
    let public = match &v.keys {
        Keys::Ephemeral(sas) => sas.public_key(),
        Keys::Established(established) => established.our_public_key(),
        Keys::None => return Err(TokenError::Crypto),
    };
    cbor(e.map(2))?;
    key(e, "transaction_id")?;
    cbor(e.str(&v.txn))?;
    key(e, "key")?;
    let mut text = [0u8; 43];
    cbor(e.str(public.to_base64(&mut text)))?;
    Ok(())
}

/// The content of the token's `m.key.verification.mac`: the MAC of its device key and the MAC
/// of the key id list, in the encoding the verification uses.
fn write_mac(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    v: &Verification,
    own: &Own<'_>,
) -> Result<(), TokenError> {
    let Keys::Established(established) = &v.keys else {
        return Err(TokenError::Crypto);
    };
    let info = mac_info(
        (own.user, own.device),
        (&v.peer_user, &v.peer_device),
        &v.txn,
    )?;
    let mut key_id: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
    concat(&mut key_id, &["ed25519:", own.device])?;
    let mut ed_text = [0u8; 43];
    let ed_text =
        jeton_olm::base64::encode(own.ed, &mut ed_text).map_err(|_| TokenError::Crypto)?;
    let mut full: String<400> = String::new();
    concat(&mut full, &[&info, &key_id])?;
    let mut key_mac = [0u8; MAC_BASE64_LEN];
    let key_mac = established.mac_text(
        ed_text.as_bytes(),
        full.as_bytes(),
        v.mac_encoding,
        &mut key_mac,
    );
    full.clear();
    concat(&mut full, &[&info, "KEY_IDS"])?;
    let mut ids_mac = [0u8; MAC_BASE64_LEN];
    let ids_mac = established.mac_text(
        key_id.as_bytes(),
        full.as_bytes(),
        v.mac_encoding,
        &mut ids_mac,
    );
    cbor(e.map(3))?;
    key(e, "transaction_id")?;
    cbor(e.str(&v.txn))?;
    key(e, "mac")?;
    cbor(e.map(1))?;
    cbor(e.str(&key_id))?;
    cbor(e.str(key_mac))?;
    key(e, "keys")?;
    cbor(e.str(ids_mac))?;
    Ok(())
}

/// The content of `m.key.verification.cancel` with `code`.
fn write_cancel(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    txn: &str,
    code: CancelCode,
) -> Result<(), TokenError> {
    cbor(e.map(3))?;
    key(e, "transaction_id")?;
    cbor(e.str(txn))?;
    key(e, "code")?;
    cbor(e.str(code.as_str()))?;
    key(e, "reason")?;
    cbor(e.str(code.reason()))?;
    Ok(())
}

/// The content of the token's `m.key.verification.start`.
pub(super) fn write_start_content(
    e: &mut Encoder<Cursor<&mut [u8]>>,
    own_device: &str,
    txn: &str,
) -> Result<(), TokenError> {
    let list = |e: &mut Encoder<Cursor<&mut [u8]>>, name, items: &[&str]| {
        key(e, name)?;
        cbor(e.array(items.len() as u64))?;
        for item in items {
            cbor(e.str(item))?;
        }
        Ok::<(), TokenError>(())
    };
    cbor(e.map(7))?;
    key(e, "from_device")?;
    cbor(e.str(own_device))?;
    key(e, "method")?;
    cbor(e.str(SAS_METHOD))?;
    list(e, "key_agreement_protocols", &[KEY_AGREEMENT])?;
    list(e, "hashes", &[HASH])?;
    list(
        e,
        "message_authentication_codes",
        &MAC_METHODS.map(MacMethod::name),
    )?;
    list(e, "short_authentication_string", &["decimal", "emoji"])?;
    key(e, "transaction_id")?;
    cbor(e.str(txn))?;
    Ok(())
}
