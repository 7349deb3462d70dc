//! `jeton-gateway`: CoAP/CBOR <-> Matrix Client-Server API.
fn main() {}
