//! jeton-firmware: jeton's RIOT OS application.
//!
//! The token's firmware for RIOT: it maps the platform a token needs onto RIOT (hardware RNG
//! through the `random` module, a millisecond clock from ztimer, one UDP socket on GNRC,
//! jeton's region of the board's MTD flash with the record store and the file system) and
//! exposes the token through RIOT's shell with the command names `jeton-sim` uses. The RNG,
//! the clock, the record store and the file system implement jeton-core's `platform::Rng`,
//! `platform::Clock`, `store::Store` and `files::FileStore`; the device identity is
//! jeton-olm's Olm account, kept on flash as an encrypted pickle; LED0 and BTN0 form the
//! panel. It is the only crate that names riot-wrappers or riot-sys; everything a token
//! decides lives in jeton-core.
//!
//! The main thread runs jeton-core's Matrix client (`Token`, see `matrix.rs`): each turn of
//! its event loop sends what the token wants sent to the gateway, feeds it the datagrams that
//! arrived and its due timeout, and runs the shell command waiting in the command slot; it
//! sleeps 10 ms between turns. RIOT's shell runs in its own thread and hands every token
//! command to the main thread. Events print one per line as `jeton-sim` prints them.
//!
//! The `Token` and the other large buffers are statics, the `Token` built in place by
//! jeton-core's `Token::new_in`, so that the main thread's stack holds only the event loop
//! and the crypto (riot-sys-config/README.md, "Stack sizes").

//! # Usage
//!
//! ```text
//! export RIOTBASE=/path/to/RIOT          # RIOT checkout, see riot-sys-config/README.md
//! make -C firmware/riot all term         # BOARD=native64 by default
//! make -C firmware/riot BOARD=nrf52840dk flash term
//! ```
//!
//! The shell then offers jeton-core's console, the same commands and output as jeton-sim's
//! (`help` lists them: `login <user> <password>`, `status`, `keys`, `rooms`, `send`, `sendfile`,
//! `verify`, ...; `request` is refused, the board having no time of day), and the firmware's
//! own: `selftest`, `gateway <addr> <port>`, `pair <hex>` (the link's key file from
//! `jeton pair --token-out`). Received files are kept in the token's file system (`files.rs`)
//! and sent again by name.
//!
//! # Features
//!
//! - `link`: the protected link to the gateway (EDHOC + OSCORE, jeton-core's `link`
//!   feature); riot-sys-config/jeton.mk turns it on for every board (`JETON_LINK`).
//! - `cortex-m4-asm`: the Cortex-M4 backends of jeton-olm and, with `link`, jeton-link
//!   (riot-sys-config/cortex-m4f.mk).
//!
//! Otherwise what the firmware can do is decided by the RIOT modules of the build
//! (`riot-sys-config/jeton.mk`) and the board fragment (`boards/<board>/board.mk`).
//!
//! # Specification
//!
//! The architecture and the platform it implements: `ARCHITECTURE.md` at the repository root;
//! RIOT's Rust support: <https://guide.riot-os.org/rust_tutorials/rust_in_riot/>.
#![no_std]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod board;
mod clock;
mod commands;
mod files;
mod flash;
mod identity;
mod link;
mod matrix;
mod panel;
mod rng;
mod store;
mod udp;

use core::mem::MaybeUninit;

use jeton_core::platform::Clock;
use riot_wrappers::socket_embedded_nal::Stack;
use riot_wrappers::{println, riot_main};
use static_cell::StaticCell;

riot_main!(main);

/// The shell thread's stack in bytes: `JETON_SHELL_STACKSIZE`, which riot-sys-config/jeton.mk
/// sets for every build (see riot-sys-config/README.md, "Stack sizes").
const SHELL_STACKSIZE: usize = parse_u32(env!("JETON_SHELL_STACKSIZE")) as usize;

