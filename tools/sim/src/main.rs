//! jeton-sim: a jeton token on the host.
//!
//! The same `jeton-core` state machine that runs on a RIOT board, driven by a UDP socket
//! to a jeton gateway, a directory of record files as its flash, the operating system's
//! random number generator and a shell on stdin. On a terminal it prompts; otherwise it
//! reads one command per line and prints one event per line, for scripts and tests.

mod file_store;
mod host_files;

use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches};

use jeton_core::console::{self, Clock, Command, KeepsLog, Line, RoomLog};
use jeton_core::link::{KeyFile, ProtectedLink};
use jeton_core::matrix::{Config, Token, Ui, UiEvent};
use jeton_core::platform::{Instant, Platform, Rng};

use file_store::FileStore;

/// A simulated jeton token: a Matrix E2EE device speaking CoAP to a jeton gateway.
///
/// It reads the commands below from stdin, one per line. Received files are saved under
/// <state-dir>/files/.
#[derive(clap::Parser, Debug)]
#[command(name = "jeton-sim", version)]
struct Args {
    /// The gateway's UDP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    gateway: String,
    /// The Matrix user to log in as (localpart or full user id).
    #[arg(long)]
    user: Option<String>,
    /// The password (visible in the process list: prefer --password-file).
    #[arg(long)]
    password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Where the token keeps its records and storage key (its "flash").
    #[arg(long, default_value = "jeton-sim-state")]
    state_dir: PathBuf,
    /// The device display name given at the first login.
    #[arg(long, default_value = "jeton-sim")]
    device_name: String,
    /// Accept invites from this user without asking (repeatable).
    #[arg(long = "auto-join-from")]
    auto_join_from: Vec<String>,
    /// Log in at start with --user and the password.
    #[arg(long)]
    login: bool,
    /// Register the /sync observation again after this long without a notification. Longer
    /// than the gateway's --observe-keepalive-secs (1200 s by default), so an idle token
    /// stays with the keepalives and does not pay for registrations.
    #[arg(long, default_value_t = 1500)]
    observe_silence_secs: u64,
    /// Share room keys only with devices verified by SAS (`verify`, `confirm`); the others are
    /// told the key is withheld (`m.room_key.withheld`, `m.unverified`).
    #[arg(long)]
    share_keys_only_with_verified: bool,
    /// Bytes of received files the token may keep under <state-dir>/files/.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    files_quota: u64,
    /// The token's link provisioning file (`jeton pair --token-out`): EDHOC and OSCORE to
    /// the gateway. Without it, `link.cbor` in the state directory is used if present.
    #[arg(long, value_name = "FILE")]
    link: Option<PathBuf>,
    /// Speak plain CoAP even if provisioning material is present (a gateway in its
    /// plain-MSC3079 compatibility mode).
    #[arg(long, conflicts_with = "link")]
    no_link: bool,
}

/// The link provisioning material the flags or the state directory name, if any.
fn link_material(args: &Args) -> anyhow::Result<Option<KeyFile>> {
    if args.no_link {
        return Ok(None);
    }
    let path = match &args.link {
        Some(path) => path.clone(),
        None => {
            let path = args.state_dir.join("link.cbor");
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let material = KeyFile::decode(&bytes).map_err(|e| {
        anyhow::anyhow!("{} is not link provisioning material: {e}", path.display())
    })?;
    if material.peer.is_none() {
        bail!("{} holds no gateway credential to pin", path.display());
    }
    Ok(Some(material))
}

/// The operating system's generator.
struct OsRng;

impl Rng for OsRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // Without randomness the token must not make keys.
        #[allow(clippy::expect_used)]
        getrandom::fill(dest).expect("the OS random number generator works");
    }
}

/// The commands jeton-sim takes besides the console's.
const SIM_COMMANDS: &[console::Entry] = &[console::entry("quit", "", "leave (also: exit)")];

/// The help of `help` and `--help`.
fn help_text() -> String {
    let mut help = String::new();
    // Writing into a String cannot fail.
    let _ = console::write_help(&mut help, SIM_COMMANDS);
    help
}

/// The room log `log` prints: the last 50 messages of the first 32 rooms (on the heap: the
/// shell moves into the token, which boots on the stack).
type SimLog = RoomLog<32, 50, 1024>;

/// Prints events one per line and keeps the recent messages of each room for `log`.
struct Shell {
    log: Box<SimLog>,
}

impl Ui for Shell {
    fn event(&mut self, event: &UiEvent<'_>) {
        self.log.on_event(event);
        if let Some(line) = event.line() {
            println!("{line}");
        }
    }
}

impl KeepsLog for Shell {
    fn write_log(&self, room: Option<&str>, out: &mut dyn fmt::Write) -> fmt::Result {
        self.log.write(room, out)
    }
}

/// The console's answers, to stdout.
struct Stdout;

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        print!("{s}");
        Ok(())
    }
}

