//! The token's console: the commands a person types at jeton-sim's shell and at the RIOT
//! firmware's shell, with their help, parsed ([`parse`]) and run against a [`Token`]
//! ([`execute`], [`run`]), and the room log `log` prints ([`RoomLog`]).
//!
//! Both shells hand their lines here, so that the commands, their arguments and their answers
//! cannot drift apart; each shell adds only what its platform owns (jeton-sim's `quit`, the
//! RIOT firmware's `gateway`, `pair`, `selftest` and device status) and lists those in the
//! same help ([`write_help`]). Answers go to a [`fmt::Write`], one line each, in the words
//! scripts and tests read: an `error <why>` line when a command cannot run.

mod log;

use core::fmt::{self, Write};

pub use log::RoomLog;

use heapless::String;

use crate::link::Link;
use crate::matrix::{CommandError, Limit, MAX_ID_LEN, Token, TokenError, UiEvent};
use crate::platform::{Instant, Platform};

/// One line of the help: a command, its arguments, what it does.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The first word of the line.
    pub name: &'static str,
    /// Its arguments (`<needed>`, `[optional]`).
    pub args: &'static str,
    /// What it does, in a few words.
    pub about: &'static str,
    /// What `help <command>` adds: what the arguments may be, what comes next.
    pub detail: &'static str,
}

/// The commands every shell takes, in the order the help lists them.
pub const COMMANDS: &[Entry] = &[
    detailed(
        "login",
        "[user] [password]",
        "log in to the homeserver through the gateway",
        "A shell started with a user and a password logs in with `login` alone. The token \
         keeps its login across restarts.",
    ),
    entry(
        "status",
        "",
        "the token's state: login, rooms, outbox, counters, link",
    ),
    entry("keys", "", "the device's identity keys and fingerprint"),
    entry("rooms", "", "joined rooms"),
    entry("invites", "", "pending invites"),
    detailed(
        "join",
        "<room>",
        "accept an invite, or join a room by id",
        INVITE_NUMBER,
    ),
    detailed("refuse", "<room>", "refuse an invite", INVITE_NUMBER),
    detailed(
        "send",
        "<room> <text>",
        "send an encrypted message",
        "<room>: a room id, or its number in `rooms`. <text>: the rest of the line. The \
         message waits on flash until the homeserver has it (`delivered`).",
    ),
    detailed(
        "sendfile",
        "<room> <file>",
        "send a file, end-to-end encrypted",
        "<room>: a room id, or its number in `rooms`. <file>: the rest of the line, a path \
         on this host (jeton-sim) or a stored file's name (a board).",
    ),
    detailed(
        "log",
        "[room]",
        "recent messages",
        "Messages and files both ways, oldest first: of one room (its id or its number in \
         `rooms`) or of every room.",
    ),
    detailed(
        "verify",
        "<user> <device>",
        "verify a device by SAS (the token starts)",
        "Both devices then show the same emoji and numbers: type `confirm` if they match, \
         `cancel` if not.",
    ),
    detailed(
        "request",
        "<user> <device>",
        "ask a device to verify by SAS (as Element does)",
        "Accept on the other device; both then show the same emoji and numbers: type \
         `confirm` if they match, `cancel` if not.",
    ),
    detailed(
        "confirm",
        "",
        "accept a verification, or confirm that the numbers match",
        "Answers a `verification-request` from another device, or confirms the emoji and \
         numbers of `sas` match those the other device shows.",
    ),
    entry("cancel", "", "cancel the verification"),
    detailed(
        "xsign",
        "[password]",
        "set up cross-signing: your other devices then trust this one",
        "Makes your master, self-signing and user-signing keys on the token, publishes them \
         (the homeserver may ask for your account password, which is used once and not kept) \
         and signs this device with them: `cross-signed` follows. A shell started with a \
         password takes `xsign` alone.",
    ),
    detailed(
        "decline",
        "[call]",
        "decline a ringing call (the newest without a call id)",
        "[call]: the call id `call-incoming` showed; without it, the call that rang last.",
    ),
    detailed(
        "help",
        "[command]",
        "this list, or one command in detail",
        "",
    ),
];

/// An [`Entry`], for a platform's own commands.
pub const fn entry(name: &'static str, args: &'static str, about: &'static str) -> Entry {
    Entry {
        name,
        args,
        about,
        detail: "",
    }
}

