//! The sync lane: how the token learns about new events, and where it stands in the
//! homeserver's stream.
//!
//! This module owns the cursor (`next_batch` of the last sync fully processed, on flash in
//! [`record::SYNC_CURSOR`]), the lane (an Observe registration on `/sync`, or long-polls one
//! at a time after the gateway answered without Observe or the registration failed twice),
//! the compact filter a too-large sync falls back to, and the back-off after a failed poll. A
//! sync response is handed on in [`Core::apply_sync`]'s order: rooms and their state, device
//! lists and key counts first ([`super::rooms`], [`super::devices`], [`super::account`]),
//! then to-device messages (room keys over Olm, verification), then timelines. The cursor
//! moves after everything the sync carried was stored.
//!
//! Where the lane's rules go next (issue 14): confirmed positions (the gateway moves only
//! past what the token confirmed), an item that cannot be read skipped on its own instead of
//! the batch, and a retry time of every failed poll the platform is woken for.

use heapless::{String, Vec};

use jeton_proto::TableVersion;
use jeton_proto::ids::TEXT_LEN;
use jeton_proto::path::endpoint;
use jeton_proto::view::{OLM_ALGORITHM, SyncResponse};
use minicbor::Decoder;

use super::flash::{Flash, text};
use super::requests::Sent;
use super::*;
use crate::coap::{ExchangeError, RequestId, option};
use crate::store::record;

/// The inline filter of a catch-up sync, percent-encoded:
/// `{"room":{"timeline":{"limit":1}}}`.
const COMPACT_FILTER: &str =
    "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D";

/// How the token learns about new events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Not started (not logged in, or keys not yet uploaded).
    Idle,
    /// An Observe registration on `/sync`.
    Observing { id: RequestId, failures: u8 },
    /// Long-poll requests, one at a time.
    Polling { poll: Option<Sent> },
}

/// The sync lane and the cursor.
#[derive(Debug)]
pub(super) struct SyncLane {
    /// `next_batch` of the last sync fully processed (on flash).
    since: String<MAX_CURSOR_LEN>,
    lane: Lane,
    /// The cursor moved, or the link's context is new: the observation's options are out
    /// of date.
    observation_stale: bool,
    /// The gateway lost the observation: register it again.
    observation_lost: bool,
    /// After a sync too large for the response buffer: sync with [`COMPACT_FILTER`].
    compact: bool,
    /// After a failed long-poll, the next one waits until then.
    backoff_until: Option<Instant>,
}

impl SyncLane {
    /// A lane not started, at the start of the stream.
    pub(super) const fn new() -> Self {
        SyncLane {
            since: String::new(),
            lane: Lane::Idle,
            observation_stale: false,
            observation_lost: false,
            compact: false,
            backoff_until: None,
        }
    }

