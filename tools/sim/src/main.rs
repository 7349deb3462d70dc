//! jeton-sim: a jeton token on the host.
//!
//! The same `jeton-core` state machine that runs on a RIOT board, driven by a UDP socket
//! to a jeton gateway, a directory of record files as its flash, the operating system's
//! random number generator and a shell on stdin. On a terminal it prompts; otherwise it
//! reads one command per line and prints one event per line, for scripts and tests.

mod args;
mod explain;
mod file_store;
mod host_files;
mod terminal;
mod voice;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches};

use jeton_core::console::{self, Clock, Command, KeepsLog, Line, Outcome, RoomLog};
use jeton_core::link::ProtectedLink;
use jeton_core::matrix::{Config, EscapedBody, Token, TokenError, Ui, UiEvent};
use jeton_core::platform::{Instant, Platform, Rng};

use args::{Args, NO_LINK, Usage, gateway_address, link_material, password};
use file_store::FileStore;

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
const SIM_COMMANDS: &[console::Entry] = &[
    console::detailed(
        "sendvoice",
        "<room> <wav>",
        "record a WAV on this host and send it as a voice message",
        "<room>: a room id, or its number in `rooms`. <wav>: the rest of the line, a 16 kHz \
         mono 16-bit PCM WAV file, recorded as the token's microphone would be (Ogg Opus), then \
         sent end-to-end encrypted as a voice message Element plays.",
    ),
    console::detailed(
        "play",
        "<file>",
        "decode a received voice message to a WAV",
        "<file>: the path `file-saved` printed, or a name in the files directory. Writes a WAV \
         beside it and prints `played <path> <duration ms>`.",
    ),
    console::entry("quit", "", "leave (also: exit, Ctrl-D)"),
];

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

/// Prints events one per line and keeps the recent messages of each room for `log`; counts
/// the failures that decide the exit status of a script.
struct Shell {
    /// The gateway's address, named in errors about it.
    gateway: SocketAddr,
    log: Box<SimLog>,
    /// Where received files were stored, as the file store reports them.
    saved: host_files::Saved,
    /// A login was accepted and has neither succeeded nor failed yet.
    login_pending: bool,
    /// Failures a script's exit status reports: a login, a message or a file that failed.
    failures: u32,
    /// Link errors: the person must act (pair the token, start or fix the gateway).
    link_errors: u32,
    /// A person at a terminal: told what to do next after the events that wait for them.
    at_terminal: bool,
}

impl Shell {
    fn new(gateway: SocketAddr) -> Shell {
        Shell {
            gateway,
            log: Box::default(),
            saved: host_files::Saved::default(),
            login_pending: false,
            failures: 0,
            link_errors: 0,
            at_terminal: std::io::stdin().is_terminal(),
        }
    }

    /// The event's line, errors in the person's words.
    fn line(&self, event: &UiEvent<'_>) -> Option<String> {
        match event {
            UiEvent::Error(e) => Some(format!(
                "error {}",
                explain::error(e, self.gateway, self.login_pending)
            )),
            UiEvent::SendFailed { local_id, error } => Some(format!(
                "send-failed {local_id} {}",
                explain::error(error, self.gateway, false)
            )),
            event => event.line().map(|line| line.to_string()),
        }
    }
}

impl Ui for Shell {
    fn event(&mut self, event: &UiEvent<'_>) {
        self.log.on_event(event);
        if let Some(line) = self.line(event) {
            terminal::say_line(&line);
        }
        if let Some(step) = console::next_step(event).filter(|_| self.at_terminal) {
            terminal::say_line(&format!("  {step}"));
        }
        match event {
            UiEvent::LoggedIn { .. } => self.login_pending = false,
            UiEvent::Error(TokenError::Link(_)) => self.link_errors += 1,
            // Before the login completes no other request runs: this error ended it.
            UiEvent::Error(_) if self.login_pending => {
                self.login_pending = false;
                self.failures += 1;
            }
            UiEvent::SendFailed { .. }
            | UiEvent::FileFailed { .. }
            | UiEvent::CrossSigningFailed { .. } => self.failures += 1,
            UiEvent::FileReceived { .. } => {
                if let Some(path) = self.saved.borrow_mut().pop_front() {
                    let path = EscapedBody(&path.to_string_lossy()).to_string();
                    terminal::say_line(&format!("file-saved {path}"));
                }
            }
            _ => {}
        }
    }
}

