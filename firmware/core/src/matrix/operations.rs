//! The operation lane: besides sync, one request at a time, in the order things are due
//! (keys, the filter, verification messages, device queries, joins, events fetched again, the
//! outbox, a file transfer), with a back-off after a failure; and what its answers mean.

use jeton_proto::path::endpoint;

use super::requests::Sent;
use super::*;
use crate::coap::{ExchangeError, RequestId};

/// How long the token waits after a failed operation before the next one.
pub(super) const BACKOFF_MS: u64 = 5_000;

/// What the request in flight is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operation {
    Login,
    Upload {
        with_device_keys: bool,
    },
    Filter,
    Query,
    Claim {
        device: usize,
    },
    ShareKey {
        device: usize,
    },
    /// The `m.dummy` that unwedges the Olm channel with a device.
    Dummy {
        device: usize,
    },
    /// `m.room_key.withheld` to a device the room key is kept from.
    Withhold {
        device: usize,
    },
    Send {
        slot: usize,
    },
    Join,
    FetchEvent,
    /// A page of the gap in back-fill slot `gap`.
    Backfill {
        gap: u8,
    },
    /// An `m.key.verification.*` to-device message (`stray`: a cancel for an unknown
    /// transaction).
    Verification {
        stray: bool,
    },
    /// A block of a file upload; `last`: the final one, answered with the `content_uri`.
    FileBlock {
        last: bool,
    },
    FileDownload,
    MediaConfig,
    /// `keys/device_signing/upload` of the cross-signing keys.
    #[cfg(feature = "cross-signing")]
    CrossSigningKeys,
    /// `keys/signatures/upload` of the token's device, signed by the self-signing key.
    #[cfg(feature = "cross-signing")]
    CrossSigningDevice,
}

/// The operation in flight, and the back-off after a failed one.
#[derive(Debug)]
pub(super) struct OperationLane {
    /// The request in flight and what it is for.
    in_flight: Option<(Sent, Operation)>,
    /// After a failed operation, the next one waits until then.
    backoff_until: Option<Instant>,
}

impl OperationLane {
    /// A lane with nothing in flight.
    pub(super) const fn new() -> Self {
        OperationLane {
            in_flight: None,
            backoff_until: None,
        }
    }

