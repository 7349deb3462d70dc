// The properties of the gateway's link-layer fuzz target, shared by the target
// (`fuzz_targets/link_datagrams.rs`) and the corpus replay test of jeton-gateway
// (`tools/gateway/tests/fuzz_corpus_link.rs`), which `include!` this file.

use std::collections::HashMap;
use std::time::Instant;

use jeton_gateway::link::{Inbound, Link};
use jeton_gateway::link_credentials::{AuthorisedToken, LinkCredentials};
use jeton_gateway::source::Sources;
use jeton_link::Identity;

/// Separates datagrams inside one fuzz input.
pub const LINK_SEPARATOR: &[u8] = b"\xfe\xfe";

/// Any datagrams from the air into the link layer (link on, compat mode off): it never
/// panics, and nothing it hands to the transport carries an access token (option 256),
/// since only a verified OSCORE request could, and no key material is in these inputs.
/// Whatever the transport might send back to those peers passes `on_send` without panic.
pub fn check_link_datagrams(data: &[u8]) {
    // Made once per process, so the fuzzer spends its time on the link's decoders.
    static IDENTITIES: std::sync::OnceLock<(Identity, Identity)> = std::sync::OnceLock::new();
    let (token, gateway) = IDENTITIES
        .get_or_init(|| {
            (
                Identity::generate([1; 32], b"\x0a", "token").expect("an identity"),
                Identity::generate([2; 32], b"\x0b", "gateway").expect("an identity"),
            )
        })
        .clone();
    let mut tokens = HashMap::new();
    tokens.insert(
        token.credential().kid().to_vec(),
        AuthorisedToken { name: "fuzz".into(), credential: *token.credential() },
    );
    // The peer is vouched for, so that a message_1 reaches the EDHOC decoder instead of
    // getting an Echo challenge.
    let mut link = Link::new(Some(LinkCredentials { identity: gateway, tokens }), false)
        .with_sources(Sources::parse("::1/128").expect("a prefix"));
    let peer = "[::1]:40000".parse().expect("a socket address");
    let now = Instant::now();
    let mut rest = data;
    loop {
        let (datagram, tail) = match rest.windows(LINK_SEPARATOR.len()).position(|w| w == LINK_SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + LINK_SEPARATOR.len()..])),
            None => (rest, None),
        };
        match link.on_datagram(peer, datagram, now) {
            Inbound::Deliver(from, plain) => {
                // The transport parses with the same strict parser; what it refuses as
                // malformed (and answers with RST) never reaches the homeserver.
                if let Ok(packet) = jeton_gateway::message::parse(&plain) {
                    assert!(
                        packet.get_option(coap_lite::CoapOption::Unknown(256)).is_none()
                            || packet.header.code == coap_lite::MessageClass::Empty
                            || !matches!(packet.header.code, coap_lite::MessageClass::Request(_)),
                        "an access token reached the transport without OSCORE"
                    );
                }
                let _ = link.on_send(from, datagram.to_vec());
            }
            Inbound::Reply(reply) => {
                assert!(coap_lite::Packet::from_bytes(&reply).is_ok(), "malformed reply {reply:02x?}");
            }
            Inbound::Drop => {}
        }
        match tail {
            Some(tail) => rest = tail,
            None => break,
        }
    }
}
