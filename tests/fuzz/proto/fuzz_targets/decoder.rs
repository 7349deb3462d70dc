#![no_main]
//! Fuzzes the CBOR decoder with arbitrary bytes, as they might arrive over the air.

include!("../checks.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| check_decoder(data));
