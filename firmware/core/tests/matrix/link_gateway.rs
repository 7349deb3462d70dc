//! The gateway's end of the protected link in front of the fake gateway: an EDHOC responder
//! at `/.well-known/edhoc` and OSCORE on every other message, built on jeton-link's
//! `Responder` and `SecurityContext` (the code the real gateway runs). It records what the
//! wire shows: every (kid, Partial IV) of a protected request, unprotected requests, and
//! the size of each message with and without protection.
#![allow(dead_code)]

use std::collections::HashMap;

use jeton_core::coap::message::{Code, Header, Message, MessageType};
use jeton_core::coap::option;
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{
    Credential, Identity, OptionList, OscoreOption, RequestBinding, Responder, SecurityContext,
    split_connection_id,
};

use crate::gateway::FakeGateway;
use crate::support::encode;

pub(crate) struct LinkGateway {
    identity: Identity,
    pub authorised: Vec<Credential>,
    /// Handshakes waiting for message_3, by the gateway's connection id.
    pending: HashMap<Vec<u8>, Responder>,
    /// Contexts by the kid the token's requests carry (the gateway's recipient id).
    contexts: HashMap<Vec<u8>, SecurityContext>,
    /// The binding of the last request of each CoAP token, with the context's kid.
    bindings: HashMap<Vec<u8>, (Vec<u8>, RequestBinding)>,
    next_connection_id: u8,
    seed: u8,
    outbox: Vec<Vec<u8>>,
    /// `(kid, Partial IV)` of every protected request that arrived.
    pub seen: Vec<(Vec<u8>, u64)>,
    /// Requests without OSCORE outside EDHOC, and those among them carrying option 256.
    pub unprotected: u32,
    pub access_token_in_clear: u32,
    /// Requests that carried the access token (inside OSCORE).
    pub access_token_sent: u32,
    /// Handshakes completed and refused.
    pub handshakes: u32,
    pub refused: u32,
    /// Protected requests that failed verification.
    pub rejected: u32,
    /// `(plain, protected)` sizes of every request and response.
    pub sizes: Vec<(usize, usize)>,
    /// The Echo value a message_1 must carry (RFC 9175), as the real gateway asks of an
    /// address that has not proven itself; `None`: none asked.
    pub echo: Option<Vec<u8>>,
    /// Ask for it even when the message_1 carries it (a gateway the value never satisfies).
    pub echo_every_time: bool,
    /// 4.01 Echo challenges sent.
    pub challenges: u32,
}

impl LinkGateway {
    pub(crate) fn new(identity: Identity, authorised: Vec<Credential>) -> Self {
        LinkGateway {
            identity,
            authorised,
            pending: HashMap::new(),
            contexts: HashMap::new(),
            bindings: HashMap::new(),
            next_connection_id: 0x10,
            seed: 0,
            outbox: Vec::new(),
            seen: Vec::new(),
            unprotected: 0,
            access_token_in_clear: 0,
            access_token_sent: 0,
            handshakes: 0,
            refused: 0,
            rejected: 0,
            sizes: Vec::new(),
            echo: None,
            echo_every_time: false,
            challenges: 0,
        }
    }

    /// The keys and common IVs of the contexts it holds (the token's too, swapped).
    pub(crate) fn context_secrets(&self) -> Vec<Vec<u8>> {
        // A context record: version, sender key, recipient key, common IV, then the ids.
        let (key, iv) = (16, 13);
        self.contexts
            .values()
            .flat_map(|context| {
                let record = context.to_record().as_bytes().to_vec();
                [
                    record[1..1 + key].to_vec(),
                    record[1 + key..1 + 2 * key].to_vec(),
                    record[1 + 2 * key..1 + 2 * key + iv].to_vec(),
                ]
            })
            .collect()
    }

    /// Forgets every context, as a restarted gateway does.
    pub(crate) fn forget_contexts(&mut self) {
        self.contexts.clear();
        self.pending.clear();
        self.bindings.clear();
    }

    /// Puts a stranger's context under every kid, as a restarted gateway that handed the
    /// token's old kid to another token's handshake has: the token's requests no longer
    /// decrypt.
    pub(crate) fn give_kids_to_strangers(&mut self) {
        for (kid, context) in self.contexts.iter_mut() {
            *context = SecurityContext::derive(&[0x99; 16], &[0x98; 8], &[0x42], kid).unwrap();
        }
        self.bindings.clear();
    }

    fn reply(&mut self, request: &Header, code: Code, payload: &[u8]) {
        let header = Header {
            message_type: MessageType::Acknowledgement,
            code,
            message_id: request.message_id,
            token: request.token,
        };
        self.outbox.push(encode(header, &[], payload));
    }

