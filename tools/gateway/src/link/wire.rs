//! Between coap-lite's packets and jeton-link's messages, and the answers the link writes
//! itself.

use std::hash::{DefaultHasher, Hash, Hasher};

use coap_lite::{CoapOption, Packet};
use jeton_link::{Message, OptionList, OscoreError};

use crate::message;
use crate::profile::CONTENT_FORMAT_TEXT;

/// A fingerprint of a datagram, to tell a retransmission from a new message under the same id.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The options of a coap-lite packet as the link's list (coap-lite keeps them sorted).
pub(super) fn options_of(packet: &Packet) -> Result<OptionList<'_>, OscoreError> {
    let mut list = OptionList::new();
    for (number, values) in packet.options() {
        for value in values {
            list.push(*number, value)?;
        }
    }
    Ok(list)
}

/// A packet with `packet`'s header and token and this code, options and payload.
pub(super) fn repack(packet: &Packet, message: &Message<'_>) -> Vec<u8> {
    let mut out = message::build(
        packet.header.get_type(),
        message.code,
        packet.header.message_id,
        packet.get_token(),
    );
    for (number, value) in message.options.iter() {
        out.add_option(CoapOption::from(number), value.to_vec());
    }
    out.payload = message.payload.to_vec();
    message::to_datagram(&out)
}

/// A response to `request`: piggybacked on the ACK of a CON, a NON otherwise.
pub(super) fn reply(
    request: &Packet,
    status: u8,
    content_format: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut packet = message::response_to(request, status);
    if let Some(format) = content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u64::from(format)),
        );
    }
    packet.payload = payload.to_vec();
    message::to_datagram(&packet)
}

/// An error response with a diagnostic text payload.
pub(super) fn error_reply(request: &Packet, status: u8, text: &[u8]) -> Vec<u8> {
    reply(request, status, Some(CONTENT_FORMAT_TEXT), text)
}

/// Whether a datagram the link made is a success (a 2.xx response).
pub(super) fn is_success(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|code| code >> 5 == 2)
}
