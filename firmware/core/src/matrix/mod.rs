//! The token's Matrix client: a sans-I/O state machine on top of [`coap::Client`](crate::coap::Client).
//!
//! This module owns everything the token knows about Matrix: its login, its Olm account
//! and sessions, the rooms it is in, the devices of the people in them, the room keys it
//! received and the messages it still has to send, and how all of that is laid out on
//! flash ([`crate::store`]).
//!
//! # Driving it
//!
//! [`Token`] takes the same inputs as the CoAP engine ([`Token::handle_datagram`],
//! [`Token::handle_timeout`], [`Token::poll_transmit`], [`Token::poll_timeout`]) plus the
//! user's commands ([`Token::login`], [`Token::send_text`], [`Token::join`], [`Token::decline`],
//! [`Token::rooms`], [`Token::identity`], and device verification by SAS:
//! [`Token::verify`], [`Token::request_verification`], [`Token::confirm_verification`],
//! [`Token::cancel_verification`], see [`verification`]). Its outputs are datagrams,
//! writes to the [`Store`] and [`UiEvent`]s through the [`Ui`]; all writes an input causes
//! happen inside that input call, before any datagram it queued can leave.
//!
//! ```
//! use jeton_core::matrix::{Config, Token, Ui, UiEvent};
//! use jeton_core::platform::{Instant, Platform, Rng};
//! use jeton_core::store::MemoryStore;
//!
//! # struct OsRng(u64);
//! # impl Rng for OsRng {
//! #     fn fill_bytes(&mut self, dest: &mut [u8]) {
//! #         for b in dest { self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1); *b = (self.0 >> 56) as u8; }
//! #     }
//! # }
//! /// The board's display.
//! struct Display;
//! impl Ui for Display {
//!     fn event(&mut self, event: &UiEvent<'_>) {
//!         if let UiEvent::Message { sender, body, .. } = event {
//!             // show `sender: body`
//!             # let _ = (sender, body);
//!         }
//!     }
//! }
//!
//! /// The board: its RNG, its flash (a RIOT MTD partition), its display.
//! struct Board;
//! impl Platform for Board {
//!     type Rng = OsRng;
//!     type Store = MemoryStore;
//!     type Ui = Display;
//! }
//!
//! let config = Config::new([0x42; 32]); // the storage key comes from a device secret
//! let mut token: Token<Board> =
//!     Token::new(config, OsRng(1), MemoryStore::new(), Display, Instant::ZERO).unwrap();
//! token.login("alice", "password", Instant::ZERO).unwrap();
//!
//! // The event loop: send what the token wants sent, feed it what arrives, wake it on time.
//! let mut datagram = [0u8; 1152];
//! let login = token.poll_transmit(Instant::ZERO, &mut datagram);
//! assert!(login.is_some());
//! // socket.send(&datagram[..len]); ... token.handle_datagram(&reply, now);
//! assert!(token.poll_timeout().is_some(), "a retransmission is scheduled");
//! ```
//!
//! # Crash safety
//!
//! - An account whose one-time keys changed is on flash before the keys are uploaded, and
//!   before an inbound Olm session that consumed one is reported.
//! - An Olm session is on flash after each encryption, before the message leaves. A
//!   session that decrypted a room key is written after the room key, so that a power cut
//!   between the two lets the redelivered message decrypt again.
//! - A message is in the outbox on flash before [`UiEvent::Queued`]. Its Megolm session is
//!   written with the advanced index before the ciphertext is written to the outbox entry,
//!   and both before the request leaves; after a power cut the entry is either still
//!   plaintext (and is encrypted again at a fresh index) or holds the ciphertext that is
//!   sent again with the same transaction id, which the homeserver deduplicates.
//! - [`UiEvent::Delivered`] follows the homeserver's answer and the removal of the entry.
//! - The sync cursor is written after everything the sync carried that could be stored was
//!   stored, and a sync is confirmed to the gateway (the acknowledgement of its notification,
//!   or a request from its position) only after that; a sync whose storing failed is neither,
//!   so it comes again (PROFILE.md section 9).
//!
//! # Where things live
//!
//! The client's state is a handful of sub-states, each in a module named after what it
//! owns, with its fields, its rules and its record on flash; a step that spans several of
//! them is written in the module of the one that drives it. The next change to a table goes
//! to its module.
//!
//! - `token`: the [`Token`] the platform drives (inputs, commands, what it shows) and
//!   `drive`, which hands the CoAP engine's events to the link or the client.
//! - `boot`: the token laid out in place and read back from flash; the only `unsafe` code.
//! - `Env` (here): the platform's side every step works with: the RNG, the [`Ui`], the
//!   settings (`config`), the flash handle (`flash`: store, record buffer, storage key,
//!   the record framing) and the buffer bodies are written in.
//! - `sync`: the sync lane (Observe or long polls), the cursor, and the order a sync's
//!   content is taken in. `operations`: the other requests, one at a time, in the order
//!   they are due, and what their answers mean. `requests`: how a request goes out under
//!   the profile. `gateway`: what the gateway holds for the token.
//! - `login`: user, device, access token, filter. `account`: the token's Olm account and
//!   its key uploads.
//! - `devices`: the tracked users and their checked devices. `olm_sessions`: the Olm
//!   sessions with them and the to-device messages they carry.
//! - `rooms`: rooms, members, invites, joins. `outbound`: the room keys the token sends.
//!   `cross_signing`: the user's cross-signing keys and their bootstrap (feature
//!   `cross-signing`). `pending_keys`: the room keys arriving, their checks, and those that wait for their
//!   room, sender or device. `room_keys`: the room keys it holds, and Megolm decryption.
//!   `timeline`: what a room's events show. `backfill`: the gaps of `limited` timelines,
//!   fetched through `/messages` and shown in order. `outbox`: the messages queued, and
//!   transaction ids. `calls`: the calls that ring, and the person's decline.
//! - [`lifecycles`]: what enters, leaves and is evicted from every table, and the tidying
//!   after each sync.
//! - [`verification`]: SAS device verification. `transfer`: the file being sent or
//!   received.
//! - `limits`, `errors`, `events`: the capacities, the errors, and what the person
//!   sees; `bodies`: what request and response bodies share; `rng`: the two random
//!   sources.
//!
//! # Known gaps
//!
//! - Every record on flash is sealed with the storage key (`flash`), but the key itself is
//!   the platform's to keep: on a board it sits in the same flash, so a dump of the whole
//!   flash opens everything. Received files ([`crate::files`]) are stored as they arrived.
//! - The age of an outbound session restarts at boot (`rotation_period_ms` counts from
//!   boot); its message count survives.
//! - Invites and joins in progress live in RAM only; a power cut drops them (an invite
//!   comes back with the next initial sync). The syncs a waiting room key has waited are
//!   counted in RAM: a boot starts its count again. Withheld-key notices live in RAM only,
//!   the last [`MAX_WITHHELD_NOTICES`] of them.
//! - A keys/query response larger than [`RESPONSE_BYTES`] fails. A sync is split by the
//!   gateway to the token's capacity; a gateway that does not split gets a catch-up with a
//!   compact filter. A timeline the homeserver left messages out of (`limited`) is back-filled
//!   up to [`BACKFILL_PAGES`] pages back, [`MAX_BACKFILLS`] rooms at a time; beyond that the
//!   person is told ([`UiEvent::Gap`]). An event whose room key has not arrived is shown as
//!   undecryptable, and fetched again once the key comes, for the last [`MAX_RETRY_EVENTS`]
//!   such events. More than 16 joined rooms in one sync are skipped together, not room by
//!   room.
//! - No logout, re-login after the access token was revoked, key backup, key requests or
//!   forwarded keys. Cross-signing (feature `cross-signing`) is the bootstrap of the user's
//!   own keys and the token's own device signed by them; other users' devices are not checked
//!   through their cross-signing keys, and a master key another device made is not pinned; `m.text` is the only message type shown, besides
//!   encrypted files ([`crate::files`]) and calls, which ring and can be declined (no media). The token's own messages echoed by sync are
//!   skipped, not shown.
//! - Device verification: one at a time, in RAM (a power cut ends it; the peer times
//!   out); to-device only (no in-room verification, no QR codes, no cross-signing: the
//!   peer's master key in its MAC is covered by the key-id MAC but not checked or
//!   trusted); verification messages that arrive Olm-encrypted are not read; the
//!   request's `timestamp` is not checked (the token has no wall clock). A verified device
//!   stays verified while the homeserver lists it with the same keys.
//! - One file transfer at a time, and it is an operation like the others: a download holds
//!   back the outbox until it ends. A transfer lives in RAM only: a power cut abandons it (no
//!   half-written file remains, and no event of a half-uploaded file is sent); a file event
//!   that arrives while another transfer runs is refused with [`UiEvent::FileFailed`].