    pub(crate) fn handle_datagram(&mut self, gw: &mut FakeGateway, now: u64, datagram: &[u8]) {
        let Ok(message) = Message::decode(datagram) else {
            return;
        };
        let header = message.header;
        if !header.code.is_request() {
            gw.handle_datagram(now, datagram);
            return;
        }
        let path: Vec<&[u8]> = message
            .options()
            .filter(|(n, _)| *n == option::URI_PATH)
            .map(|(_, v)| v)
            .collect();
        if path == [&b".well-known"[..], b"edhoc"] {
            let echo = message.option(jeton_link::oscore::ECHO_OPTION);
            self.edhoc(&header, echo, message.payload);
            return;
        }
        let Some(oscore) = message.option(OSCORE_OPTION) else {
            self.unprotected += 1;
            if message.option(option::ACCESS_TOKEN).is_some() {
                self.access_token_in_clear += 1;
            }
            self.reply(&header, Code::new(4, 1), b"");
            return;
        };
        let kid = OscoreOption::parse(oscore)
            .unwrap()
            .kid
            .unwrap_or(&[])
            .to_vec();
        let outer = jeton_link::Message {
            code: header.code.0,
            options: OptionList::from_sorted(&message.options().collect::<Vec<_>>()).unwrap(),
            payload: message.payload,
        };
        let Some(context) = self.contexts.get_mut(&kid) else {
            self.reply(&header, Code::new(4, 1), b"Security context not found");
            return;
        };
        let mut plain = vec![0u8; 2048];
        let request = match context.unprotect_request(&outer, &mut plain) {
            Ok(request) => request,
            Err(error) => {
                // As the real gateway: 4.00 unprotected (RFC 8613 §8.2).
                eprintln!("link gateway: rejected {kid:?} {oscore:02x?}: {error:?}");
                self.rejected += 1;
                self.reply(&header, Code::new(4, 0), b"");
                return;
            }
        };
        self.seen
            .push((kid.clone(), request.binding.piv.sequence()));
        let inner = request.message;
        // Counted per request: the later blocks of a Block1 upload repeat its options.
        let later_block = inner
            .options
            .get(option::BLOCK1)
            .is_some_and(|v| v.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) >> 4 != 0);
        if inner.options.get(option::ACCESS_TOKEN).is_some() && !later_block {
            self.access_token_sent += 1;
        }
        let options: Vec<(u16, Vec<u8>)> =
            inner.options.iter().map(|(n, v)| (n, v.to_vec())).collect();
        let plain_datagram = encode(
            Header {
                code: Code(inner.code),
                ..header
            },
            &options,
            inner.payload,
        );
        self.sizes.push((plain_datagram.len(), datagram.len()));
        self.bindings
            .insert(header.token.as_bytes().to_vec(), (kid, request.binding));
        gw.handle_datagram(now, &plain_datagram);
    }

    fn edhoc(&mut self, header: &Header, echo: Option<&[u8]>, payload: &[u8]) {
        self.seed = self.seed.wrapping_add(1);
        if let (Some(wanted), Some(_)) = (self.echo.clone(), payload.strip_prefix(&[0xF5]))
            && (self.echo_every_time || echo != Some(wanted.as_slice()))
        {
            self.challenges += 1;
            let header = Header {
                message_type: MessageType::Acknowledgement,
                code: Code::UNAUTHORIZED,
                ..*header
            };
            let options = [(jeton_link::oscore::ECHO_OPTION, wanted)];
            self.outbox.push(encode(header, &options, b""));
            return;
        }
        if let Some(message_1) = payload.strip_prefix(&[0xF5]) {
            let c_r = [self.next_connection_id];
            self.next_connection_id = self.next_connection_id.wrapping_add(1) % 0x18;
            match Responder::respond([self.seed; 32], &self.identity, message_1, &c_r) {
                Ok((responder, message_2)) => {
                    self.pending.insert(c_r.to_vec(), responder);
                    let message_2 = message_2.as_bytes().to_vec();
                    self.reply(header, Code::CHANGED, &message_2);
                }
                Err(_) => self.reply(header, Code::BAD_REQUEST, b""),
            }
            return;
        }
        let Ok((c_r, message_3)) = split_connection_id(payload) else {
            self.reply(header, Code::BAD_REQUEST, b"");
            return;
        };
        let Some(responder) = self.pending.remove(c_r) else {
            self.reply(header, Code::BAD_REQUEST, b"");
            return;
        };
        let authorised = self.authorised.clone();
        match responder.process_message_3(message_3, |kid| {
            authorised.iter().find(|c| c.kid() == kid).copied()
        }) {
            Ok((material, message_4)) => {
                let context = material.security_context().unwrap();
                self.contexts
                    .insert(material.recipient_id().as_bytes().to_vec(), context);
                self.handshakes += 1;
                // Key confirmation for the token, as the real gateway sends it.
                let message_4 = message_4.as_bytes().to_vec();
                self.reply(header, Code::CHANGED, &message_4);
            }
            Err(_) => {
                self.refused += 1;
                self.reply(header, Code::new(4, 1), b"");
            }
        }
    }

    /// Protects what the fake gateway wrote and adds the link's own answers: the fake
    /// gateway's outbox then holds what goes on the wire.
    pub(crate) fn wrap_outbox(&mut self, gw: &mut FakeGateway) {
        let mut wire = std::mem::take(&mut self.outbox);
        for bytes in std::mem::take(&mut gw.outbox) {
            let message = Message::decode(&bytes).unwrap();
            let header = message.header;
            if header.code.is_empty() {
                wire.push(bytes);
                continue;
            }
            let Some((kid, binding)) = self.bindings.get(header.token.as_bytes()) else {
                continue;
            };
            let Some(context) = self.contexts.get_mut(kid) else {
                continue;
            };
            let inner = jeton_link::Message {
                code: header.code.0,
                options: OptionList::from_sorted(&message.options().collect::<Vec<_>>()).unwrap(),
                payload: message.payload,
            };
            let mut sealed = vec![0u8; 2048];
            let outer = context
                .protect_response(binding, &inner, true, &mut sealed)
                .unwrap();
            let options: Vec<(u16, Vec<u8>)> =
                outer.options.iter().map(|(n, v)| (n, v.to_vec())).collect();
            let protected = encode(
                Header {
                    code: Code(outer.code),
                    ..header
                },
                &options,
                outer.payload,
            );
            self.sizes.push((bytes.len(), protected.len()));
            wire.push(protected);
        }
        gw.outbox = wire;
    }
}
