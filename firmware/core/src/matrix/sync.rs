//! The sync lane: how the token learns about new events, where it stands in the homeserver's
//! stream, and how it tells the gateway what it holds (PROFILE.md section 9).
//!
//! This module owns the cursor (`next_batch` of the last sync taken in, on flash in
//! [`record::SYNC_CURSOR`]), the lane (an Observe registration on `/sync`, or long-polls one at
//! a time once the gateway answered a registration without Observe), the back-off of a failed
//! sync request, the compact filter a gateway that cannot split a sync is asked for, and the
//! ring of what was taken in recently.
//!
//! Every sync request carries the token's capacity (option 258), so the gateway never sends a
//! larger body: it splits a large sync into parts, each with a position of its own, and replaces
//! an event too large on its own by a stub, shown as [`UiEvent::EventTooLarge`]. The gateway
//! moves its position past a body only once the token confirmed it: by acknowledging a
//! notification that came whole (which the CoAP engine does once the body was processed and
//! stored), or by a request from the body's position, which the token sends at once after a
//! registration's answer or a notification fetched in blocks. The cursor on flash is always
//! authoritative: a registration starts from it.
//!
//! A sync is taken in item by item, in [`Core::apply_sync`]'s order: rooms and their state,
//! device lists and key counts first ([`super::rooms`], [`super::devices`],
//! [`super::account`]), then to-device messages (room keys over Olm, verification), then
//! timelines ([`super::timeline`]). A `limited` timeline after the first sync is a gap: the
//! homeserver left messages out, and [`super::backfill`] fetches them. An
//! item that cannot be taken in (malformed, over a capacity) is skipped with
//! [`UiEvent::Skipped`] and the rest is taken in; only a failing store stops a sync, which is
//! then neither confirmed nor acknowledged. An item taken in recently (a gateway that restarted
//! in the middle of a split delivers its parts again) is skipped silently. The cursor moves
//! after everything the sync carried that could be stored was stored.

use heapless::{String, Vec};
use sha2::{Digest, Sha256};

use jeton_proto::TableVersion;
use jeton_proto::ids::TEXT_LEN;
use jeton_proto::path::endpoint;
use jeton_proto::view::{
    Elements, Event, Map, OLM_ALGORITHM, Room, SyncResponse, TOO_LARGE_FIELD, Value, ViewError,
};
use minicbor::Decoder;

use super::flash::{Flash, text};
use super::requests::{RequestShape, Sent};
use super::*;
use crate::coap::{ExchangeError, RequestId, option};
use crate::store::record;

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

/// Digests of the events and to-device messages taken in recently, oldest first out: what a
/// gateway that delivers a sync again (it restarted in the middle of a split) brings twice.
#[derive(Debug)]
struct Recent {
    digests: [u32; RECENT_ITEMS],
    next: usize,
}

impl Recent {
    const fn new() -> Self {
        Recent {
            digests: [0; RECENT_ITEMS],
            next: 0,
        }
    }

    fn contains(&self, digest: u32) -> bool {
        digest != 0 && self.digests.contains(&digest)
    }

    fn insert(&mut self, digest: u32) {
        if digest == 0 || self.contains(digest) {
            return;
        }
        if let Some(slot) = self.digests.get_mut(self.next) {
            *slot = digest;
        }
        self.next = (self.next + 1) % RECENT_ITEMS;
    }
}

/// SHA-256 of `parts`, each after its length, so that no parts read as others.
pub(super) fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u32).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// A 32-bit digest of `parts` (SHA-256, truncated; 0 is kept for "none").
pub(super) fn digest(parts: &[&[u8]]) -> u32 {
    let [a, b, c, d, ..] = hash_parts(parts);
    u32::from_be_bytes([a, b, c, d]).max(1)
}

/// The digest of timeline event `event_id` (0 for an event without one).
pub(super) fn event_digest(event_id: &str) -> u32 {
    if event_id.is_empty() {
        return 0;
    }
    digest(&[b"event", event_id.as_bytes()])
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

/// Whether `error` means that what an item carried could not be stored (the store failed):
/// the sync then stops, unconfirmed, to come again.
fn is_storage_failure(error: &TokenError) -> bool {
    matches!(error, TokenError::Store(_) | TokenError::CorruptRecord(_))
}

/// The events of the list `name` of `parent` (absent: none), however many: a sync is taken in
/// item by item, so no list of it is refused for its length.
pub(super) fn events_of<'a>(
    parent: Option<Map<'a>>,
    name: &str,
) -> Result<impl Iterator<Item = Result<Event<'a>, ViewError>>, ViewError> {
    let list = match parent.map(|p| p.get(name)).transpose()?.flatten() {
        Some(Value::Map(list)) => list.get("events")?,
        None => None,
        Some(_) => return Err(ViewError::WrongType { offset: 0 }),
    };
    let elements: Option<Elements<'a>> = match list {
        Some(Value::Array(array)) => Some(array.iter()),
        None => None,
        Some(_) => return Err(ViewError::WrongType { offset: 0 }),
    };
    Ok(elements
        .into_iter()
        .flatten()
        .map(|element| match element? {
            Value::Map(map) => Ok(Event(map)),
            _ => Err(ViewError::WrongType { offset: 0 }),
        }))
}

