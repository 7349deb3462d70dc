//! The RFC 7252 message format over UDP: encoding into a caller's buffer and zero-copy
//! decoding of a received datagram.
//!
//! This module owns the bytes on the wire around the options: the 4-byte header, the token
//! and the payload. The option sequence itself (delta and length extensions, the payload
//! marker, `uint` values) is jeton-proto's codec, shared with the link; numbers are integers
//! here, their meaning lives in [`super::option`].
//!
//! # Why not a crate
//!
//! `coap-lite` needs `alloc`. `coap-message-implementations` is `no_std` without `alloc`,
//! but its in-memory messages cover only code, options and payload: the UDP header, token
//! and message id framing is left to the user, and its trait layering
//! (`MinimalWritableMessage`, associated error types, option iterators yielding trait
//! objects) would be wrapped on both sides here. What remains is a codec of about two
//! hundred lines that is validated once on decode, never allocates, and is fuzzed below.

use core::fmt;

use jeton_proto::coap::codec::{OptionError, PAYLOAD_MARKER, option_head, split_options};
pub use jeton_proto::coap::codec::{Options, decode_uint, encode_uint};

/// The largest token RFC 7252 allows.
pub const MAX_TOKEN_LEN: usize = 8;

/// Bytes of the fixed header (version, type, token length, code, message id).
pub const HEADER_LEN: usize = 4;

const VERSION: u8 = 1;

/// The four message types of RFC 7252 §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Needs an acknowledgement; retransmitted until one arrives.
    Confirmable,
    /// Needs no acknowledgement.
    NonConfirmable,
    /// Acknowledges a confirmable message, possibly carrying the response.
    Acknowledgement,
    /// Rejects a message the receiver cannot process.
    Reset,
}

impl MessageType {
    const fn from_bits(bits: u8) -> MessageType {
        match bits & 0b11 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    const fn bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }
}

/// A request method or response code: three bits of class, five of detail (`c.dd`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    /// 0.00: an empty message (a bare ACK or RST).
    pub const EMPTY: Code = Code(0x00);
    /// 0.01 GET.
    pub const GET: Code = Code(0x01);
    /// 0.02 POST.
    pub const POST: Code = Code(0x02);
    /// 0.03 PUT.
    pub const PUT: Code = Code(0x03);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code(0x04);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959): send the next Block1 block.
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized; with an Echo option, "repeat the request with this value" (RFC 9175).
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);

    /// The code `class.detail`; `detail` keeps its low five bits.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1F))
    }

    /// The class digit: 0 request, 2 success, 4 client error, 5 server error.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The two detail digits.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1F
    }

    /// Whether this is 0.00, the code of empty messages.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether this is a request method (class 0, not empty).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && !self.is_empty()
    }

    /// Whether this is a response code (class 2 to 5).
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2..=5)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A message token: 0 to 8 opaque bytes that match a response to its request.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Token {
    len: u8,
    bytes: [u8; MAX_TOKEN_LEN],
}

impl Token {
    /// The zero-length token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; MAX_TOKEN_LEN],
    };

    /// A token with these bytes, or `None` if there are more than eight.
    pub fn new(bytes: &[u8]) -> Option<Token> {
        let mut token = Token::EMPTY;
        token.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        token.len = bytes.len() as u8;
        Some(token)
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// The header fields of a message, in the order they appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// CON, NON, ACK or RST.
    pub message_type: MessageType,
    /// Method, response code, or 0.00 for an empty message.
    pub code: Code,
    /// Matches an ACK or RST to its CON, and detects duplicates.
    pub message_id: u16,
    /// Matches a response to its request.
    pub token: Token,
}

/// Why a datagram is not a well-formed CoAP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram is shorter than the 4-byte header plus the token it announces.
    Truncated,
    /// The version field is not 1.
    UnknownVersion,
    /// The token length field is 9 to 15, which RFC 7252 reserves.
    InvalidTokenLength,
    /// An empty message (code 0.00) carries a token, options or payload.
    NonEmptyEmptyMessage,
    /// An option header uses the reserved nibble 15, or its number exceeds 65535.
    InvalidOption,
    /// An option's length runs past the end of the datagram.
    OptionTruncated,
    /// A payload marker is followed by no payload.
    EmptyPayload,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "the datagram is shorter than its CoAP header and token",
            DecodeError::UnknownVersion => "the datagram is not CoAP version 1",
            DecodeError::InvalidTokenLength => "the token length is above 8",
            DecodeError::NonEmptyEmptyMessage => {
                "an empty message carries a token, options or payload"
            }
            DecodeError::InvalidOption => "an option header is malformed",
            DecodeError::OptionTruncated => "an option value runs past the end of the datagram",
            DecodeError::EmptyPayload => "a payload marker is followed by no payload",
        })
    }
}

