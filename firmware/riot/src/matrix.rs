//! The token's Matrix client on RIOT: jeton-core's [`Token`] driven by the main thread's
//! event loop, the UI events it prints, the gateway address setting, and the command slot
//! through which the shell thread hands the main thread its commands.
//!
//! The main thread owns everything the token touches (the Token, the UDP socket, the flash);
//! the shell thread only reads lines. A command goes through [`COMMAND`]: the shell thread
//! puts the line there and waits until the main thread has run it, so that a command's output
//! is complete before the next line is read, as in `jeton-sim`. Output lines are `jeton-sim`'s.

use core::fmt::Write;

use embedded_nal::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use jeton_core::files::attachment::mime_type_of;
use jeton_core::matrix::{EscapedBody, Token, Ui, UiEvent};
use jeton_core::platform::{Clock, Instant};
use jeton_core::store::{RecordId, Store};
use riot_wrappers::mutex::Mutex;
use riot_wrappers::println;

use crate::clock::MonotonicClock;
use crate::rng::HardwareRng;
use crate::store::RecordStore;

/// The token as the firmware runs it.
pub(crate) type FirmwareToken<'f> = Token<HardwareRng, RecordStore<'f>, ConsoleUi>;

/// The record holding the gateway address: 16 address bytes, port (u16 big-endian).
pub(crate) const GATEWAY: RecordId = 0xF002;

/// The gateway address a fresh token uses (`JETON_GATEWAY_ADDR`, `JETON_GATEWAY_PORT` in
/// riot-sys-config/jeton.mk): link-local addresses go out on the first interface.
const DEFAULT_GATEWAY_PORT: u16 = 5683;

/// The largest datagram the token sends or receives (IPv6's minimum MTU).
pub(crate) const DATAGRAM_BYTES: usize = 1280;

/// Longest shell line the command slot carries.
pub(crate) const LINE_CAPACITY: usize = 512;

/// Messages `log` keeps per room, and rooms it keeps them for.
const LOG_LINES: usize = 8;
const LOG_ROOMS: usize = 4;
/// Longest `sender: body` line `log` keeps (longer ones are cut at a character boundary).
const LOG_LINE_BYTES: usize = 160;
/// Longest room id `log` keeps.
const LOG_ROOM_ID_BYTES: usize = 96;

/// One shell line waiting for the main thread.
#[derive(Debug)]
pub(crate) struct CommandSlot {
    line: [u8; LINE_CAPACITY],
    len: usize,
    pending: bool,
}

/// The command slot the shell thread fills and the main thread empties.
pub(crate) static COMMAND: Mutex<CommandSlot> = Mutex::new(CommandSlot {
    line: [0; LINE_CAPACITY],
    len: 0,
    pending: false,
});

/// Hands `words` (joined by single spaces) to the main thread and waits until it ran them.
/// Called from the shell thread. A line longer than [`LINE_CAPACITY`] is refused.
pub(crate) fn post_command<'a>(words: impl Iterator<Item = &'a str>, clock: &MonotonicClock) {
    let mut line = [0u8; LINE_CAPACITY];
    let mut len: usize = 0;
    for (index, word) in words.enumerate() {
        let separator = usize::from(index > 0);
        let Some(end) = len
            .checked_add(separator)
            .and_then(|start| start.checked_add(word.len()))
            .filter(|end| *end <= LINE_CAPACITY)
        else {
            println!("error the line is longer than {LINE_CAPACITY} bytes");
            return;
        };
        if let Some(space) = line.get_mut(len..len + separator) {
            space.fill(b' ');
        }
        if let Some(target) = line.get_mut(len + separator..end) {
            target.copy_from_slice(word.as_bytes());
        }
        len = end;
    }
    loop {
        let mut slot = COMMAND.lock();
        if !slot.pending {
            slot.line = line;
            slot.len = len;
            slot.pending = true;
            break;
        }
        drop(slot);
        clock.sleep_ms(5);
    }
    while COMMAND.lock().pending {
        clock.sleep_ms(5);
    }
}

