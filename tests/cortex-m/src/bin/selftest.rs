//! Checks the measuring instruments of the QEMU images: a loop of known length must count
//! as its number of instructions (to within one SysTick tick), and stack painting must see
//! a buffer of known size.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

jeton_cortex_m::panic_handler!(report);
use cortex_m_semihosting::hprintln;
use jeton_cortex_m::{InstructionCounter, fail, keep, paint_stack, pass, stack_used_since_paint};

/// `subs` + `bne` per iteration: exactly two instructions.
fn spin(iterations: u32) {
    // SAFETY: a register-only countdown loop; touches no memory.
    unsafe {
        core::arch::asm!(
            "1:",
            "subs {n}, {n}, #1",
            "bne 1b",
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
}

/// Puts a 2048-byte buffer on its own stack frame.
#[inline(never)]
fn touch_stack(seed: u8) -> u8 {
    let mut bytes = [0u8; 2048];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(seed);
    }
    keep(&bytes)[2047]
}

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        fail("peripherals taken twice")
    };
    let mut counter = InstructionCounter::new(p.SYST);
    let (_, n) = counter.measure(|| spin(keep(500_000)));
    let Some(n) = n else {
        fail("the spin loop wrapped SysTick")
    };
    hprintln!("spin loop of 1,000,000 instructions counted as {}", n);
    if n.abs_diff(1_000_000) > 2 * jeton_cortex_m::INSTRUCTIONS_PER_TICK {
        fail(
            "SysTick does not count 40 instructions per tick: is QEMU running with -icount shift=0?",
        );
    }
    paint_stack();
    keep(touch_stack(keep(1)));
    let used = stack_used_since_paint();
    hprintln!(
        "a 2048-byte stack buffer measured as {} bytes of stack",
        used
    );
    if !(2048..2048 + 256).contains(&used) {
        fail("stack painting did not see the buffer");
    }
    pass()
}
