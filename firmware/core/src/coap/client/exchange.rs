//! The one exchange in flight (NSTART 1): what it carries out, its retransmissions, its
//! block-wise transfer in either direction, and how it ends.

use super::delivery::has_unknown_critical_option;
use super::*;
use crate::coap::message::{
    Code, EncodeError, Header, Message, MessageType, MessageWriter, Options, Token,
};
use crate::coap::option::{self, BlockValue};

/// Why an exchange ended without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeError {
    /// No acknowledgement after MAX_RETRANSMIT retransmissions (MAX_TRANSMIT_WAIT), or no
    /// separate response within the response timeout.
    Timeout,
    /// The server answered with RST: it could not process the message.
    Reset,
    /// The response body exceeds the response buffer.
    ResponseTooLarge,
    /// The server broke the block-wise protocol (wrong block number, changed ETag,
    /// Continue after the last block).
    BlockwiseMismatch,
    /// The request could not be encoded into the transmit buffer given to
    /// [`Client::poll_transmit`].
    TransmitBufferTooSmall,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExchangeError::Timeout => "the gateway did not answer in time",
            ExchangeError::Reset => "the gateway rejected the message with a reset",
            ExchangeError::ResponseTooLarge => "the response is larger than the response buffer",
            ExchangeError::BlockwiseMismatch => "the gateway broke the block-wise transfer",
            ExchangeError::TransmitBufferTooSmall => {
                "the transmit buffer is too small for the request"
            }
        })
    }
}

impl core::error::Error for ExchangeError {}

/// The next exchange's work, before its blocks and message id are set.
struct Work {
    id: RequestId,
    purpose: Purpose,
    method: Code,
    delivery: BodyDelivery,
    token: Token,
    /// The response block it asks for first.
    block2: Option<BlockValue>,
    /// The length of the request's payload.
    payload_len: usize,
}

