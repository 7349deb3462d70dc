//! jeton-olm: Olm and Megolm for `no_std`.
#![cfg_attr(not(test), no_std)]