/// A decimal number from the build's configuration (riot-sys-config/jeton.mk), at compile time.
const fn parse_u32(text: &str) -> u32 {
    let mut rest = text.as_bytes();
    let mut value = 0u32;
    while let [digit, tail @ ..] = rest {
        value = value * 10 + (*digit - b'0') as u32;
        rest = tail;
    }
    value
}

// The token's state, the shell thread's stack and the datagram buffer are statics, so that
// the main thread's stack holds only what the event loop and the crypto need (see "Stack
// sizes" in riot-sys-config/README.md). Each is taken once, by `main`.
static FLASH: StaticCell<Result<flash::Flash, flash::FlashError>> = StaticCell::new();
static TOKEN: StaticCell<matrix::FirmwareToken<'static>> = StaticCell::new();
static SHELL_STACK: StaticCell<[u8; SHELL_STACKSIZE]> = StaticCell::new();
static DATAGRAM: StaticCell<[u8; matrix::DATAGRAM_BYTES]> = StaticCell::new();

fn main() {
    board::init_main_msg_queue();
    let clock = clock::MonotonicClock::new();
    let flash: &'static _ = FLASH.init(flash::Flash::open());
    let boot = match flash {
        Ok(flash) => store::count_boot(flash),
        Err(err) => Err(store::BootCountError::Flash(*err)),
    };
    let mut stack = Stack::<{ udp::SOCKET_SLOTS }>::new();
    // The stack's run never returns (its socket slots are never freed), and neither does the
    // event loop inside it.
    stack.run(|accessor| {
        let mut device = commands::Device {
            clock: clock::MonotonicClock::new(),
            flash,
            socket: udp::TokenSocket::bind(accessor),
            panel: panel::Panel::open(),
            boot,
        };
        println!("jeton token booting");
        device.print_status();
        let files = flash.as_ref().ok().and_then(files::mount);
        let mut token = boot_token(TOKEN.uninit(), flash, files, &clock);
        let mut gateway_store = flash
            .as_ref()
            .ok()
            .and_then(|f| store::RecordStore::open(f).ok());
        let mut gateway = gateway_store
            .as_mut()
            .map(matrix::gateway)
            .unwrap_or_else(matrix::default_gateway);
        match &token {
            Ok(token) => {
                println!("identity: ed25519 {}", token.identity().ed25519);
                println!("matrix: gateway {}", matrix::address_text(gateway));
            }
            Err(err) => println!("matrix: unavailable: {err}"),
        }
        println!("type `help` for the token's commands");
        let shell_stack = SHELL_STACK.init_with(|| [0; SHELL_STACKSIZE]);
        let datagram = DATAGRAM.init_with(|| [0; matrix::DATAGRAM_BYTES]);
        let mut shell = || commands::run_shell();
        // The shell runs one priority below the event loop, which sleeps between its turns.
        let priority = riot_wrappers::thread::get_pid()
            .priority()
            .unwrap_or(7)
            .saturating_add(1);
        riot_wrappers::thread::scope(|threads| {
            if let Err(err) = threads.spawn(
                shell_stack,
                &mut shell,
                riot_wrappers::cstr::cstr!("shell"),
                priority,
                riot_sys::THREAD_CREATE_STACKTEST as i32,
            ) {
                println!("error the shell thread did not start ({err})");
            }
            let mut button_was_pressed = false;
            loop {
                matrix::take_command(|line| {
                    // The indicator is lit while the token works on a command.
                    device.panel.indicate(true);
                    let mut words = line.split_whitespace();
                    match (words.next(), token.as_mut()) {
                        (Some("status"), token) => {
                            device.print_status();
                            match token {
                                Ok(token) => {
                                    matrix::command(token, line, clock.now());
                                }
                                Err(err) => println!("matrix: unavailable: {err}"),
                            }
                        }
                        (Some("selftest"), _) => {
                            device.selftest(&mut riot_wrappers::stdio::Stdio {});
                        }
                        (Some("pair"), _) => match gateway_store.as_mut() {
                            Some(store) => link::pair(store, words.next()),
                            None => println!("error the store is not available"),
                        },
                        (Some("gateway"), _) => {
                            match (words.next(), words.next(), gateway_store.as_mut()) {
                                (Some(addr), Some(port), Some(store)) => {
                                    match matrix::set_gateway(store, addr, port) {
                                        Ok(new) => {
                                            gateway = new;
                                            println!("gateway {}", matrix::address_text(gateway));
                                        }
                                        Err(err) => println!("error {err}"),
                                    }
                                }
                                (None, _, _) => {
                                    println!("gateway {}", matrix::address_text(gateway))
                                }
                                (_, None, _) => {
                                    println!("error gateway needs an IPv6 address and a port")
                                }
                                (_, _, None) => println!("error the store is not available"),
                            }
                        }
                        (_, Ok(token)) => {
                            if !matrix::command(token, line, clock.now()) {
                                println!("error unknown command {line} (try help)");
                            }
                        }
                        (_, Err(err)) => println!("error the token did not boot: {err}"),
                    }
                    device.panel.indicate(false);
                });
                // The button, on its press: accept a verification, or confirm that the numbers
                // match (the `confirm` command).
                let pressed = matches!(device.panel.button(), panel::ButtonState::Pressed);
                if pressed
                    && !button_was_pressed
                    && let Ok(token) = token.as_mut()
                {
                    match token.confirm_verification(clock.now()) {
                        Ok(()) => println!("button confirm"),
                        Err(jeton_core::matrix::CommandError::NoVerification) => {}
                        Err(err) => println!("error {err}"),
                    }
                }
                button_was_pressed = pressed;
                let pause = match (token.as_mut(), device.socket.as_mut()) {
                    (Ok(token), Ok(socket)) => {
                        matrix::turn(token, socket, gateway, &clock, datagram)
                    }
                    _ => 10,
                };
                clock.sleep_ms(pause);
            }
        })
    });
}