impl core::error::Error for DecodeError {}

impl From<OptionError> for DecodeError {
    fn from(error: OptionError) -> Self {
        match error {
            OptionError::Truncated => DecodeError::OptionTruncated,
            OptionError::EmptyPayload => DecodeError::EmptyPayload,
            _ => DecodeError::InvalidOption,
        }
    }
}

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer cannot hold the message.
    BufferTooSmall,
    /// Options must be written in ascending order of their numbers.
    OptionOutOfOrder,
    /// An option was written after the payload.
    OptionAfterPayload,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "the buffer is too small for the CoAP message",
            EncodeError::OptionOutOfOrder => "CoAP options were given out of ascending order",
            EncodeError::OptionAfterPayload => "a CoAP option was given after the payload",
        })
    }
}

impl core::error::Error for EncodeError {}

/// A decoded message borrowing from the datagram it came from.
///
/// [`Message::decode`] checks the whole datagram, so reading options afterwards cannot
/// fail.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The header fields.
    pub header: Header,
    options: &'a [u8],
    /// The payload, empty when there is none.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Decodes and validates a datagram.
    pub fn decode(datagram: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let (fixed, rest) = datagram
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(DecodeError::Truncated)?;
        let [first, code, id_high, id_low] = *fixed;
        if first >> 6 != VERSION {
            return Err(DecodeError::UnknownVersion);
        }
        let token_len = usize::from(first & 0x0F);
        if token_len > MAX_TOKEN_LEN {
            return Err(DecodeError::InvalidTokenLength);
        }
        let (token, after_token) = rest
            .split_at_checked(token_len)
            .ok_or(DecodeError::Truncated)?;
        let code = Code(code);
        if code.is_empty() && (token_len != 0 || !after_token.is_empty()) {
            return Err(DecodeError::NonEmptyEmptyMessage);
        }
        let (options, payload) = split_options(after_token).map_err(DecodeError::from)?;
        Ok(Message {
            header: Header {
                message_type: MessageType::from_bits(first >> 4),
                code,
                message_id: u16::from_be_bytes([id_high, id_low]),
                token: Token::new(token).ok_or(DecodeError::InvalidTokenLength)?,
            },
            options,
            payload,
        })
    }

    /// The options in wire order (ascending numbers).
    pub fn options(&self) -> Options<'a> {
        Options::new(self.options)
    }

    /// The encoded option bytes, for keeping a copy; [`Options::new`] reads them back.
    pub fn raw_options(&self) -> &'a [u8] {
        self.options
    }

    /// The value of the first option with this number.
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        self.options().find(|(n, _)| *n == number).map(|(_, v)| v)
    }

    /// The first option with this number read as an unsigned integer; `None` when absent
    /// or longer than four bytes.
    pub fn uint_option(&self, number: u16) -> Option<u32> {
        self.option(number).and_then(decode_uint)
    }
}