/// The storage key: 32 random bytes in `state_dir/storage.key`, made at first start.
fn storage_key(state_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = state_dir.join("storage.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()));
    }
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

/// The host: the OS's generator, a directory as flash, the shell.
struct Host;

impl Platform for Host {
    type Rng = OsRng;
    type Store = FileStore;
    type Ui = Shell;
}

struct Sim {
    token: Token<Host, ProtectedLink>,
    socket: UdpSocket,
    gateway: SocketAddr,
    start: StdInstant,
    user: Option<String>,
    password: Option<String>,
}

impl Sim {
    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn transmit(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 1280];
        let now = self.now();
        while let Some(len) = self.token.poll_transmit(now, &mut buf) {
            self.socket.send_to(&buf[..len], self.gateway)?;
        }
        Ok(())
    }

    /// Runs one shell command; false on `quit`.
    fn command(&mut self, line: &str) -> bool {
        let clock = Clock {
            now: self.now(),
            // A verification request carries the wall-clock time.
            unix_time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
        };
        let out = &mut Stdout;
        let command = match console::parse(line) {
            Line::Empty => return true,
            Line::Command(Command::Help) => {
                print!("{}", help_text());
                return true;
            }
            // `login` alone logs in as --user with the password given at start.
            Line::Command(Command::Login { user, password }) => {
                let user = user.or(self.user.as_deref()).map(str::to_string);
                let password = password.or(self.password.as_deref()).map(str::to_string);
                let login = Command::Login {
                    user: user.as_deref(),
                    password: password.as_deref(),
                };
                let _ = console::execute(&mut self.token, login, clock, out);
                return true;
            }
            Line::Command(command) => command,
            Line::Incomplete(why) => {
                println!("error {why}");
                return true;
            }
            Line::Other("quit" | "exit") => return false,
            Line::Other(other) => {
                println!("error unknown command {other} (try help)");
                return true;
            }
        };
        // Writing to stdout does not fail.
        let _ = console::execute(&mut self.token, command, clock, out);
        true
    }
}

fn main() -> anyhow::Result<()> {
    let help = format!("Commands (one per line on stdin):\n{}", help_text());
    let args = Args::from_arg_matches(&Args::command().after_help(help).get_matches())
        .unwrap_or_else(|e| e.exit());
    let password = match (&args.password, &args.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        (None, None) => None,
    };
    let gateway = args
        .gateway
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.gateway))?
        .next()
        .context("the gateway address resolves to nothing")?;
    let bind: SocketAddr = if gateway.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    let files = host_files::HostFiles::new(&args.state_dir, args.files_quota)
        .with_context(|| format!("opening {}/files", args.state_dir.display()))?;
    let store = FileStore::open(&args.state_dir)
        .with_context(|| format!("opening {}", args.state_dir.display()))?
        .with_files(files);
    let mut config = Config::new(storage_key(&args.state_dir)?);
    config.coap.observe_silence_ms = args.observe_silence_secs.saturating_mul(1000);
    config.share_keys_only_with_verified = args.share_keys_only_with_verified;
    config.device_display_name = args
        .device_name
        .as_str()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the device name is too long"))?;
    for user in &args.auto_join_from {
        let user = user
            .as_str()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{user} is too long"))?;
        if config.auto_join_from.push(user).is_err() {
            bail!("too many --auto-join-from users");
        }
    }
    let start = StdInstant::now();
    let material = link_material(&args)?;
    let token = Token::with_link(
        config,
        material,
        OsRng,
        store,
        Shell {
            log: Box::default(),
        },
        Instant::ZERO,
    )
    .map_err(|e| anyhow::anyhow!("the token could not boot: {e}"))?;
    let mut sim = Sim {
        token,
        socket,
        gateway,
        start,
        user: args.user.clone(),
        password,
    };
    let interactive = std::io::stdin().is_terminal();
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    if args.login && !sim.token.is_logged_in() {
        sim.command("login");
    }
    if interactive {
        println!("jeton-sim: type help for the commands");
    }
    let mut buf = [0u8; 2048];
    let mut stdin_open = true;
    loop {
        sim.transmit()?;
        std::io::stdout().flush()?;
        let now = sim.now();
        let wait = sim
            .token
            .poll_timeout()
            .map(|t| Duration::from_millis(t.millis_since(now)))
            .unwrap_or(Duration::from_millis(50))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        sim.socket.set_read_timeout(Some(wait))?;
        match sim.socket.recv_from(&mut buf) {
            Ok((len, from)) if from == sim.gateway => {
                let now = sim.now();
                sim.token.handle_datagram(&buf[..len], now);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e.into()),
        }
        let now = sim.now();
        if sim.token.poll_timeout().is_some_and(|t| t <= now) {
            sim.token.handle_timeout(now);
        }
        while stdin_open {
            match lines.try_recv() {
                Ok(line) => {
                    if !sim.command(&line) {
                        sim.transmit()?;
                        return Ok(());
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // End of input: a script is done, but the token keeps running until
                    // its outbox is empty.
                    stdin_open = false;
                }
            }
        }
        if !stdin_open
            && !interactive
            && sim.token.outbox_len() == 0
            && !sim.token.is_transferring()
        {
            sim.transmit()?;
            return Ok(());
        }
    }
}