mod account;
mod backfill;
mod bodies;
mod boot;
mod calls;
mod config;
#[cfg(feature = "cross-signing")]
mod cross_signing;
mod devices;
mod errors;
mod events;
mod flash;
mod gateway;
pub mod lifecycles;
mod limits;
mod login;
mod olm_sessions;
mod operations;
mod outbound;
mod outbox;
mod pending_keys;
mod requests;
mod rng;
mod room_keys;
mod rooms;
mod sync;
mod timeline;
mod token;
mod transfer;
pub mod verification;

use heapless::String;

use crate::coap::{Client, Code, Event, option};
use crate::platform::{Instant, Rng};
use crate::store::Store;

pub use account::{Identity, device_keys_json, one_time_key_json};
pub use calls::{CallEnd, CallId, MAX_RING_MS, RTC_RING_MS};
pub use config::Config;
#[cfg(feature = "cross-signing")]
pub use cross_signing::{CrossSigningFailure, MAX_PASSWORD_LEN, cross_signing_key_json};
pub use errors::{CommandError, RejectionReason, TokenError, UndecryptableReason, WithheldCode};
pub use events::{EscapedBody, EventLine, Ui, UiEvent};
pub use limits::*;
pub use rng::TransportRng;
pub use rooms::{Invite, RoomSummary};
pub use token::{Occupancy, Status, Token};
pub use verification::{
    CancelCode, MAX_MAC_KEYS, MAX_TRANSACTION_ID_LEN, TransactionId, VERIFICATION_STEP_TIMEOUT_MS,
    VERIFICATION_TIMEOUT_MS,
};

