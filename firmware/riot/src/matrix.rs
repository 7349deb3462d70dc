//! The token's Matrix client on RIOT: jeton-core's [`Token`] driven by the main thread's
//! event loop, the UI events it prints, the gateway address setting, and the command slot
//! through which the shell thread hands the main thread its commands.
//!
//! The main thread owns everything the token touches (the Token, the UDP socket, the flash);
//! the shell thread only reads lines. A command goes through [`COMMAND`]: the shell thread
//! puts the line there and waits until the main thread has run it, so that a command's output
//! is complete before the next line is read, as in `jeton-sim`. The commands themselves are
//! jeton-core's console ([`jeton_core::console`]), as in `jeton-sim`.

use core::fmt;

use embedded_nal::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use jeton_core::console::{self, KeepsLog, RoomLog};
use jeton_core::matrix::{Token, Ui, UiEvent};
use jeton_core::platform::{Clock, Instant, Platform};
use jeton_core::store::{RecordId, Store};
use riot_wrappers::mutex::Mutex;
use riot_wrappers::println;

use crate::clock::MonotonicClock;
use crate::rng::HardwareRng;
use crate::store::RecordStore;

/// The board as jeton-core sees it: the hardware RNG, jeton's region of the flash, the shell.
#[derive(Debug)]
pub(crate) struct Board<'f>(core::marker::PhantomData<&'f ()>);

impl<'f> Platform for Board<'f> {
    type Rng = HardwareRng;
    type Store = RecordStore<'f>;
    type Ui = ConsoleUi;
}

/// The link to the gateway: EDHOC and OSCORE with the feature `link`, else plain CoAP.
#[cfg(feature = "link")]
pub(crate) type FirmwareLink = jeton_core::link::ProtectedLink;
#[cfg(not(feature = "link"))]
pub(crate) type FirmwareLink = jeton_core::link::PlainLink;

/// The token as the firmware runs it.
pub(crate) type FirmwareToken<'f> = Token<Board<'f>, FirmwareLink>;

/// The record holding the gateway address: 16 address bytes, port (u16 big-endian).
pub(crate) const GATEWAY: RecordId = 0xF002;

/// The gateway address a fresh token uses (`JETON_GATEWAY_ADDR`, `JETON_GATEWAY_PORT` in
/// riot-sys-config/jeton.mk): link-local addresses go out on the first interface.
const DEFAULT_GATEWAY_PORT: u16 = 5683;

/// The largest datagram the token sends or receives (IPv6's minimum MTU).
pub(crate) const DATAGRAM_BYTES: usize = 1280;

/// Longest shell line the command slot carries.
pub(crate) const LINE_CAPACITY: usize = 512;

/// The room log `log` prints: 8 messages of each of the first 4 rooms, lines (and room ids)
/// of at most 160 bytes.
type FirmwareLog = RoomLog<4, 8, 160>;

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

/// The recent messages `log` shows: a static rather than part of [`ConsoleUi`], so that the
/// UI that moves into the token at boot is small (only the main thread uses it).
static LOG: Mutex<FirmwareLog> = Mutex::new(RoomLog::new());

/// Prints UI events one per line, as `jeton-sim` does, and keeps the recent messages for
/// `log` (in [`LOG`]).
#[derive(Debug)]
pub(crate) struct ConsoleUi;

impl Ui for ConsoleUi {
    fn event(&mut self, event: &UiEvent<'_>) {
        LOG.lock().on_event(event);
        if let Some(line) = event.line() {
            println!("{line}");
        }
        if let Some(step) = console::next_step(event) {
            println!("  {step}");
        }
    }
}

impl KeepsLog for ConsoleUi {
    fn write_log(&self, room: Option<&str>, out: &mut dyn fmt::Write) -> fmt::Result {
        LOG.lock().write(room, out)
    }

    fn keep_own(&mut self, room: &str, sender: &str, line: &str) {
        LOG.lock().keep_own(room, sender, line);
    }
}

/// Runs one command of jeton-core's console; false if `line` is not one of them. The board
/// has no time of day, so `request` is refused (`verify` works).
pub(crate) fn command(token: &mut FirmwareToken<'_>, line: &str, now: Instant) -> bool {
    let clock = console::Clock {
        now,
        unix_time_ms: None,
    };
    let out = &mut riot_wrappers::stdio::Stdio {};
    match console::parse(line) {
        // The firmware's help lists its own commands too.
        console::Line::Command(console::Command::Help { topic }) => {
            crate::commands::print_help(out, topic);
            true
        }
        _ => console::run(token, line, clock, out).unwrap_or(true),
    }
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