/// The Matrix client from what the store holds (a new Olm account on the first boot), built
/// in `slot`. Not inlined: what the boot needs on the stack (the storage key, the account
/// while it is made or read, the largest field on its way into `slot`) is gone before the
/// event loop runs.
#[inline(never)]
fn boot_token<'f>(
    slot: &'f mut MaybeUninit<matrix::FirmwareToken<'f>>,
    flash: &'f Result<flash::Flash, flash::FlashError>,
    files: Option<files::TokenFiles>,
    clock: &clock::MonotonicClock,
) -> Result<&'f mut matrix::FirmwareToken<'f>, BootError> {
    let flash = flash.as_ref().map_err(|err| BootError::Flash(*err))?;
    let key = identity::storage_key(flash).map_err(BootError::StorageKey)?;
    let rng = rng::HardwareRng::new().map_err(BootError::Rng)?;
    let store = store::RecordStore::open(flash)
        .map_err(BootError::Flash)?
        .with_files(files);
    let config = jeton_core::matrix::Config::new(*key);
    let ui = matrix::ConsoleUi;
    #[cfg(feature = "link")]
    {
        let mut store = store;
        let material = link::stored(&mut store);
        jeton_core::matrix::Token::with_link_in(slot, config, material, rng, store, ui, clock.now())
            .map_err(BootError::Token)
    }
    #[cfg(not(feature = "link"))]
    jeton_core::matrix::Token::new_in(slot, config, rng, store, ui, clock.now())
        .map_err(BootError::Token)
}

/// Why the Matrix client did not start.
#[derive(Debug, Clone, Copy)]
enum BootError {
    Flash(flash::FlashError),
    StorageKey(identity::IdentityError),
    Rng(rng::RngError),
    Token(jeton_core::matrix::TokenError),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(err) => write!(f, "{err}"),
            Self::StorageKey(err) => write!(f, "{err}"),
            Self::Rng(err) => write!(f, "{err}"),
            Self::Token(err) => write!(f, "{err}"),
        }
    }
}
