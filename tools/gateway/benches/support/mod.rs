//! Shared by the benches: a minimal HTTP responder standing in for the homeserver, CoAP request
//! encoding, and process memory.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use http_body_util::Full;
use hyper::body::Bytes;

/// How the responder answers a request.
pub type Respond = fn(&http::Uri) -> (Duration, &'static str);

/// Serves HTTP/1.1 on 127.0.0.1 with keep-alive; each request is answered by `respond` after
/// its delay. Runs until the process exits.
pub async fn responder(listener: tokio::net::TcpListener, respond: Respond) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let (delay, body) = respond(req.uri());
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap(),
                    )
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// A free UDP port on 127.0.0.1 (racy, but only this bench uses it).
pub fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A CON GET for `path`, with optional Observe=0.
pub fn get(mid: u16, token: &[u8], path: &[&str], observe: bool) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::from(1u8);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    if observe {
        p.add_option(CoapOption::Observe, Vec::new());
    }
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p.to_bytes().unwrap()
}

/// Resident set size of this process, bytes (Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A gateway config for benches: everything generous except what the bench measures.
pub fn config(listen: SocketAddr, homeserver: String) -> jeton_gateway::config::Config {
    let limits = jeton_gateway::limits::Limits {
        max_observers: 100_000,
        max_observers_per_peer: 100_000,
        max_in_flight_per_peer: 100_000,
        peer_rate: 1e9,
        peer_burst: 1_000_000_000,
        dedup_per_peer: 64,
        observe_poll_timeout: Duration::from_secs(600),
        upstream_timeout: Duration::from_secs(700),
        // The benches measure cost and memory, not where the budget refuses.
        memory_budget: usize::MAX,
        ..Default::default()
    };
    jeton_gateway::config::Config {
        listen,
        homeserver,
        metrics_listen: None,
        limits,
        shutdown_grace: Duration::from_secs(1),
        log: "error".into(),
        log_format: jeton_gateway::config::LogFormat::Text,
        // The benchmarks measure the plain MSC3079 path.
        link: None,
        link_tokens_file: None,
        state: None,
        database: None,
        color: jeton_gateway::config::ColorChoice::Never,
        compat_plain_msc3079: true,
        // Loopback clients: the round trip that proves an address is not what is measured.
        sources: jeton_gateway::source::Sources::parse("127.0.0.0/8").unwrap(),
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