/// Writes one message into a caller's buffer: header first, then options in ascending
/// order, then the payload.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    last_option: u16,
    payload_written: bool,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message with this header.
    pub fn new(buf: &'b mut [u8], header: &Header) -> Result<MessageWriter<'b>, EncodeError> {
        let token = header.token.as_bytes();
        let first = (VERSION << 6) | (header.message_type.bits() << 4) | token.len() as u8;
        let [id_high, id_low] = header.message_id.to_be_bytes();
        let mut writer = MessageWriter {
            buf,
            len: 0,
            last_option: 0,
            payload_written: false,
        };
        writer.push(&[first, header.code.0, id_high, id_low])?;
        writer.push(token)?;
        Ok(writer)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends an option; `number` must not be below the previous option's.
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<(), EncodeError> {
        if self.payload_written {
            return Err(EncodeError::OptionAfterPayload);
        }
        if number < self.last_option {
            return Err(EncodeError::OptionOutOfOrder);
        }
        let (head, head_len) = option_head(number - self.last_option, value.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        // Checked up front so that a failed option leaves the message as it was.
        if head_len + value.len() > self.remaining() {
            return Err(EncodeError::BufferTooSmall);
        }
        self.push(head.get(..head_len).unwrap_or(&[]))?;
        self.push(value)?;
        self.last_option = number;
        Ok(())
    }

    /// Appends an option holding an unsigned integer in its shortest form.
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<(), EncodeError> {
        let (bytes, len) = encode_uint(value);
        self.option(number, bytes.get(4 - len..).unwrap_or(&[]))
    }

    /// Appends the payload marker and payload; an empty payload writes nothing.
    pub fn payload(&mut self, payload: &[u8]) -> Result<(), EncodeError> {
        if payload.is_empty() {
            return Ok(());
        }
        self.push(&[PAYLOAD_MARKER])?;
        self.push(payload)?;
        self.payload_written = true;
        Ok(())
    }

    /// The message's length in bytes so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written (never true after [`MessageWriter::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes left in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// Ends the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(message_type: MessageType, code: Code, message_id: u16, token: &[u8]) -> Header {
        Header {
            message_type,
            code,
            message_id,
            token: Token::new(token).unwrap(),
        }
    }

    /// RFC 7252 Appendix A, Figure 16: a CON GET with message id 0x7d34, no token,
    /// Uri-Path "temperature". Bytes hand-assembled from §3 and §3.1: 0x40 (ver 1, CON,
    /// TKL 0), 0x01 (GET), 0x7d34, option delta 11 and length 11 -> 0xBB.
    const GET_TEMPERATURE: &[u8] = b"\x40\x01\x7d\x34\xbbtemperature";

    /// The piggybacked response of that figure: ACK (0x60), 2.05 (0x45), same id, payload
    /// marker, "22.3 C".
    const CONTENT_22_3: &[u8] = b"\x60\x45\x7d\x34\xff22.3 C";

    #[test]
    fn rfc7252_get_request_encodes_to_the_figure_bytes() {
        let mut buf = [0u8; 64];
        let mut writer = MessageWriter::new(
            &mut buf,
            &header(MessageType::Confirmable, Code::GET, 0x7d34, &[]),
        )
        .unwrap();
        writer.option(11, b"temperature").unwrap();
        let len = writer.finish();
        assert_eq!(&buf[..len], GET_TEMPERATURE);
    }

    #[test]
    fn rfc7252_piggybacked_response_decodes() {
        let message = Message::decode(CONTENT_22_3).unwrap();
        assert_eq!(message.header.message_type, MessageType::Acknowledgement);
        assert_eq!(message.header.code, Code::CONTENT);
        assert_eq!(message.header.message_id, 0x7d34);
        assert_eq!(message.header.token, Token::EMPTY);
        assert_eq!(message.options().count(), 0);
        assert_eq!(message.payload, b"22.3 C");
    }

    /// Hand-built from RFC 7252 §3: CON with TKL 2 (0x42), 2.05, id 0x1234, token 0xbeef,
    /// Content-Format 60 (delta 12, length 1: 0xC1 0x3C), Max-Age 60 (delta 2, length 1:
    /// 0x21 0x3C), payload "hi".
    #[test]
    fn options_with_small_deltas_round_trip() {
        let bytes = b"\x42\x45\x12\x34\xbe\xef\xc1\x3c\x21\x3c\xffhi";
        let message = Message::decode(bytes).unwrap();
        assert_eq!(message.header.token.as_bytes(), &[0xbe, 0xef]);
        let options: Vec<_> = message.options().collect();
        assert_eq!(options, vec![(12, &[60u8][..]), (14, &[60u8][..])]);
        assert_eq!(message.uint_option(12), Some(60));

        let mut buf = [0u8; 64];
        let mut writer = MessageWriter::new(&mut buf, &message.header).unwrap();
        writer.uint_option(12, 60).unwrap();
        writer.uint_option(14, 60).unwrap();
        writer.payload(b"hi").unwrap();
        let len = writer.finish();
        assert_eq!(&buf[..len], bytes);
    }

    /// RFC 7252 §3.1: delta 13..268 takes one extension byte (value - 13), 269 and above
    /// two (value - 269). Option 60 with a 300-byte value, then the profile's 256 and 257.
    #[test]
    fn extended_deltas_and_lengths_use_the_rfc_offsets() {
        let mut buf = [0u8; 512];
        let mut writer = MessageWriter::new(
            &mut buf,
            &header(MessageType::NonConfirmable, Code::POST, 1, &[]),
        )
        .unwrap();
        writer.option(60, &[0xAA; 300]).unwrap();
        writer.option(256, b"tok").unwrap();
        writer.option(257, &[2]).unwrap();
        let len = writer.finish();
        // Option 60: delta 60 -> nibble 13, ext 47; len 300 -> nibble 14, ext 0x001F.
        assert_eq!(&buf[4..8], &[0xDE, 47, 0x00, 0x1F]);
        // Option 256: delta 196 -> nibble 13, ext 183; len 3.
        assert_eq!(&buf[308..310], &[0xD3, 183]);
        assert_eq!(&buf[310..313], b"tok");
        // Option 257: delta 1, len 1.
        assert_eq!(&buf[313..315], &[0x11, 2]);
        assert_eq!(len, 315);

        let message = Message::decode(&buf[..len]).unwrap();
        let numbers: Vec<u16> = message.options().map(|(n, _)| n).collect();
        assert_eq!(numbers, vec![60, 256, 257]);
        assert_eq!(message.option(256), Some(&b"tok"[..]));
    }

    #[test]
    fn two_byte_delta_extension_decodes() {
        // Option 2000: delta nibble 14, ext 2000 - 269 = 1731 = 0x06C3, empty value.
        let bytes = b"\x50\x01\x00\x01\xe0\x06\xc3";
        let message = Message::decode(bytes).unwrap();
        assert_eq!(message.options().collect::<Vec<_>>(), vec![(2000, &[][..])]);
    }

    #[test]
    fn malformed_datagrams_are_rejected_with_the_reason() {
        let cases: &[(&[u8], DecodeError)] = &[
            (b"\x40\x01\x00", DecodeError::Truncated),
            (b"\x80\x01\x00\x01", DecodeError::UnknownVersion),
            (b"\x49\x01\x00\x01", DecodeError::InvalidTokenLength),
            (b"\x44\x01\x00\x01\xaa", DecodeError::Truncated),
            (b"\x41\x00\x00\x01\xaa", DecodeError::NonEmptyEmptyMessage),
            (
                b"\x60\x00\x00\x01\xff\x01",
                DecodeError::NonEmptyEmptyMessage,
            ),
            (b"\x40\x01\x00\x01\xf0", DecodeError::InvalidOption),
            (b"\x40\x01\x00\x01\x0f", DecodeError::InvalidOption),
            (b"\x40\x01\x00\x01\xb5ab", DecodeError::OptionTruncated),
            (b"\x40\x01\x00\x01\xd0", DecodeError::OptionTruncated),
            (b"\x40\x01\x00\x01\xe0\x01", DecodeError::OptionTruncated),
            (b"\x40\x01\x00\x01\xff", DecodeError::EmptyPayload),
            // Two deltas that add up past 65535.
            (
                b"\x40\x01\x00\x01\xe0\xfe\xf2\xe0\xfe\xf2",
                DecodeError::InvalidOption,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                Message::decode(bytes).err(),
                Some(*expected),
                "datagram {bytes:02x?}"
            );
        }
    }

    #[test]
    fn writer_rejects_misuse_and_small_buffers() {
        let mut buf = [0u8; 8];
        let mut writer = MessageWriter::new(
            &mut buf,
            &header(MessageType::Confirmable, Code::GET, 1, &[]),
        )
        .unwrap();
        writer.option(11, b"a").unwrap();
        assert_eq!(writer.option(6, b""), Err(EncodeError::OptionOutOfOrder));
        assert_eq!(writer.option(12, b"abcd"), Err(EncodeError::BufferTooSmall));
        writer.payload(b"x").unwrap();
        assert_eq!(writer.option(60, b""), Err(EncodeError::OptionAfterPayload));

        let mut tiny = [0u8; 5];
        assert_eq!(
            MessageWriter::new(
                &mut tiny,
                &header(MessageType::Confirmable, Code::GET, 1, &[1, 2])
            )
            .err(),
            Some(EncodeError::BufferTooSmall)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(message) = Message::decode(&bytes) {
                // A message that decodes re-encodes to the same bytes.
                let mut buf = [0u8; 80];
                let mut writer = MessageWriter::new(&mut buf, &message.header).unwrap();
                for (number, value) in message.options() {
                    writer.option(number, value).unwrap();
                }
                writer.payload(message.payload).unwrap();
                let len = writer.finish();
                // Deltas and lengths have exactly one encoding each (the extensions are
                // offset by 13 and 269), so a valid datagram re-encodes to itself.
                prop_assert_eq!(&buf[..len], &bytes[..]);
            }
        }

        #[test]
        fn written_messages_decode_to_what_was_written(
            message_type in 0u8..4,
            code in any::<u8>(),
            message_id in any::<u16>(),
            token in proptest::collection::vec(any::<u8>(), 0..=8),
            mut options in proptest::collection::vec(
                (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            options.sort_by_key(|(number, _)| *number);
            let code = if code == 0 { Code::GET } else { Code(code) };
            let header = Header {
                message_type: MessageType::from_bits(message_type),
                code,
                message_id,
                token: Token::new(&token).unwrap(),
            };
            let mut buf = vec![0u8; 4096];
            let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
            for (number, value) in &options {
                writer.option(*number, value).unwrap();
            }
            writer.payload(&payload).unwrap();
            let len = writer.finish();
            let message = Message::decode(&buf[..len]).unwrap();
            prop_assert_eq!(message.header, header);
            let decoded: Vec<(u16, Vec<u8>)> =
                message.options().map(|(n, v)| (n, v.to_vec())).collect();
            prop_assert_eq!(decoded, options);
            prop_assert_eq!(message.payload, &payload[..]);
        }
    }
}
