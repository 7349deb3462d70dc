#![no_main]

include!("../link_checks.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| check_link_datagrams(data));
