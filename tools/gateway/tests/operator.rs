//! jeton-gateway as an operator runs it: the binary, its log on stderr and its exit code (2
//! for a configuration that cannot work, 1 when running it fails). A busy port names the flag
//! to change; the log has colours only when asked for (it goes to a pipe here, as to a file
//! or a journal); SIGHUP reads the authorised tokens again and says so, keeping the old ones
//! when the file is broken.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jeton_link::Identity;

const GATEWAY: &str = env!("CARGO_BIN_EXE_jeton-gateway");

/// A free loopback address for the CoAP socket.
fn free_udp() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

/// The gateway running with `args`, its stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(GATEWAY)
            .args([
                "--homeserver",
                "http://127.0.0.1:9",
                "--listen",
                &free_udp(),
            ])
            .args(["--metrics-listen", "off", "--log", "info"])
            .args(args)
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first log line (from now on) that contains `text`.
    fn wait_for(&mut self, text: &str) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(20)) {
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
        panic!("no log line with {text:?}; saw {:?}", self.seen);
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_busy_metrics_port_says_how_to_choose_another_or_turn_it_off() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap();
    let output = Command::new(GATEWAY)
        .args([
            "--homeserver",
            "http://127.0.0.1:9",
            "--listen",
            &free_udp(),
        ])
        .args(["--metrics-listen", &address.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "jeton-gateway: could not listen on {address} for the metrics endpoint: "
        )),
        "{stderr}"
    );
    assert!(
        last.ends_with(
            "(give another address with --metrics-listen ADDR, or turn the endpoint off with \
             --metrics-listen off)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_configuration_that_cannot_work_is_one_sentence_and_exit_code_2() {
    let output = Command::new(GATEWAY)
        .env_remove("JETON_GATEWAY_HOMESERVER")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "jeton-gateway: no homeserver URL was given (--homeserver, JETON_GATEWAY_HOMESERVER or \
         `homeserver` in the config file)\n"
    );
}

#[test]
fn the_log_has_colours_only_when_asked_for_off_a_terminal() {
    let mut plain = Running::start(&[]);
    let line = plain.wait_for("gateway listening");
    assert!(!line.contains('\x1b'), "{line:?}");
    let mut coloured = Running::start(&["--color", "always"]);
    let line = coloured.wait_for("gateway listening");
    assert!(line.contains("\x1b["), "{line:?}");
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jeton-gateway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn identity(seed: u8, kid: u8, name: &str) -> Identity {
    Identity::generate([seed; 32], &[kid], name).unwrap()
}

/// The authorised tokens file listing `tokens`.
fn write_tokens(file: &Path, tokens: &[(&str, &Identity)]) {
    let text: String = tokens
        .iter()
        .map(|(name, identity)| {
            format!(
                "[[token]]\nname = \"{name}\"\ncredential = \"{}\"\n",
                hex::encode(identity.credential().as_bytes())
            )
        })
        .collect();
    std::fs::write(file, text).unwrap();
}

#[test]
fn sighup_reads_the_authorised_tokens_again_and_keeps_them_when_the_file_is_broken() {
    let dir = scratch("sighup");
    let gateway = identity(0x31, 0x01, "gateway");
    let identity_file = dir.join("gateway-identity.toml");
    std::fs::write(
        &identity_file,
        format!(
            "private_key = \"{}\"\ncredential = \"{}\"\n",
            hex::encode(gateway.private_key()),
            hex::encode(gateway.credential().as_bytes())
        ),
    )
    .unwrap();
    let tokens_file = dir.join("gateway-tokens.toml");
    let kitchen = identity(0x32, 0x5b, "kitchen");
    write_tokens(&tokens_file, &[("kitchen", &kitchen)]);
    let mut running = Running::start(&[
        "--link-identity",
        identity_file.to_str().unwrap(),
        "--link-tokens",
        tokens_file.to_str().unwrap(),
    ]);
    running.wait_for("gateway listening");

    std::fs::write(&tokens_file, "[[token]]\nname = \"half written").unwrap();
    running.signal("HUP");
    let kept = running.wait_for("SIGHUP");
    assert!(
        kept.contains("SIGHUP: kept the authorised tokens as they were"),
        "{kept}"
    );

    let hall = identity(0x33, 0x7c, "hall");
    write_tokens(&tokens_file, &[("kitchen", &kitchen), ("hall", &hall)]);
    running.signal("HUP");
    let reloaded = running.wait_for("SIGHUP");
    assert!(
        reloaded.contains("SIGHUP: reloaded the authorised tokens")
            && reloaded.contains("tokens=2"),
        "{reloaded}"
    );
    // Still running: SIGHUP is not the end.
    assert!(running.child.try_wait().unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
