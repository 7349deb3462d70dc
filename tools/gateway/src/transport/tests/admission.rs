//! Admission: the per-peer rate and in-flight limits, and draining.

use super::*;

#[test]
fn per_peer_rate_and_in_flight_limits_answer_without_forwarding() {
    let mut h = Harness::anonymous(Limits {
        peer_burst: 2,
        peer_rate: 1.0,
        ..Limits::default()
    });
    assert_eq!(forwards(&h.feed(&get(1, PLAIN))).len(), 1);
    assert_eq!(forwards(&h.feed(&get(2, PLAIN))).len(), 1);
    let limited = h.feed(&get(3, PLAIN));
    assert!(forwards(&limited).is_empty());
    let reply = &sent(&limited)[0];
    assert_eq!(code_of(reply), "4.29");
    assert_eq!(reply.get_first_option(CoapOption::MaxAge), Some(&vec![1]));

    let mut h = Harness::anonymous(Limits {
        max_in_flight_per_peer: 1,
        ..Limits::default()
    });
    assert_eq!(forwards(&h.feed(&get(1, PLAIN))).len(), 1);
    assert_eq!(code_of(&sent(&h.feed(&get(2, PLAIN)))[0]), "5.03");
}

#[test]
fn draining_refuses_new_requests_and_ends_observations() {
    let mut h = Harness::new(Limits::default());
    let (_, poll) = register(&mut h, 1, b"d");
    let cancel = h.core.begin_drain();
    assert!(
        cancel
            .iter()
            .any(|a| matches!(a, Action::Cancel { id } if *id == poll))
    );
    assert_eq!(code_of(&sent(&h.feed(&get(9, PLAIN)))[0]), "5.03");
    assert_eq!(h.core.client_requests_in_flight(), 0);
}
