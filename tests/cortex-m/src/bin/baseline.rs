//! The empty image: cortex-m-rt's start-up and vector table. Every other probe's
//! size is reported as its difference from this one.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

jeton_cortex_m::panic_handler!(quiet);

#[entry]
fn main() -> ! {
    loop {
        jeton_cortex_m::keep(0u32);
    }
}
