//! The envelope of a protected message (RFC 8613 §5): the inner message sealed into the
//! outer one's payload under the AAD that binds it to its request, and opened again.

use ccm::aead::{AeadInOut, KeyInit};
use zeroize::Zeroize;

use jeton_proto::coap::codec::PAYLOAD_MARKER;
use jeton_proto::coap::option::{OBSERVE, PROXY_SCHEME, PROXY_URI, URI_HOST, URI_PORT};

use crate::OscoreError;
use crate::aead::AesCcm16_64_128 as Aead;
use crate::message::{Message, OptionList, decode_options, encode_options, put};

use super::option::write_oscore_option;
use super::{
    ALG_AES_CCM_16_64_128, Id, KEY_LEN, MAX_OSCORE_OPTION_LEN, NONCE_LEN, OSCORE_OPTION, PartialIv,
    RequestBinding, TAG_LEN,
};

/// Options that stay outside the protection (class U of RFC 8613 §4.1): Uri-Host,
/// Uri-Port, Proxy-Uri, Proxy-Scheme. The OSCORE option itself is outer only; Observe is
/// both inner and outer.
const fn is_outer_only(number: u16) -> bool {
    matches!(
        number,
        URI_HOST | URI_PORT | PROXY_URI | PROXY_SCHEME | OSCORE_OPTION
    )
}

/// The AAD (RFC 8613 §5.4): Enc_structure ["Encrypt0", h'', external_aad] with
/// external_aad = bstr .cbor [1, [10], request_kid, request_piv, h''].
fn aad(binding: &RequestBinding, out: &mut [u8; 40]) -> Result<usize, OscoreError> {
    let kid = binding.kid.as_bytes();
    let piv = binding.piv.as_bytes();
    let external_len = 4 + 1 + kid.len() + 1 + piv.len() + 1;
    let mut at = 0;
    put(out, &mut at, &[0x83, 0x68])?;
    put(out, &mut at, b"Encrypt0")?;
    put(out, &mut at, &[0x40, 0x40 | external_len as u8])?;
    put(out, &mut at, &[0x85, 0x01, 0x81, ALG_AES_CCM_16_64_128])?;
    put(out, &mut at, &[0x40 | kid.len() as u8])?;
    put(out, &mut at, kid)?;
    put(out, &mut at, &[0x40 | piv.len() as u8])?;
    put(out, &mut at, piv)?;
    put(out, &mut at, &[0x40])?;
    Ok(at)
}

/// Encrypts the inner message into `out` = [OSCORE option value | ciphertext | tag] and
/// returns the outer message.
pub(super) fn seal<'a>(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    binding: &RequestBinding,
    inner: &Message<'a>,
    outer_code: u8,
    option_fields: (Option<&PartialIv>, Option<&Id>),
    out: &'a mut [u8],
) -> Result<Message<'a>, OscoreError> {
    let mut option_value = [0u8; MAX_OSCORE_OPTION_LEN];
    let option_len = write_oscore_option(option_fields.0, option_fields.1, &mut option_value)?;
    let (option_out, body) = out
        .split_at_mut_checked(option_len)
        .ok_or(OscoreError::BufferTooSmall)?;
    option_out.copy_from_slice(option_value.get(..option_len).unwrap_or(&[]));

    // Plaintext: code, class-E options, 0xFF and payload.
    let mut at = 0;
    put(body, &mut at, &[inner.code])?;
    encode_options(
        inner.options.iter().filter(|(n, _)| !is_outer_only(*n)),
        body,
        &mut at,
    )?;
    if !inner.payload.is_empty() {
        put(body, &mut at, &[PAYLOAD_MARKER])?;
        put(body, &mut at, inner.payload)?;
    }
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(binding, &mut aad_buf)?;
    let cipher = Aead::new(key.into());
    let (plaintext, rest) = body.split_at_mut(at);
    let tag = cipher
        .encrypt_inout_detached(
            nonce.into(),
            aad_buf.get(..aad_len).unwrap_or(&[]),
            plaintext.into(),
        )
        .map_err(|_| OscoreError::BufferTooSmall)?;
    rest.get_mut(..TAG_LEN)
        .ok_or(OscoreError::BufferTooSmall)?
        .copy_from_slice(&tag);
    let payload = body
        .get(..at + TAG_LEN)
        .ok_or(OscoreError::BufferTooSmall)?;

    let mut options = OptionList::new();
    for (number, value) in inner.options.iter() {
        if is_outer_only(number) || number == OBSERVE {
            options.insert(number, value)?;
        }
    }
    options.insert(OSCORE_OPTION, option_out)?;
    Ok(Message {
        code: outer_code,
        options,
        payload,
    })
}

/// Decrypts an outer message's payload into `out` and returns the inner message with the
/// outer-only options merged in.
pub(super) fn open<'a>(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    binding: &RequestBinding,
    outer: &Message<'a>,
    out: &'a mut [u8],
) -> Result<Message<'a>, OscoreError> {
    let Some(ciphertext_len) = outer.payload.len().checked_sub(TAG_LEN) else {
        return Err(OscoreError::AuthenticationFailed);
    };
    let (ciphertext, tag) = outer.payload.split_at(ciphertext_len);
    let buffer = out
        .get_mut(..ciphertext_len)
        .ok_or(OscoreError::BufferTooSmall)?;
    buffer.copy_from_slice(ciphertext);
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(binding, &mut aad_buf)?;
    let cipher = Aead::new(key.into());
    let tag = tag
        .try_into()
        .map_err(|_| OscoreError::AuthenticationFailed)?;
    if cipher
        .decrypt_inout_detached(
            nonce.into(),
            aad_buf.get(..aad_len).unwrap_or(&[]),
            (&mut *buffer).into(),
            tag,
        )
        .is_err()
    {
        buffer.zeroize();
        return Err(OscoreError::AuthenticationFailed);
    }
    let plaintext: &'a [u8] = buffer;
    let (&code, rest) = plaintext
        .split_first()
        .ok_or(OscoreError::MalformedPlaintext)?;
    let mut options = OptionList::new();
    let payload = decode_options(rest, &mut options)?;
    if options.iter().any(|(n, _)| is_outer_only(n)) {
        return Err(OscoreError::MalformedPlaintext);
    }
    for (number, value) in outer.options.iter() {
        if is_outer_only(number) && number != OSCORE_OPTION {
            options.insert(number, value)?;
        }
    }
    Ok(Message {
        code,
        options,
        payload,
    })
}
