//! The link driven with a real token-side EDHOC initiator and OSCORE context.

use coap_lite::MessageType;
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{
    Credential, Identity, Initiator, Message, OptionList, RequestBinding, SecurityContext,
};

use super::wire::{options_of, repack};
use super::*;
use crate::link_credentials::AuthorisedToken;

const PEER: &str = "127.0.0.1:40000";

struct Pair {
    link: Link,
    token: Identity,
    gateway: Identity,
}

fn pair(authorise_token: bool) -> Pair {
    let token = Identity::generate([1; 32], b"\x0a", "token").unwrap();
    let gateway = Identity::generate([2; 32], b"\x0b", "gateway").unwrap();
    let mut tokens = HashMap::new();
    if authorise_token {
        tokens.insert(
            token.credential().kid().to_vec(),
            AuthorisedToken {
                name: "test-token".into(),
                credential: *token.credential(),
            },
        );
    }
    let credentials = LinkCredentials {
        identity: gateway.clone(),
        tokens,
    };
    Pair {
        link: Link::new(Some(credentials), false),
        token,
        gateway,
    }
}

fn post_edhoc(mid: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut p = message::build(MessageType::Confirmable, 0x02, mid, &[0x71]);
    p.add_option(CoapOption::UriPath, b".well-known".to_vec());
    p.add_option(CoapOption::UriPath, b"edhoc".to_vec());
    p.payload = payload;
    message::to_datagram(&p)
}