impl KeepsLog for Shell {
    fn write_log(&self, room: Option<&str>, out: &mut dyn fmt::Write) -> fmt::Result {
        self.log.write(room, out)
    }

    fn keep_own(&mut self, room: &str, sender: &str, line: &str) {
        self.log.keep_own(room, sender, line);
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
    /// Connected to the gateway, so that the system reports an ICMP port unreachable.
    socket: UdpSocket,
    gateway: SocketAddr,
    start: StdInstant,
    user: Option<String>,
    password: Option<String>,
    /// Where the token keeps its records: the voice message being sent is recorded there.
    state_dir: PathBuf,
    /// Where received files are stored (`play` finds names there).
    files_dir: PathBuf,
    /// Commands refused (an `error` line each).
    refused: u32,
    /// The system said that nothing listens at the gateway's address, since the last
    /// datagram from it.
    no_gateway: bool,
    /// Times it said so.
    no_gateway_count: u32,
}

impl Sim {
    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn transmit(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 1280];
        let now = self.now();
        while let Some(len) = self.token.poll_transmit(now, &mut buf) {
            match self.socket.send(&buf[..len]) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    self.gateway_refused();
                }
                result => {
                    result?;
                }
            }
        }
        Ok(())
    }

    /// One round with the gateway: sends what the token has to send, waits for a datagram
    /// until the token's next timeout (50 ms at the most), hands it in, and runs a timeout
    /// that is due.
    fn exchange(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        self.transmit()?;
        std::io::stdout().flush()?;
        let now = self.now();
        let wait = self
            .token
            .poll_timeout()
            .map(|t| Duration::from_millis(t.millis_since(now)))
            .unwrap_or(Duration::from_millis(50))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        self.socket.set_read_timeout(Some(wait))?;
        match self.socket.recv(buf) {
            Ok(len) => {
                self.no_gateway = false;
                let now = self.now();
                self.token.handle_datagram(&buf[..len], now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => self.gateway_refused(),
            Err(e) => return Err(e.into()),
        }
        let now = self.now();
        if self.token.poll_timeout().is_some_and(|t| t <= now) {
            self.token.handle_timeout(now);
        }
        Ok(())
    }

    /// An ICMP port unreachable: says so once until the gateway answers again. The token
    /// keeps retransmitting, so a gateway that starts later is found.
    fn gateway_refused(&mut self) {
        if !self.no_gateway {
            self.no_gateway = true;
            self.no_gateway_count += 1;
            terminal::say_line(&format!(
                "error no gateway answers at {}: is jeton-gateway running?",
                self.gateway
            ));
        }
    }

    /// What a script still waits for: a login, messages to send, a transfer.
    fn busy(&mut self) -> bool {
        self.token.ui().login_pending || self.token.outbox_len() > 0 || self.token.is_transferring()
    }

    /// Failures so far, for a script's exit status.
    fn failures(&mut self) -> u32 {
        let shell = self.token.ui();
        self.refused + shell.failures + shell.link_errors + self.no_gateway_count
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
        let outcome = match console::parse(line) {
            Line::Empty => Outcome::Done,
            Line::Command(Command::Help { topic }) => {
                let mut help = String::new();
                // Writing into a String cannot fail.
                let _ = console::write_help_on(&mut help, SIM_COMMANDS, topic);
                terminal::say(&help);
                Outcome::Done
            }
            // `login` alone logs in as --user with the password given at start.
            Line::Command(Command::Login { user, password }) => {
                let user = user.or(self.user.as_deref()).map(str::to_string);
                let password = password.or(self.password.as_deref()).map(str::to_string);
                let login = Command::Login {
                    user: user.as_deref(),
                    password: password.as_deref(),
                };
                let outcome = self.execute(login, clock);
                self.token.ui().login_pending |= outcome == Outcome::Done;
                outcome
            }
            // `xsign` alone sets up cross-signing with the password given at start.
            Line::Command(Command::CrossSign { password }) => {
                let password = password.or(self.password.as_deref()).map(str::to_string);
                let cross_sign = Command::CrossSign {
                    password: password.as_deref(),
                };
                self.execute(cross_sign, clock)
            }
            Line::Command(command) => self.execute(command, clock),
            Line::Incomplete(why) => {
                terminal::say_line(&format!(
                    "error {why} (help {} tells more)",
                    first_word(line)
                ));
                Outcome::Refused
            }
            Line::Other("quit" | "exit") => return false,
            Line::Other("sendvoice") => self.send_voice(line, clock.now),
            Line::Other("play") => self.play(line),
            Line::Other(other) => {
                terminal::say_line(&format!("error unknown command {other} (try help)"));
                Outcome::Refused
            }
        };
        if outcome == Outcome::Refused {
            self.refused += 1;
        }
        true
    }

    /// `sendvoice <room> <wav>`: records the WAV into an Ogg Opus file and sends it as a voice
    /// message.
    fn send_voice(&mut self, line: &str, now: Instant) -> Outcome {
        let mut words = line.trim_start().splitn(3, char::is_whitespace).skip(1);
        let (Some(room), Some(wav)) = (words.next(), words.next().map(str::trim)) else {
            return refuse("sendvoice needs a room id and a WAV file (help sendvoice tells more)");
        };
        let room = match console::room_id(&self.token, room) {
            Ok(room) => room,
            Err(refusal) => return refuse(&explain::refusal(&refusal)),
        };
        if self.token.is_transferring() {
            return refuse("another file transfer is under way: send the voice message after it");
        }
        let ogg = voice::outgoing_path(&self.state_dir);
        let mut serial = [0u8; 4];
        OsRng.fill_bytes(&mut serial);
        let info = match voice::record(Path::new(wav), &ogg, u32::from_le_bytes(serial)) {
            Ok(info) => info,
            Err(why) => return refuse(&why),
        };
        let duration_ms = info.duration_ms;
        let ogg = ogg.to_string_lossy();
        match self.token.send_voice(&room, &ogg, info, now) {
            Ok(()) => {
                let line = format!("voice {duration_ms} ms");
                let sender = self.token.status().user_id.unwrap_or("me").to_string();
                self.token.ui().keep_own(&room, &sender, &line);
                Outcome::Done
            }
            Err(e) => refuse(&explain::refusal(&console::Refusal::Token(e))),
        }
    }

    /// `play <file>`: decodes a received voice message to a WAV beside it.
    fn play(&mut self, line: &str) -> Outcome {
        let Some(file) = line
            .trim_start()
            .split_once(char::is_whitespace)
            .map(|(_, f)| f.trim())
        else {
            return refuse("play needs a received voice message's file (help play tells more)");
        };
        let given = Path::new(file);
        let path = if given.exists() {
            given.to_path_buf()
        } else {
            self.files_dir.join(file)
        };
        if !path.exists() {
            return refuse(&format!(
                "there is no file {file}, here or among the received files in {}",
                self.files_dir.display()
            ));
        }
        match voice::play(&path) {
            Ok((wav, duration_ms)) => {
                let wav = EscapedBody(&wav.to_string_lossy()).to_string();
                terminal::say_line(&format!("played {wav} {duration_ms}"));
                Outcome::Done
            }
            Err(why) => refuse(&why),
        }
    }

    /// Runs a console command, a refusal said in the person's words.
    fn execute(&mut self, command: Command<'_>, clock: Clock) -> Outcome {
        let mut answer = String::new();
        let outcome =
            console::execute_explained(&mut self.token, command, clock, &mut answer, |r, out| {
                out.write_str(&explain::refusal(r))
            })
            // Writing into a String does not fail.
            .unwrap_or(Outcome::Done);
        terminal::say(&answer);
        outcome
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jeton-sim: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let help = format!("Commands (one per line on stdin):\n{}", help_text());
    let args = Args::from_arg_matches(&Args::command().after_help(help).get_matches())
        .unwrap_or_else(|e| e.exit());
    let password = password(&args)?;
    if args.login && (args.user.is_none() || password.is_none()) {
        bail!(Usage(
            "--login needs --user and a password (--password-file FILE, or --password)".into()
        ));
    }
    let gateway = gateway_address(&args)?;
    let material = link_material(&args)?;
    if material.is_none() && !args.plain_coap_in_clear {
        bail!(Usage(NO_LINK.into()));
    }
    let socket = connect(gateway)?;
    let shell = Shell::new(gateway);
    let files_dir = args
        .files_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join("files"));
    let files = host_files::HostFiles::new(&files_dir, args.files_quota, shell.saved.clone())
        .with_context(|| format!("opening {}", files_dir.display()))?;
    let store = FileStore::open(&args.state_dir)
        .with_context(|| format!("opening {}", args.state_dir.display()))?
        .with_files(files);
    let config = config(&args)?;
    let start = StdInstant::now();
    let token = Token::with_link(config, material, OsRng, store, shell, Instant::ZERO)
        .map_err(|e| anyhow::anyhow!("the token could not boot: {e}"))?;
    let mut sim = Sim {
        token,
        socket,
        gateway,
        start,
        user: args.user.clone(),
        password,
        state_dir: args.state_dir.clone(),
        files_dir,
        refused: 0,
        no_gateway: false,
        no_gateway_count: 0,
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("jeton-sim: type help for the commands, help <command> for one of them");
    }
    let lines = terminal::lines(interactive);
    if args.login && !sim.token.is_logged_in() {
        sim.command("login");
    }
    serve(&mut sim, &lines, interactive)
}

/// A UDP socket connected to `gateway`, so that the system reports an ICMP port unreachable.
fn connect(gateway: SocketAddr) -> anyhow::Result<UdpSocket> {
    let bind: SocketAddr = if gateway.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(gateway)?;
    Ok(socket)
}

/// The token's configuration from the flags, with the storage key of `--state-dir`.
fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::new(storage_key(&args.state_dir)?);
    config.coap.observe_silence_ms = args.observe_silence_secs.saturating_mul(1000);
    config.share_keys_only_with_verified = args.share_keys_only_with_verified;
    config.device_display_name = args
        .device_name
        .as_str()
        .try_into()
        .map_err(|_| Usage("the device name is too long".into()))?;
    for user in &args.auto_join_from {
        let user = user
            .as_str()
            .try_into()
            .map_err(|_| Usage(format!("{user} is too long")))?;
        if config.auto_join_from.push(user).is_err() {
            bail!(Usage("too many --auto-join-from users".into()));
        }
    }
    Ok(config)
}

