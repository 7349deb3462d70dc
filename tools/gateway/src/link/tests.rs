//! The link driven with a real token-side EDHOC initiator and OSCORE context.

use coap_lite::MessageType;
use jeton_link::oscore::OSCORE_OPTION;
use jeton_link::{
    Credential, Identity, Initiator, Message, OptionList, RequestBinding, SecurityContext,
};

use super::wire::{options_of, repack};
use super::*;
use crate::echo::ECHO_OPTION;
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

/// Sends message_1 from `peer` as a token does: the first time it gets a 4.01 with an Echo
/// value (RFC 9175), which it repeats with a new message id. Returns the answer to that.
fn message_1(link: &mut Link, peer: SocketAddr, m1: &[u8], mid: u16, now: Instant) -> Packet {
    let mut payload = vec![0xF5];
    payload.extend_from_slice(m1);
    let challenge = reply_of(link.on_datagram(peer, &post_edhoc(mid, payload.clone()), now));
    assert_eq!(u8::from(challenge.header.code), code::UNAUTHORIZED);
    let echo = challenge
        .get_first_option(CoapOption::Unknown(ECHO_OPTION))
        .expect("an Echo value")
        .clone();
    let mut again = message::parse(&post_edhoc(mid.wrapping_add(1), payload)).unwrap();
    again.add_option(CoapOption::Unknown(ECHO_OPTION), echo);
    reply_of(link.on_datagram(peer, &message::to_datagram(&again), now))
}

