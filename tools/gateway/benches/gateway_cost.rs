//! Gateway cost against a fast local upstream (a minimal HTTP responder in this process):
//! requests per second with the gateway on one core (a current-thread runtime), and the latency
//! it adds (p50, p99): CoAP through the gateway minus HTTP straight to the responder.
//!
//! Run: `cargo bench -p jeton-gateway --bench gateway_cost`
//! (REQUESTS=N latency samples, SECONDS=N throughput duration, CONCURRENCY=N outstanding).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn versions(_: &http::Uri) -> (Duration, &'static str) {
    (
        Duration::ZERO,
        r#"{"versions":["r0.6.1","v1.11"],"unstable_features":{}}"#,
    )
}

const PATH: [&str; 3] = ["_matrix", "client", "versions"];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let samples = env("REQUESTS", 3000) as usize;
    let seconds = env("SECONDS", 5);
    let concurrency = env("CONCURRENCY", 64) as usize;

    // The responder gets its own thread, the gateway its own: one core each at most.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            support::responder(listener, versions).await;
        });
    });
    let upstream: SocketAddr = rx.recv().unwrap();
    let listen = support::free_udp_port();
    let config = support::config(listen, format!("http://{upstream}"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(jeton_gateway::server::run(config, std::future::pending()))
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));

    let direct = direct_http_latency(upstream, samples);
    let via = coap_latency(listen, samples);
    let (rate, completed) = throughput(listen, Duration::from_secs(seconds), concurrency);

    println!("gateway cost (loopback, minimal upstream; gateway on one current-thread runtime)");
    println!("{:<34} {:>10} {:>10}", "", "p50", "p99");
    let p = |v: &[Duration], q| support::percentile(v, q).as_secs_f64() * 1e6;
    println!(
        "{:<34} {:>8.0}us {:>8.0}us",
        "HTTP straight to the responder",
        p(&direct, 0.5),
        p(&direct, 0.99)
    );
    println!(
        "{:<34} {:>8.0}us {:>8.0}us",
        "CoAP through the gateway",
        p(&via, 0.5),
        p(&via, 0.99)
    );
    println!(
        "{:<34} {:>8.0}us {:>8.0}us",
        "added by the gateway",
        p(&via, 0.5) - p(&direct, 0.5),
        p(&via, 0.99) - p(&direct, 0.99)
    );
    println!(
        "throughput: {rate:.0} requests/s ({completed} in {seconds} s, {concurrency} outstanding, 8 peers)"
    );
}

/// One request at a time over a kept-alive HTTP/1.1 connection.
fn direct_http_latency(upstream: SocketAddr, samples: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(upstream).unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!("GET /_matrix/client/versions HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        stream.write_all(request.as_bytes()).unwrap();
        let mut got = 0;
        // Headers and the short body arrive together; read until the body's closing brace.
        loop {
            let n = stream.read(&mut buf[got..]).unwrap();
            got += n;
            if buf[..got].ends_with(b"}") {
                break;
            }
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn coap_latency(gateway: SocketAddr, samples: usize) -> Vec<Duration> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let mid = i as u16;
        let request = support::get(mid, &mid.to_be_bytes(), &PATH, false);
        let t = Instant::now();
        socket.send_to(&request, gateway).unwrap();
        loop {
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            if n >= 4 && u16::from_be_bytes([buf[2], buf[3]]) == mid {
                break;
            }
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// `concurrency` requests kept outstanding from 8 client sockets (8 peers).
fn throughput(gateway: SocketAddr, duration: Duration, concurrency: usize) -> (f64, usize) {
    let peers = 8;
    let per_peer = concurrency.div_ceil(peers);
    let handles: Vec<_> = (0..peers)
        .map(|_| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                let mut mid: u16 = 0;
                let send = |mid: &mut u16| {
                    *mid = mid.wrapping_add(1);
                    socket
                        .send_to(
                            &support::get(*mid, &mid.to_be_bytes(), &PATH, false),
                            gateway,
                        )
                        .unwrap();
                };
                for _ in 0..per_peer {
                    send(&mut mid);
                }
                let start = Instant::now();
                let mut done = 0usize;
                while start.elapsed() < duration {
                    match socket.recv_from(&mut buf) {
                        Ok(_) => {
                            done += 1;
                            send(&mut mid);
                        }
                        // A lost datagram: top the window up again.
                        Err(_) => send(&mut mid),
                    }
                }
                done
            })
        })
        .collect();
    let completed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (completed as f64 / duration.as_secs_f64(), completed)
}
