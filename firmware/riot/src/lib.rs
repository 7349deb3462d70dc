//! jeton-firmware: jeton's RIOT OS application.
//!
//! The token's firmware for RIOT: it maps the platform a token needs onto RIOT (hardware RNG
//! through the `random` module, a millisecond clock from ztimer, one UDP socket on GNRC,
//! jeton's region of the board's MTD flash) and exposes the token through RIOT's shell with
//! the command names `jeton-sim` uses. The RNG, the clock and the record store implement
//! jeton-core's `platform::Rng`, `platform::Clock` and `store::Store`; the device identity is
//! jeton-olm's Olm account, kept on flash as an encrypted pickle; LED0 and BTN0 form the
//! panel. It is the only crate that names riot-wrappers or riot-sys; everything a token
//! decides lives in jeton-core. Not yet: running jeton-core's Matrix client (`Token`), so the
//! Matrix commands report that they are not available in this build.
//!
//! # Usage
//!
//! ```text
//! export RIOTBASE=/path/to/RIOT          # RIOT checkout, see riot-sys-config/README.md
//! make -C firmware/riot all term         # BOARD=native64 by default
//! make -C firmware/riot BOARD=nrf52840dk flash term
//! ```
//!
//! The shell then offers `help`, `status`, `keys`, `selftest` and the Matrix commands
//! (`login`, `rooms`, `invites`, `join`, `send`, `log`), which report that they are not
//! available in this build.
//!
//! # Features
//!
//! None. What the firmware can do is decided by the RIOT modules of the build
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
mod flash;
mod identity;
mod panel;
mod rng;
mod store;
mod udp;

use riot_wrappers::socket_embedded_nal::Stack;
use riot_wrappers::{println, riot_main};

riot_main!(main);

fn main() {
    board::init_main_msg_queue();
    let clock = clock::MonotonicClock::new();
    let flash = flash::Flash::open();
    let boot = match &flash {
        Ok(flash) => store::count_boot(flash),
        Err(err) => Err(store::BootCountError::Flash(*err)),
    };
    let mut stack = Stack::<{ udp::SOCKET_SLOTS }>::new();
    // The stack's run never returns (its socket slots are never freed), and neither does the
    // shell inside it.
    stack.run(|accessor| {
        let mut device = commands::Device {
            clock,
            flash,
            socket: udp::TokenSocket::bind(accessor),
            panel: panel::Panel::open(),
            boot,
        };
        println!("jeton token booting");
        device.print_status();
        println!("type `help` for the token's commands");
        commands::run_shell(device)
    });
}