/// What the exchange in flight carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The request at the head of the queue.
    Request,
    /// GET with Observe 0 (block follow-ups without it).
    Register,
    /// The remaining blocks of a notification (GET with Block2, no Observe).
    NotificationBlocks { sequence: u32 },
    /// GET with Observe 1.
    Deregister,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not sent yet (a new request, or the next block of one).
    Unsent,
    /// Sent as CON; `due` once its retransmission timer fired.
    AwaitingAck {
        transmissions: u8,
        timeout_ms: u64,
        next_at: Instant,
        due: bool,
    },
    /// Acknowledged with an empty ACK; the separate response is awaited.
    AwaitingResponse { deadline: Instant },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Exchange {
    pub(super) id: RequestId,
    pub(super) purpose: Purpose,
    pub(super) method: Code,
    pub(super) delivery: BodyDelivery,
    pub(super) token: Token,
    pub(super) message_id: u16,
    pub(super) phase: Phase,
    /// The request block this message carries.
    pub(super) block1: Option<BlockValue>,
    /// Whether the caller sends the body in blocks itself ([`Request::block1`]).
    pub(super) caller_block1: bool,
    /// The response block this message asks for.
    pub(super) block2: Option<BlockValue>,
    /// Body bytes received so far.
    pub(super) received: usize,
    /// The ETag of the first block, when the response had one.
    pub(super) etag: Option<[u8; 8]>,
    pub(super) etag_len: u8,
    /// The Observe number of the first block of a registration response.
    pub(super) observe_sequence: Option<u32>,
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize>
    Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    /// Writes the next datagram to send into `buf` and returns its length, or `None` when
    /// there is nothing to send now.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<usize>, EncodeError> {
        self.release_lent_body();
        if let Some((message_type, message_id)) = self.control.pop_front() {
            let header = Header {
                message_type,
                code: Code::EMPTY,
                message_id,
                token: Token::EMPTY,
            };
            let len = MessageWriter::new(buf, &header)?.finish();
            self.stats.datagrams_sent += 1;
            return Ok(Some(len));
        }
        if self.exchange.is_none() && !self.start_exchange() {
            return Ok(None);
        }
        let Some(exchange) = self.exchange else {
            return Ok(None);
        };
        let retransmission = match exchange.phase {
            Phase::Unsent => false,
            Phase::AwaitingAck { due: true, .. } => true,
            _ => return Ok(None),
        };
        if !retransmission
            && exchange.delivery == BodyDelivery::Streamed
            && self.body_state == BodyState::Pending
        {
            // The next block waits until the caller took this one.
            return Ok(None);
        }
        let len = match self.encode_exchange(&exchange, buf) {
            Ok(len) => len,
            Err(error) => {
                self.fail_exchange(ExchangeError::TransmitBufferTooSmall, now);
                return Err(error);
            }
        };
        let phase = match exchange.phase {
            Phase::AwaitingAck {
                transmissions,
                timeout_ms,
                next_at,
                ..
            } => Phase::AwaitingAck {
                transmissions: transmissions + 1,
                timeout_ms,
                next_at,
                due: false,
            },
            _ => {
                let base = u64::from(self.config.ack_timeout_ms);
                let spread = base
                    * u64::from(self.config.ack_random_factor_permille.saturating_sub(1_000))
                    / 1_000;
                let jitter = u64::from(self.rng.below(u32::try_from(spread).unwrap_or(u32::MAX)));
                let timeout_ms = base + jitter;
                Phase::AwaitingAck {
                    transmissions: 1,
                    timeout_ms,
                    next_at: now.plus_millis(timeout_ms),
                    due: false,
                }
            }
        };
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.phase = phase;
        }
        self.stats.datagrams_sent += 1;
        if retransmission {
            self.stats.retransmissions += 1;
        }
        Ok(Some(len))
    }

    /// Starts the next exchange if the engine has room for its outcome; returns whether
    /// one is in flight now.
    pub(super) fn start_exchange(&mut self) -> bool {
        let fetch_due = self
            .observation
            .as_ref()
            .is_some_and(|o| matches!(o.state, ObservationState::FetchDue { .. }));
        // A notification's first block waits in the buffer for the fetch of the rest.
        let buffer_ready = self.body_state == BodyState::Free
            || (self.body_state == BodyState::Filling && fetch_due);
        if self.events.capacity() - self.events.len() < 2 || !buffer_ready {
            return false;
        }
        let Some(work) = self.next_work() else {
            return false;
        };
        let szx = self.config.block_szx.min(option::MAX_SZX);
        let caller_block1 = match (
            work.purpose,
            self.queue.front().and_then(|q| q.caller_block),
        ) {
            (Purpose::Request, Some(CallerBlock::Request(block))) => Some(block),
            _ => None,
        };
        let block1 = caller_block1.or((work.payload_len > (1usize << (szx + 4))).then_some(
            BlockValue {
                num: 0,
                more: true,
                szx,
            },
        ));
        let message_id = self.fresh_message_id();
        let received = if fetch_due {
            self.body.len().saturating_sub(self.body_options_len)
        } else {
            self.body.clear();
            self.body_options_len = 0;
            // A streamed response resumed at a later block: the bytes before it are the
            // caller's already.
            match (work.purpose, work.block2) {
                (Purpose::Request, Some(start)) if work.delivery == BodyDelivery::Streamed => {
                    start.offset()
                }
                _ => 0,
            }
        };
        self.exchange = Some(Exchange {
            id: work.id,
            purpose: work.purpose,
            method: work.method,
            delivery: work.delivery,
            token: work.token,
            message_id,
            phase: Phase::Unsent,
            block1,
            caller_block1: caller_block1.is_some(),
            block2: work.block2,
            received,
            etag: None,
            etag_len: 0,
            observe_sequence: None,
        });
        true
    }

    /// What the next exchange carries out: the observation's due work first, then the head
    /// of the queue. Takes the observation's next options for a (re-)registration.
    fn next_work(&mut self) -> Option<Work> {
        if let Some(observation) = self.observation.as_mut()
            && observation.state == ObservationState::RegistrationDue
            && let Some(next) = observation.next_options.take()
        {
            observation.options = next;
        }
        let observation_work = self.observation.as_ref().and_then(|o| match o.state {
            ObservationState::RegistrationDue => Some((o.id, o.token, Purpose::Register, None)),
            ObservationState::FetchDue { sequence, next } => Some((
                o.id,
                o.token,
                Purpose::NotificationBlocks { sequence },
                Some(next),
            )),
            ObservationState::DeregistrationDue => Some((o.id, o.token, Purpose::Deregister, None)),
            _ => None,
        });
        if let Some((id, token, purpose, block2)) = observation_work {
            if let Some(observation) = self.observation.as_mut() {
                observation.state = ObservationState::InFlight;
            }
            // Block follow-ups of a notification use their own token so that they are not
            // mistaken for notifications (RFC 7959 §3.4).
            let token = if block2.is_some() {
                self.fresh_token()
            } else {
                token
            };
            return Some(Work {
                id,
                purpose,
                method: Code::GET,
                delivery: BodyDelivery::Whole,
                token,
                block2,
                payload_len: 0,
            });
        }
        let queued = self.queue.front().copied()?;
        let token = self.fresh_token();
        let block2 = match queued.caller_block {
            Some(CallerBlock::ResponseFrom(block)) => Some(block),
            _ => None,
        };
        Some(Work {
            id: queued.id,
            purpose: Purpose::Request,
            method: queued.method,
            delivery: queued.delivery,
            token,
            block2,
            payload_len: usize::from(queued.payload_len),
        })
    }

    pub(super) fn encode_exchange(
        &self,
        exchange: &Exchange,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let header = Header {
            message_type: MessageType::Confirmable,
            code: exchange.method,
            message_id: exchange.message_id,
            token: exchange.token,
        };
        let (stored_options, payload) = self.request_parts(exchange);
        let observe = match exchange.purpose {
            Purpose::Register if exchange.block2.is_none() => Some(0),
            Purpose::Deregister => Some(1),
            _ => None,
        };
        // The options the engine adds, in ascending order of number.
        let mut managed: [(u16, Option<u32>); 4] = [
            (option::OBSERVE, observe),
            (option::BLOCK2, exchange.block2.map(BlockValue::to_uint)),
            (option::BLOCK1, exchange.block1.map(BlockValue::to_uint)),
            (
                option::SIZE1,
                exchange
                    .block1
                    .filter(|block| block.num == 0 && !exchange.caller_block1)
                    .map(|_| payload.len() as u32),
            ),
        ];
        let mut writer = MessageWriter::new(buf, &header)?;
        let mut managed_iter = managed.iter_mut().peekable();
        for (number, value) in Options::new(stored_options) {
            while let Some((managed_number, managed_value)) =
                managed_iter.next_if(|(managed_number, _)| *managed_number < number)
            {
                if let Some(value) = managed_value.take() {
                    writer.uint_option(*managed_number, value)?;
                }
            }
            writer.option(number, value)?;
        }
        for (managed_number, managed_value) in managed_iter {
            if let Some(value) = managed_value.take() {
                writer.uint_option(*managed_number, value)?;
            }
        }
        let body = match (exchange.block1, exchange.block2) {
            (Some(_), _) if exchange.caller_block1 => payload,
            (Some(block), _) => {
                let end = (block.offset() + block.size()).min(payload.len());
                payload.get(block.offset()..end).unwrap_or(&[])
            }
            // A follow-up for the next response block repeats the request with its body,
            // unless the body went out in blocks, as in RFC 7959 §3.3's example.
            (None, Some(block)) if block.num > 0 && payload.len() > self.block_size() => &[],
            _ => payload,
        };
        writer.payload(body)?;
        Ok(writer.finish())
    }

    pub(super) fn block_size(&self) -> usize {
        1usize << (self.config.block_szx.min(option::MAX_SZX) + 4)
    }

    pub(super) fn handle_ack(&mut self, message: &Message<'_>, now: Instant) {
        let Some(exchange) = self.exchange else {
            return;
        };
        let matches = exchange.message_id == message.header.message_id
            && matches!(exchange.phase, Phase::AwaitingAck { .. });
        if !matches {
            // A duplicate or late ACK of a message already settled.
            self.stats.duplicates += 1;
            return;
        }
        if message.header.code.is_empty() {
            if let Some(exchange) = self.exchange.as_mut() {
                exchange.phase = Phase::AwaitingResponse {
                    deadline: now.plus_millis(self.config.response_timeout_ms),
                };
            }
        } else if message.header.token == exchange.token && !has_unknown_critical_option(message) {
            // Deferred piggybacked responses are dropped; the CON's retransmission brings
            // them again from the gateway's duplicate cache.
            let _ = self.handle_response(message, now);
        }
    }

    /// A response matching the exchange in flight.
    pub(super) fn handle_response(&mut self, message: &Message<'_>, now: Instant) -> Disposition {
        let Some(exchange) = self.exchange else {
            return Disposition::Processed;
        };
        let code = message.header.code;
        if let Some(sent) = exchange.block1.filter(|_| !exchange.caller_block1) {
            let acknowledged = message
                .option(option::BLOCK1)
                .and_then(BlockValue::from_option);
            if code == Code::CONTINUE {
                let Some(acknowledged) = acknowledged.filter(|b| b.num == sent.num && sent.more)
                else {
                    self.fail_exchange(ExchangeError::BlockwiseMismatch, now);
                    return Disposition::Processed;
                };
                // The server may ask for smaller blocks from now on (RFC 7959 §2.5).
                let szx = acknowledged.szx.min(sent.szx);
                let next_offset = sent.offset() + sent.size();
                self.next_block1(next_offset, szx);
                return Disposition::Processed;
            }
            if code == Code::REQUEST_ENTITY_TOO_LARGE
                && sent.num == 0
                && let Some(smaller) = acknowledged.filter(|b| b.szx < sent.szx)
            {
                // RFC 7959 §2.9.3: start over with the size the server names.
                self.next_block1(0, smaller.szx);
                return Disposition::Processed;
            }
        }
        self.take_response_block(message, now, exchange)
    }

    /// Moves the exchange to the request block starting at `offset`.
    pub(super) fn next_block1(&mut self, offset: usize, szx: u8) {
        let total = match self.queue.front() {
            Some(head) => usize::from(head.payload_len),
            None => 0,
        };
        let size = 1usize << (szx + 4);
        let num = (offset / size) as u32;
        let message_id = self.fresh_message_id();
        let token = self.fresh_token();
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.block1 = Some(BlockValue {
                num,
                more: offset + size < total,
                szx,
            });
            exchange.message_id = message_id;
            exchange.token = token;
            exchange.phase = Phase::Unsent;
        }
    }

    /// Stores a (block of a) response body and either completes the exchange or asks
    /// for the next block.
    pub(super) fn take_response_block(
        &mut self,
        message: &Message<'_>,
        now: Instant,
        exchange: Exchange,
    ) -> Disposition {
        let block = message
            .option(option::BLOCK2)
            .and_then(BlockValue::from_option);
        let first = exchange.received == 0 && exchange.block2.is_none_or(|b| b.num == 0);
        let streamed = exchange.delivery == BodyDelivery::Streamed;
        match self.body_state {
            BodyState::Free => {}
            BodyState::Filling if !streamed => {}
            _ => return Disposition::Deferred,
        }
        if let Some(block) = block
            && let Err(error) = Self::check_block(message, &exchange, block, !streamed && first)
        {
            self.fail_exchange(error, now);
            return Disposition::Processed;
        }
        // The options are kept from the first block, or from each block when streamed.
        if first || streamed {
            self.body.clear();
            if self.body.extend_from_slice(message.raw_options()).is_err() {
                self.fail_exchange(ExchangeError::ResponseTooLarge, now);
                return Disposition::Processed;
            }
            self.body_options_len = message.raw_options().len();
        }
        if self.body.extend_from_slice(message.payload).is_err() {
            self.fail_exchange(ExchangeError::ResponseTooLarge, now);
            return Disposition::Processed;
        }
        let received = exchange.received + message.payload.len();
        let more = block.is_some_and(|b| b.more);
        if streamed {
            self.body_state = BodyState::Pending;
            self.push_event(EventRecord::ResponseBlock {
                id: exchange.id,
                code: message.header.code,
                offset: exchange.received,
                last: !more,
            });
        } else {
            self.body_state = BodyState::Filling;
        }
        match block {
            Some(block) if more => self.ask_next_block(message, block, received, first),
            _ => self.complete_exchange(message, exchange, now),
        }
        Disposition::Processed
    }

    /// Whether response block `block` (`message`) is the one `exchange` asked for, of the
    /// same version of the resource, and (`check_size`: the first block of a whole body) not
    /// of a body larger than the response buffer.
    fn check_block(
        message: &Message<'_>,
        exchange: &Exchange,
        block: BlockValue,
        check_size: bool,
    ) -> Result<(), ExchangeError> {
        // The block must be the one asked for, and a next one must be expressible.
        if block.offset() != exchange.received || (block.more && block.num >= option::MAX_BLOCK_NUM)
        {
            return Err(ExchangeError::BlockwiseMismatch);
        }
        // Blocks of two versions of a resource must not be mixed (RFC 7959 §2.4).
        let etag = message.option(option::ETAG).unwrap_or(&[]);
        let expected = exchange
            .etag
            .as_ref()
            .and_then(|stored| stored.get(..usize::from(exchange.etag_len)));
        if expected.is_some_and(|expected| expected != etag) {
            return Err(ExchangeError::BlockwiseMismatch);
        }
        if check_size {
            let announced = message.uint_option(option::SIZE2).unwrap_or(0) as usize;
            if announced > RESPONSE_BYTES {
                return Err(ExchangeError::ResponseTooLarge);
            }
        }
        Ok(())
    }

    /// Moves the exchange to the response block after `block` (`message`), `received` bytes
    /// of the body in; the first block's ETag and Observe number are kept for the rest.
    fn ask_next_block(
        &mut self,
        message: &Message<'_>,
        block: BlockValue,
        received: usize,
        first: bool,
    ) {
        let message_id = self.fresh_message_id();
        // Each block request has its own token, so that a late answer to an earlier block
        // never passes for this one.
        let token = self.fresh_token();
        let etag = message.option(option::ETAG).unwrap_or(&[]);
        let sequence = message.uint_option(option::OBSERVE);
        let Some(current) = self.exchange.as_mut() else {
            return;
        };
        current.received = received;
        current.block1 = None;
        current.block2 = Some(BlockValue {
            num: block.num + 1,
            more: false,
            szx: block.szx,
        });
        if first {
            current.observe_sequence = sequence;
            let mut stored = [0u8; 8];
            let len = etag.len().min(8);
            if let (Some(dst), Some(src)) = (stored.get_mut(..len), etag.get(..len)) {
                dst.copy_from_slice(src);
            }
            current.etag = Some(stored);
            current.etag_len = len as u8;
        }
        current.message_id = message_id;
        current.token = token;
        current.phase = Phase::Unsent;
    }

    /// The response is complete in the body buffer: report it and free the slot.
    pub(super) fn complete_exchange(
        &mut self,
        message: &Message<'_>,
        exchange: Exchange,
        now: Instant,
    ) {
        let code = message.header.code;
        let id = exchange.id;
        let silence_ms = self.config.observe_silence_ms;
        let event = match exchange.purpose {
            Purpose::Request => {
                self.pop_queue_head();
                // A streamed body went out block by block as it came.
                (exchange.delivery == BodyDelivery::Whole)
                    .then_some(EventRecord::Response { id, code })
            }
            Purpose::Register => self.complete_registration(message, &exchange, now),
            Purpose::NotificationBlocks { sequence } => {
                self.observation.as_mut().and_then(|observation| {
                    observation.settle(now, silence_ms);
                    // Fetched in blocks: only the caller's next request confirms it.
                    (!observation.cancelled).then_some(EventRecord::Notification {
                        id,
                        sequence,
                        code,
                        acknowledged: false,
                    })
                })
            }
            Purpose::Deregister => {
                self.observation = None;
                None
            }
        };
        match event {
            Some(event) => {
                self.body_state = BodyState::Pending;
                self.push_event(event);
            }
            None if exchange.delivery == BodyDelivery::Streamed => {}
            None => self.discard_body(),
        }
        self.exchange = None;
    }

    pub(super) fn fail_exchange(&mut self, error: ExchangeError, now: Instant) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        if self.body_state == BodyState::Filling {
            self.discard_body();
        }
        match exchange.purpose {
            Purpose::Request => {
                self.pop_queue_head();
                self.push_event(EventRecord::Failed {
                    id: exchange.id,
                    error,
                });
            }
            Purpose::Register | Purpose::NotificationBlocks { .. } => {
                if let Some(observation) = self.observation.as_mut() {
                    observation.settle(now, self.config.observe_silence_ms);
                }
                self.push_event(EventRecord::Failed {
                    id: exchange.id,
                    error,
                });
            }
            // The server forgets the observation on its own once notifications go
            // unacknowledged; nothing to report.
            Purpose::Deregister => self.observation = None,
        }
    }
}
