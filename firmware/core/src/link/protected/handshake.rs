//! The EDHOC handshake (RFC 9528) that agrees on the OSCORE context: where it stands, the
//! requests to the gateway's EDHOC resource, and the answers to them.

use heapless::Vec;
use jeton_link::oscore::ECHO_OPTION;
use jeton_link::{HandshakeError, Initiator, SecurityContext, encode_connection_id};
use zeroize::Zeroize;

use super::context::save_context;
use super::*;

/// The Content-Format of EDHOC requests on CoAP: application/cid-edhoc+cbor-seq (RFC 9528
/// §10.9).
const CONTENT_FORMAT_CID_EDHOC: u8 = 65;
/// The path of the EDHOC resource.
const EDHOC_PATH: [&[u8]; 2] = [b".well-known", b"edhoc"];
/// The CBOR `true` that marks message_1 on CoAP (no connection id ahead of it).
const CBOR_TRUE: u8 = 0xF5;

/// Room for `C_R || message_3` or `true || message_1` (RFC 9528 appendix A.2).
const EDHOC_PAYLOAD_BYTES: usize = 160;

/// The largest Echo value (RFC 9175 §2.2.1).
const MAX_ECHO: usize = 40;

/// The options of a POST to the gateway's EDHOC resource, the last a place for an Echo value.
const EDHOC_OPTIONS: [(u16, &[u8]); 4] = [
    (option::URI_PATH, EDHOC_PATH[0]),
    (option::URI_PATH, EDHOC_PATH[1]),
    (option::CONTENT_FORMAT, &[CONTENT_FORMAT_CID_EDHOC]),
    (ECHO_OPTION, &[]),
];

/// Where the handshake stands.
// No heap to box into: the EDHOC state is as large as lakers makes it, and it takes the
// place of the others rather than adding to them.
#[allow(clippy::large_enum_variant)]
pub(super) enum State {
    /// No pairing material: plain CoAP, as before the link existed.
    Plain,
    /// A handshake is to start (at `not_before`, after a failure).
    Due { not_before: Instant },
    /// The gateway answered message_1 with a 4.01 and an Echo value (RFC 9175, the return
    /// routability check of RFC 9528 §9.7): message_1 is to go again at once, with it.
    Challenged { echo: Vec<u8, MAX_ECHO> },
    /// message_1 is out (`echoed`: with the gateway's Echo value).
    AwaitingMessage2 {
        id: RequestId,
        initiator: Initiator,
        echoed: bool,
    },
    /// message_2 verified; `C_R || message_3` is to be queued.
    Message3Due {
        payload: Vec<u8, EDHOC_PAYLOAD_BYTES>,
        context: SecurityContext,
    },
    /// message_3 is out; the context is ready once the gateway confirms it.
    AwaitingConfirmation {
        id: RequestId,
        context: SecurityContext,
    },
    /// The context protects every exchange.
    Ready,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Plain => "Plain",
            State::Due { .. } => "Due",
            State::Challenged { .. } => "Challenged",
            State::AwaitingMessage2 { .. } => "AwaitingMessage2",
            State::Message3Due { .. } => "Message3Due",
            State::AwaitingConfirmation { .. } => "AwaitingConfirmation",
            State::Ready => "Ready",
        })
    }
}