use account::OwnAccount;
use backfill::Backfills;
use config::Settings;
use devices::Devices;
use flash::Flash;
use gateway::Gateway;
use login::Login;
use olm_sessions::OlmSessions;
use operations::{Operation, OperationLane};
use outbox::{Numbering, Outbox};
use pending_keys::PendingKeys;
use requests::{RequestShape, code_number};
use room_keys::RoomKeys;
use rooms::Rooms;
use verification::Verifications;

/// The CoAP engine the token drives.
type Coap = Client<TransportRng, REQUEST_BYTES, RESPONSE_BYTES>;
use sync::SyncLane;
use transfer::Transfers;

/// What every part of the client works with: the platform's generator, flash and display,
/// the settings, and the buffer request bodies and decrypted plaintexts are built in.
///
/// Laid out in the order written (`repr(C)`), its buffers last (see [`Core`]).
#[repr(C)]
struct Env<R, S, U> {
    rng: R,
    ui: U,
    settings: Settings,
    flash: Flash<S>,
    /// Request bodies are written here, and plaintexts decrypted; nothing in it outlives the
    /// input call that wrote it.
    work: [u8; WORK_BYTES],
}

impl<R, S, U: Ui> Env<R, S, U> {
    /// Shows `error` to the person; the token carries on.
    fn error(&mut self, error: TokenError) {
        self.ui.event(&UiEvent::Error(error));
    }
}

/// The token's state apart from the CoAP engine, so that a response body borrowed from the
/// engine can be processed while the rest of the state changes.
///
/// Laid out in the order written (`repr(C)`): the small sub-states that every step reads
/// first, the platform's side next (its buffers last), the large tables at the end. On a
/// 32-bit device a field within the first 4 KB of the state is one load away; further out
/// each access costs an address computation, which over the whole client is kilobytes of
/// flash.
#[repr(C)]
struct Core<R: Rng, S: Store, U: Ui> {
    /// How the token learns about new events, and where it stands.
    sync: SyncLane,
    /// The request in flight besides sync.
    operation: OperationLane,
    /// The gaps of `limited` timelines being filled.
    backfill: Backfills,
    /// The messages queued, and the numbers they are sent with.
    outbox: Outbox,
    /// The file being sent or received.
    transfer: Transfers,
    /// The device verification in progress.
    verification: verification::Verifications,
    /// The calls that ring.
    calls: calls::Calls,
    /// What the gateway holds for the token.
    gateway: Gateway,
    /// The login, once there is one.
    login: Option<Login>,
    /// The platform's side: RNG, display, settings, flash, the work buffer.
    env: Env<R, S, U>,
    /// The Olm sessions with other devices.
    sessions: OlmSessions,
    /// The tracked users and their devices.
    devices: Devices,
    /// The rooms, invites and joins, with the rooms' outbound sessions.
    rooms: Rooms,
    /// The room keys held (an index; the sessions are on flash).
    room_keys: RoomKeys,
    /// The room keys waiting for their room, sender or device (an index; the keys are on
    /// flash).
    pending_keys: PendingKeys,
    /// The token's own Olm account.
    account: OwnAccount,
    /// The cross-signing bootstrap under way.
    #[cfg(feature = "cross-signing")]
    cross_signing: cross_signing::CrossSigning,
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    fn error(&mut self, error: TokenError) {
        self.env.error(error);
    }

