//! Return routability (issue 15): what an address that has not proven it receives there can
//! make the gateway send and keep, and the rate of duplicates.

use super::*;
use crate::echo::ECHO_OPTION;

fn bytes_out(actions: &[Action]) -> usize {
    actions
        .iter()
        .map(|a| match a {
            Action::Send { datagram, .. } => datagram.len(),
            _ => 0,
        })
        .sum()
}

/// An address nobody vouches for (TEST-NET-1).
fn stranger(n: u32) -> PeerId {
    PeerId::Address(SocketAddr::from((
        [192, 0, (n >> 8) as u8, n as u8],
        5683 + (n >> 16) as u16,
    )))
}

/// Issue 15: a 6-byte `CON GET /0` repeated 1,000 times got 1,000 cached replies of 1,036
/// bytes (173 times what was sent). From an address that has not proven itself, every reply is
/// a bare 4.01 with an Echo value, within three times the request, and nothing is forwarded
/// or kept.
#[test]
fn a_duplicate_flood_from_an_unproven_address_gets_at_most_three_times_its_bytes() {
    let mut h = Harness::anonymous(Limits::default());
    h.peer = stranger(1);
    let wire = message::to_datagram(&request(MessageType::Confirmable, 1, 77, &[], &["0"]));
    assert_eq!(wire.len(), 6);
    let (mut sent_to, mut received) = (0, 0);
    for _ in 0..1000 {
        let actions = h.core.on_datagram(h.peer, &wire, h.now);
        assert!(forwards(&actions).is_empty());
        sent_to += bytes_out(&actions);
        received += wire.len();
    }
    println!(
        "duplicate flood from an unproven address: {received} B in, {sent_to} B out ({:.1}x)",
        sent_to as f64 / received as f64
    );
    assert!(
        sent_to <= 3 * received,
        "{sent_to} B out for {received} B in"
    );
    assert_eq!(h.core.peer_count(), 0);
    assert_eq!(h.core.metrics.echo_challenges.get(), 1000);
}

/// A proven peer's retransmissions count against its rate like new requests: beyond the
/// burst they are dropped, not answered from the cache.
#[test]
fn a_proven_peers_duplicates_count_against_its_rate() {
    let mut h = Harness::anonymous(Limits::default());
    let req = get(77, &["0"]);
    let f = forwards(&h.feed(&req));
    let body = format!(
        r#"{{"errcode":"M_UNRECOGNIZED","error":"{}"}}"#,
        "x".repeat(900)
    );
    let first = h.upstream(f[0].0, 404, &body);
    let mut answers = sent(&first).len();
    for _ in 0..1000 {
        let actions = h.feed(&req);
        assert!(forwards(&actions).is_empty());
        answers += sent(&actions).len();
    }
    let burst = Limits::default().peer_burst as usize;
    println!("1,000 duplicates from a proven peer: {answers} answers (burst {burst})");
    assert!(answers <= burst + 1, "{answers} answers");
}

/// Issue 15: spoofed CON requests each made peer state that lived 247 s, until the table was
/// full and new peers got 5.03. An unproven address gets a challenge and leaves nothing; with
/// the Echo value it was given (and only from that address) it is served.
#[test]
fn spoofed_sources_leave_no_state_and_an_echo_round_trip_admits() {
    let mut h = Harness::anonymous(Limits {
        max_peers: 2000,
        ..Limits::default()
    });
    for n in 0..3000 {
        h.peer = stranger(n);
        let req = get(1, PLAIN);
        let size = message::to_datagram(&req).len();
        let actions = h.feed(&req);
        assert!(bytes_out(&actions) <= 3 * size);
        assert!(forwards(&actions).is_empty());
    }
    assert_eq!(h.core.peer_count(), 0);

    h.peer = stranger(7);
    let challenge = sent(&h.feed(&get(2, PLAIN))).remove(0);
    assert_eq!(code_of(&challenge), "4.01");
    let echo = challenge
        .get_first_option(CoapOption::Unknown(ECHO_OPTION))
        .unwrap()
        .clone();
    let mut again = get(3, PLAIN);
    again.add_option(CoapOption::Unknown(ECHO_OPTION), echo);
    h.peer = stranger(8);
    assert_eq!(
        code_of(&sent(&h.feed(&again))[0]),
        "4.01",
        "another address"
    );
    h.peer = stranger(7);
    assert_eq!(forwards(&h.feed(&again)).len(), 1);
    assert_eq!(h.core.peer_count(), 1);
    // Proven, the peer needs no Echo value any more.
    assert_eq!(forwards(&h.feed(&get(4, PLAIN))).len(), 1);
}

/// A source prefix holds at most `max_peers_per_prefix` plain peers; beyond, 5.03 with Max-Age
/// and nothing kept, while other prefixes are served.
#[test]
fn one_source_prefix_holds_at_most_its_share_of_peers() {
    let mut h = Harness::anonymous(Limits {
        max_peers_per_prefix: 3,
        ..Limits::default()
    });
    for port in 0..3 {
        h.peer = PeerId::Address(SocketAddr::from(([127, 0, 0, 1], 1000 + port)));
        assert_eq!(forwards(&h.feed(&get(1, PLAIN))).len(), 1);
    }
    h.peer = PeerId::Address(SocketAddr::from(([127, 0, 0, 9], 1000)));
    let refused = sent(&h.feed(&get(1, PLAIN))).remove(0);
    assert_eq!(code_of(&refused), "5.03");
    assert!(refused.get_first_option(CoapOption::MaxAge).is_some());
    assert_eq!(h.core.peer_count(), 3);
    h.peer = PeerId::Address(SocketAddr::from(([127, 0, 1, 1], 1000)));
    assert_eq!(forwards(&h.feed(&get(1, PLAIN))).len(), 1);
}
