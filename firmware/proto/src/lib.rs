//! jeton-proto: the compact CBOR-over-CoAP profile of the Matrix Client-Server API.
#![cfg_attr(not(test), no_std)]