/// Runs EDHOC (stand-alone message_3) and returns the token's OSCORE context.
fn handshake(pair: &mut Pair, now: Instant) -> SecurityContext {
    let peer: SocketAddr = PEER.parse().unwrap();
    let (initiator, m1) = Initiator::start([3; 32]).unwrap();
    let r2 = message_1(&mut pair.link, peer, m1.as_bytes(), 1, now);
    assert_eq!(u8::from(r2.header.code), code::CHANGED);
    let (m3, material) = initiator
        .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
        .unwrap();
    let mut payload = Vec::new();
    let mut cr = [0u8; 9];
    let n = jeton_link::encode_connection_id(material.sender_id().as_bytes(), &mut cr).unwrap();
    payload.extend_from_slice(&cr[..n]);
    payload.extend_from_slice(m3.as_bytes());
    let r4 = reply_of(pair.link.on_datagram(peer, &post_edhoc(3, payload), now));
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
    let Inbound::Deliver(context, _) = &inbound else {
        panic!("not delivered: {inbound:?}");
    };
    let context = *context;
    assert!(
        matches!(context, PeerId::Context(_)),
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
        .on_send(context, message::to_datagram(&response))
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
    // token's ACK for it finds its way back to the context.
    let mut notification = message::build(MessageType::Confirmable, code::CONTENT, 0x7777, b"tk");
    notification.add_option(CoapOption::Observe, vec![3]);
    let (_, out) = pair
        .link
        .on_send(context, message::to_datagram(&notification))
        .unwrap();
    let out = message::parse(&out).unwrap();
    let option = out.get_option(CoapOption::from(OSCORE_OPTION)).unwrap();
    assert_eq!(option.front().unwrap(), &[0x01, 0x00], "own Partial IV 0");
    let ack = message::empty(MessageType::Acknowledgement, 0x7777);
    assert_eq!(
        pair.link.on_datagram(peer, &ack, now),
        Inbound::Deliver(context, ack)
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
    let context = PeerId::Context(pair.link.contexts.numbered_rids().next().unwrap().0);
    assert_eq!(
        pair.link.on_send(context, ack.clone()),
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
    let r2 = message_1(&mut pair.link, peer, m1.as_bytes(), 1, Instant::now());
    let (m3, material) = initiator
        .process_message_2(&pair.token, pair.gateway.credential(), &r2.payload)
        .unwrap();
    let mut payload = material.sender_id().as_bytes().to_vec();
    payload.extend_from_slice(m3.as_bytes());
    let r = reply_of(
        pair.link
            .on_datagram(peer, &post_edhoc(3, payload), Instant::now()),
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
    request.add_option(
        CoapOption::from(ACCESS_TOKEN),
        b"syt_YWxpY2U_dQmzVrVYhXcDFqHENkNz_1ZoZ7x".to_vec(),
    );
    let with = message::to_datagram(&request);
    let mut link = Link::new(None, false);
    assert_eq!(
        link.on_datagram(peer, &without, Instant::now()),
        Inbound::Deliver(PeerId::Address(peer), without.clone())
    );
    let refused = reply_of(link.on_datagram(peer, &with, Instant::now()));
    assert_eq!(u8::from(refused.header.code), code::UNAUTHORIZED);
    let mut compat = Link::new(None, true);
    assert_eq!(
        compat.on_datagram(peer, &with, Instant::now()),
        Inbound::Deliver(PeerId::Address(peer), with.clone())
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

/// Issue 15: one spoofed datagram acted as a paired token. A plain request (no option 256)
/// from the address the transport knew a context by (made up inside 100::/64) reached the
/// context's transport state and went upstream with its bound access token.
#[test]
fn no_plain_datagram_reaches_a_contexts_state() {
    use crate::limits::Limits;
    use crate::metrics::Metrics;
    use crate::transport::{Action, Transport};
    let mut pair = pair(true);
    let now = Instant::now();
    let mut client = handshake(&mut pair, now);
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut core = Transport::new(Limits::default(), Metrics::default(), now);
    let carries_token = |actions: &[Action]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Forward { request, .. } if request.access_token.is_some()))
    };
    let path: &[(u16, &[u8])] = &[
        (11, b"_matrix"),
        (11, b"client"),
        (11, b"v3"),
        (11, b"capabilities"),
        (256, b"syt_secret"),
    ];
    let (wire, _) = protected_get(&mut client, 10, b"tk", path);
    let Inbound::Deliver(context, plain) = pair.link.on_datagram(peer, &wire, now) else {
        panic!("not delivered");
    };
    assert!(carries_token(&core.on_datagram(context, &plain, now)));

    // A raw PUT of the display name from every address a forger might try: the token's own,
    // and the ones the context's state used to live under (its C_R inside 100::/64).
    let mut spoof = message::build(MessageType::Confirmable, 0x03, 99, b"sp");
    for s in ["_matrix", "client", "v3", "profile", "@a:b", "displayname"] {
        spoof.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    spoof.payload = br#"{"displayname":"pwned"}"#.to_vec();
    let spoof = message::to_datagram(&spoof);
    let former = |c_r: &[u8]| {
        let mut octets = [0u8; 16];
        octets[0] = 0x01;
        octets[8] = c_r.len() as u8;
        octets[9..9 + c_r.len()].copy_from_slice(c_r);
        SocketAddr::from((std::net::Ipv6Addr::from(octets), 5683))
    };
    let rid = pair
        .link
        .contexts
        .numbered_rids()
        .next()
        .unwrap()
        .1
        .to_vec();
    for from in [peer, former(&rid), former(&[0x00]), former(&[0x01])] {
        let Inbound::Deliver(to, plain) = pair.link.on_datagram(from, &spoof, now) else {
            continue;
        };
        assert_eq!(
            to,
            PeerId::Address(from),
            "a plain datagram stays its address's"
        );
        assert!(
            !carries_token(&core.on_datagram(to, &plain, now)),
            "a plain datagram from {from} went upstream with the token's access token"
        );
    }
}

/// Issue 15: 256 message_1 a minute from anywhere filled every handshake slot for 60 s and
/// paired tokens got 5.03. A message_1 from an address that has not proven itself gets a bare
/// 4.01 with an Echo value, within three times its size, and takes no slot; a token that
/// repeats it with the value links as always.
#[test]
fn a_message_1_flood_from_forged_addresses_takes_no_handshake_slot() {
    let mut pair = pair(true);
    let now = Instant::now();
    let (_, m1) = Initiator::start([4; 32]).unwrap();
    let mut payload = vec![0xF5];
    payload.extend_from_slice(m1.as_bytes());
    let (mut received, mut sent) = (0, 0);
    for i in 0..1000u32 {
        let from = SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 40000));
        let datagram = post_edhoc(i as u16, payload.clone());
        received += datagram.len();
        let reply = reply_of(pair.link.on_datagram(from, &datagram, now));
        assert_eq!(u8::from(reply.header.code), code::UNAUTHORIZED);
        sent += message::to_datagram(&reply).len();
    }
    println!(
        "message_1 flood: {received} B in, {sent} B out, {} handshakes held",
        pair.link.handshakes.len()
    );
    assert!(sent <= 3 * received);
    assert!(pair.link.handshakes.is_empty());
    handshake(&mut pair, now);
}

/// One source prefix holds at most 16 open handshakes; beyond, 5.03 with Max-Age, while
/// another prefix still gets message_2.
#[test]
fn one_source_prefix_holds_at_most_its_share_of_handshakes() {
    let mut pair = pair(true);
    let now = Instant::now();
    let mut code_from = |host: [u8; 4], seed: u8| {
        let (_, m1) = Initiator::start([seed; 32]).unwrap();
        let from = SocketAddr::from((host, 40000));
        let reply = message_1(
            &mut pair.link,
            from,
            m1.as_bytes(),
            u16::from(seed) * 2,
            now,
        );
        (code::dotted(u8::from(reply.header.code)), reply)
    };
    for n in 0..16 {
        assert_eq!(code_from([203, 0, 113, n], n).0, "2.04");
    }
    let (refused, reply) = code_from([203, 0, 113, 200], 100);
    assert_eq!(refused, "5.03");
    assert!(reply.get_first_option(CoapOption::MaxAge).is_some());
    assert_eq!(code_from([203, 0, 114, 1], 101).0, "2.04");
}

/// Issue 15: operators see the link in `/metrics`: handshakes, contexts, and refusals by a
/// reason from a fixed set.
#[test]
fn the_link_reports_handshakes_contexts_and_refusals_by_reason() {
    use crate::metrics::{LinkRefusal, RefusalLabels};
    let refusals = |link: &Link, why: LinkRefusal| {
        let labels = RefusalLabels { reason: why.name() };
        link.metrics.link_refusals.get_or_create(&labels).get()
    };
    let mut pair = pair(true);
    let now = Instant::now();
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut client = handshake(&mut pair, now);
    let (wire, _) = protected_get(&mut client, 20, b"tk", &[(11, b"versions")]);
    pair.link.on_datagram(peer, &wire, now);
    let mut moved = wire.clone();
    moved[3] ^= 0x55;
    pair.link.on_datagram(peer, &moved, now);
    let mut plain = message::build(MessageType::Confirmable, 0x01, 5, b"t");
    plain.add_option(CoapOption::from(ACCESS_TOKEN), b"syt_x".to_vec());
    pair.link
        .on_datagram(peer, &message::to_datagram(&plain), now);
    let mut after_restart = self::pair(true);
    after_restart.link.on_datagram(peer, &wire, now);

    assert_eq!(pair.link.metrics.handshakes.get(), 1);
    assert_eq!(pair.link.metrics.contexts.get(), 1);
    assert_eq!(pair.link.metrics.echo_challenges.get(), 1);
    assert_eq!(refusals(&pair.link, LinkRefusal::Replay), 1);
    assert_eq!(refusals(&pair.link, LinkRefusal::PlainAccessToken), 1);
    assert_eq!(refusals(&pair.link, LinkRefusal::DecryptionFailed), 0);
    assert_eq!(
        refusals(&after_restart.link, LinkRefusal::UnknownContext),
        1
    );
    let text = Metrics::render(&pair.link.metrics.registry());
    for line in [
        "jeton_gateway_edhoc_handshakes_total 1",
        "jeton_gateway_oscore_contexts 1",
        r#"jeton_gateway_link_refusals_total{reason="replay"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

/// The link of `pair`'s gateway again, as after a restart, keeping its contexts in the state
/// file at `path`.
fn restarted(pair: &Pair, path: &std::path::Path) -> Link {
    let mut tokens = HashMap::new();
    tokens.insert(
        pair.token.credential().kid().to_vec(),
        AuthorisedToken {
            name: "test-token".into(),
            credential: *pair.token.credential(),
        },
    );
    let credentials = LinkCredentials {
        identity: pair.gateway.clone(),
        tokens,
    };
    let key = crate::store::SealingKey::from_identity(pair.gateway.private_key());
    let store = crate::store::SqliteStore::open(path, key).unwrap();
    Link::new(Some(credentials), false)
        .with_store(Box::new(store))
        .unwrap()
}

/// The Partial IV of a protected message the gateway sent, if it carries one.
fn own_partial_iv(datagram: &[u8]) -> Option<u64> {
    let packet = message::parse(datagram).unwrap();
    let option = packet.get_option(CoapOption::from(OSCORE_OPTION))?;
    let value = option.front()?;
    let len = usize::from(value.first()? & 0x07);
    let piv = value.get(1..1 + len)?;
    Some(piv.iter().fold(0, |n, b| n << 8 | u64::from(*b)))
}

#[test]
fn after_a_crash_the_token_goes_on_with_no_handshake_no_nonce_twice_and_no_replay() {
    let dir = std::env::temp_dir().join(format!("jeton-link-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.state.sqlite3");
    let now = Instant::now();
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut pair = pair(true);
    pair.link = restarted(&pair, &path);
    let mut client = handshake(&mut pair, now);

    // An observation: its notifications take the gateway's own Partial IVs, more than one
    // reserved block of them.
    let (wire, registration) = protected_get(
        &mut client,
        10,
        b"ob",
        &[(6, b""), (11, b"sync"), (256, b"syt_secret")],
    );
    let Inbound::Deliver(context, _) = pair.link.on_datagram(peer, &wire, now) else {
        panic!("not delivered");
    };
    let mut used = Vec::new();
    // The first answer to a request reuses the request's nonce and carries no Partial IV.
    let notify = |link: &mut Link, context: PeerId, mid: u16| {
        let mut n = message::build(MessageType::Confirmable, code::CONTENT, mid, b"ob");
        n.add_option(CoapOption::Observe, vec![mid as u8]);
        let (_, out) = link.on_send(context, message::to_datagram(&n)).unwrap();
        own_partial_iv(&out)
    };
    for mid in 0..100 {
        used.extend(notify(&mut pair.link, context, 0x1000 + mid));
    }

    // SIGKILL: nothing is saved on the way out (and the file is let go of first).
    pair.link = Link::new(None, false);
    pair.link = restarted(&pair, &path);
    assert_eq!(pair.link.context_count(), 1, "the context came back");

    // The observation did not: the token is told so under its registration, and registers
    // again.
    let [(to, end)] = pair.link.end_restored_observations().try_into().unwrap();
    assert_eq!(to, peer);
    used.extend(own_partial_iv(&end));
    let end = message::parse(&end).unwrap();
    let outer = Message {
        code: u8::from(end.header.code),
        options: options_of(&end).unwrap(),
        payload: &end.payload,
    };
    let mut buf = [0u8; 256];
    let inner = client
        .unprotect_response(&registration, &outer, &mut buf)
        .unwrap();
    assert_eq!(inner.code, code::SERVICE_UNAVAILABLE);
    assert!(
        inner.options.get(6).is_none(),
        "no Observe: the observation ends"
    );

    // The token's last request again is a replay now, refused before the transport.
    let refused = reply_of(pair.link.on_datagram(peer, &wire, now));
    assert_eq!(refused.payload, b"Replay detected");
    // Its next request goes through under the same context, with the bound access token.
    let (wire, _) = protected_get(&mut client, 11, b"ob", &[(6, b""), (11, b"sync")]);
    let plain = delivered(pair.link.on_datagram(peer, &wire, now));
    assert_eq!(access_token(&plain), b"syt_secret");
    for mid in 0..100 {
        used.extend(notify(&mut pair.link, context, 0x2000 + mid));
    }
    let mut unique = used.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        used.len(),
        "a Partial IV was used twice: {used:?}"
    );
    assert_eq!(used.len(), 2 * 99 + 1);
    assert!(
        used[99] > used[98],
        "numbering resumes above the last reservation"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