    /// Whether no operation is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_none()
    }

    /// `operation` is in flight as request `sent`.
    pub(super) fn begin(&mut self, sent: Sent, operation: Operation) {
        self.in_flight = Some((sent, operation));
    }

    /// The operation in flight is over.
    pub(super) fn end(&mut self) {
        self.in_flight = None;
    }

    /// The operation request `id` is for, taken out of the lane.
    fn take(&mut self, id: RequestId) -> Option<(Sent, Operation)> {
        let (sent, _) = self.in_flight?;
        if sent.id != id {
            return None;
        }
        self.in_flight.take()
    }

    /// When the lane wakes up after a back-off.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.backoff_until
    }

    /// Whether a new operation may start now: none is in flight and no back-off runs.
    fn ready(&mut self, now: Instant) -> bool {
        if self.backoff_until.is_some_and(|until| now < until) {
            // Waiting after a failure.
            return false;
        }
        if self.in_flight.is_some() {
            return false;
        }
        self.backoff_until = None;
        true
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Starts what is due, one operation at a time, and keeps sync running.
    #[inline(never)]
    pub(super) fn plan(&mut self, coap: &mut Coap, now: Instant) -> Result<(), TokenError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        let ready = login.keys_uploaded && !login.filter_id.is_empty();
        if self.operation.ready(now) {
            self.plan_operation(coap, now)?;
        }
        if ready {
            self.plan_sync(coap, now)?;
        }
        Ok(())
    }

    fn plan_operation(&mut self, coap: &mut Coap, now: Instant) -> Result<(), TokenError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        if !login.keys_uploaded {
            return self.start_upload(coap, true);
        }
        if self.account.wants_upload() {
            return self.start_upload(coap, false);
        }
        if login.filter_id.is_empty() {
            let user = login.user_id.clone();
            return self.start_filter(coap, &user);
        }
        #[cfg(feature = "cross-signing")]
        if self.plan_cross_signing(coap)? {
            return Ok(());
        }
        if let Some((len, event_type, stray)) = self.next_verification_message()? {
            let txn = self.next_transaction_id()?;
            return self.start(
                coap,
                Operation::Verification { stray },
                Code::PUT,
                &[endpoint::SEND_TO_DEVICE, event_type, &txn],
                len,
            );
        }
        if self.devices.needs_query() {
            let len = self.devices.query_body(&mut self.env.work)?;
            return self.start(
                coap,
                Operation::Query,
                Code::POST,
                &[endpoint::KEYS_QUERY],
                len,
            );
        }
        if let Some((device, claim)) = self.sessions.next_unwedge() {
            return if claim {
                self.start_claim(coap, device)
            } else {
                self.send_dummy(coap, device)
            };
        }
        if let Some(room) = self.rooms.next_join().cloned() {
            return self.start_join(coap, &room);
        }
        let room_keys = &self.room_keys;
        while let Some((slot, event)) = self
            .pending_keys
            .next_retry(|room, session| room_keys.holds(room, session))
        {
            if let Some(room) = self.rooms.get(slot).map(|r| r.id.clone()) {
                return self.start_fetch(coap, &room, &event);
            }
        }
        self.plan_send(coap, now)?;
        if self.operation.is_idle() {
            self.plan_backfill(coap)?;
        }
        if self.operation.is_idle() {
            self.plan_transfer(coap)?;
        }
        Ok(())
    }

    /// Starts `operation`: its request, its body the first `body_len` bytes of `work`.
    pub(super) fn start(
        &mut self,
        coap: &mut Coap,
        operation: Operation,
        method: Code,
        path: &[&str],
        body_len: usize,
    ) -> Result<(), TokenError> {
        let sent = self.request(coap, method, path, &[], body_len)?;
        self.operation.begin(sent, operation);
        Ok(())
    }

    /// A response to request `id`, if it is the operation's.
    pub(super) fn on_operation_answer(
        &mut self,
        id: RequestId,
        code: Code,
        body: &[u8],
        now: Instant,
    ) {
        let Some((sent, operation)) = self.operation.take(id) else {
            return;
        };
        // A user-interactive auth challenge, which a 401 to a request without the access
        // token would otherwise be taken for: the gateway losing it.
        #[cfg(feature = "cross-signing")]
        if operation == Operation::CrossSigningKeys
            && code_number(code) == 401
            && cross_signing::is_challenge(body)
        {
            self.on_cross_signing_challenge(body);
            return;
        }
        if !self.note_token(code, sent.with_token) {
            // The gateway lost the token (it restarted): do it again with it.
            if let Operation::Upload { .. } = operation {
                self.upload_again();
            }
            if let Operation::FileBlock { .. } | Operation::FileDownload = operation {
                self.on_transfer_failed(None);
            }
            return;
        }
        if code.class() != 2 {
            if code.class() == 5 || matches!(code_number(code), 401 | 429) {
                self.operation.backoff_until = Some(now.plus_millis(BACKOFF_MS));
            }
            self.on_operation_refused(operation, code);
            return;
        }
        if let Err(error) = self.on_operation_done(operation, body, now) {
            self.error(error);
        }
    }

    /// A failed exchange `id`, if it is the operation's.
    pub(super) fn on_operation_failed(
        &mut self,
        id: RequestId,
        error: ExchangeError,
        now: Instant,
    ) {
        let Some((_, operation)) = self.operation.take(id) else {
            return;
        };
        self.operation.backoff_until = Some(now.plus_millis(BACKOFF_MS));
        if let Operation::Backfill { gap } = operation {
            // A page too large is asked for again, smaller, at once; the person is told only
            // if the gap is given up.
            let too_large = error == ExchangeError::ResponseTooLarge;
            if too_large {
                self.operation.backoff_until = None;
            } else {
                self.error(TokenError::Exchange(error));
            }
            if let Err(error) = self.on_backfill_failed(gap, too_large) {
                self.error(error);
            }
            return;
        }
        self.error(TokenError::Exchange(error));
        if let Operation::FileBlock { .. } | Operation::FileDownload = operation {
            self.on_transfer_failed(None);
        }
    }

    /// A block of the answer to request `id`, if it is the file download's (`size2`: the
    /// Size2 option, the whole file's size).
    pub(super) fn on_download_answer(
        &mut self,
        id: RequestId,
        code: Code,
        size2: impl FnOnce() -> Option<u32>,
        offset: usize,
        body: &[u8],
        last: bool,
    ) {
        let Some((sent, Operation::FileDownload)) = self.operation.in_flight else {
            return;
        };
        if sent.id != id {
            return;
        }
        if last {
            self.operation.end();
        }
        if !self.note_token(code, sent.with_token) {
            self.on_transfer_failed(None);
        } else if code.class() != 2 {
            self.on_transfer_failed(Some(code));
        } else if let Err(error) = self.on_download_block(size2(), offset, body, last) {
            self.error(error);
        }
    }

    fn on_operation_refused(&mut self, operation: Operation, code: Code) {
        let error = TokenError::Server(code_number(code));
        match operation {
            // 4.12: the gateway cannot resolve the room handle (it restarted, or forgot the
            // room): not a failure, the next attempt sends everything in full.
            Operation::Send { .. } if code_number(code) == 412 => self.gateway.forget(),
            Operation::Send { slot } => self.on_send_refused(slot, code),
            Operation::Join => self.on_join_refused(error),
            Operation::ShareKey { device } | Operation::Withhold { device }
                if code.class() == 4 && !matches!(code_number(code), 401 | 429) =>
            {
                self.on_share_refused(device, error);
            }
            Operation::Dummy { device }
                if code.class() == 4 && !matches!(code_number(code), 401 | 429) =>
            {
                self.sessions.unwedge_done(device);
                self.error(error);
            }
            Operation::Verification { stray }
                if code.class() == 4 && !matches!(code_number(code), 401 | 429) =>
            {
                // The homeserver will never take this message: drop it.
                self.on_verification_sent(stray);
                self.error(error);
            }
            Operation::FileBlock { .. } | Operation::FileDownload => {
                if !transfer::is_busy(code) {
                    self.error(error);
                }
                self.on_transfer_failed(Some(code));
            }
            Operation::MediaConfig if code.class() == 4 && code_number(code) != 429 => {
                self.transfer.no_media_config();
            }
            // The homeserver will not serve this gap (a position it does not know, a room it
            // does not let the token read): the person is told.
            Operation::Backfill { gap }
                if code.class() == 4 && !matches!(code_number(code), 401 | 429) =>
            {
                if let Err(error) = self.give_up_gap(usize::from(gap)) {
                    self.error(error);
                }
            }
            Operation::Backfill { gap } => {
                if let Err(error) = self.on_backfill_failed(gap, false) {
                    self.error(error);
                }
            }
            #[cfg(feature = "cross-signing")]
            Operation::CrossSigningKeys | Operation::CrossSigningDevice => {
                self.on_cross_signing_refused(code);
            }
            _ => self.error(error),
        }
    }

    // Not inlined into `on_event`: the handlers' locals would sit under every sync.
    #[inline(never)]
    fn on_operation_done(
        &mut self,
        operation: Operation,
        body: &[u8],
        now: Instant,
    ) -> Result<(), TokenError> {
        match operation {
            Operation::Login => self.on_login(body),
            Operation::Upload { with_device_keys } => self.on_uploaded(body, with_device_keys),
            Operation::Filter => self.on_filter(body),
            Operation::Query => self.on_keys_query(body),
            Operation::Claim { device } => self.on_claimed(body, device),
            Operation::ShareKey { device } => self.on_key_shared(device),
            Operation::Dummy { device } => {
                self.sessions.unwedge_done(device);
                Ok(())
            }
            Operation::Withhold { device } => self.on_key_withheld(device),
            Operation::Send { slot } => self.on_sent(body, slot),
            Operation::Join => self.on_joined(),
            Operation::FetchEvent => self.on_fetched_event(body, now),
            Operation::Backfill { gap } => self.on_backfill_page(gap, body, now),
            Operation::Verification { stray } => {
                self.on_verification_sent(stray);
                Ok(())
            }
            Operation::FileBlock { last } => self.on_file_block(last, body),
            // A file of one block, not streamed in blocks.
            Operation::FileDownload => self.on_download_block(None, 0, body, true),
            Operation::MediaConfig => self.on_media_config(body),
            #[cfg(feature = "cross-signing")]
            Operation::CrossSigningKeys => {
                self.on_cross_signing_keys();
                Ok(())
            }
            #[cfg(feature = "cross-signing")]
            Operation::CrossSigningDevice => {
                self.on_cross_signing_device(body);
                Ok(())
            }
        }
    }
}