/// An [`Entry`] with what `help <command>` adds.
pub const fn detailed(
    name: &'static str,
    args: &'static str,
    about: &'static str,
    detail: &'static str,
) -> Entry {
    Entry {
        name,
        args,
        about,
        detail,
    }
}

/// What a room argument of `join` and `refuse` may be.
const INVITE_NUMBER: &str = "<room>: a room id, or an invite's number in `invites`.";

/// The help: [`COMMANDS`], then the platform's own, one line each.
pub fn write_help(out: &mut dyn Write, platform: &[Entry]) -> fmt::Result {
    const USAGE_WIDTH: usize = 30;
    for entry in COMMANDS.iter().chain(platform) {
        let mut usage = entry.name.len();
        write!(out, "  {}", entry.name)?;
        if !entry.args.is_empty() {
            write!(out, " {}", entry.args)?;
            usage += 1 + entry.args.len();
        }
        for _ in usage..USAGE_WIDTH {
            out.write_char(' ')?;
        }
        writeln!(out, " {}", entry.about)?;
    }
    Ok(())
}

/// `help <command>`: its usage, what it does and what its arguments may be, from
/// [`COMMANDS`] and the platform's own; an `error` line for a command that does not exist.
pub fn write_command_help(out: &mut dyn Write, platform: &[Entry], name: &str) -> fmt::Result {
    let Some(entry) = COMMANDS.iter().chain(platform).find(|e| e.name == name) else {
        return writeln!(out, "error there is no command {name} (help lists them)");
    };
    write!(out, "usage: {}", entry.name)?;
    if !entry.args.is_empty() {
        write!(out, " {}", entry.args)?;
    }
    writeln!(out, "\n  {}", entry.about)?;
    if !entry.detail.is_empty() {
        writeln!(out, "  {}", entry.detail)?;
    }
    Ok(())
}

/// A shell's `help [command]`: the list, or one command ([`write_command_help`]).
pub fn write_help_on(out: &mut dyn Write, platform: &[Entry], topic: Option<&str>) -> fmt::Result {
    match topic {
        Some(name) => write_command_help(out, platform, name),
        None => write_help(out, platform),
    }
}

/// A console command with its arguments; see [`COMMANDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Command<'a> {
    /// A shell may fill in the user and password it was started with.
    Login {
        user: Option<&'a str>,
        password: Option<&'a str>,
    },
    Status,
    Keys,
    Rooms,
    Invites,
    Join {
        room: &'a str,
    },
    Refuse {
        room: &'a str,
    },
    /// `text` is the rest of the line, inner spaces kept.
    Send {
        room: &'a str,
        text: &'a str,
    },
    /// `file` as the platform's file store names it (a path, a stored file's name).
    SendFile {
        room: &'a str,
        file: &'a str,
    },
    Log {
        room: Option<&'a str>,
    },
    Verify {
        user: &'a str,
        device: &'a str,
    },
    Request {
        user: &'a str,
        device: &'a str,
    },
    Confirm,
    Cancel,
    /// A shell may fill in the password it was started with.
    CrossSign {
        password: Option<&'a str>,
    },
    /// `call`: the call id of `call-incoming`; without it, the call that rang last.
    Decline {
        call: Option<&'a str>,
    },
    /// The list, or one command in detail.
    Help {
        topic: Option<&'a str>,
    },
}

/// What [`parse`] made of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Nothing but spaces.
    Empty,
    /// A console command.
    Command(Command<'a>),
    /// A console command without what it needs: the error to show.
    Incomplete(&'static str),
    /// Not a console command: its first word (the platform's own, or unknown).
    Other(&'a str),
}

/// Parses one shell line.
pub fn parse(line: &str) -> Line<'_> {
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Line::Empty;
    };
    let (first, second) = (words.next(), words.next());
    let rest = after_two_words(line).filter(|rest| !rest.is_empty());
    let command = match name {
        "login" => Some(Command::Login {
            user: first,
            password: second,
        }),
        "status" => Some(Command::Status),
        "keys" => Some(Command::Keys),
        "rooms" => Some(Command::Rooms),
        "invites" => Some(Command::Invites),
        "join" => first.map(|room| Command::Join { room }),
        "refuse" => first.map(|room| Command::Refuse { room }),
        "send" => first
            .zip(rest)
            .map(|(room, text)| Command::Send { room, text }),
        "sendfile" => first
            .zip(rest)
            .map(|(room, file)| Command::SendFile { room, file }),
        "log" => Some(Command::Log { room: first }),
        "verify" => first
            .zip(second)
            .map(|(user, device)| Command::Verify { user, device }),
        "request" => first
            .zip(second)
            .map(|(user, device)| Command::Request { user, device }),
        "confirm" => Some(Command::Confirm),
        "cancel" => Some(Command::Cancel),
        "xsign" => Some(Command::CrossSign { password: first }),
        "decline" => Some(Command::Decline { call: first }),
        "help" => Some(Command::Help { topic: first }),
        other => return Line::Other(other),
    };
    match command {
        Some(command) => Line::Command(command),
        None => Line::Incomplete(match name {
            "join" => "join needs a room id",
            "refuse" => "refuse needs a room id",
            "send" => "send needs a room id and a text",
            "sendfile" => "sendfile needs a room id and a file",
            "verify" => "verify needs a user id and a device id",
            _ => "request needs a user id and a device id",
        }),
    }
}

