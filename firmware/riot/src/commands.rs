//! The token's RIOT shell: the device state it reports and the commands it accepts, named as
//! in `jeton-sim` so that the same scripts drive both.

use core::fmt::Write;

use embedded_nal::{Ipv6Addr, SocketAddr, SocketAddrV6};
use jeton_core::console;
use riot_wrappers::shell::{self, Args, CommandList};
use riot_wrappers::stdio::Stdio;
use riot_wrappers::{cstr::cstr, println};

use crate::clock::MonotonicClock;
use crate::flash::{Flash, FlashError, Region};
use crate::panel::{ButtonState, Panel};
use crate::rng::HardwareRng;
use crate::store::BootCountError;
use crate::udp::{LOCAL_PORT, TokenSocket, UdpError};

/// Everything the shell commands act on.
#[derive(Debug)]
pub(crate) struct Device<'a> {
    pub(crate) clock: MonotonicClock,
    pub(crate) flash: &'a Result<Flash, FlashError>,
    pub(crate) socket: Result<TokenSocket<'a>, UdpError>,
    pub(crate) panel: Panel,
    /// This boot's number as counted in the record store.
    pub(crate) boot: Result<u32, BootCountError>,
}

impl Device<'_> {
    /// The device state, shown at boot and by `status`.
    pub(crate) fn print_status(&mut self) {
        println!(
            "jeton-firmware {} on {} (RIOT {})",
            env!("CARGO_PKG_VERSION"),
            crate::board::name(),
            crate::board::riot_version()
        );
        println!("uptime: {} ms", self.clock.now_ms());
        match HardwareRng::new() {
            Ok(_) => println!("rng: hardware RNG (prng_hwrng)"),
            Err(err) => println!("rng: unavailable for keys: {err}"),
        }
        match &self.flash {
            Ok(flash) => {
                println!(
                    "flash: MTD_0, {} sectors of {} bytes for jeton, write size {}",
                    flash.sector_count(),
                    flash.sector_size(),
                    flash.write_size()
                );
            }
            Err(err) => println!("flash: unavailable: {err}"),
        }
        match (&self.boot, &self.flash) {
            (Ok(boot), Ok(flash)) => println!(
                "store: boot {boot} counted in the record store ({} pages of 8 KiB)",
                flash.extent(Region::Store).1 / 2
            ),
            (Ok(boot), Err(_)) => println!("store: boot {boot}"),
            (Err(err), _) => println!("store: unavailable: {err}"),
        }
        match &self.socket {
            Ok(_) => println!("udp: bound to port {LOCAL_PORT}"),
            Err(err) => println!("udp: unavailable: {err}"),
        }
        for netif in riot_wrappers::gnrc::Netif::all() {
            if let Ok(addrs) = netif.ipv6_addrs() {
                for addr in &addrs {
                    println!("net: interface {:?} address {:?}", netif.pid(), addr);
                }
            }
        }
        let indicator = if self.panel.has_indicator() {
            "LED0"
        } else {
            "none"
        };
        let button = match self.panel.button() {
            ButtonState::Absent => "none",
            ButtonState::Released => "BTN0 released",
            ButtonState::Pressed => "BTN0 pressed",
        };
        println!("panel: indicator {indicator}, button {button}");
    }

    /// Exercises each adapter against RIOT and prints one `selftest <part>: ok|FAIL` line each.
    pub(crate) fn selftest(&mut self, out: &mut Stdio) -> i32 {
        let results = [
            ("rng", self.selftest_rng(out)),
            ("clock", self.selftest_clock(out)),
            ("flash", self.selftest_flash(out)),
            ("store", self.selftest_store(out)),
            ("udp", self.selftest_udp(out)),
        ];
        let failed = results.iter().filter(|(_, ok)| !ok).count();
        for (part, ok) in results {
            let _ = writeln!(out, "selftest {part}: {}", if ok { "ok" } else { "FAIL" });
        }
        let _ = writeln!(out, "selftest: {failed} failed");
        i32::from(failed != 0)
    }

    fn selftest_rng(&self, out: &mut Stdio) -> bool {
        let mut rng = match HardwareRng::new() {
            Ok(rng) => rng,
            Err(err) => {
                let _ = writeln!(out, "rng: {err}");
                return false;
            }
        };
        // 4096 bytes from a good source have 16384 +- ~64 (one sigma) bits set; two draws
        // never repeat.
        let mut block = [0u8; 256];
        let mut ones = 0u32;
        for _ in 0..16 {
            rand_core::Rng::fill_bytes(&mut rng, &mut block);
            ones += block.iter().map(|b| b.count_ones()).sum::<u32>();
        }
        let mut first = [0u8; 32];
        let mut second = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut rng, &mut first);
        rand_core::Rng::fill_bytes(&mut rng, &mut second);
        let _ = writeln!(out, "rng: {ones} of 32768 bits set");
        (16384 - 640..=16384 + 640).contains(&ones) && first != second
    }

    fn selftest_clock(&self, out: &mut Stdio) -> bool {
        let before = self.clock.now_ms();
        self.clock.sleep_ms(100);
        let elapsed = self.clock.now_ms().saturating_sub(before);
        let _ = writeln!(out, "clock: a 100 ms sleep took {elapsed} ms");
        (100..=150).contains(&elapsed)
    }

    fn selftest_flash(&self, out: &mut Stdio) -> bool {
        let flash = match &self.flash {
            Ok(flash) => flash,
            Err(err) => {
                let _ = writeln!(out, "flash: {err}");
                return false;
            }
        };
        let mut pattern = [0u8; 64];
        for (index, byte) in pattern.iter_mut().enumerate() {
            *byte = (self.clock.now_ms() as u8) ^ (index as u8).wrapping_mul(37);
        }
        let mut erased = [0u8; 64];
        let mut read_back = [0u8; 64];
        let result = flash
            .erase(Region::SelfTest)
            .and_then(|()| flash.read(Region::SelfTest, 0, &mut erased))
            .and_then(|()| flash.write(Region::SelfTest, 0, &pattern))
            .and_then(|()| flash.read(Region::SelfTest, 0, &mut read_back));
        match result {
            Ok(()) => {
                let blank = erased.iter().all(|b| *b == 0xff);
                let same = read_back == pattern;
                let _ = writeln!(
                    out,
                    "flash: sector {} erased {}, 64 bytes read back {}",
                    flash.extent(Region::SelfTest).0,
                    if blank { "to 0xff" } else { "NOT to 0xff" },
                    if same { "intact" } else { "CHANGED" }
                );
                blank && same
            }
            Err(err) => {
                let _ = writeln!(out, "flash: {err}");
                false
            }
        }
    }

    fn selftest_store(&self, out: &mut Stdio) -> bool {
        // A rewrite of a 4-byte record takes a 16-byte item, so 1500 rewrites (24 KB) fill
        // three 8 KiB pages: sequential-storage moves on from page to page.
        const ROUNDS: u32 = 1500;
        let Ok(flash) = &self.flash else {
            let _ = writeln!(out, "store: no flash");
            return false;
        };
        let started = self.clock.now_ms();
        match crate::store::exercise(flash, ROUNDS) {
            Ok(report) => {
                let verdict = |ok: bool| if ok { "intact" } else { "WRONG" };
                let _ = writeln!(
                    out,
                    "store: {ROUNDS} rewrites read back {}, a {} byte record read back {}, \
                     a removed record {} ({} ms)",
                    verdict(report.rewrites_intact),
                    jeton_core::store::MAX_RECORD_SIZE,
                    verdict(report.large_record_intact),
                    if report.removal_seen {
                        "absent"
                    } else {
                        "STILL THERE"
                    },
                    self.clock.now_ms().saturating_sub(started),
                );
                report.rewrites_intact && report.large_record_intact && report.removal_seen
            }
            Err(err) => {
                let _ = writeln!(out, "store: {err}");
                false
            }
        }
    }

    fn selftest_udp(&mut self, out: &mut Stdio) -> bool {
        let socket = match &mut self.socket {
            Ok(socket) => socket,
            Err(err) => {
                let _ = writeln!(out, "udp: {err}");
                return false;
            }
        };
        // Through GNRC's loopback to the socket's own port: exercises sock_udp send and
        // receive without needing a peer.
        let own = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::localhost(), LOCAL_PORT, 0, 0));
        let mut probe = [0u8; 16];
        probe[..8].copy_from_slice(b"jeton-st");
        probe[8..].copy_from_slice(&self.clock.now_ms().to_be_bytes());
        if let Err(err) = socket.send_to(own, &probe) {
            let _ = writeln!(out, "udp: send to [::1]:{LOCAL_PORT}: {err}");
            return false;
        }
        let deadline = self.clock.now_ms() + 1000;
        let mut buf = [0u8; 64];
        while self.clock.now_ms() < deadline {
            match socket.try_receive(&mut buf) {
                Ok(Some((len, from))) => {
                    let same = buf.get(..len) == Some(&probe[..]);
                    let _ = writeln!(
                        out,
                        "udp: {len} bytes from {from} {}",
                        if same {
                            "match the probe"
                        } else {
                            "DIFFER from the probe"
                        }
                    );
                    if same {
                        return true;
                    }
                }
                Ok(None) => self.clock.sleep_ms(10),
                Err(err) => {
                    let _ = writeln!(out, "udp: receive: {err}");
                    return false;
                }
            }
        }
        let _ = writeln!(out, "udp: no datagram came back within 1 s");
        false
    }
}

