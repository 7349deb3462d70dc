// The properties the gateway's fuzz target checks, shared by the target
// (`fuzz_targets/request_path.rs`) and the corpus replay test of jeton-gateway
// (`tools/gateway/tests/fuzz_corpus.rs`), which `include!` this file.

use std::time::{Duration, Instant};

use jeton_gateway::limits::Limits;
use jeton_gateway::metrics::Metrics;
use jeton_gateway::translate::{UpstreamOutcome, UpstreamResponse};
use jeton_gateway::transport::{Action, PeerId, Transport};

/// Separates datagrams inside one fuzz input.
pub const SEPARATOR: &[u8] = b"\xfe\xfe";

/// Any datagrams from the air, with any homeserver answer: the core never panics, everything it
/// sends is well-formed CoAP, a datagram repeated is never forwarded a second time, and time
/// passing (retransmissions, expiry) is handled too.
pub fn check_request_path(data: &[u8]) {
    let mut now = Instant::now();
    let limits = Limits { block_size: 64, max_body: 4096, ..Limits::default() };
    let mut core = Transport::new(limits, Metrics::default(), now);
    // A token on the link: every request goes the whole way.
    let peer = PeerId::Context(1);
    for (index, datagram) in split(data).into_iter().enumerate() {
        let first = core.on_datagram(peer, datagram, now);
        let forwarded = respond(&mut core, first, index, now);
        let again = core.on_datagram(peer, datagram, now);
        assert!(
            !again.iter().any(|a| matches!(a, Action::Forward { .. })) || forwarded == 0,
            "a repeated datagram was forwarded again"
        );
        respond(&mut core, again, index, now);
        now += Duration::from_millis(700);
        let timers = core.on_timer(now);
        respond(&mut core, timers, index, now);
    }
    for _ in 0..120 {
        now += Duration::from_secs(1);
        let actions = core.on_timer(now);
        respond(&mut core, actions, 0, now);
    }
}

/// Checks what the core sent and answers what it forwarded; returns how many it forwarded.
fn respond(core: &mut Transport, actions: Vec<Action>, variant: usize, now: Instant) -> usize {
    let mut pending = actions;
    let mut forwarded = 0;
    // Observer polls chain forwards; a bound keeps the loop finite.
    for _ in 0..8 {
        let mut next = Vec::new();
        for action in pending {
            match action {
                Action::Send { datagram, .. } => {
                    assert!(
                        coap_lite::Packet::from_bytes(&datagram).is_ok(),
                        "the gateway sent malformed CoAP: {datagram:02x?}"
                    );
                }
                Action::Forward { id, .. } => {
                    forwarded += 1;
                    next.extend(core.on_upstream(id, outcome(variant), now));
                }
                Action::Cancel { .. } => {}
            }
        }
        if next.is_empty() {
            break;
        }
        pending = next;
    }
    forwarded
}

fn outcome(variant: usize) -> UpstreamOutcome {
    let response = |status: u16, body: &str| {
        UpstreamOutcome::Response(UpstreamResponse { status, retry_after: None, body: body.as_bytes().to_vec(), content_type: None })
    };
    match variant % 6 {
        0 => response(200, r#"{"next_batch":"s2","rooms":{"join":{}},"pad":"0123456789012345678901234567890123456789012345678901234567890123456789"}"#),
        1 => response(429, r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}"#),
        2 => UpstreamOutcome::Timeout,
        3 => UpstreamOutcome::Unreachable,
        4 => response(200, "not json"),
        _ => response(401, r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token"}"#),
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(pos) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..pos]);
        rest = &rest[pos + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}