/// Runs `run` on the waiting command line, if there is one, and marks it done.
pub(crate) fn take_command(run: impl FnOnce(&str)) {
    let slot = COMMAND.lock();
    if !slot.pending {
        return;
    }
    let len = slot.len;
    let line = slot.line;
    // The slot stays pending while the command runs, so the shell waits for its output.
    drop(slot);
    run(line
        .get(..len)
        .and_then(|bytes| core::str::from_utf8(bytes).ok())
        .unwrap_or(""));
    COMMAND.lock().pending = false;
}

/// The gateway's address: from the store, else the build's default.
pub(crate) fn gateway(store: &mut RecordStore<'_>) -> SocketAddr {
    let mut record = [0u8; 18];
    if let Ok(Some(18)) = store.get(GATEWAY, &mut record) {
        let (addr, port) = record.split_at(16);
        let mut octets = [0u8; 16];
        octets.copy_from_slice(addr);
        let port = u16::from_be_bytes([
            port.first().copied().unwrap_or(0),
            port.get(1).copied().unwrap_or(0),
        ]);
        return with_scope(Ipv6Addr::from(octets), port);
    }
    default_gateway()
}

pub(crate) fn default_gateway() -> SocketAddr {
    let text = option_env!("JETON_GATEWAY_ADDR").unwrap_or("fe80::1");
    let addr = text.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::localhost());
    let port = option_env!("JETON_GATEWAY_PORT")
        .and_then(|port| port.parse().ok())
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    with_scope(addr, port)
}

/// A link-local address needs its interface; the token uses the first one.
fn with_scope(addr: Ipv6Addr, port: u16) -> SocketAddr {
    let scope = if addr.segments().first().copied().unwrap_or(0) & 0xffc0 == 0xfe80 {
        riot_wrappers::gnrc::Netif::all()
            .next()
            .map(|netif| u32::from(core::num::NonZero::<u16>::from(netif.pid()).get()))
            .unwrap_or(0)
    } else {
        0
    };
    SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope))
}

/// `gateway <addr> <port>`: stores the address; the token uses it from the next datagram.
pub(crate) fn set_gateway(
    store: &mut RecordStore<'_>,
    addr: &str,
    port: &str,
) -> Result<SocketAddr, &'static str> {
    let addr = addr
        .split('%')
        .next()
        .unwrap_or(addr)
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<Ipv6Addr>()
        .map_err(|_| "gateway needs an IPv6 address")?;
    let port = port.parse::<u16>().map_err(|_| "gateway needs a port")?;
    let mut record = [0u8; 18];
    let (octets, port_bytes) = record.split_at_mut(16);
    octets.copy_from_slice(&addr.octets());
    port_bytes.copy_from_slice(&port.to_be_bytes());
    store
        .put(GATEWAY, &record)
        .map_err(|_| "the gateway address could not be stored")?;
    Ok(with_scope(addr, port))
}

/// Whether a datagram from `from` comes from the gateway (the scope is not compared: GNRC
/// reports the receiving interface, which a configured address may leave open).
pub(crate) fn is_from(gateway: SocketAddr, from: SocketAddr) -> bool {
    match (gateway, from) {
        (SocketAddr::V6(gateway), SocketAddr::V6(from)) => {
            gateway.ip() == from.ip() && gateway.port() == from.port()
        }
        _ => gateway.ip() == from.ip() && gateway.port() == from.port(),
    }
}

/// An IP address as `jeton-sim` would take it.
pub(crate) fn address_text(addr: SocketAddr) -> impl core::fmt::Display {
    struct Shown(SocketAddr);
    impl core::fmt::Display for Shown {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0.ip() {
                IpAddr::V6(ip) => write!(f, "{ip} {}", self.0.port()),
                IpAddr::V4(ip) => write!(f, "{ip} {}", self.0.port()),
            }
        }
    }
    Shown(addr)
}

/// A bounded text, cut at a character boundary when it does not fit.
#[derive(Debug, Clone, Copy)]
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const EMPTY: Self = Self {
        bytes: [0; N],
        len: 0,
    };

    fn as_str(&self) -> &str {
        self.bytes
            .get(..self.len)
            .and_then(|bytes| core::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            let end = self.len + encoded.len();
            match self.bytes.get_mut(self.len..end) {
                Some(target) => target.copy_from_slice(encoded),
                None => return Err(core::fmt::Error),
            }
            self.len = end;
        }
        Ok(())
    }
}

