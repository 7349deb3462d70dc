//! What the firmware knows about where it runs: board name and RIOT version, handed over
//! from the preprocessor strings by `jeton_platform.c`.

use core::ffi::{CStr, c_char};

// SAFETY: the declarations match jeton_platform.c; the functions take no arguments.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn jeton_board_name() -> *const c_char;
    fn jeton_riot_version() -> *const c_char;
    fn jeton_rng_is_hardware() -> i32;
    fn jeton_init_main_msg_queue();
    fn jeton_init_shell_msg_queue();
}

/// Reads one of the C side's static, NUL-terminated strings.
#[allow(unsafe_code)]
fn static_c_str(ptr: *const c_char) -> &'static str {
    if ptr.is_null() {
        return "?";
    }
    // SAFETY: the pointer is one of the string literals in jeton_platform.c (RIOT_BOARD,
    // RIOT_VERSION): NUL-terminated and alive for the whole program.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().unwrap_or("?")
}

/// The RIOT board this image was built for (`BOARD`).
#[allow(unsafe_code)]
pub(crate) fn name() -> &'static str {
    // SAFETY: a pure function of the C side without arguments.
    static_c_str(unsafe { jeton_board_name() })
}

/// RIOT's version string (`RIOT_VERSION`, derived from the RIOT checkout).
#[allow(unsafe_code)]
pub(crate) fn riot_version() -> &'static str {
    // SAFETY: a pure function of the C side without arguments.
    static_c_str(unsafe { jeton_riot_version() })
}

/// Whether RIOT's `random` module reads the hardware RNG directly (`prng_hwrng`).
#[allow(unsafe_code)]
pub(crate) fn rng_is_hardware() -> bool {
    // SAFETY: a pure function of the C side without arguments.
    unsafe { jeton_rng_is_hardware() != 0 }
}

/// Gives the main thread the message queue RIOT's network shell commands (`ping`, `udp`)
/// expect of the thread that runs them. Call once, from main, before the shell starts.
#[allow(unsafe_code)]
pub(crate) fn init_main_msg_queue() {
    // SAFETY: called once from the main thread; the queue is a static on the C side.
    unsafe { jeton_init_main_msg_queue() }
}

/// Gives the shell thread the message queue RIOT's network shell commands (`ping`, `udp`)
/// expect of the thread that runs them. Call once, from the shell thread, before its shell.
#[allow(unsafe_code)]
pub(crate) fn init_shell_msg_queue() {
    // SAFETY: called once from the shell thread; the queue is a static on the C side.
    unsafe { jeton_init_shell_msg_queue() }
}
