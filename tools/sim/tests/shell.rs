//! jeton-sim as a user drives it: its `--help`, and a scripted session over real UDP on
//! loopback against the scripted gateway of jeton-core's tests (login, key upload, a
//! message received, a message sent, state kept across a restart).

#[path = "../../../firmware/core/tests/matrix/gateway.rs"]
mod gateway;
#[path = "../../../firmware/core/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use gateway::FakeGateway;

#[test]
fn help_documents_the_flags() {
    let output = assert_cmd::Command::cargo_bin("jeton-sim")
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--gateway",
        "--user",
        "--password-file",
        "--state-dir",
        "--device-name",
        "--link",
        "--plain-coap-in-clear",
        "--files-dir",
    ] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Session {
    fn start(gateway: &str, state: &std::path::Path) -> Session {
        Session::with_password(gateway, state, "secret")
    }

    fn with_password(gateway: &str, state: &std::path::Path, password: &str) -> Session {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("jeton-sim"))
            .args([
                "--gateway",
                gateway,
                "--user",
                "token",
                "--password",
                password,
                "--login",
                "--plain-coap-in-clear",
            ])
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }
}

/// Serves the gateway until a line starting with `prefix` appears.
fn serve_until(
    socket: &UdpSocket,
    gw: &mut FakeGateway,
    session: &mut Session,
    prefix: &str,
) -> String {
    let start = Instant::now();
    let mut peer = None;
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(30) {
        let now = start.elapsed().as_millis() as u64 + 1_000_000;
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            peer = Some(from);
            gw.handle_datagram(now, &buf[..len]);
        }
        gw.handle_timeout(now);
        if let Some(peer) = peer {
            for bytes in std::mem::take(&mut gw.outbox) {
                socket.send_to(&bytes, peer).unwrap();
            }
        }
        while let Ok(line) = session.lines.try_recv() {
            session.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
    panic!("no line starting with {prefix:?}; saw {:?}", session.seen);
}

/// The scripted gateway's socket, its address, and a fresh state directory.
fn fake_gateway(name: &str) -> (UdpSocket, String, std::path::PathBuf) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let state = std::env::temp_dir().join(format!("jeton-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    (socket, address, state)
}

#[test]
fn a_scripted_session_over_udp_logs_in_receives_sends_and_keeps_its_state() {
    let (socket, address, state) = fake_gateway("shell");
    let mut gw = FakeGateway::new();

    let mut session = Session::start(&address, &state);
    let logged_in = serve_until(&socket, &mut gw, &mut session, "logged-in ");
    assert_eq!(logged_in, "logged-in @token:localhost TOKENDEV");
    serve_until(&socket, &mut gw, &mut session, "keys-published 10");

    gw.push_sync(
        0,
        json!({"rooms": {"join": {"!room:localhost": {"timeline": {"events": [
            {"type": "m.room.message", "sender": "@peer:localhost", "event_id": "$hi",
             "content": {"msgtype": "m.text", "body": "hi\nthere"}},
        ]}}}}}),
    );
    let message = serve_until(&socket, &mut gw, &mut session, "message ");
    assert_eq!(
        message,
        "message !room:localhost @peer:localhost $hi unencrypted hi\\nthere"
    );

    // Rooms are numbered in `rooms`, and a command takes the number for the id.
    session.command("rooms");
    let room = serve_until(&socket, &mut gw, &mut session, "room ");
    assert!(
        room.starts_with("room !room:localhost ") && room.ends_with(" #1"),
        "{room}"
    );
    session.command("send 1 hello from the sim");
    let delivered = serve_until(&socket, &mut gw, &mut session, "delivered ");
    assert!(
        delivered.starts_with("delivered 1 !room:localhost $event"),
        "{delivered}"
    );
    assert_eq!(gw.hs.sent[0].3["body"], "hello from the sim");

    // `log` shows both ways.
    session.command("log 1");
    let log = serve_until(&socket, &mut gw, &mut session, "log ");
    assert_eq!(log, "log !room:localhost @peer:localhost: hi\\nthere");
    let own = serve_until(&socket, &mut gw, &mut session, "log ");
    assert_eq!(
        own,
        "log !room:localhost @token:localhost: hello from the sim"
    );
    session.command("quit");
    session.child.wait().unwrap();

    // Restarted on the same state directory: still logged in as the same device.
    let mut session = Session::start(&address, &state);
    session.command("status");
    let status = serve_until(&socket, &mut gw, &mut session, "status ");
    assert!(
        status.starts_with("status logged-in=true user=@token:localhost device=TOKENDEV rooms=1"),
        "{status}"
    );
    assert_eq!(gw.hs.logins, 1);
    session.command("keys");
    let fingerprint = serve_until(&socket, &mut gw, &mut session, "fingerprint ");
    assert_eq!(fingerprint.split(' ').count(), 1 + 11, "{fingerprint}");
    session.command("quit");
    session.child.wait().unwrap();
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn a_wrong_password_is_said_in_words_and_the_script_exits_1() {
    let (socket, address, state) = fake_gateway("wrong");
    let mut gw = FakeGateway::new();

    let mut session = Session::with_password(&address, &state, "not the password");
    let error = serve_until(&socket, &mut gw, &mut session, "error ");
    assert_eq!(error, "error login failed: wrong user or password (4.03)");
    drop(session.stdin);
    let status = session.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    std::fs::remove_dir_all(&state).unwrap();
}

/// jeton-sim with these arguments and an empty stdin (a script with nothing more to say):
/// its exit code, stdout and stderr, and how long it ran.
fn script(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    let output = Command::new(assert_cmd::cargo::cargo_bin("jeton-sim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        start.elapsed(),
    )
}

#[test]
fn no_gateway_is_said_within_seconds_with_its_address_and_the_script_exits_1() {
    // A port nothing listens on: the system answers with ICMP port unreachable.
    let address = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let state = std::env::temp_dir().join(format!("jeton-sim-nogw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (code, stdout, _, took) = script(&[
        "--gateway",
        &address,
        "--user",
        "token",
        "--password",
        "secret",
        "--login",
        "--plain-coap-in-clear",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        stdout
            .lines()
            .any(|l| l
                == format!("error no gateway answers at {address}: is jeton-gateway running?")),
        "{stdout}"
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn flags_that_cannot_work_are_said_in_one_line_with_exit_code_2() {
    let state = std::env::temp_dir().join(format!("jeton-sim-flags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let state_dir = state.to_str().unwrap();
    let empty = state.join("pw");
    std::fs::write(&empty, "").unwrap();

    let (code, _, stderr, _) = script(&["--state-dir", state_dir]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("jeton-sim: no link to the gateway: pair the token with `jeton pair"),
        "{stderr}"
    );
    assert!(stderr.contains("--plain-coap-in-clear"), "{stderr}");

    let (code, _, stderr, _) = script(&[
        "--state-dir",
        state_dir,
        "--plain-coap-in-clear",
        "--user",
        "token",
        "--password-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "jeton-sim: the password file {} is empty (its first line is the password)\n",
            empty.display()
        )
    );

    let (code, _, stderr, _) = script(&[
        "--state-dir",
        state_dir,
        "--plain-coap-in-clear",
        "--user",
        "token",
        "--login",
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "jeton-sim: --login needs --user and a password (--password-file FILE, or --password)\n"
    );
    std::fs::remove_dir_all(&state).unwrap();
}