/// What follows a line's first two words (a message's text, a file's name), trimmed.
fn after_two_words(line: &str) -> Option<&str> {
    line.trim_start()
        .splitn(3, char::is_whitespace)
        .nth(2)
        .map(str::trim)
}

/// What the person can do after `event`, for a shell to print under its line: the events that
/// wait for an answer.
pub fn next_step(event: &UiEvent<'_>) -> Option<&'static str> {
    Some(match event {
        UiEvent::Invited { .. } => {
            "to accept: join <room> (its number in `invites`); to refuse: refuse <room>"
        }
        UiEvent::VerificationRequested { .. } => {
            "to verify: confirm, then compare what both devices show; to refuse: cancel"
        }
        UiEvent::ShortAuthString { .. } => {
            "if the other device shows the same: confirm; if not: cancel"
        }
        UiEvent::CallIncoming { .. } => {
            "to decline: decline; a token has no audio, answer on another device"
        }
        _ => return None,
    })
}

/// A [`Ui`](crate::matrix::Ui) that keeps the [`RoomLog`] `log` prints.
pub trait KeepsLog {
    /// Writes the log of `room`, or of every room, as [`RoomLog::write`] does.
    fn write_log(&self, room: Option<&str>, out: &mut dyn Write) -> fmt::Result;

    /// Keeps a line the token's own user sent (a message, or `file <name>`), which no event
    /// brings back: the token does not show its own messages' echoes.
    fn keep_own(&mut self, room: &str, sender: &str, line: &str);
}

impl<const R: usize, const L: usize, const B: usize> KeepsLog for RoomLog<R, L, B> {
    fn write_log(&self, room: Option<&str>, out: &mut dyn Write) -> fmt::Result {
        self.write(room, out)
    }

    fn keep_own(&mut self, room: &str, sender: &str, line: &str) {
        self.remember(room, sender, line);
    }
}

/// The platform's clocks, as a command needs them.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The monotonic clock the token runs on.
    pub now: Instant,
    /// Milliseconds since the Unix epoch, on a platform with a real-time clock (`request`
    /// carries it; without it, `request` is refused).
    pub unix_time_ms: Option<u64>,
}

/// Why a command did not run: what a shell says after `error `.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The command cannot run as given (what it lacks, in words).
    Usage(&'static str),
    /// The token refused it.
    Token(CommandError),
    /// A room given by a number that its list (`rooms`, `invites`) does not have.
    NoSuchNumber {
        /// The list's command.
        list: &'static str,
        /// The number given.
        number: usize,
        /// How many the list has.
        listed: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Usage(why) => f.write_str(why),
            Refusal::Token(e) => write!(f, "{e}"),
            Refusal::NoSuchNumber {
                list,
                number,
                listed,
            } => write!(
                f,
                "there is no {number} in `{list}`, which lists {listed}: give a number from it \
                 or a room id"
            ),
        }
    }
}

/// What became of a command, for a shell that reports failures (a script's exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// It ran (what it started may still fail later, as an event).
    Done,
    /// It was refused: its `error` line is written.
    Refused,
}

/// Why [`act`] stopped.
enum Stopped {
    Refused(Refusal),
    Output(fmt::Error),
}

impl From<CommandError> for Stopped {
    fn from(e: CommandError) -> Self {
        Stopped::Refused(Refusal::Token(e))
    }
}

impl From<fmt::Error> for Stopped {
    fn from(e: fmt::Error) -> Self {
        Stopped::Output(e)
    }
}

fn usage(why: &'static str) -> Stopped {
    Stopped::Refused(Refusal::Usage(why))
}