/// The recent messages of one room.
#[derive(Debug, Clone, Copy)]
struct RoomLog {
    room_id: Text<LOG_ROOM_ID_BYTES>,
    lines: [Text<LOG_LINE_BYTES>; LOG_LINES],
    /// Lines kept (at most [`LOG_LINES`]); the oldest is dropped first.
    count: usize,
}

/// The recent messages `log` shows: a static rather than part of [`ConsoleUi`], so that the
/// UI that moves into the token at boot is small (only the main thread uses it).
static LOGS: Mutex<[Option<RoomLog>; LOG_ROOMS]> = Mutex::new([None; LOG_ROOMS]);

/// Prints UI events one per line, as `jeton-sim` does, and keeps the recent messages of the
/// first [`LOG_ROOMS`] rooms for `log` (in [`LOGS`]).
#[derive(Debug)]
pub(crate) struct ConsoleUi;

impl ConsoleUi {
    fn remember(&mut self, room_id: &str, sender: &str, body: &str) {
        let mut logs = LOGS.lock();
        let index = logs
            .iter()
            .position(|log| log.is_some_and(|log| log.room_id.as_str() == room_id))
            .or_else(|| logs.iter().position(Option::is_none));
        let Some(log) = index.and_then(|index| logs.get_mut(index)) else {
            return;
        };
        let log = log.get_or_insert_with(|| {
            let mut id = Text::EMPTY;
            let _ = id.write_str(room_id);
            RoomLog {
                room_id: id,
                lines: [Text::EMPTY; LOG_LINES],
                count: 0,
            }
        });
        if log.count == LOG_LINES {
            log.lines.rotate_left(1);
            log.count -= 1;
        }
        if let Some(line) = log.lines.get_mut(log.count) {
            *line = Text::EMPTY;
            let _ = write!(line, "{sender}: {}", EscapedBody(body));
            log.count += 1;
        }
    }

    /// `log [room]`: `log <room> <sender>: <body>` lines, oldest first.
    pub(crate) fn print_log(&self, room: Option<&str>) {
        for log in LOGS.lock().iter().flatten() {
            let id = log.room_id.as_str();
            if room.is_none_or(|room| room == id) {
                for line in log.lines.iter().take(log.count) {
                    println!("log {id} {}", line.as_str());
                }
            }
        }
    }
}

impl Ui for ConsoleUi {
    fn event(&mut self, event: &UiEvent<'_>) {
        if let UiEvent::Message {
            room_id,
            sender,
            body,
            ..
        } = event
        {
            self.remember(room_id, sender, body);
        }
        if let Some(line) = event.line() {
            println!("{line}");
        }
    }
}

