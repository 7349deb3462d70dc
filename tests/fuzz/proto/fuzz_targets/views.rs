#![no_main]
//! Fuzzes the token's zero-copy views (sync, keys responses) with arbitrary bytes, as they might arrive
//! over the air. Seed it with the decoder corpus.

include!("../checks.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| check_views(data));
