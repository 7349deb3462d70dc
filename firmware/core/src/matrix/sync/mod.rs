//! The sync lane: how the token learns about new events, where it stands in the homeserver's
//! stream, and how it tells the gateway what it holds (PROFILE.md section 9).
//!
//! This module owns the cursor (`next_batch` of the last sync taken in, on flash in
//! [`record::SYNC_CURSOR`]), the lane (an Observe registration on `/sync`, or long-polls one at
//! a time once the gateway answered a registration without Observe), the back-off of a failed
//! sync request, and the compact filter a gateway that cannot split a sync is asked for;
//! [`intake`] takes a sync's parts in and keeps the ring of what was taken in recently.
//!
//! Every sync request carries the token's capacity (option 258), so the gateway never sends a
//! larger body: it splits a large sync into parts, each with a position of its own, and replaces
//! an event too large on its own by a stub, shown as [`UiEvent::EventTooLarge`]. The gateway
//! moves its position past a body only once the token confirmed it: by acknowledging a
//! notification that came whole (which the CoAP engine does once the body was processed and
//! stored), or by a request from the body's position, which the token sends at once after a
//! registration's answer or a notification fetched in blocks. The cursor on flash is always
//! authoritative: a registration starts from it.

use heapless::{String, Vec};

use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::SyncResponse;
use minicbor::Decoder;

use super::flash::{Flash, text};
use super::requests::{RequestShape, Sent};
use super::*;
use crate::coap::{ExchangeError, RequestId, option};
use crate::store::record;
use intake::{Recent, is_storage_failure};

mod intake;

pub(super) use intake::{Item, digest, event_digest, events_of, hash_parts, stub_size};

/// The inline filter of a catch-up sync, for a gateway that does not split a sync to the
/// token's capacity: the newest event of each room. Raw JSON, as a Uri-Query value is not
/// percent-encoded (the gateway encodes it once when it builds the URL).
const COMPACT_FILTER: &str = r#"filter={"room":{"timeline":{"limit":1}}}"#;

/// Room the response buffer keeps for a response's options (Observe, Content-Format, Block2,
/// Size2, ETag).
const RESPONSE_OPTIONS_ROOM: usize = 64;

/// Option 258 (Response-Capacity): the largest sync body the token holds.
const CAPACITY: u16 = (RESPONSE_BYTES - RESPONSE_OPTIONS_ROOM) as u16;
const _: () =
    assert!(RESPONSE_BYTES - RESPONSE_OPTIONS_ROOM <= u16::MAX as usize && CAPACITY > 255);

/// The first wait after a failed sync request; it doubles with each failure in a row, up to
/// [`SYNC_RETRY_MAX_MS`].
const SYNC_RETRY_MS: u64 = 2_000;
/// The longest wait between sync requests that fail: the token is receiving again within
/// this of the gateway or the homeserver coming back.
const SYNC_RETRY_MAX_MS: u64 = 10_000;

/// How the token learns about new events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Not observing: not started, or registering again after a failure.
    Idle,
    /// An Observe registration on `/sync`.
    Observing { id: RequestId, with_token: bool },
    /// Long-poll requests, one at a time.
    Polling { poll: Option<Sent> },
}

/// The sync lane and the cursor.
#[derive(Debug)]
pub(super) struct SyncLane {
    /// `next_batch` of the last sync taken in (on flash).
    since: String<MAX_CURSOR_LEN>,
    lane: Lane,
    /// The cursor moved, or the link's context is new: the observation's options are out
    /// of date.
    observation_stale: bool,
    /// The gateway lost the observation: register it again.
    observation_lost: bool,
    /// The cursor moved past an answer that only a request from the new cursor confirms to
    /// the gateway (a registration's answer, a notification fetched in blocks): register
    /// again at once.
    confirm: bool,
    /// After a sync too large for the response buffer from a gateway that does not split:
    /// sync with [`COMPACT_FILTER`].
    compact: bool,
    /// The gateway answered a registration without Observe: long polls from now on.
    no_observe: bool,
    /// The observation is to be cancelled (a catch-up by long polls replaces it).
    cancel: bool,
    /// Sync requests that failed in a row.
    failures: u8,
    /// After a failed sync request, the next one waits until then.
    retry_at: Option<Instant>,
    /// What the notification being processed carried could not be stored: decline it.
    decline: bool,
    /// What was taken in recently.
    recent: Recent,
}

