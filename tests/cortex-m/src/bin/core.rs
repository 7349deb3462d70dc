//! Size probe for jeton-core with all its dependencies (jeton-proto, jeton-olm, the CoAP
//! engine): the token's Matrix client driven through every input, its state in a static so
//! that the RAM column shows it.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use jeton_core::matrix::{Config, Token, Ui, UiEvent};
use jeton_core::platform::{Instant, Platform, Rng};
use jeton_core::store::MemoryStore;
use jeton_cortex_m::keep;

jeton_cortex_m::panic_handler!(quiet);

/// Hands every UI event to the optimiser's black box.
struct Sink;

impl Ui for Sink {
    fn event(&mut self, event: &UiEvent<'_>) {
        keep(event);
    }
}

/// An LCG: the probe only needs the code paths, not randomness.
struct Lcg(u32);

impl Rng for Lcg {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (self.0 >> 24) as u8;
        }
    }
}

/// The probe's platform: a counter RNG, a small store, no display.
struct Bare;

impl Platform for Bare {
    type Rng = Lcg;
    type Store = MemoryStore<1, 16>;
    type Ui = Sink;
}

type Probe = Token<Bare>;

static INPUT: [u8; 256] = [0; 256];

#[entry]
fn main() -> ! {
    let store = keep(MemoryStore::new());
    let Ok(token) = Probe::new(
        Config::new([1; 32]),
        Lcg(keep(1)),
        store,
        Sink,
        Instant::ZERO,
    ) else {
        loop {
            cortex_m::asm::wfi();
        }
    };
    let Some(token) = cortex_m::singleton!(: Probe = token) else {
        loop {
            cortex_m::asm::wfi();
        }
    };
    let _ = token.login(keep("u"), keep("p"), Instant::ZERO);
    let _ = token.send_text(keep("!r"), keep("t"), Instant::ZERO);
    let _ = token.join(keep("!r"), Instant::ZERO);
    let mut buf = [0u8; 1152];
    loop {
        token.handle_datagram(keep(&INPUT[..]), Instant::from_millis(keep(5)));
        token.handle_timeout(Instant::from_millis(keep(9)));
        keep(token.poll_transmit(Instant::ZERO, &mut buf));
        keep(token.identity());
    }
}
