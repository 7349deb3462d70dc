#![no_main]
//! Fuzzes JSON -> CBOR -> JSON with arbitrary JSON text, as a homeserver might send it.

include!("../checks.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| check_transcoder(data));
