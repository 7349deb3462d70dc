//! Fuzzes `jeton_olm::fuzz_targets::olm_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jeton_olm::fuzz_targets::olm_message(data));
