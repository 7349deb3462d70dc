//! What the token sends: the messages of a verification, written into the work buffer one
//! at a time.

use heapless::String;
use minicbor::Encoder;
use minicbor::encode::write::Cursor;

use jeton_olm::sas::{MAC_BASE64_LEN, MacMethod};

use super::*;
use crate::matrix::send::{cbor, key};

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
        let Some(v) = &self.verification.active else {
            return Ok(None);
        };
        let Some(message) = v.outgoing.front().copied() else {
            return Ok(None);
        };
        let txn = v.txn.as_str();
        let len = to_device_body(&mut self.env.work, &v.peer_user, &v.peer_device, |e| {
            match message {
                Outgoing::Request => {
                    cbor(e.map(4))?;
                    key(e, "from_device")?;
                    cbor(e.str(&own_device))?;
                    key(e, "methods")?;
                    cbor(e.array(1))?;
                    cbor(e.str(SAS_METHOD))?;
                    key(e, "timestamp")?;
                    cbor(e.u64(v.requested_at_unix_ms))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Ready => {
                    cbor(e.map(3))?;
                    key(e, "from_device")?;
                    cbor(e.str(&own_device))?;
                    key(e, "methods")?;
                    cbor(e.array(1))?;
                    cbor(e.str(SAS_METHOD))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Start => write_start_content(e, &own_device, txn)?,
                Outgoing::Accept => {
                    cbor(e.map(7))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
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
                    let text = jeton_olm::base64::encode(&v.commitment, &mut text)
                        .map_err(|_| TokenError::Crypto)?;
                    cbor(e.str(text))?;
                }
                Outgoing::Key => {
                    let public = match &v.keys {
                        Keys::Ephemeral(sas) => sas.public_key(),
                        Keys::Established(established) => established.our_public_key(),
                        Keys::None => return Err(TokenError::Crypto),
                    };
                    cbor(e.map(2))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                    key(e, "key")?;
                    let mut text = [0u8; 43];
                    cbor(e.str(public.to_base64(&mut text)))?;
                }
                Outgoing::Mac => {
                    let Keys::Established(established) = &v.keys else {
                        return Err(TokenError::Crypto);
                    };
                    let info = Self::mac_info(
                        (&own_user, &own_device),
                        (&v.peer_user, &v.peer_device),
                        txn,
                    )?;
                    let mut key_id: String<{ MAX_DEVICE_ID_LEN + 8 }> = String::new();
                    concat(&mut key_id, &["ed25519:", &own_device])?;
                    let mut ed_text = [0u8; 43];
                    let ed_text = jeton_olm::base64::encode(&own_ed, &mut ed_text)
                        .map_err(|_| TokenError::Crypto)?;
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
                    cbor(e.str(txn))?;
                    key(e, "mac")?;
                    cbor(e.map(1))?;
                    cbor(e.str(&key_id))?;
                    cbor(e.str(key_mac))?;
                    key(e, "keys")?;
                    cbor(e.str(ids_mac))?;
                }
                Outgoing::Done => {
                    cbor(e.map(1))?;
                    key(e, "transaction_id")?;
                    cbor(e.str(txn))?;
                }
                Outgoing::Cancel(code) => write_cancel(e, txn, code)?,
            }
            Ok(())
        })?;
        if let Some(v) = &mut self.verification.active {
            v.sending = true;
        }
        Ok(Some((len, message.event_type(), false)))
    }
}

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

/// A `sendToDevice` body with one message: `{"messages": {user: {device: content}}}`.
fn to_device_body(
    out: &mut [u8],
    user: &str,
    device: &str,
    content: impl FnOnce(&mut Encoder<Cursor<&mut [u8]>>) -> Result<(), TokenError>,
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