    /// An event of the CoAP engine: an answer to the sync lane or the operation lane.
    fn on_event(&mut self, event: Event<'_>, now: Instant) {
        match event {
            Event::Response { id, code, body, .. } => {
                if !self.on_sync_answer(id, code, body, now) {
                    self.on_operation_answer(id, code, body, now);
                }
            }
            Event::Notification {
                code,
                body,
                acknowledged,
                ..
            } => self.on_sync_notification(code, body, acknowledged, now),
            Event::Failed { id, error } => {
                if !self.on_sync_failed(id, error, now) {
                    self.on_operation_failed(id, error, now);
                }
            }
            Event::ResponseBlock {
                id,
                code,
                options,
                offset,
                body,
                last,
            } => {
                let size2 = || {
                    options
                        .clone()
                        .find(|(number, _)| *number == option::SIZE2)
                        .and_then(|(_, value)| crate::coap::message::decode_uint(value))
                };
                self.on_download_answer(id, code, size2, offset, body, last);
            }
        }
    }

    /// Tracks whether the gateway holds the access token; false when a request without
    /// it was refused for the lack of it (and must be made again).
    fn note_token(&mut self, code: Code, with_token: bool) -> bool {
        let held = self.gateway.note_answer(code, with_token);
        if !held {
            // The gateway lost its state for this peer (it restarted): the observation too,
            // which goes again at once.
            self.sync.observation_lost();
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_size_with_default_capacities_is_pinned() {
        struct NoUi;
        impl Ui for NoUi {
            fn event(&mut self, _: &UiEvent<'_>) {}
        }
        struct NoRng;
        impl Rng for NoRng {
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                dest.fill(7);
            }
        }
        struct Probe;
        impl crate::platform::Platform for Probe {
            type Rng = NoRng;
            type Store = crate::store::MemoryStore<1, 1>;
            type Ui = NoUi;
        }
        // The target was 32 KiB (32,768 B) with messaging alone (31,760 B); SAS verification
        // (+528 B), a file transfer's state (+864 B) and what the gateway holds for the token
        // (room handles, Megolm session ids: +184 B) took it over, and the protected link
        // (pairing material, the EDHOC state during a handshake, the OSCORE context) adds
        // 1,600 B; the sync lane's ring of what it took in recently (dropping what a gateway
        // delivers twice) and its retry state add 104 B, the withheld-key notices 48 B, room for eight events to fetch
        // again once their key is taken 32 B, the table of ringing calls 336 B, two gaps of
        // `limited` timelines being back-filled 656 B. The
        // room keys live on flash with an index of a few bytes per slot in RAM, which brought
        // the state back under the target. The pin holds the state where it is so that growth
        // is a decision; on the device (thumbv7em) the Cortex-M tier enforces the RAM budget
        // that counts (tests/cortex-m/build).
        // Voice messages (feature `voice`) add 8 B: a received one's duration (the voice
        // metadata of one being sent fits in the larger download variant of the transfer).
        const VOICE: usize = if cfg!(feature = "voice") { 8 } else { 0 };
        // Cross-signing (feature `cross-signing`) adds 216 B: a bootstrap's password and
        // user-interactive auth session, held while it runs (the keys stay on flash).
        const CROSS_SIGNING: usize = if cfg!(feature = "cross-signing") {
            216
        } else {
            0
        };
        const FEATURES: usize = VOICE + CROSS_SIGNING;
        let plain = core::mem::size_of::<Token<Probe>>();
        println!(
            "Token state: {plain} B on the plain link (pinned at 29,864 B, + {VOICE} B voice, \
             + {CROSS_SIGNING} B cross-signing)"
        );
        assert!(
            plain <= 29_864 + FEATURES,
            "the token state takes {plain} B"
        );
        #[cfg(feature = "link")]
        {
            let size = core::mem::size_of::<Token<Probe, crate::link::ProtectedLink>>();
            println!(
                "Token state: {size} B on the protected link (pinned at 31,464 B, + {VOICE} B \
                 voice, + {CROSS_SIGNING} B cross-signing)"
            );
            assert!(
                size <= 31_464 + FEATURES,
                "the token state takes {size} B with the link"
            );
        }
    }
}
