//! jeton-core: the token's Matrix client as a sans-I/O state machine.
#![cfg_attr(not(test), no_std)]
