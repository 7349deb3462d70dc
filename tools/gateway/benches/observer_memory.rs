//! Memory per observer: registers 10,000 `/sync` observers with an in-process gateway (one UDP
//! client, distinct tokens) against a fake homeserver in a child process that holds every
//! long-poll open, then reports the gateway process's RSS growth per observer. That includes
//! everything an observer costs here: its transport state, the long-poll task and its upstream
//! HTTP/1.1 connection.
//!
//! It also reports what the transport core alone holds per observer and per peer, beside the
//! memory budget's fixed charges (`src/transport/budget.rs`).
//!
//! Run: `cargo bench -p jeton-gateway --bench observer_memory` (OBSERVERS=N to change the count).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fake_homeserver(uri: &http::Uri) -> (Duration, &'static str) {
    // Registration (no `since`) answers at once; the gateway's long-polls are held open.
    if uri.query().is_some_and(|q| q.contains("since=")) {
        (Duration::from_secs(3600), r#"{"next_batch":"s1"}"#)
    } else {
        (Duration::ZERO, r#"{"next_batch":"s1","rooms":{}}"#)
    }
}

use jeton_gateway::transport::{PeerId, Transport};

/// A transport core with the benches' limits.
fn core(now: Instant) -> Transport {
    let config = support::config(support::free_udp_port(), String::new());
    Transport::new(
        config.limits,
        jeton_gateway::metrics::Metrics::default(),
        now,
    )
}

/// Feeds `request` from `peer` and answers what it forwards with a 200 of `body`.
fn answered(core: &mut Transport, peer: PeerId, request: &[u8], body: &[u8], now: Instant) {
    use jeton_gateway::translate::{UpstreamOutcome, UpstreamResponse};
    for action in core.on_datagram(peer, request, now) {
        if let jeton_gateway::transport::Action::Forward { id, .. } = action {
            let outcome = UpstreamOutcome::Response(UpstreamResponse {
                status: 200,
                retry_after: None,
                body: body.to_vec(),
                content_type: None,
            });
            core.on_upstream(id, outcome, now);
        }
    }
}

/// The transport core alone (sans-I/O, answered by a fake upstream in-process): the state an
/// observer costs the gateway itself, without its long-poll task and connection.
fn core_only(observers: usize) {
    let now = Instant::now();
    let before = support::rss_bytes();
    let mut core = core(now);
    let path = ["_matrix", "client", "v3", "sync"];
    // A token on the link, as the gateway's observers are.
    let peer = PeerId::Context(1);
    let body = br#"{"next_batch":"s1","rooms":{}}"#;
    for i in 0..observers {
        let token = (i as u32).to_be_bytes();
        let request = support::get(i as u16, &token, &path, true);
        answered(&mut core, peer, &request, body, now);
    }
    let after = support::rss_bytes();
    println!(
        "transport state per observer {} bytes ({} observers in the core alone, RSS growth)",
        after.saturating_sub(before) / core.observer_count().max(1) as u64,
        core.observer_count()
    );
}

/// The transport core alone: the state a peer with one answered request costs (its entry,
/// rate bucket and one cached answer), against the memory budget's fixed charge per peer.
fn peers_only(peers: usize) {
    let now = Instant::now();
    let mut core = core(now);
    let body = br#"{"versions":["r0.6.1","v1.11"],"unstable_features":{}}"#;
    let request = support::get(1, &[1], &["_matrix", "client", "versions"], false);
    let before = support::rss_bytes();
    for i in 0..peers {
        answered(&mut core, PeerId::Context(i as u64), &request, body, now);
    }
    let after = support::rss_bytes();
    println!(
        "transport state per peer {} bytes ({} peers with one answered request each, RSS growth)",
        after.saturating_sub(before) / core.peer_count().max(1) as u64,
        core.peer_count()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--peers-only") {
        peers_only(20_000);
        return;
    }
    if std::env::args().any(|a| a == "--core-only") {
        let observers: usize = std::env::var("OBSERVERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        core_only(observers);
        return;
    }
    if std::env::args().any(|a| a == "--fake-homeserver") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("{}", listener.local_addr().unwrap());
            support::responder(listener, fake_homeserver).await;
        });
        return;
    }
    let observers: usize = std::env::var("OBSERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--fake-homeserver")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let homeserver = format!("http://{}", line.trim());

    let listen = support::free_udp_port();
    let config = support::config(listen, homeserver);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(jeton_gateway::server::run(config, async {
            let _ = stop_rx.await;
        }))
        .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = support::rss_bytes();

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path = ["_matrix", "client", "v3", "sync"];
    let mut registered = 0usize;
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    let mut sent = 0usize;
    while registered < observers && started.elapsed() < Duration::from_secs(120) {
        // Keep at most 256 registrations outstanding.
        while sent < observers && sent - registered < 256 {
            let token = (sent as u32).to_be_bytes();
            socket
                .send_to(&support::get(sent as u16, &token, &path, true), listen)
                .unwrap();
            sent += 1;
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let p = coap_lite::Packet::from_bytes(&buf[..n]).unwrap();
            if p.get_observe_value().is_some() && u8::from(p.header.code) == 0x45 {
                registered += 1;
            }
        }
    }
    // Let every long-poll connect.
    std::thread::sleep(Duration::from_secs(3));
    let after = support::rss_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "observers registered        {registered} of {observers} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "gateway RSS before / after  {:.1} MiB / {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "memory per observer         {} bytes (RSS growth / observers; includes its long-poll task and upstream connection)",
        grown / registered.max(1) as u64
    );
    let _ = stop_tx.send(());
    let _ = gateway.join();
    let _ = child.kill();
    let _ = child.wait();
    for mode in ["--core-only", "--peers-only"] {
        let status = Command::new(std::env::current_exe().unwrap())
            .arg(mode)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
