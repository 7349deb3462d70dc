//! Fuzzes `jeton_olm::fuzz_targets::pickle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jeton_olm::fuzz_targets::pickle(data));