/// The size a stub names, if `event` is one: an event the gateway left out because it alone
/// is larger than the token's capacity.
pub(super) fn stub_size(event: &Event<'_>) -> Result<Option<u64>, ViewError> {
    Ok(match event.0.get(TOO_LARGE_FIELD)? {
        Some(Value::Integer(size)) => Some(u64::try_from(size).unwrap_or(0)),
        _ => None,
    })
}

/// What an item of a sync is, for [`UiEvent::Skipped`].
#[derive(Clone, Copy)]
pub(super) struct Item<'a> {
    pub(super) kind: &'a str,
    pub(super) room_id: &'a str,
    pub(super) sender: &'a str,
    pub(super) id: &'a str,
}

impl<'a> Item<'a> {
    /// An item of `kind` naming nothing more.
    pub(super) const fn of(kind: &'a str) -> Self {
        Item {
            kind,
            room_id: "",
            sender: "",
            id: "",
        }
    }

    /// An event of `kind` in `room_id` (empty for a to-device message): its sender and its id
    /// (its type for an event without one), as far as they can be read.
    pub(super) fn event(kind: &'a str, room_id: &'a str, event: &Event<'a>, id: &'a str) -> Self {
        let sender = event.sender().unwrap_or("");
        let id = if id.is_empty() {
            event.event_type().unwrap_or("")
        } else {
            id
        };
        Item {
            kind,
            room_id,
            sender,
            id,
        }
    }
}

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

    /// What became of an item of a sync: nothing to say, [`UiEvent::Skipped`], or a failing
    /// store, which stops the sync.
    pub(super) fn item(
        &mut self,
        item: Item<'_>,
        result: Result<(), TokenError>,
    ) -> Result<(), TokenError> {
        match result {
            Ok(()) => Ok(()),
            Err(error) if is_storage_failure(&error) => Err(error),
            Err(error) => {
                self.env.ui.event(&UiEvent::Skipped {
                    item: item.kind,
                    room_id: item.room_id,
                    sender: item.sender,
                    id: item.id,
                    error,
                });
                Ok(())
            }
        }
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
        let invites = self.apply_invites(sync, &own_user);
        self.item(Item::of("invites"), invites)?;
        // Joined rooms: membership and encryption state first, so that room keys arriving
        // in this sync find their senders tracked.
        let joined = self.apply_joined_rooms(sync, &own_user);
        self.item(Item::of("rooms"), joined)?;
        let left = self.apply_left_rooms(sync);
        self.item(Item::of("left-rooms"), left)?;
        let changed = self.apply_device_lists(sync);
        self.item(Item::of("device-lists"), changed)?;
        if self.login.as_ref().is_some_and(|l| l.keys_uploaded) {
            let counts = self.account.on_key_counts(sync);
            self.item(Item::of("key-counts"), counts)?;
        }
        Ok(())
    }

    /// `device_lists`: the users the token tracks that are `changed` are queried again; those
    /// that `left` share no room with the token any more.
    fn apply_device_lists(&mut self, sync: &SyncResponse<'_>) -> Result<(), TokenError> {
        let lists = match sync.0.get("device_lists")? {
            Some(Value::Map(lists)) => lists,
            _ => return Ok(()),
        };
        for list in ["changed", "left"] {
            let Some(Value::Array(users)) = lists.get(list)? else {
                continue;
            };
            for user in users.iter() {
                let result = match user {
                    Ok(Value::Text(user)) if list == "left" => self.on_user_left(user),
                    Ok(Value::Text(user)) => {
                        if self.devices.is_tracked(user) {
                            self.track(user);
                        }
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(error) => Err(error.into()),
                };
                self.item(Item::of("device-list"), result)?;
            }
        }
        Ok(())
    }

    /// What a sync carries, in the order it must be taken in, item by item.
    fn apply_sync(&mut self, sync: &SyncResponse<'_>, now: Instant) -> Result<(), TokenError> {
        self.apply_rooms(sync)?;
        let to_device = events_of(Some(sync.0), "to_device");
        match to_device {
            Ok(events) => {
                for event in events {
                    match event {
                        Ok(event) => {
                            let result = self.take_to_device(&event, now);
                            self.item(Item::event("to-device", "", &event, ""), result)?;
                        }
                        Err(error) => self.item(Item::of("to-device"), Err(error.into()))?,
                    }
                }
            }
            Err(error) => self.item(Item::of("to-device"), Err(error.into()))?,
        }
        // A list of rooms or a room that cannot be read was reported with the rooms' state.
        if let Ok(rooms) = sync.joined_rooms() {
            for (room_id, room) in rooms.map_while(Result::ok) {
                let mut text = [0; TEXT_LEN];
                let room_id = room_id.as_text(&mut text);
                self.take_timeline(room_id, &room, now)?;
            }
        }
        // The tables' leaving rules ([`super::lifecycles`]), then everything this sync carried
        // that could be stored is stored: the caller moves the cursor.
        self.tidy_after_sync()
    }

    /// A to-device message: a stub is shown, a duplicate skipped, the rest taken in.
    fn take_to_device(&mut self, event: &Event<'_>, now: Instant) -> Result<(), TokenError> {
        if let Some(size) = stub_size(event)? {
            self.show_stub("", event, "", size);
            return Ok(());
        }
        let digest = self.to_device_digest(event)?;
        if self.sync.recent.contains(digest) {
            return Ok(());
        }
        // Taken in, even if refused: a copy of it is not reported again.
        self.sync.recent.insert(digest);
        let sender = event.sender()?;
        let event_type = event.event_type()?;
        if let Some(content) = event.encrypted()?
            && content.algorithm()? == OLM_ALGORITHM
        {
            self.on_olm_event(sender, content, now)?;
        } else if event_type.starts_with("m.key.verification.") {
            self.on_verification_event(sender, event_type, event.content()?, now);
        } else if event_type == room_keys::WITHHELD_EVENT {
            self.on_room_key_withheld(sender, event.content()?);
        }
        Ok(())
    }

    /// A digest of to-device message `event`, the same for each copy of it: its sender, type,
    /// and the ciphertext for this device or its transaction id.
    fn to_device_digest(&self, event: &Event<'_>) -> Result<u32, TokenError> {
        let sender = event.sender()?;
        let event_type = event.event_type()?;
        let content = event.content()?;
        let mut body: &[u8] = &[];
        // Unencrypted, what tells one message from another: a verification's transaction, a
        // withheld notice's room, session and code.
        let mut fields: [&[u8]; 4] = [&[]; 4];
        if let Some(encrypted) = event.encrypted()?
            && let Ok(Some((_, message))) = encrypted.olm_message_for(&self.account.curve_b64)
        {
            body = match message {
                jeton_proto::view::Binary::Bytes(bytes) => bytes,
                jeton_proto::view::Binary::Base64(text) => text.as_bytes(),
            };
        } else {
            let names = ["transaction_id", "room_id", "session_id", "code"];
            for (field, name) in fields.iter_mut().zip(names) {
                if let Some(Value::Text(text)) = content.get(name)? {
                    *field = text.as_bytes();
                }
            }
        }
        let [txn, room, session, code] = fields;
        Ok(digest(&[
            b"to-device",
            sender.as_bytes(),
            event_type.as_bytes(),
            body,
            txn,
            room,
            session,
            code,
        ]))
    }

    /// The timeline of joined room `room_id` in a sync, shown event by event, unless the
    /// room's gap is being filled: the back-fill shows it then, after the earlier events.
    fn take_timeline(
        &mut self,
        room_id: &str,
        room: &Room<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(slot) = self.room_slot(room_id) else {
            // Not in the table (it was full: reported with the room's state).
            return Ok(());
        };
        if self.backfill.defers(slot) {
            return Ok(());
        }
        let events = events_of(Some(room.0), "timeline");
        match events {
            Ok(events) => {
                for event in events {
                    match event {
                        Ok(event) => self.take_timeline_event(room_id, &event, now)?,
                        Err(error) => {
                            let item = Item {
                                room_id,
                                ..Item::of("timeline")
                            };
                            self.item(item, Err(error.into()))?;
                        }
                    }
                }
                Ok(())
            }
            Err(error) => {
                let item = Item {
                    room_id,
                    ..Item::of("timeline")
                };
                self.item(item, Err(error.into()))
            }
        }
    }

    /// An event of room `room_id`: a stub is shown, a duplicate skipped, the rest shown
    /// ([`super::timeline`]).
    pub(super) fn take_timeline_event(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let mut text = [0; TEXT_LEN];
        let event_id = match event.event_id() {
            Ok(Some(id)) => id.as_text(&mut text),
            _ => "",
        };
        let result = self.take_timeline_event_inner(room_id, event, event_id, now);
        self.item(Item::event("timeline", room_id, event, event_id), result)
    }

    fn take_timeline_event_inner(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        event_id: &str,
        now: Instant,
    ) -> Result<(), TokenError> {
        if let Some(size) = stub_size(event)? {
            self.show_stub(room_id, event, event_id, size);
            return Ok(());
        }
        let digest = event_digest(event_id);
        if self.sync.recent.contains(digest) {
            return Ok(());
        }
        self.sync.recent.insert(digest);
        self.on_timeline_event(room_id, event, now)
    }

    /// Tells the person about the stub `event` (`event_id`) of `room_id` (empty for a
    /// to-device message): an event too large for the token, which it skips.
    pub(super) fn show_stub(
        &mut self,
        room_id: &str,
        event: &Event<'_>,
        event_id: &str,
        size: u64,
    ) {
        self.env.ui.event(&UiEvent::EventTooLarge {
            room_id,
            event_type: event.event_type().unwrap_or(""),
            sender: event.sender().unwrap_or(""),
            event_id,
            size,
        });
    }
}