/// The firmware's own commands, listed after jeton-core's console in the help.
const FIRMWARE_COMMANDS: &[console::Entry] = &[
    console::entry(
        "selftest",
        "",
        "exercise the RNG, clock, flash, record store and UDP",
    ),
    console::entry(
        "gateway",
        "<addr> <port>",
        "the gateway's IPv6 address and UDP port",
    ),
    console::entry(
        "pair",
        "<hex>",
        "the link's key file (jeton pair --token-out), next boot",
    ),
];

/// `help`: the console's commands (jeton-core's, as in jeton-sim), then the firmware's own;
/// `help <command>`: that one in detail.
pub(crate) fn print_help(out: &mut Stdio, topic: Option<&str>) {
    if topic.is_some() {
        let _ = console::write_help_on(out, FIRMWARE_COMMANDS, topic);
        return;
    }
    let _ = writeln!(out, "jeton token commands:");
    let _ = console::write_help(out, FIRMWARE_COMMANDS);
    let _ = writeln!(
        out,
        "RIOT's own commands (ps, ifconfig, ping, ...) are available too."
    );
}

/// Runs RIOT's shell on stdio (in the shell thread); every token command goes to the main
/// thread through [`matrix::COMMAND`](crate::matrix::COMMAND). Never returns.
pub(crate) fn run_shell() -> ! {
    crate::board::init_shell_msg_queue();
    let clock = MonotonicClock::new();
    let post = |_: &mut Stdio, args: Args<'_>| {
        crate::matrix::post_command(args.iter(), &clock);
        0
    };
    let help = |out: &mut Stdio, args: Args<'_>| {
        print_help(out, args.iter().nth(1));
        0
    };
    shell::new()
        .and(
            cstr!("gateway"),
            cstr!("the gateway's address and port"),
            post,
        )
        .and(
            cstr!("pair"),
            cstr!("the link's key file (hex), from the next boot"),
            post,
        )
        .and(cstr!("log"), cstr!("recent messages"), post)
        .and(cstr!("send"), cstr!("send an encrypted message"), post)
        .and(
            cstr!("sendfile"),
            cstr!("send a stored file: <room> <name>"),
            post,
        )
        .and(cstr!("refuse"), cstr!("refuse an invite"), post)
        .and(cstr!("join"), cstr!("join a room"), post)
        .and(cstr!("invites"), cstr!("pending invites"), post)
        .and(cstr!("rooms"), cstr!("joined rooms"), post)
        .and(cstr!("login"), cstr!("log in"), post)
        .and(
            cstr!("selftest"),
            cstr!("exercise the platform adapters"),
            post,
        )
        .and(cstr!("keys"), cstr!("the device's identity keys"), post)
        .and(
            cstr!("verify"),
            cstr!("verify a device by SAS: <user> <device>"),
            post,
        )
        .and(
            cstr!("request"),
            cstr!("ask a device to verify by SAS: <user> <device>"),
            post,
        )
        .and(
            cstr!("confirm"),
            cstr!("accept a verification, or confirm matching numbers"),
            post,
        )
        .and(cstr!("cancel"), cstr!("cancel the verification"), post)
        .and(
            cstr!("xsign"),
            cstr!("set up cross-signing: <password>"),
            post,
        )
        .and(
            cstr!("decline"),
            cstr!("decline a ringing call: [call id]"),
            post,
        )
        .and(cstr!("status"), cstr!("device state"), post)
        .and(cstr!("help"), cstr!("the token's commands"), help)
        // A `pair` line carries a key file in hex: longer than RIOT's 128-byte default.
        .run_forever_with_buf(&mut [0; crate::matrix::LINE_CAPACITY])
}