fn reply_of(inbound: Inbound) -> Packet {
    match inbound {
        Inbound::Reply(d) => message::parse(&d).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Runs EDHOC (stand-alone message_3) and returns the token's OSCORE context.
fn handshake(pair: &mut Pair, now: Instant) -> SecurityContext {
    let peer: SocketAddr = PEER.parse().unwrap();
    let (initiator, m1) = Initiator::start([3; 32]).unwrap();
    let mut payload = vec![0xF5];
    payload.extend_from_slice(m1.as_bytes());
    let r2 = reply_of(pair.link.on_datagram(peer, &post_edhoc(1, payload), now));
    assert_eq!(u8::from(r2.header.code), code::CHANGED);
    let (m3, material) = initiator
        .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
        .unwrap();
    let mut payload = Vec::new();
    let mut cr = [0u8; 9];
    let n = jeton_link::encode_connection_id(material.sender_id().as_bytes(), &mut cr).unwrap();
    payload.extend_from_slice(&cr[..n]);
    payload.extend_from_slice(m3.as_bytes());
    let r4 = reply_of(pair.link.on_datagram(peer, &post_edhoc(2, payload), now));
    assert_eq!(u8::from(r4.header.code), code::CHANGED, "{:?}", r4.payload);
    assert_eq!(pair.link.context_count(), 1);
    material.security_context().unwrap()
}

fn delivered(inbound: Inbound) -> Packet {
    match inbound {
        Inbound::Deliver(_, d) => message::parse(&d).unwrap(),
        other => panic!("expected delivery, got {other:?}"),
    }
}

fn access_token(packet: &Packet) -> Vec<u8> {
    let values = packet.get_option(CoapOption::from(ACCESS_TOKEN)).unwrap();
    values.front().unwrap().clone()
}

fn protected_get(
    client: &mut SecurityContext,
    mid: u16,
    token: &[u8],
    options: &[(u16, &[u8])],
) -> (Vec<u8>, RequestBinding) {
    let inner = Message {
        code: 0x01,
        options: OptionList::from_sorted(options).unwrap(),
        payload: &[],
    };
    let mut buf = [0u8; 512];
    let (outer, binding) = client.protect_request(&inner, &mut buf).unwrap();
    let shell = message::build(MessageType::Confirmable, 0x01, mid, token);
    (repack(&shell, &outer), binding)
}

#[test]
fn protected_requests_reach_the_transport_in_clear_and_responses_go_back_protected() {
    let mut pair = pair(true);
    let now = Instant::now();
    let mut client = handshake(&mut pair, now);
    let peer: SocketAddr = PEER.parse().unwrap();
    let (wire, binding) = protected_get(
        &mut client,
        10,
        b"tk",
        &[(11, b"_matrix"), (11, b"versions"), (256, b"syt_secret")],
    );
    assert!(
        !wire.windows(10).any(|w| w == b"syt_secret"),
        "access token in clear"
    );
    let inbound = pair.link.on_datagram(peer, &wire, now);
    let Inbound::Deliver(virtual_peer, _) = &inbound else {
        panic!("not delivered: {inbound:?}");
    };
    let virtual_peer = *virtual_peer;
    assert_ne!(
        virtual_peer, peer,
        "the transport sees the context, not the address"
    );
    let plain = delivered(inbound);
    assert_eq!(plain.header.message_id, 10);
    assert_eq!(access_token(&plain), b"syt_secret");

    // The transport's piggybacked response is protected on the way out.
    let mut response = message::build(MessageType::Acknowledgement, code::CONTENT, 10, b"tk");
    response.payload = b"{\"versions\":[]}".to_vec();
    let (to, out) = pair
        .link
        .on_send(virtual_peer, message::to_datagram(&response))
        .unwrap();
    assert_eq!(to, peer);
    assert!(!out.windows(8).any(|w| w == b"versions"));
    let out = message::parse(&out).unwrap();
    let outer = Message {
        code: u8::from(out.header.code),
        options: options_of(&out).unwrap(),
        payload: &out.payload,
    };
    let mut buf = [0u8; 256];
    let inner = client
        .unprotect_response(&binding, &outer, &mut buf)
        .unwrap();
    assert_eq!(inner.code, code::CONTENT);
    assert_eq!(inner.payload, b"{\"versions\":[]}");

    // A notification (CON) goes out protected with the gateway's own Partial IV, and the
    // token's ACK for it finds its way back to the context's virtual peer.
    let mut notification = message::build(MessageType::Confirmable, code::CONTENT, 0x7777, b"tk");
    notification.add_option(CoapOption::Observe, vec![3]);
    let (_, out) = pair
        .link
        .on_send(virtual_peer, message::to_datagram(&notification))
        .unwrap();
    let out = message::parse(&out).unwrap();
    let option = out.get_option(CoapOption::from(OSCORE_OPTION)).unwrap();
    assert_eq!(option.front().unwrap(), &[0x01, 0x00], "own Partial IV 0");
    let ack = message::empty(MessageType::Acknowledgement, 0x7777);
    assert_eq!(
        pair.link.on_datagram(peer, &ack, now),
        Inbound::Deliver(virtual_peer, ack)
    );

    // The next request carries no access token; the gateway adds the bound one.
    let (wire, _) = protected_get(&mut client, 11, b"tl", &[(11, b"sync")]);
    let plain = delivered(pair.link.on_datagram(peer, &wire, now));
    assert_eq!(access_token(&plain), b"syt_secret");
    // A different one is refused, protected.
    let (wire, _) = protected_get(&mut client, 12, b"tm", &[(256, b"syt_other")]);
    let refused = reply_of(pair.link.on_datagram(peer, &wire, now));
    assert!(
        refused
            .get_option(CoapOption::from(OSCORE_OPTION))
            .is_some()
    );
}

#[test]
fn replays_never_reach_the_transport_twice() {
    let mut pair = pair(true);
    let now = Instant::now();
    let mut client = handshake(&mut pair, now);
    let peer: SocketAddr = PEER.parse().unwrap();
    let (wire, _) = protected_get(&mut client, 20, b"tk", &[(11, b"versions")]);
    assert!(matches!(
        pair.link.on_datagram(peer, &wire, now),
        Inbound::Deliver(..)
    ));
    // The same datagram again: a retransmission, answered from the link's memory.
    assert_eq!(pair.link.on_datagram(peer, &wire, now), Inbound::Drop);
    let ack = message::empty(MessageType::Acknowledgement, 20);
    let virtual_peer = *pair.link.contexts.virtual_peers.keys().next().unwrap();
    assert_eq!(
        pair.link.on_send(virtual_peer, ack.clone()),
        Some((peer, ack.clone()))
    );
    assert_eq!(
        pair.link.on_datagram(peer, &wire, now),
        Inbound::Reply(ack.clone())
    );
    // A forgery with the token's address and message id is refused and forgotten: the
    // token's own retransmission still gets its answer.
    let mut forged = wire.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(matches!(
        pair.link.on_datagram(peer, &forged, now),
        Inbound::Reply(_)
    ));
    assert_eq!(
        pair.link.on_datagram(peer, &wire, now),
        Inbound::Reply(ack.clone())
    );
    // From another address, or with another message id: the replay window refuses it.
    let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let refused = reply_of(pair.link.on_datagram(other, &wire, now));
    assert_eq!(u8::from(refused.header.code), code::UNAUTHORIZED);
    let mut moved = wire.clone();
    moved[3] ^= 0x55;
    let refused = reply_of(pair.link.on_datagram(peer, &moved, now));
    assert_eq!(refused.payload, b"Replay detected");
}

#[test]
fn every_flipped_bit_of_the_oscore_part_is_refused() {
    let mut pair = pair(true);
    let now = Instant::now();
    let mut client = handshake(&mut pair, now);
    let peer: SocketAddr = PEER.parse().unwrap();
    let (wire, _) = protected_get(&mut client, 30, b"tk", &[(11, b"versions")]);
    // Header (4), token (2), the OSCORE option's header byte, its value, 0xFF, the
    // ciphertext. Every bit of the option value and the ciphertext is protected.
    let value_len = usize::from(wire[6] & 0x0F);
    let protected_bits = (7 * 8..(7 + value_len) * 8).chain((8 + value_len) * 8..wire.len() * 8);
    for bit in protected_bits {
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        bad[2] = 0x7F; // a fresh message id each time, so deduplication does not answer
        bad[3] = bit as u8;
        let outcome = pair.link.on_datagram(peer, &bad, now);
        assert!(
            !matches!(outcome, Inbound::Deliver(..)),
            "bit {bit} delivered"
        );
    }
    // A flip in the CoAP framing (the option header, the payload marker) can turn the
    // message into a plain one; it then carries garbage, never the protected request's
    // path or the access token.
    for bit in (6 * 8..7 * 8).chain((7 + value_len) * 8..(8 + value_len) * 8) {
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        bad[2] = 0x7E;
        bad[3] = bit as u8;
        if let Inbound::Deliver(_, plain) = pair.link.on_datagram(peer, &bad, now)
            && let Ok(plain) = message::parse(&plain)
        {
            {
                let path = plain.get_option(CoapOption::UriPath);
                assert!(
                    path.is_none_or(|p| !p.iter().any(|s| s == b"versions")),
                    "bit {bit}"
                );
                assert!(
                    plain.get_option(CoapOption::from(ACCESS_TOKEN)).is_none(),
                    "bit {bit}"
                );
            }
        }
    }
    // The untouched request still goes through: nothing above advanced the window.
    assert!(matches!(
        pair.link.on_datagram(peer, &wire, now),
        Inbound::Deliver(..)
    ));
}

#[test]
fn a_lost_context_is_reported_so_the_token_runs_edhoc_again() {
    // The token's context from before a gateway restart: the new gateway has none.
    let mut before = pair(true);
    let now = Instant::now();
    let mut client = handshake(&mut before, now);
    let mut after = pair(true);
    let peer: SocketAddr = PEER.parse().unwrap();
    let (wire, _) = protected_get(&mut client, 40, b"tk", &[(11, b"versions")]);
    let reply = reply_of(after.link.on_datagram(peer, &wire, now));
    assert_eq!(u8::from(reply.header.code), code::UNAUTHORIZED);
    assert_eq!(reply.payload, b"Security context not found");
    assert!(reply.get_option(CoapOption::from(OSCORE_OPTION)).is_none());
}

#[test]
fn an_unknown_token_is_refused_with_a_clear_error() {
    let mut pair = pair(false);
    let peer: SocketAddr = PEER.parse().unwrap();
    let (initiator, m1) = Initiator::start([3; 32]).unwrap();
    let mut payload = vec![0xF5];
    payload.extend_from_slice(m1.as_bytes());
    let r2 = reply_of(
        pair.link
            .on_datagram(peer, &post_edhoc(1, payload), Instant::now()),
    );
    let (m3, material) = initiator
        .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
        .unwrap();
    let mut payload = material.sender_id().as_bytes().to_vec();
    payload.extend_from_slice(m3.as_bytes());
    let r = reply_of(
        pair.link
            .on_datagram(peer, &post_edhoc(2, payload), Instant::now()),
    );
    assert_eq!(u8::from(r.header.code), code::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&r.payload).contains("not authorised"));
    assert_eq!(pair.link.context_count(), 0);
}

#[test]
fn plain_access_tokens_are_refused_unless_compat_is_on() {
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut request = message::build(MessageType::Confirmable, 0x01, 5, b"t");
    request.add_option(CoapOption::UriPath, b"sync".to_vec());
    let without = message::to_datagram(&request);
    request.add_option(CoapOption::from(ACCESS_TOKEN), b"syt".to_vec());
    let with = message::to_datagram(&request);
    let mut link = Link::new(None, false);
    assert_eq!(
        link.on_datagram(peer, &without, Instant::now()),
        Inbound::Deliver(peer, without.clone())
    );
    let refused = reply_of(link.on_datagram(peer, &with, Instant::now()));
    assert_eq!(u8::from(refused.header.code), code::UNAUTHORIZED);
    let mut compat = Link::new(None, true);
    assert_eq!(
        compat.on_datagram(peer, &with, Instant::now()),
        Inbound::Deliver(peer, with.clone())
    );
}

#[test]
fn garbage_never_panics_the_link() {
    let mut pair = pair(true);
    let now = Instant::now();
    let _client = handshake(&mut pair, now);
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut state = 0x1234_5678u32;
    for i in 0..3000u32 {
        let mut bytes = Vec::new();
        let len = (i % 90) as usize;
        for _ in 0..len {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            bytes.push((state >> 24) as u8);
        }
        let datagram = match i % 3 {
            0 => post_edhoc(i as u16, bytes),
            1 => {
                let mut p = message::build(MessageType::Confirmable, 0x02, i as u16, b"x");
                p.add_option(
                    CoapOption::from(OSCORE_OPTION),
                    bytes.get(..len.min(6)).unwrap_or_default().to_vec(),
                );
                if i % 2 == 0 {
                    p.add_option(CoapOption::from(EDHOC_OPTION), Vec::new());
                }
                p.payload = bytes;
                message::to_datagram(&p)
            }
            _ => bytes,
        };
        let _ = pair.link.on_datagram(peer, &datagram, now);
    }
    let _ = Credential::parse(&[0xA2]);
}
