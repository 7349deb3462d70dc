//! OSCORE on each exchange (RFC 8613): requests protected on their way out, the Partial IVs
//! each request went out with, and the responses verified against them on their way in.

use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{OptionList, OscoreError, PartialIv, RequestBinding, SecurityContext};
use zeroize::Zeroize;

use super::context::save_context;
use super::handshake::is_edhoc;
use super::*;
use crate::coap::message::MessageType;

/// What a gateway's OSCORE layer answers, unprotected, to a request it cannot verify
/// (RFC 8613 §8.2): 4.01 for an unknown kid or a replay, 4.00 when decryption fails (its
/// context under that kid is another token's, made after it lost this one's), 4.02 for a
/// malformed OSCORE option.
const OSCORE_ERRORS: [Code; 3] = [Code::new(4, 0), Code::new(4, 1), Code::new(4, 2)];

/// The Partial IVs one exchange's request went out with.
#[derive(Clone, Debug)]
pub(super) struct Exchange {
    token: Token,
    /// A (re-)registration of the observation: its notifications come for long.
    observe: bool,
    sequences: Vec<u64, MAX_TRANSMISSIONS>,
    /// The Partial IV of the last notification accepted (they must increase).
    last_notification: Option<u64>,
}

impl ProtectedLink {
    /// Protects a request the engine wrote ([`Link::outgoing`]).
    pub(super) fn protect<S: Store>(
        &mut self,
        datagram: &mut [u8],
        len: usize,
        store: &mut S,
        scratch: &mut [u8],
    ) -> Result<Outgoing, LinkError> {
        if !self.is_enabled() {
            return Ok(Outgoing::Send(len));
        }
        let too_large = LinkError::Oscore(OscoreError::BufferTooSmall);
        let (sealed, rewritten) = scratch
            .get_mut(..2 * MAX_DATAGRAM)
            .ok_or(too_large)?
            .split_at_mut(MAX_DATAGRAM);
        let (out_len, token, observe, sequence) = {
            let Some(Ok(message)) = datagram.get(..len).map(Message::decode) else {
                return Ok(Outgoing::Send(len));
            };
            let header = message.header;
            if !header.code.is_request() {
                return Ok(Outgoing::Send(len));
            }
            if is_edhoc(&message) {
                self.edhoc_token = Some(header.token);
                self.count_handshake_bytes(len);
                return Ok(Outgoing::Send(len));
            }
            let (State::Ready, Some(context)) = (&self.state, self.context.as_mut()) else {
                self.stats.held = self.stats.held.saturating_add(1);
                return Ok(Outgoing::Hold);
            };
            if let Some(mark) = context.sequence_to_persist() {
                save_context(store, context, mark)?;
                context.sequence_persisted(mark);
            }
            let mut options = OptionList::new();
            for (number, value) in message.options() {
                options.push(number, value).map_err(LinkError::Oscore)?;
            }
            let observe = options.get(option::OBSERVE).is_some();
            let inner = jeton_link::Message {
                code: header.code.0,
                options,
                payload: message.payload,
            };
            let sequence = context.next_sequence();
            let (outer, _) = context
                .protect_request(&inner, sealed)
                .map_err(LinkError::Oscore)?;
            let out_len = write(rewritten, &header, &outer).map_err(|_| too_large)?;
            (out_len, header.token, observe, sequence)
        };
        datagram
            .get_mut(..out_len)
            .ok_or(too_large)?
            .copy_from_slice(rewritten.get(..out_len).unwrap_or_default());
        self.remember(token, observe, sequence);
        self.stats.protected = self.stats.protected.saturating_add(1);
        Ok(Outgoing::Send(out_len))
    }

    /// Checks a datagram from the gateway ([`Link::incoming`]).
    pub(super) fn verify(&mut self, datagram: &[u8], scratch: &mut [u8], now: Instant) -> Incoming {
        if !self.is_enabled() {
            return Incoming::Pass;
        }
        let Ok(message) = Message::decode(datagram) else {
            // The engine counts it and answers a malformed CON with RST.
            return Incoming::Pass;
        };
        let header = message.header;
        if header.code.is_empty() {
            return Incoming::Pass;
        }
        let oscore = message.option(OSCORE_OPTION);
        if oscore.is_none() && self.edhoc_token == Some(header.token) {
            self.count_handshake_bytes(datagram.len());
            return Incoming::Pass;
        }
        let Some(exchange) = self.exchanges.iter_mut().find(|e| e.token == header.token) else {
            return self.reject();
        };
        let Some(oscore) = oscore else {
            if OSCORE_ERRORS.contains(&header.code)
                && header.message_type == MessageType::Acknowledgement
            {
                self.context = None;
                self.exchanges.clear();
                self.state = State::Due { not_before: now };
                return Incoming::Fail(header.message_id);
            }
            return self.reject();
        };
        let Some(context) = self.context.as_mut() else {
            return self.reject();
        };
        let notification = match jeton_link::OscoreOption::parse(oscore) {
            Ok(parsed) => parsed.piv.map(piv_number),
            Err(_) => return self.reject(),
        };
        if let (true, Some(number), Some(last)) =
            (exchange.observe, notification, exchange.last_notification)
            && number < last
        {
            // An older notification, replayed or reordered. The last one again is a
            // retransmission (its ACK was lost, or the engine deferred it): it passes, and the
            // engine recognises the duplicate by its message id.
            return self.reject();
        }
        let mut options = OptionList::new();
        for (number, value) in message.options() {
            if options.push(number, value).is_err() {
                return self.reject();
            }
        }
        let outer = jeton_link::Message {
            code: header.code.0,
            options,
            payload: message.payload,
        };
        let verified = unprotect(context, &exchange.sequences, &message, &outer, scratch);
        let Some(len) = verified else {
            return self.reject();
        };
        if exchange.observe && notification.is_some() {
            exchange.last_notification = notification;
        }
        self.stats.verified = self.stats.verified.saturating_add(1);
        Incoming::Rewritten(len)
    }