    /// Reads the cursor from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        let id = record::SYNC_CURSOR;
        self.since = match flash.get(id)? {
            None => String::new(),
            Some((meta, _)) => text(&mut Decoder::new(meta), id)?,
        };
        Ok(())
    }

    /// Moves the cursor past a sync, on flash first.
    fn advance<S: Store>(
        &mut self,
        flash: &mut Flash<S>,
        next_batch: &String<MAX_CURSOR_LEN>,
    ) -> Result<(), TokenError> {
        flash.put(record::SYNC_CURSOR, |e| e.str(next_batch).map(drop))?;
        self.since.clone_from(next_batch);
        self.observation_stale = true;
        Ok(())
    }

    /// The gateway lost its state for this peer: the observation goes again at once.
    pub(super) fn observation_lost(&mut self) {
        self.observation_lost = true;
    }

    /// The link has a new security context: the gateway holds no observation of an earlier
    /// one, and the next registration carries the access token again.
    pub(super) fn on_new_link_context(&mut self) {
        self.observation_lost = true;
        self.observation_stale = true;
    }

    /// `since=<cursor>` (empty at the start of the stream) and `filter=<id>` (or the compact
    /// filter), the query options of every sync request.
    fn queries(
        &self,
        filter_id: &str,
    ) -> (
        String<{ MAX_CURSOR_LEN + 6 }>,
        String<{ MAX_CURSOR_LEN + 7 }>,
    ) {
        let mut since = String::new();
        if !self.since.is_empty() {
            let _ = since.push_str("since=");
            let _ = since.push_str(&self.since);
        }
        let mut filter = String::new();
        if self.compact {
            let _ = filter.push_str(COMPACT_FILTER);
        } else {
            let _ = filter.push_str("filter=");
            let _ = filter.push_str(filter_id);
        }
        (since, filter)
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Keeps sync running: registers the observation, re-registers or updates it, or falls
    /// back to long polls.
    pub(super) fn plan_sync(&mut self, coap: &mut Coap, now: Instant) -> Result<(), TokenError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        let (since, filter) = self.sync.queries(&login.filter_id);
        match self.sync.lane {
            Lane::Idle => {
                let id = {
                    let options = self.sync_options(&since, &filter);
                    coap.observe(options.as_slice())?
                };
                self.sync.lane = Lane::Observing { id, failures: 0 };
                self.sync.observation_stale = false;
            }
            Lane::Observing { failures, .. } if failures >= 2 => {
                let _ = coap.cancel_observation();
                self.sync.lane = Lane::Polling { poll: None };
            }
            Lane::Observing { .. } => {
                if core::mem::take(&mut self.sync.observation_lost) {
                    let _ = coap.reregister_observation();
                }
                if self.sync.observation_stale {
                    {
                        let options = self.sync_options(&since, &filter);
                        coap.set_observation_options(options.as_slice())?;
                    }
                    self.sync.observation_stale = false;
                }
            }
            Lane::Polling { poll: None }
                if self.sync.backoff_until.is_some_and(|until| now < until) => {}
            Lane::Polling { poll: None } => {
                self.sync.backoff_until = None;
                self.start_poll(coap, &since, &filter)?;
            }
            Lane::Polling { poll: Some(_) } => {}
        }
        Ok(())
    }

    /// Sends a long-poll sync.
    fn start_poll(&mut self, coap: &mut Coap, since: &str, filter: &str) -> Result<(), TokenError> {
        let mut timeout: String<24> = String::new();
        let _ = timeout.push_str("timeout=");
        push_number(
            &mut timeout,
            u64::from(self.env.settings.long_poll_timeout_ms),
            10,
            0,
        )?;
        let mut query: Vec<&str, 3> = Vec::new();
        if !since.is_empty() {
            let _ = query.push(since);
        }
        let _ = query.push(filter);
        let _ = query.push(&timeout);
        let sent = self.request(coap, Code::GET, &[endpoint::SYNC], &query, 0)?;
        self.sync.lane = Lane::Polling { poll: Some(sent) };
        Ok(())
    }

    /// The options of the /sync registration.
    fn sync_options<'o>(&'o self, since: &'o str, filter: &'o str) -> Vec<(u16, &'o [u8]), 8> {
        let mut options: Vec<(u16, &[u8]), 8> = Vec::new();
        let _ = options.push((option::URI_PATH, endpoint::SYNC.as_bytes()));
        if !since.is_empty() {
            let _ = options.push((option::URI_QUERY, since.as_bytes()));
        }
        let _ = options.push((option::URI_QUERY, filter.as_bytes()));
        let _ = options.push((option::ACCEPT, &[60]));
        if let Some(login) = &self.login
            && self.gateway.registration_wants_token()
        {
            let _ = options.push((option::ACCESS_TOKEN, login.access_token.as_bytes()));
        }
        let _ = options.push((option::CBOR_TABLE_VERSION, &[2]));
        options
    }

    /// A response to request `id`, if it is the sync lane's: true when it was.
    pub(super) fn on_sync_answer(
        &mut self,
        id: RequestId,
        code: Code,
        body: &[u8],
        now: Instant,
    ) -> bool {
        match self.sync.lane {
            Lane::Observing { id: obs, .. } if obs == id => {
                // Answered without Observe: the gateway does not observe /sync.
                self.sync.lane = Lane::Polling { poll: None };
                self.on_sync_response(code, body, now);
            }
            Lane::Polling { poll: Some(poll) } if poll.id == id => {
                self.sync.lane = Lane::Polling { poll: None };
                if self.note_token(code, poll.with_token) {
                    if code.class() == 2 {
                        self.sync.compact = false;
                    } else {
                        self.sync.backoff_until = Some(now.plus_millis(BACKOFF_MS));
                    }
                    self.on_sync_response(code, body, now);
                }
            }
            _ => return false,
        }
        true
    }

    /// A notification of the /sync observation.
    pub(super) fn on_sync_notification(&mut self, code: Code, body: &[u8], now: Instant) {
        // The registration carried the token, so the gateway has it.
        self.gateway.note_notification();
        if let Lane::Observing { id, .. } = self.sync.lane {
            self.sync.lane = Lane::Observing { id, failures: 0 };
        }
        self.on_sync_response(code, body, now);
    }

    /// A failed exchange `id`: a too-large answer turns the compact filter on, whoever asked;
    /// true when it was the sync lane's.
    pub(super) fn on_sync_failed(
        &mut self,
        id: RequestId,
        error: ExchangeError,
        now: Instant,
    ) -> bool {
        let too_large = error == ExchangeError::ResponseTooLarge;
        if too_large {
            // A sync larger than the response buffer: catch up with a compact filter (the
            // newest event of each room) by long polling.
            self.sync.compact = true;
            self.error(TokenError::Exchange(error));
        }
        match self.sync.lane {
            Lane::Observing { id: obs, failures } if obs == id => {
                // The engine retries the registration; after two failures in a row, fall
                // back to long polling.
                self.sync.lane = Lane::Observing {
                    id,
                    failures: if too_large {
                        2
                    } else {
                        failures.saturating_add(1)
                    },
                };
            }
            Lane::Polling { poll: Some(poll) } if poll.id == id => {
                self.sync.lane = Lane::Polling { poll: None };
                self.sync.backoff_until = Some(now.plus_millis(BACKOFF_MS));
            }
            _ => return false,
        }
        true
    }

    fn on_sync_response(&mut self, code: Code, body: &[u8], now: Instant) {
        if code.class() != 2 {
            self.error(TokenError::Server(code_number(code)));
            return;
        }
        match self.on_sync(body, now) {
            Ok(()) => self.env.ui.event(&UiEvent::Synced),
            Err(error) => self.error(error),
        }
    }

    /// Processes a sync response. A response the token cannot read in full (a list over a
    /// capacity, a malformed event) is reported, and the cursor still moves past it:
    /// otherwise the same response would come back forever.
    fn on_sync(&mut self, body: &[u8], now: Instant) -> Result<(), TokenError> {
        let sync = SyncResponse::parse(body, TableVersion::V2)?;
        let next_batch: String<MAX_CURSOR_LEN> = bounded(sync.next_batch()?)?;
        let result = self.apply_sync(&sync, now);
        if matches!(
            result,
            Err(TokenError::Malformed(_) | TokenError::LimitReached(_) | TokenError::Json(_))
        ) || result.is_ok()
        {
            self.sync.advance(&mut self.env.flash, &next_batch)?;
        }
        result
    }

    /// Invites, membership and encryption state, device list changes and key counts: what
    /// has to be in before the sync's room keys and messages. Out of line, so that its
    /// locals are not under the Olm decryption's stack.
    #[inline(never)]
    fn apply_rooms(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        let own_user = self
            .login
            .as_ref()
            .map(|l| l.user_id.clone())
            .unwrap_or_default();
        self.apply_invites(sync, &own_user)?;
        // Joined rooms: membership and encryption state first, so that room keys arriving
        // in this sync find their senders tracked.
        self.apply_joined_rooms(sync, &own_user)?;
        self.apply_left_rooms(sync)?;
        for user in sync.device_lists_changed()? {
            let user = user?;
            if self.devices.is_tracked(user) {
                self.track(user);
            }
        }
        for user in sync.device_lists_left()? {
            self.on_user_left(user?)?;
        }
        if self.login.as_ref().is_some_and(|l| l.keys_uploaded) {
            self.account.on_key_counts(sync)?;
        }
        Ok(())
    }

    /// What a sync carries, in the order it must be taken in.
    fn apply_sync(&mut self, sync: &SyncResponse<'_>, now: Instant) -> Result<(), TokenError> {
        self.apply_rooms(sync)?;

        for event in sync.to_device_events()? {
            let event = event?;
            if let Some(content) = event.encrypted()?
                && content.algorithm()? == OLM_ALGORITHM
            {
                let sender = event.sender()?;
                self.on_olm_event(sender, content, now)?;
            } else if event.event_type()?.starts_with("m.key.verification.") {
                self.on_verification_event(
                    event.sender()?,
                    event.event_type()?,
                    event.content()?,
                    now,
                );
            }
        }

        for room in sync.joined_rooms()? {
            let (room_id, room) = room?;
            let mut text = [0; TEXT_LEN];
            let room_id = room_id.as_text(&mut text);
            for event in room.timeline_events()? {
                self.on_timeline_event(room_id, &event?)?;
            }
        }

        // The tables' leaving rules ([`super::lifecycles`]), then everything this sync carried
        // is stored: the caller moves the cursor.
        self.tidy_after_sync()
    }
}
