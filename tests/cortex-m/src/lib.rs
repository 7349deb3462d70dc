//! Shared pieces of the Cortex-M4 probe images: the panic handler and a sink that keeps
//! the optimiser from deleting the code a probe exercises.
#![no_std]

use core::panic::PanicInfo;

/// Hands a value to the outside world so the code that produced it stays in the image.
pub fn keep<T>(value: T) -> T {
    core::hint::black_box(value)
}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {
        cortex_m::asm::udf();
    }
}
