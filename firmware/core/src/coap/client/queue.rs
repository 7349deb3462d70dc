//! The requests waiting to go out: the queue and the arena their options and payloads are
//! stored in, back to back, until their exchange ends.

use heapless::{Deque, Vec};

use super::*;
use jeton_proto::coap::codec::option_head;

use crate::coap::message::Code;

/// A request waiting in the arena; its options then payload start at the arena offset
/// equal to the sum of the lengths of the requests ahead of it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Queued {
    pub(super) id: RequestId,
    pub(super) method: Code,
    pub(super) options_len: u16,
    pub(super) payload_len: u16,
    pub(super) delivery: BodyDelivery,
    pub(super) caller_block: Option<CallerBlock>,
}

/// A block the caller chose ([`Request::block1`], [`Request::block2`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum CallerBlock {
    /// The request carries this block of a body the caller sends in blocks.
    Request(BlockValue),
    /// The response is fetched from this block on.
    ResponseFrom(BlockValue),
}

impl Queued {
    pub(super) fn len(&self) -> usize {
        usize::from(self.options_len) + usize::from(self.payload_len)
    }
}

impl<R: Rng, const REQUEST_BYTES: usize, const RESPONSE_BYTES: usize>
    Client<R, REQUEST_BYTES, RESPONSE_BYTES>
{
    /// Queues a request; it is sent when the exchanges ahead of it are done.
    pub fn request(&mut self, request: &Request<'_>) -> Result<RequestId, RequestError> {
        self.release_lent_body();
        if self.queue.is_full() {
            return Err(RequestError::QueueFull);
        }
        let payload_len =
            u16::try_from(request.payload.len()).map_err(|_| RequestError::TooLarge)?;
        let start = self.arena.len();
        let options_len = match encode_options(&mut self.arena, request.options) {
            Ok(len) => len,
            Err(error) => {
                self.arena.truncate(start);
                return Err(error);
            }
        };
        let options_len = u16::try_from(options_len);
        let Ok(options_len) = options_len else {
            self.arena.truncate(start);
            return Err(RequestError::TooLarge);
        };
        if self.arena.extend_from_slice(request.payload).is_err() {
            self.arena.truncate(start);
            return Err(RequestError::TooLarge);
        }
        let id = self.allocate_request_id();
        let queued = Queued {
            id,
            method: request.method,
            options_len,
            payload_len,
            delivery: request.delivery,
            caller_block: request
                .block1
                .map(CallerBlock::Request)
                .or(request.block2.map(CallerBlock::ResponseFrom)),
        };
        if self.queue.push_back(queued).is_err() {
            self.arena.truncate(start);
            return Err(RequestError::QueueFull);
        }
        Ok(id)
    }

    /// Queues a request ahead of every waiting one (never ahead of the one in flight), for a
    /// layer under the caller's requests that they wait for: the link's key exchange.
    pub fn request_first(&mut self, request: &Request<'_>) -> Result<RequestId, RequestError> {
        let waiting = self.queue.len();
        let id = self.request(request)?;
        self.first = Some(id);
        let in_flight = self
            .exchange
            .is_some_and(|exchange| exchange.purpose == Purpose::Request);
        let keep = usize::from(in_flight).min(waiting);
        let Some(first) = self.queue.pop_back() else {
            return Ok(id);
        };
        // Its bytes were appended at the end of the arena: move them in front of the
        // waiting requests' bytes, then the entry in front of theirs.
        let kept_bytes: usize = self.queue.iter().take(keep).map(Queued::len).sum();
        if let Some(tail) = self.arena.get_mut(kept_bytes..) {
            tail.rotate_right(first.len());
        }
        let mut behind: Deque<Queued, QUEUE_DEPTH> = Deque::new();
        while self.queue.len() > keep {
            if let Some(queued) = self.queue.pop_back() {
                let _ = behind.push_front(queued);
            }
        }
        let _ = self.queue.push_back(first);
        while let Some(queued) = behind.pop_front() {
            let _ = self.queue.push_back(queued);
        }
        Ok(id)
    }

    pub(super) fn pop_queue_head(&mut self) {
        if let Some(head) = self.queue.pop_front() {
            let len = head.len().min(self.arena.len());
            self.arena.copy_within(len.., 0);
            self.arena.truncate(self.arena.len() - len);
        }
    }

    /// The stored options and payload of the exchange's request.
    pub(super) fn request_parts(&self, exchange: &Exchange) -> (&[u8], &[u8]) {
        match exchange.purpose {
            Purpose::Request => {
                let Some(head) = self.queue.front() else {
                    return (&[], &[]);
                };
                let options_len = usize::from(head.options_len);
                let (options, rest) = self
                    .arena
                    .split_at_checked(options_len)
                    .unwrap_or((&[], &[]));
                (
                    options,
                    rest.get(..usize::from(head.payload_len)).unwrap_or(&[]),
                )
            }
            _ => (
                self.observation
                    .as_ref()
                    .map_or(&[][..], |o| &o.options[..]),
                &[],
            ),
        }
    }
}

/// Encodes `(number, value)` pairs in ascending order into `out`; returns the bytes used.
pub(super) fn encode_options<const N: usize>(
    out: &mut Vec<u8, N>,
    options: &[(u16, &[u8])],
) -> Result<usize, RequestError> {
    let start = out.len();
    let mut previous = 0u16;
    for &(number, value) in options {
        if number < previous {
            return Err(RequestError::OptionsOutOfOrder);
        }
        if option::ENGINE_MANAGED.contains(&number) {
            return Err(RequestError::EngineManagedOption);
        }
        let (head, head_len) =
            option_head(number - previous, value.len()).ok_or(RequestError::TooLarge)?;
        out.extend_from_slice(head.get(..head_len).unwrap_or(&[]))
            .map_err(|_| RequestError::TooLarge)?;
        out.extend_from_slice(value)
            .map_err(|_| RequestError::TooLarge)?;
        previous = number;
    }
    Ok(out.len() - start)
}