/// Exchanges datagrams and runs the commands of `lines` until one of them, the end of a
/// terminal's input, or the end of what a script started, ends the shell.
fn serve(
    sim: &mut Sim,
    lines: &mpsc::Receiver<String>,
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let mut buf = [0u8; 2048];
    // The failures counted when a script's input ended: one more after it ends the wait, and
    // so does a gateway that is not there (nothing it waits for can happen).
    let mut failures_at_end: Option<u32> = None;
    loop {
        sim.exchange(&mut buf)?;
        while failures_at_end.is_none() {
            match lines.try_recv() {
                Ok(line) => {
                    if !sim.command(&line) {
                        sim.transmit()?;
                        return Ok(exit_code(interactive, sim.failures()));
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                // Ctrl-D on a terminal ends the shell as `quit` does.
                Err(mpsc::TryRecvError::Disconnected) if interactive => {
                    sim.transmit()?;
                    return Ok(ExitCode::SUCCESS);
                }
                // The end of a script: wait for what it started.
                Err(mpsc::TryRecvError::Disconnected) => failures_at_end = Some(sim.failures()),
            }
        }
        if let Some(before) = failures_at_end {
            let failures = sim.failures();
            if failures > before || sim.no_gateway || !sim.busy() {
                sim.transmit()?;
                std::io::stdout().flush()?;
                return Ok(exit_code(false, failures));
            }
        }
    }
}

/// A script's exit status: 1 after any failure; a person at a terminal gets 0.
fn exit_code(interactive: bool, failures: u32) -> ExitCode {
    if interactive || failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Says why a command of jeton-sim's own was refused.
fn refuse(why: &str) -> Outcome {
    terminal::say_line(&format!("error {why}"));
    Outcome::Refused
}

/// The first word of a line, the command a person meant.
fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}
