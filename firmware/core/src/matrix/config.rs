//! How the token is set up: the [`Config`] a platform gives at boot.

use heapless::String;

use super::{MAX_ALLOWED_INVITERS, MAX_ID_LEN, UserId};
use crate::coap::ClientConfig;

/// How the token is set up; the platform provides it at boot.
#[derive(Clone, Debug)]
pub struct Config {
    /// The key jeton-olm pickles are encrypted with. The platform derives it from a
    /// device secret (a key slot, a secure element, a file with mode 0600 on a host).
    pub storage_key: [u8; 32],
    /// The display name given to the device at its first login.
    pub device_display_name: String<MAX_ID_LEN>,
    /// Users whose invites are accepted without asking.
    pub auto_join_from: heapless::Vec<UserId, MAX_ALLOWED_INVITERS>,
    /// The CoAP engine's parameters.
    pub coap: ClientConfig,
    /// The `timeout` of a long-poll sync, in milliseconds.
    pub long_poll_timeout_ms: u32,
    /// Share room keys only with devices verified by SAS (off by default: every device of
    /// every member gets them, as in most Matrix clients); the others are sent
    /// `m.room_key.withheld` with code `m.unverified`, once per session.
    pub share_keys_only_with_verified: bool,
}

impl Config {
    /// A configuration with defaults around `storage_key`.
    pub fn new(storage_key: [u8; 32]) -> Self {
        let mut device_display_name = String::new();
        let _ = device_display_name.push_str("jeton");
        Config {
            storage_key,
            device_display_name,
            auto_join_from: heapless::Vec::new(),
            coap: ClientConfig::default(),
            long_poll_timeout_ms: 30_000,
            share_keys_only_with_verified: false,
        }
    }
}

/// What the token keeps of its [`Config`]: everything but the storage key, which the flash
/// handle holds alone.
#[derive(Debug)]
pub(super) struct Settings {
    /// [`Config::device_display_name`].
    pub(super) device_display_name: String<MAX_ID_LEN>,
    /// [`Config::auto_join_from`].
    pub(super) auto_join_from: heapless::Vec<UserId, MAX_ALLOWED_INVITERS>,
    /// [`Config::coap`].
    pub(super) coap: ClientConfig,
    /// [`Config::long_poll_timeout_ms`].
    pub(super) long_poll_timeout_ms: u32,
    /// [`Config::share_keys_only_with_verified`].
    pub(super) share_keys_only_with_verified: bool,
}

impl Config {
    /// Everything but the storage key.
    pub(super) fn settings(self) -> Settings {
        let Config {
            storage_key: _,
            device_display_name,
            auto_join_from,
            coap,
            long_poll_timeout_ms,
            share_keys_only_with_verified,
        } = self;
        Settings {
            device_display_name,
            auto_join_from,
            coap,
            long_poll_timeout_ms,
            share_keys_only_with_verified,
        }
    }
}
