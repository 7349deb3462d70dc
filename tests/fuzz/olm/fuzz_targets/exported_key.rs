//! Fuzzes `jeton_olm::fuzz_targets::exported_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jeton_olm::fuzz_targets::exported_key(data));