impl SyncLane {
    /// A lane not started, at the start of the stream.
    pub(super) const fn new() -> Self {
        SyncLane {
            since: String::new(),
            lane: Lane::Idle,
            observation_stale: false,
            observation_lost: false,
            confirm: false,
            compact: false,
            no_observe: false,
            cancel: false,
            failures: 0,
            retry_at: None,
            decline: false,
            recent: Recent::new(),
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

    /// Whether the token has synced before: a gap in a timeline is then one it missed.
    pub(super) fn has_synced(&self) -> bool {
        !self.since.is_empty()
    }

    /// `next_batch` of the last sync taken in (empty at the start of the stream).
    pub(super) fn since(&self) -> &str {
        &self.since
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

    /// When the lane wakes up after a failed request.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the notification just processed must be declined (what it carried could not be
    /// stored); asking clears it.
    pub(super) fn take_decline(&mut self) -> bool {
        core::mem::take(&mut self.decline)
    }

    /// A sync request failed: the next one waits, longer after each failure in a row.
    fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doubling = SYNC_RETRY_MS << u32::from(self.failures.min(8) - 1);
        self.retry_at = Some(now.plus_millis(doubling.min(SYNC_RETRY_MAX_MS)));
    }

    /// A sync request succeeded.
    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
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

/// Option 258's value.
pub(super) const CAPACITY_OPTION: [u8; 2] = CAPACITY.to_be_bytes();

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Keeps sync running: registers the observation, re-registers or updates it, or long
    /// polls; waits out the back-off after a failure.
    pub(super) fn plan_sync(&mut self, coap: &mut Coap, now: Instant) -> Result<(), TokenError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        let (since, filter) = self.sync.queries(&login.filter_id);
        // A back-off that ran out is spent here, so that the platform is not woken for it again.
        let retry_due = self.sync.retry_at.is_some_and(|at| now >= at);
        if retry_due {
            self.sync.retry_at = None;
        }
        let waiting = self.sync.retry_at.is_some();
        if core::mem::take(&mut self.sync.cancel) {
            let _ = coap.cancel_observation();
        }
        match self.sync.lane {
            Lane::Idle if waiting => {}
            Lane::Idle => {
                let with_token = self.gateway.registration_wants_token();
                let observed = {
                    let options = self.sync_options(&since, &filter);
                    coap.observe(options.as_slice())
                };
                let id = match observed {
                    // The one it replaces is still being cancelled.
                    Err(crate::coap::RequestError::ObservationExists) => return Ok(()),
                    other => other?,
                };
                self.sync.lane = Lane::Observing { id, with_token };
                self.sync.observation_stale = false;
                self.sync.observation_lost = false;
                self.sync.confirm = false;
            }
            Lane::Observing { .. } => {
                if self.sync.observation_stale {
                    {
                        let options = self.sync_options(&since, &filter);
                        coap.set_observation_options(options.as_slice())?;
                    }
                    self.sync.observation_stale = false;
                }
                // After a failure the engine waits its silence period; the lane's back-off is
                // shorter.
                if retry_due
                    || core::mem::take(&mut self.sync.observation_lost)
                    || core::mem::take(&mut self.sync.confirm)
                {
                    let _ = coap.reregister_observation();
                }
            }
            Lane::Polling { poll: None } if waiting => {}
            Lane::Polling { poll: None } => self.start_poll(coap, &since, &filter)?,
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
        let shape = RequestShape {
            capacity: true,
            ..RequestShape::CBOR
        };
        let sent = self.request_shaped(coap, Code::GET, &[endpoint::SYNC], &query, 0, shape)?;
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
        let _ = options.push((option::RESPONSE_CAPACITY, &CAPACITY_OPTION));
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
            Lane::Observing {
                id: obs,
                with_token,
            } if obs == id => {
                // The registration was answered without Observe; the engine dropped the
                // observation.
                if !self.note_token(code, with_token) {
                    // The gateway lost the access token: register again with it, at once.
                    self.sync.lane = Lane::Idle;
                } else if code.class() == 2 {
                    // The gateway does not observe /sync: long polls from now on.
                    self.sync.no_observe = true;
                    self.sync.lane = Lane::Polling { poll: None };
                    self.sync.succeeded();
                    self.on_sync_response(code, body, false, now);
                } else {
                    // Refused (the homeserver is down, say): register again after a while.
                    self.sync.lane = Lane::Idle;
                    self.sync.failed(now);
                    self.on_sync_response(code, body, false, now);
                }
            }
            Lane::Polling { poll: Some(poll) } if poll.id == id => {
                self.sync.lane = Lane::Polling { poll: None };
                if self.note_token(code, poll.with_token) {
                    if code.class() == 2 {
                        self.sync.succeeded();
                        if core::mem::take(&mut self.sync.compact) && !self.sync.no_observe {
                            // Caught up with a compact sync: observe again.
                            self.sync.lane = Lane::Idle;
                        }
                    } else {
                        self.sync.failed(now);
                    }
                    // The next poll, from the new cursor, confirms this one.
                    self.on_sync_response(code, body, true, now);
                }
            }
            _ => return false,
        }
        true
    }

    /// A notification of the /sync observation (or its registration's answer); `acknowledged`:
    /// the engine's acknowledgement, once it is processed, confirms it to the gateway.
    pub(super) fn on_sync_notification(
        &mut self,
        code: Code,
        body: &[u8],
        acknowledged: bool,
        now: Instant,
    ) {
        // The registration carried the token, so the gateway has it.
        self.gateway.note_notification();
        self.sync.succeeded();
        self.on_sync_response(code, body, acknowledged, now);
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
        match self.sync.lane {
            Lane::Observing { id: obs, .. } if obs == id => {
                if too_large {
                    // A gateway that does not split: catch up with a compact filter (the
                    // newest event of each room) by long polling, then observe again.
                    self.sync.compact = true;
                    self.sync.cancel = true;
                    self.sync.lane = Lane::Polling { poll: None };
                } else {
                    // The engine keeps the observation; the lane registers it again after its
                    // back-off.
                    self.sync.failed(now);
                }
            }
            Lane::Polling { poll: Some(poll) } if poll.id == id => {
                self.sync.lane = Lane::Polling { poll: None };
                self.sync.compact |= too_large;
                self.sync.failed(now);
            }
            _ => return false,
        }
        self.error(TokenError::Exchange(error));
        true
    }

    fn on_sync_response(&mut self, code: Code, body: &[u8], acknowledged: bool, now: Instant) {
        if code.class() != 2 {
            self.error(TokenError::Server(code_number(code)));
            return;
        }
        match self.on_sync(body, now) {
            Ok(moved) => {
                if moved && !acknowledged {
                    self.sync.confirm = true;
                }
                self.env.ui.event(&UiEvent::Synced);
            }
            Err(error) => {
                if is_storage_failure(&error) {
                    // Neither acknowledged nor confirmed: it comes again, as the gateway's
                    // retransmission or as the answer to a request after the back-off.
                    self.sync.decline = true;
                    self.sync.failed(now);
                }
                self.error(error);
            }
        }
    }

    /// Takes a sync response in; whether the cursor moved. Fails only if the body has no
    /// position the token can keep, or if the store failed (the cursor stays).
    fn on_sync(&mut self, body: &[u8], now: Instant) -> Result<bool, TokenError> {
        let sync = SyncResponse::parse(body, TableVersion::V2)?;
        let next_batch: String<MAX_CURSOR_LEN> = bounded(sync.next_batch()?)?;
        let moved = next_batch != self.sync.since;
        self.apply_sync(&sync, now)?;
        if moved {
            self.sync.advance(&mut self.env.flash, &next_batch)?;
        }
        Ok(moved)
    }
}