/// Runs one Matrix command of `jeton-sim`'s set; false if `line` is not one of them.
pub(crate) fn command(token: &mut FirmwareToken<'_>, line: &str, now: Instant) -> bool {
    let mut words = line.split_whitespace();
    let result: Result<(), &dyn core::fmt::Display> = match words.next() {
        Some("login") => match (words.next(), words.next()) {
            (Some(user), Some(password)) => token.login(user, password, now).map_err(|err| {
                println!("error {err}");
                &"" as &dyn core::fmt::Display
            }),
            _ => Err(&"login needs a user and a password"),
        },
        Some("rooms") => {
            for room in token.rooms() {
                println!("{room}");
            }
            Ok(())
        }
        Some("invites") => {
            for invite in token.invites() {
                println!("{invite}");
            }
            Ok(())
        }
        Some("join") => match words.next() {
            Some(room) => token.join(room, now).map_err(|err| {
                println!("error {err}");
                &"" as &dyn core::fmt::Display
            }),
            None => Err(&"join needs a room id"),
        },
        Some("refuse") => match words.next() {
            Some(room) => token.refuse(room).map_err(|err| {
                println!("error {err}");
                &"" as &dyn core::fmt::Display
            }),
            None => Err(&"refuse needs a room id"),
        },
        Some("send") => {
            let room = words.next();
            let text = after_two_words(line);
            match (room, text) {
                (Some(room), Some(text)) if !text.is_empty() => {
                    token.send_text(room, text, now).map(drop).map_err(|err| {
                        println!("error {err}");
                        &"" as &dyn core::fmt::Display
                    })
                }
                _ => Err(&"send needs a room id and a text"),
            }
        }
        Some("sendfile") => match (words.next(), after_two_words(line)) {
            (Some(room), Some(name)) if !name.is_empty() => token
                .send_file(room, name, mime_type_of(name), now)
                .map_err(|err| {
                    println!("error {err}");
                    &"" as &dyn core::fmt::Display
                }),
            _ => Err(&"sendfile needs a room id and the name of a stored file"),
        },
        Some("verify") => match (words.next(), words.next()) {
            (Some(user), Some(device)) => token.verify(user, device, now).map_err(|err| {
                println!("error {err}");
                &"" as &dyn core::fmt::Display
            }),
            _ => Err(&"verify needs a user id and a device id"),
        },
        Some("confirm") => token.confirm_verification(now).map_err(|err| {
            println!("error {err}");
            &"" as &dyn core::fmt::Display
        }),
        Some("cancel") => token.cancel_verification(now).map_err(|err| {
            println!("error {err}");
            &"" as &dyn core::fmt::Display
        }),
        Some("log") => {
            token.ui().print_log(words.next());
            Ok(())
        }
        Some("keys") => {
            let identity = token.identity();
            println!(
                "keys curve25519={} ed25519={}",
                identity.curve25519, identity.ed25519
            );
            let mut fingerprint = Text::<64>::EMPTY;
            for (index, group) in identity.ed25519.as_bytes().chunks(4).enumerate() {
                let _ = write!(
                    fingerprint,
                    "{}{}",
                    if index > 0 { " " } else { "" },
                    core::str::from_utf8(group).unwrap_or("?")
                );
            }
            println!("fingerprint {}", fingerprint.as_str());
            Ok(())
        }
        _ => return false,
    };
    if let Err(message) = result {
        let mut shown = Text::<128>::EMPTY;
        let _ = write!(shown, "{message}");
        if !shown.as_str().is_empty() {
            println!("error {}", shown.as_str());
        }
    }
    true
}

/// What follows a line's first two words (a message's text, a file's name), trimmed.
fn after_two_words(line: &str) -> Option<&str> {
    line.trim_start()
        .splitn(3, char::is_whitespace)
        .nth(2)
        .map(str::trim)
}

/// `status`' Matrix line, as `jeton-sim` prints it.
pub(crate) fn print_status(token: &FirmwareToken<'_>) {
    #[cfg(feature = "link")]
    {
        let link = match token.link_state() {
            (false, _) => "off",
            (true, false) => "handshaking",
            (true, true) => "ready",
        };
        let stats = token.link_stats();
        let (status, bytes, rejected) = (token.status(), stats.handshake_bytes, stats.rejected);
        println!("{status} link={link} link-handshake-bytes={bytes} link-rejected={rejected}");
    }
    #[cfg(not(feature = "link"))]
    println!("{}", token.status());
}

/// One turn of the event loop: sends what the token wants sent, feeds it what arrived and
/// its timeout (`datagram` holds each datagram in turn, either way). Returns how long the loop may sleep before the next turn (at most 10 ms,
/// since commands and datagrams are polled).
pub(crate) fn turn(
    token: &mut FirmwareToken<'_>,
    socket: &mut crate::udp::TokenSocket<'_>,
    gateway: SocketAddr,
    clock: &MonotonicClock,
    datagram: &mut [u8; DATAGRAM_BYTES],
) -> u32 {
    while let Some(len) = token.poll_transmit(clock.now(), datagram) {
        if let Some(bytes) = datagram.get(..len)
            && let Err(err) = socket.send_to(gateway, bytes)
        {
            println!("error udp send to the gateway: {err}");
        }
    }
    loop {
        match socket.try_receive(datagram) {
            Ok(Some((len, from))) if is_from(gateway, from) => {
                if let Some(bytes) = datagram.get(..len) {
                    token.handle_datagram(bytes, clock.now());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(err) => {
                println!("error udp receive: {err}");
                break;
            }
        }
    }
    let now = clock.now();
    if token.poll_timeout().is_some_and(|due| due <= now) {
        token.handle_timeout(now);
    }
    10
}