/// Runs `command` and writes its answer, or `error <why>`, to `out`. `help` lists
/// [`COMMANDS`] only: a shell with commands of its own answers `help` itself.
pub fn execute<P, L>(
    token: &mut Token<P, L>,
    command: Command<'_>,
    clock: Clock,
    out: &mut dyn Write,
) -> Result<Outcome, fmt::Error>
where
    P: Platform,
    P::Ui: KeepsLog,
    L: Link,
{
    execute_explained(token, command, clock, out, |refusal, out| {
        write!(out, "{refusal}")
    })
}

/// [`execute`], with the shell's own words for a refusal: `explain` writes what follows
/// `error ` on its line.
pub fn execute_explained<P, L>(
    token: &mut Token<P, L>,
    command: Command<'_>,
    clock: Clock,
    out: &mut dyn Write,
    explain: impl FnOnce(&Refusal, &mut dyn Write) -> fmt::Result,
) -> Result<Outcome, fmt::Error>
where
    P: Platform,
    P::Ui: KeepsLog,
    L: Link,
{
    match act(token, command, clock, out) {
        Ok(()) => Ok(Outcome::Done),
        Err(Stopped::Refused(refusal)) => {
            out.write_str("error ")?;
            explain(&refusal, out)?;
            writeln!(out)?;
            Ok(Outcome::Refused)
        }
        Err(Stopped::Output(e)) => Err(e),
    }
}

/// Parses `line` and runs it ([`execute`]); false when it is not a console command
/// ([`Line::Other`]), which the caller runs or refuses.
pub fn run<P, L>(
    token: &mut Token<P, L>,
    line: &str,
    clock: Clock,
    out: &mut dyn Write,
) -> Result<bool, fmt::Error>
where
    P: Platform,
    P::Ui: KeepsLog,
    L: Link,
{
    match parse(line) {
        Line::Empty => {}
        Line::Command(command) => {
            let _ = execute(token, command, clock, out)?;
        }
        Line::Incomplete(why) => writeln!(out, "error {why}")?,
        Line::Other(_) => return Ok(false),
    }
    Ok(true)
}

fn act<P, L>(
    token: &mut Token<P, L>,
    command: Command<'_>,
    clock: Clock,
    out: &mut dyn Write,
) -> Result<(), Stopped>
where
    P: Platform,
    P::Ui: KeepsLog,
    L: Link,
{
    let now = clock.now;
    match command {
        Command::Login {
            user: Some(user),
            password: Some(password),
        } => token.login(user, password, now)?,
        Command::Login { .. } => return Err(usage("login needs a user and a password")),
        Command::Status => write_status(token, out)?,
        Command::Keys => write_keys(token, out)?,
        Command::Rooms => {
            for (number, room) in token.rooms().enumerate() {
                writeln!(out, "{room} #{}", number + 1)?;
            }
        }
        Command::Invites => {
            for (number, invite) in token.invites().enumerate() {
                writeln!(out, "{invite} #{}", number + 1)?;
            }
        }
        Command::Join { room } => {
            let room = invite_named(token, room)?;
            token.join(&room, now)?;
        }
        Command::Refuse { room } => token.refuse(&invite_named(token, room)?)?,
        Command::Send { room, text } => {
            let room = room_named(token, room)?;
            token.send_text(&room, text, now)?;
            keep_own(token, &room, text);
        }
        Command::SendFile { room, file } => {
            let room = room_named(token, room)?;
            let mimetype = crate::files::attachment::mime_type_of(file);
            token.send_file(&room, file, mimetype, now)?;
            let mut line: String<MAX_ID_LEN> = String::new();
            let _ = write!(log::Cut(&mut line), "file {file}");
            keep_own(token, &room, &line);
        }
        Command::Log { room: None } => token.ui().write_log(None, out)?,
        Command::Log { room: Some(room) } => {
            let room = room_named(token, room)?;
            token.ui().write_log(Some(&room), out)?;
        }
        Command::Verify { user, device } => token.verify(user, device, now)?,
        Command::Request { user, device } => {
            let Some(unix_time_ms) = clock.unix_time_ms else {
                return Err(usage(
                    "request needs the time of day, which this device does not have (use verify)",
                ));
            };
            token.request_verification(user, device, unix_time_ms, now)?;
        }
        Command::Confirm => token.confirm_verification(now)?,
        Command::Cancel => token.cancel_verification(now)?,
        Command::CrossSign { password } => cross_sign(token, password, now)?,
        Command::Decline { call } => token.decline(call, now)?,
        Command::Help { topic } => write_help_on(out, &[], topic)?,
    }
    Ok(())
}