    /// Notes that a request with this token went out with this sequence number.
    fn remember(&mut self, token: Token, observe: bool, sequence: u64) {
        if let Some(exchange) = self.exchanges.iter_mut().find(|e| e.token == token) {
            if exchange.sequences.is_full() {
                exchange.sequences.remove(0);
            }
            let _ = exchange.sequences.push(sequence);
            exchange.observe |= observe;
            return;
        }
        if self.exchanges.is_full() {
            // The oldest exchange goes, but the observation only for a new observation:
            // its notifications keep coming long after its request.
            let victim = self
                .exchanges
                .iter()
                .position(|e| !e.observe || observe)
                .unwrap_or(0);
            self.exchanges.remove(victim);
        }
        let mut sequences = Vec::new();
        let _ = sequences.push(sequence);
        let _ = self.exchanges.push(Exchange {
            token,
            observe,
            sequences,
            last_notification: None,
        });
    }
}

/// Verifies `outer`, the protected response `message`, against each Partial IV of `sequences`,
/// the newest first, and writes the first that verifies (Observe read from the outer message)
/// into `scratch`'s first datagram: its length. `None` when none verifies, or `scratch` holds
/// no two datagrams.
fn unprotect(
    context: &mut SecurityContext,
    sequences: &[u64],
    message: &Message<'_>,
    outer: &jeton_link::Message<'_>,
    scratch: &mut [u8],
) -> Option<usize> {
    let header = message.header;
    let (rewritten, plain) = scratch
        .get_mut(..2 * MAX_DATAGRAM)
        .map(|both| both.split_at_mut(MAX_DATAGRAM))?;
    let mut verified = None;
    for sequence in sequences.iter().rev() {
        let binding = RequestBinding {
            kid: *context.sender_id(),
            piv: PartialIv::from_sequence(*sequence),
        };
        if let Ok(inner) = context.unprotect_response(&binding, outer, plain) {
            let mut inner = inner;
            if inner.options.get(option::OBSERVE).is_none()
                && let Some(observe) = message.option(option::OBSERVE)
            {
                // Observe is read from the outer message (RFC 8613 §4.1.3.5.2).
                if inner.options.insert(option::OBSERVE, observe).is_err() {
                    break;
                }
            }
            verified = write(rewritten, &header, &inner).ok();
            break;
        }
    }
    plain.zeroize();
    verified
}

/// The number a Partial IV encodes (big-endian, at most 5 bytes).
fn piv_number(piv: &[u8]) -> u64 {
    piv.iter().fold(0, |n, byte| n << 8 | u64::from(*byte))
}

/// Writes a message with `header`'s type, id and token and `body`'s code, options and
/// payload; returns its length.
fn write(
    out: &mut [u8],
    header: &Header,
    body: &jeton_link::Message<'_>,
) -> Result<usize, crate::coap::message::EncodeError> {
    let mut writer = MessageWriter::new(
        out,
        &Header {
            code: Code(body.code),
            ..*header
        },
    )?;
    for (number, value) in body.options.iter() {
        writer.option(number, value)?;
    }
    writer.payload(body.payload)?;
    Ok(writer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link with a ready context that has sent one request with CoAP token `[7, 7]`.
    fn ready_link() -> ProtectedLink {
        let material = KeyFile {
            identity: Identity::generate([1; 32], b"\x01", "token").unwrap(),
            peer: Some(
                *Identity::generate([2; 32], b"\x02", "gw")
                    .unwrap()
                    .credential(),
            ),
        };
        let mut store: crate::store::MemoryStore<4, 256> = crate::store::MemoryStore::new();
        let mut link = ProtectedLink::plain();
        link.load(Some(material), &mut store, &mut [0u8; 256], Instant::ZERO)
            .unwrap();
        link.context = Some(SecurityContext::derive(&[3; 16], &[4; 8], &[5], &[6]).unwrap());
        link.state = State::Ready;
        link.remember(Token::new(&[7, 7]).unwrap_or_default(), true, 0);
        link
    }

    proptest::proptest! {
        /// Nothing without the key reaches the engine: arbitrary bytes, and arbitrary options
        /// and payload behind the header of a response to the outstanding request.
        #[test]
        fn forged_datagrams_never_pass_as_verified(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            raw in proptest::prelude::any::<bool>(),
        ) {
            let mut link = ready_link();
            let mut datagram = if raw {
                Vec::<u8, 320>::new()
            } else {
                // ACK 2.04, message id 1, token [7, 7], then an OSCORE option (delta 9).
                Vec::from_slice(&[0x62, 0x44, 0x00, 0x01, 7, 7, 0x90]).unwrap_or_default()
            };
            let _ = datagram.extend_from_slice(&body);
            let mut scratch = [0u8; 2 * MAX_DATAGRAM];
            let verdict = link.incoming(&datagram, &mut scratch, Instant::ZERO);
            proptest::prop_assert!(!matches!(verdict, Incoming::Rewritten(_)), "{verdict:?}");
        }
    }
}