impl ProtectedLink {
    /// Queues the handshake's next request when one is due ([`Link::plan`]).
    pub(super) fn plan_handshake<R: Rng, C: Rng, const Q: usize, const P: usize>(
        &mut self,
        coap: &mut Client<C, Q, P>,
        rng: &mut R,
        now: Instant,
    ) -> Result<(), LinkError> {
        if let State::Message3Due { payload, .. } = &self.state {
            let Ok(id) = coap.request_first(&edhoc_request(payload)) else {
                // The queue is full: the next input tries again.
                return Ok(());
            };
            let retry = State::Due { not_before: now };
            if let State::Message3Due { context, .. } = core::mem::replace(&mut self.state, retry) {
                self.state = State::AwaitingConfirmation { id, context };
            }
            return Ok(());
        }
        let echo = match &self.state {
            State::Due { not_before } if now >= *not_before => None,
            State::Challenged { echo } => Some(echo.clone()),
            _ => return Ok(()),
        };
        if self.identity.is_none() {
            return Ok(());
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let started = Initiator::start(seed);
        seed.zeroize();
        let retry = State::Due {
            not_before: now.plus_millis(HANDSHAKE_RETRY_MS),
        };
        let (initiator, message_1) = match started {
            Ok(started) => started,
            Err(error) => {
                self.state = retry;
                return Err(LinkError::Handshake(error));
            }
        };
        let mut payload: Vec<u8, EDHOC_PAYLOAD_BYTES> = Vec::new();
        let queued = payload
            .push(CBOR_TRUE)
            .ok()
            .and_then(|()| payload.extend_from_slice(message_1.as_bytes()).ok())
            .and_then(|()| {
                let mut options = EDHOC_OPTIONS;
                let len = match echo.as_deref() {
                    Some(value) => {
                        options[3] = (ECHO_OPTION, value);
                        4
                    }
                    None => 3,
                };
                let options = options.get(..len).unwrap_or_default();
                let request = Request::new(Code::POST, options, &payload);
                coap.request_first(&request).ok()
            });
        self.state = match queued {
            Some(id) => State::AwaitingMessage2 {
                id,
                initiator,
                echoed: echo.is_some(),
            },
            // The queue is full: try again later.
            None => retry,
        };
        Ok(())
    }

    /// Takes the answer to one of the handshake's requests ([`Link::on_event`]).
    pub(super) fn on_handshake_answer<S: Store>(
        &mut self,
        event: Event<'_>,
        store: &mut S,
        now: Instant,
    ) -> Result<(), LinkError> {
        // Whatever happens below but success starts over after a pause.
        let state = core::mem::replace(
            &mut self.state,
            State::Due {
                not_before: now.plus_millis(HANDSHAKE_RETRY_MS),
            },
        );
        self.edhoc_token = None;
        let Event::Response {
            code,
            body,
            options,
            ..
        } = event
        else {
            // Timed out or reset: try again after the pause.
            return Ok(());
        };
        match state {
            State::AwaitingMessage2 {
                initiator, echoed, ..
            } => {
                // Asked to prove its address: once, at once (a second challenge means the
                // value did not help, so the pause above applies).
                let mut options = options;
                let echo = options.find(|(number, _)| *number == ECHO_OPTION);
                if let (Code::UNAUTHORIZED, false, Some((_, echo))) = (code, echoed, echo)
                    && let Ok(echo) = Vec::from_slice(echo)
                {
                    self.state = State::Challenged { echo };
                    return Ok(());
                }
                if code != Code::CHANGED {
                    return Err(LinkError::Unavailable(code_number(code)));
                }
                let (Some(identity), Some(gateway)) = (&self.identity, &self.gateway) else {
                    return Ok(());
                };
                let (message_3, material) = initiator
                    .process_message_2(identity, gateway, body)
                    .map_err(LinkError::Handshake)?;
                let context = material
                    .security_context()
                    .map_err(LinkError::Oscore)?
                    .with_persisted_sequence();
                let mut c_r = [0u8; 9];
                let c_r_len = encode_connection_id(material.sender_id().as_bytes(), &mut c_r)
                    .map_err(LinkError::Handshake)?;
                let mut payload: Vec<u8, EDHOC_PAYLOAD_BYTES> = Vec::new();
                payload
                    .extend_from_slice(c_r.get(..c_r_len).unwrap_or_default())
                    .and_then(|()| payload.extend_from_slice(message_3.as_bytes()))
                    .map_err(|_| LinkError::Handshake(HandshakeError::BufferTooSmall))?;
                self.state = State::Message3Due { payload, context };
                Ok(())
            }
            State::AwaitingConfirmation { context, .. } => {
                if code.class() != 2 {
                    return Err(LinkError::Refused(code_number(code)));
                }
                save_context(store, &context, context.next_sequence())?;
                self.context = Some(context);
                self.exchanges.clear();
                self.state = State::Ready;
                self.established = true;
                self.stats.handshakes = self.stats.handshakes.saturating_add(1);
                Ok(())
            }
            other => {
                self.state = other;
                Ok(())
            }
        }
    }
}

/// A POST of an EDHOC message to the gateway's EDHOC resource.
fn edhoc_request(payload: &[u8]) -> Request<'_> {
    Request::new(Code::POST, &EDHOC_OPTIONS[..3], payload)
}

/// Whether a request goes to the EDHOC resource (and so stays unprotected).
pub(super) fn is_edhoc(message: &Message<'_>) -> bool {
    let mut path = message
        .options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| value);
    path.next() == Some(EDHOC_PATH[0])
        && path.next() == Some(EDHOC_PATH[1])
        && path.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::message::MessageType;

    #[test]
    fn the_edhoc_resource_is_recognised_by_its_whole_path() {
        let mut buf = [0u8; 64];
        let header = Header {
            message_type: MessageType::Confirmable,
            code: Code::POST,
            message_id: 1,
            token: Token::new(&[1]).unwrap_or_default(),
        };
        let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
        writer.option(option::URI_PATH, b".well-known").unwrap();
        writer.option(option::URI_PATH, b"edhoc").unwrap();
        let len = writer.finish();
        assert!(is_edhoc(&Message::decode(&buf[..len]).unwrap()));
        let mut writer = MessageWriter::new(&mut buf, &header).unwrap();
        writer.option(option::URI_PATH, b".well-known").unwrap();
        writer.option(option::URI_PATH, b"edhoc").unwrap();
        writer.option(option::URI_PATH, b"more").unwrap();
        let len = writer.finish();
        assert!(!is_edhoc(&Message::decode(&buf[..len]).unwrap()));
    }
}