/// `xsign`: cross-signing set up with `password`, on a token built with it.
fn cross_sign<P: Platform, L: Link>(
    token: &mut Token<P, L>,
    password: Option<&str>,
    now: Instant,
) -> Result<(), Stopped> {
    #[cfg(feature = "cross-signing")]
    {
        let Some(password) = password else {
            return Err(usage(
                "xsign needs your account password: xsign <password>, or start the shell with one",
            ));
        };
        token.cross_sign(password, now)?;
        Ok(())
    }
    #[cfg(not(feature = "cross-signing"))]
    {
        let _ = (token, password, now);
        Err(usage("this token was built without cross-signing"))
    }
}

/// A room id as typed; or, for a number, the id of the room `rooms` lists with it.
fn room_named<P: Platform, L: Link>(
    token: &Token<P, L>,
    room: &str,
) -> Result<String<MAX_ID_LEN>, Stopped> {
    numbered(room, "rooms", || token.rooms().map(|r| r.room_id))
}

/// A room id as typed; or, for a number, the id of the room `rooms` lists with it: for a
/// shell's own commands that name a room as the console's do.
pub fn room_id<P: Platform, L: Link>(
    token: &Token<P, L>,
    room: &str,
) -> Result<String<MAX_ID_LEN>, Refusal> {
    room_named(token, room).map_err(|stopped| match stopped {
        Stopped::Refused(refusal) => refusal,
        Stopped::Output(_) => Refusal::Usage("the room could not be named"),
    })
}

/// A room id as typed; or, for a number, the room of the invite `invites` lists with it.
fn invite_named<P: Platform, L: Link>(
    token: &Token<P, L>,
    room: &str,
) -> Result<String<MAX_ID_LEN>, Stopped> {
    numbered(room, "invites", || token.invites().map(|i| i.room_id))
}

/// `given` itself, or the `given`th of `listed` (from 1) when it is a number: a room id
/// never is one.
fn numbered<'t, I: Iterator<Item = &'t str>>(
    given: &str,
    list: &'static str,
    listed: impl Fn() -> I,
) -> Result<String<MAX_ID_LEN>, Stopped> {
    let id = match given.parse::<usize>() {
        Ok(number) => listed().nth(number.wrapping_sub(1)).ok_or_else(|| {
            Stopped::Refused(Refusal::NoSuchNumber {
                list,
                number,
                listed: listed().count(),
            })
        })?,
        Err(_) => given,
    };
    String::try_from(id).map_err(|_| {
        Stopped::from(CommandError::Failed(TokenError::LimitReached(
            Limit::IdLength,
        )))
    })
}

/// Keeps a line the token's user sent in the room log.
fn keep_own<P, L>(token: &mut Token<P, L>, room: &str, line: &str)
where
    P: Platform,
    P::Ui: KeepsLog,
    L: Link,
{
    let mut sender: String<MAX_ID_LEN> = String::new();
    let _ = log::Cut(&mut sender).write_str(token.status().user_id.unwrap_or("me"));
    token.ui().keep_own(room, &sender, line);
}

/// `status`: the token's line, with the link's state and counters on a link that can
/// protect.
fn write_status<P: Platform, L: Link>(token: &Token<P, L>, out: &mut dyn Write) -> fmt::Result {
    write!(out, "{}", token.status())?;
    if L::PROTECTS {
        let link = match token.link_state() {
            (false, _) => "off",
            (true, false) => "handshaking",
            (true, true) => "ready",
        };
        let stats = token.link_stats();
        write!(
            out,
            " link={link} link-handshake-bytes={} link-rejected={}",
            stats.handshake_bytes, stats.rejected
        )?;
    }
    writeln!(out)
}

/// `keys`: the identity keys, and the Ed25519 key in groups of four as Matrix clients show
/// fingerprints.
fn write_keys<P: Platform, L: Link>(token: &Token<P, L>, out: &mut dyn Write) -> fmt::Result {
    let identity = token.identity();
    writeln!(
        out,
        "keys curve25519={} ed25519={}",
        identity.curve25519, identity.ed25519
    )?;
    out.write_str("fingerprint")?;
    for (index, c) in identity.ed25519.chars().enumerate() {
        if index % 4 == 0 {
            out.write_char(' ')?;
        }
        out.write_char(c)?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests;
