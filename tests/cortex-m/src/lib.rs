//! Shared pieces of the Cortex-M4 images: the panic handler, a fixed-seed random source, a
//! sink that keeps the optimiser from deleting the code an image exercises, and — for the
//! images that run in `qemu-system-arm -M mps2-an386 -icount shift=0` — instruction counting
//! through SysTick, peak-stack measurement by stack painting, and semihosting output and exit.
//!
//! Under `-icount shift=0` QEMU advances its virtual clock by 1 ns per instruction, and the
//! MPS2 SysTick runs from the 25 MHz reference, so one SysTick tick is exactly 40
//! instructions. The `selftest` image checks that ratio against a loop of known length.
#![no_std]

use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_semihosting::{debug, hprintln};

/// SplitMix64 with a fixed seed: reproducible runs, not secrecy.
#[allow(missing_debug_implementations)]
pub struct FixedSeedRng(pub u64);

impl rand_core::TryRng for FixedSeedRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, core::convert::Infallible> {
        self.try_next_u64().map(|v| (v >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, core::convert::Infallible> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), core::convert::Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedSeedRng {}

/// The same stream for jeton-core's platform trait: the bytes of successive outputs in
/// little-endian order, eight per output, as the host tests' `TestRng` draws them.
impl jeton_core::platform::Rng for FixedSeedRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(never) = rand_core::TryRng::try_fill_bytes(self, dest) {
            match never {}
        }
    }
}

/// Instructions per SysTick tick under `-icount shift=0` on mps2-an386.
pub const INSTRUCTIONS_PER_TICK: u64 = 40;

/// Hands a value to the outside world so the code that produced it stays in the image.
pub fn keep<T>(value: T) -> T {
    core::hint::black_box(value)
}

/// Counts instructions with SysTick. One measurement may span at most 2^24 ticks
/// (about 671 million instructions); a longer one is reported as `None`.
#[allow(missing_debug_implementations)]
pub struct InstructionCounter {
    syst: SYST,
}

impl InstructionCounter {
    /// Takes SysTick, runs it free from the 25 MHz processor clock with the largest reload value.
    pub fn new(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00ff_ffff);
        syst.clear_current();
        syst.enable_counter();
        Self { syst }
    }

    /// Runs `f` and returns its result with the instructions it took, rounded to ticks.
    pub fn measure<R>(&mut self, f: impl FnOnce() -> R) -> (R, Option<u64>) {
        self.syst.clear_current();
        let _ = self.syst.has_wrapped(); // reading COUNTFLAG clears it
        let start = SYST::get_current();
        let result = keep(f());
        let end = SYST::get_current();
        let wrapped = self.syst.has_wrapped();
        let ticks = u64::from(start.wrapping_sub(end) & 0x00ff_ffff);
        (result, (!wrapped).then_some(ticks * INSTRUCTIONS_PER_TICK))
    }
}

const PAINT: u32 = 0x5afe_57ac;

unsafe extern "C" {
    static mut __sheap: u32;
}

fn heap_start() -> usize {
    core::ptr::addr_of_mut!(__sheap) as usize
}

/// Fills the unused stack below the current stack pointer with a pattern, so that
/// [`stack_used_since_paint`] can find how deep a computation went.
#[inline(never)]
pub fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize;
    // Leave 64 bytes below the stack pointer for this function's own frame.
    let top = (sp - 64) & !3;
    // __sheap is the first free word after .bss (cortex-m-rt); everything between it and
    // the live stack is unused memory that nothing else references.
    let bottom = heap_start();
    let mut p = bottom;
    while p < top {
        // SAFETY: p is word-aligned and inside the unused region computed above.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The lowest address below the caller's stack pointer (to within this module's frames) that
/// still holds the paint of [`paint_stack`]: everything above it has been written since.
#[inline(always)]
fn lowest_unwritten(sp: usize) -> usize {
    let top = (sp - 64) & !3;
    let mut p = heap_start();
    // SAFETY: reads of the same region `paint_stack` wrote.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    p
}

/// Bytes of stack below the caller's stack pointer that have been written since
/// [`paint_stack`] was called from the same frame (to within this function's own frame).
#[inline(never)]
pub fn stack_used_since_paint() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    sp - lowest_unwritten(sp)
}

unsafe extern "C" {
    static _stack_start: u32;
}

/// Bytes of stack in use at the deepest point since [`paint_stack`], counted from the top
/// of the stack (the initial stack pointer), so everything the image put there counts.
#[inline(never)]
pub fn stack_peak_since_paint() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    core::ptr::addr_of!(_stack_start) as usize - lowest_unwritten(sp)
}

/// Runs `f` on a painted stack, prints its row (instructions, peak stack) and hands back its
/// result.
pub fn measured<R>(counter: &mut InstructionCounter, name: &str, f: impl FnOnce() -> R) -> R {
    paint_stack();
    let (result, instructions) = counter.measure(f);
    report(name, instructions, stack_used_since_paint());
    result
}

/// One line of a report table, printed through semihosting.
pub fn report(name: &str, instructions: Option<u64>, stack: usize) {
    match instructions {
        Some(n) => hprintln!("{:<44} {:>12} {:>8}", name, n, stack),
        None => hprintln!("{:<44} {:>12} {:>8}", name, "overflow", stack),
    }
}

/// Prints a failed check and ends the QEMU run with a failure status.
pub fn fail(what: &str) -> ! {
    hprintln!("FAILED: {}", what);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::udf();
    }
}

/// Ends the QEMU run with a success status.
pub fn pass() -> ! {
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Defines the image's panic handler. `quiet` halts without formatting anything, so a size
/// probe does not count `core::fmt`; `report` prints the panic through semihosting and fails
/// the QEMU run.
#[macro_export]
macro_rules! panic_handler {
    (quiet) => {
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
            loop {
                cortex_m::asm::udf();
            }
        }
    };
    (report) => {
        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
            $crate::fail_with(format_args!("PANIC: {}", info))
        }
    };
}

/// Prints a formatted failure and ends the QEMU run with a failure status.
pub fn fail_with(what: core::fmt::Arguments<'_>) -> ! {
    hprintln!("{}", what);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::udf();
    }
}
