//! Block-wise transfers (RFC 7959) of one peer: request bodies arriving in Block1 blocks, and
//! response bodies larger than one block, fetched from the homeserver once and served block by
//! block with Block2. Both kinds share the peer's `blockwise_per_peer` slots (the oldest
//! stored body, else the oldest upload, makes room) and expire `blockwise_timeout` after
//! their last block. Their bytes count against the memory budget (`budget.rs`). An upload's
//! last block is remembered with its answer for as long, so that the block sent again (its
//! answer lost on the way) gets that answer, not 4.08 and a whole file to send again.
//!
//! Only an authenticated peer gets block-wise state: a token on the link, or a plain peer
//! (its address proven) that presented an access token. Anyone else's Block1 block gets 4.01
//! `M_MISSING_TOKEN`, and a large answer to them is not stored (each later block is fetched
//! again): an address alone buys no memory.

use std::sync::Arc;
use std::time::Instant;

use coap_lite::{CoapOption, Packet};

use super::budget::{Charge, MemoryBudget};
use super::reply::{Reply, bad, internal, refuse, retry_later, too_large};
use super::request::{Blocks, Incoming, Target};
use super::{Action, Transport};
use crate::message::{self, code};
use crate::metrics::{BlockLabels, Metrics};
use crate::profile::BlockValue;
use crate::translate::ResponseContent;

/// One peer's transfers in progress.
#[derive(Debug)]
pub(super) struct Blockwise {
    uploads: Vec<Block1Assembly>,
    stored: Vec<StoredBody>,
    finished: Vec<FinishedUpload>,
    /// What this peer's transfers count against the memory budget now.
    charge: Charge,
}

/// A request body being assembled from Block1 blocks.
#[derive(Debug)]
struct Block1Assembly {
    /// The request's method, path, query and encoding (see [`Target::key`]).
    key: String,
    body: Vec<u8>,
    expires: Instant,
}

/// Finished uploads remembered per peer. A client sends its uploads one after another; a few
/// cover one that overlaps them.
const FINISHED_KEPT: usize = 4;

/// An upload whose last block arrived: that block, and the answer once the homeserver gave it.
#[derive(Debug)]
struct FinishedUpload {
    key: String,
    last: BlockValue,
    last_payload: Vec<u8>,
    /// `None` while the request is with the homeserver.
    answer: Option<Arc<ResponseContent>>,
    expires: Instant,
}

/// What a Block1 block led to.
#[derive(Debug)]
pub(super) enum Block1Step {
    /// More blocks are to come.
    More,
    /// The last block: the whole body.
    Complete(Vec<u8>),
    /// The last block of an upload already finished, sent again: its answer.
    Answered(Arc<ResponseContent>),
}

/// A response body larger than one block, kept for the client's Block2 follow-ups.
#[derive(Debug)]
pub(super) struct StoredBody {
    key: String,
    /// For a notification body: the observed path, so that block follow-ups find it even if
    /// their query differs from the registration's (for example an updated `since`).
    notification_path: Option<String>,
    /// Shared, so that serving one block of a large file does not copy the whole file.
    content: Arc<ResponseContent>,
    expires: Instant,
}

/// Why a Block1 block was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadFault {
    /// No upload under this key: it never started or expired.
    Unknown,
    /// The block does not continue the body.
    OutOfOrder,
    /// The body would exceed the request's limit.
    TooLarge,
}

impl UploadFault {
    /// The answer to the block that met this fault.
    fn answer(self, incoming: &Incoming) -> ResponseContent {
        let why = match self {
            Self::Unknown => "Block1 transfer unknown or expired; start again at block 0.",
            Self::OutOfOrder => "Block1 block out of order; start again at block 0.",
            Self::TooLarge => return too_large(incoming),
        };
        refuse(incoming, code::REQUEST_ENTITY_INCOMPLETE, "M_UNKNOWN", why)
    }
}

impl Blockwise {
    /// No transfers yet, counting against `budget`.
    pub(super) fn new(budget: &MemoryBudget) -> Self {
        Self {
            uploads: Vec::new(),
            stored: Vec::new(),
            finished: Vec::new(),
            charge: budget.charge(0),
        }
    }

    /// Brings the budget up to date with what the transfers hold now.
    fn recount(&mut self) {
        let uploads: usize = self.uploads.iter().map(|a| a.body.len()).sum();
        let stored: usize = self.stored.iter().map(|s| s.content.payload.len()).sum();
        let finished: usize = self.finished.iter().map(FinishedUpload::bytes).sum();
        self.charge.resize(uploads + stored + finished);
    }

    /// Whether no transfer is in progress.
    pub(super) fn is_empty(&self) -> bool {
        self.uploads.is_empty() && self.stored.is_empty() && self.finished.is_empty()
    }

    /// Forgets the transfers whose last block is older than their timeout.
    pub(super) fn expire(&mut self, now: Instant) {
        self.uploads.retain(|a| a.expires > now);
        self.stored.retain(|s| s.expires > now);
        self.finished.retain(|f| f.expires > now);
        self.recount();
    }

    /// The body stored under `key`, or else the notification body of `notification_path`.
    fn stored_body(
        &mut self,
        key: &str,
        notification_path: Option<&str>,
    ) -> Option<&mut StoredBody> {
        let position = match self.stored.iter().position(|s| s.key == key) {
            Some(i) => Some(i),
            None if notification_path.is_some() => self
                .stored
                .iter()
                .position(|s| s.notification_path.as_deref() == notification_path),
            None => None,
        };
        position.and_then(|i| self.stored.get_mut(i))
    }

    /// Keeps `content` for Block2 follow-ups under `key` (and `notification_path`),
    /// replacing what was stored under either and making room within `capacity`; not when
    /// the budget has no room for it, unless `linked` (its later blocks are then fetched again).
    pub(super) fn store(
        &mut self,
        key: &str,
        notification_path: Option<&str>,
        content: &ResponseContent,
        expires: Instant,
        capacity: usize,
        linked: bool,
    ) {
        self.stored.retain(|s| {
            s.key != key
                && (notification_path.is_none()
                    || s.notification_path.as_deref() != notification_path)
        });
        while !self.stored.is_empty() && self.stored.len() + self.uploads.len() >= capacity {
            self.stored.remove(0);
        }
        self.recount();
        if linked || self.charge.budget().fits(content.payload.len()) {
            self.stored.push(StoredBody {
                key: key.to_owned(),
                notification_path: notification_path.map(str::to_owned),
                content: Arc::new(content.clone()),
                expires,
            });
            self.recount();
        }
    }

    /// Starts the upload under `key` afresh, making room within `capacity`.
    fn start_upload(&mut self, key: &str, now: Instant, capacity: usize) {
        self.uploads.retain(|a| a.key != key);
        self.finished.retain(|f| f.key != key);
        if self.uploads.len() + self.stored.len() >= capacity {
            if !self.stored.is_empty() {
                self.stored.remove(0);
            } else if !self.uploads.is_empty() {
                self.uploads.remove(0);
            }
        }
        self.uploads.push(Block1Assembly {
            key: key.to_owned(),
            body: Vec::new(),
            expires: now,
        });
        self.recount();
    }

    /// Adds a block to the upload under `key`: `Ok(None)` while more are to come (or for the
    /// block just taken, sent again because its answer was lost), the whole body after the
    /// last. A fault ends the upload. The caller recounts the budget.
    fn add_block(
        &mut self,
        key: &str,
        block: BlockValue,
        payload: &[u8],
        limit: usize,
        expires: Instant,
    ) -> Result<Option<Vec<u8>>, UploadFault> {
        let Some((pos, assembly)) = self
            .uploads
            .iter_mut()
            .enumerate()
            .find(|(_, a)| a.key == key)
        else {
            return Err(UploadFault::Unknown);
        };
        // The block just taken, sent again under a new message id because every answer to it
        // was lost: the client gets its 2.31 again instead of starting over.
        let repeated = block.more
            && block.offset() + payload.len() == assembly.body.len()
            && assembly.body.get(block.offset()..) == Some(payload);
        if repeated {
            assembly.expires = expires;
            return Ok(None);
        }
        let fault = if block.offset() != assembly.body.len() {
            Some(UploadFault::OutOfOrder)
        } else if assembly.body.len() + payload.len() > limit {
            Some(UploadFault::TooLarge)
        } else {
            None
        };
        if let Some(fault) = fault {
            self.uploads.remove(pos);
            return Err(fault);
        }
        assembly.body.extend_from_slice(payload);
        assembly.expires = expires;
        if block.more {
            return Ok(None);
        }
        let body = self.uploads.remove(pos).body;
        if block.num > 0 {
            self.finish_upload(key, block, payload, expires);
        }
        Ok(Some(body))
    }

    /// Remembers the last block of the upload under `key`, the oldest of
    /// [`FINISHED_KEPT`] making way.
    fn finish_upload(&mut self, key: &str, last: BlockValue, payload: &[u8], expires: Instant) {
        self.finished.retain(|f| f.key != key);
        if self.finished.len() >= FINISHED_KEPT {
            self.finished.remove(0);
        }
        self.finished.push(FinishedUpload {
            key: key.to_owned(),
            last,
            last_payload: payload.to_vec(),
            answer: None,
            expires,
        });
    }

    /// For the last block of a finished upload sent again: `Some` with the answer it got
    /// (`None` while the homeserver has not answered yet).
    fn repeated_last_block(
        &mut self,
        key: &str,
        block: BlockValue,
        payload: &[u8],
        expires: Instant,
    ) -> Option<Option<Arc<ResponseContent>>> {
        let finished = self
            .finished
            .iter_mut()
            .find(|f| f.key == key && f.last == block && f.last_payload == payload)?;
        finished.expires = expires;
        Some(finished.answer.clone())
    }

    /// Keeps the homeserver's answer to the finished upload under `key`.
    pub(super) fn remember_answer(&mut self, key: &str, answer: &Arc<ResponseContent>) {
        if let Some(finished) = self
            .finished
            .iter_mut()
            .find(|f| f.key == key && f.answer.is_none())
        {
            finished.answer = Some(Arc::clone(answer));
            self.recount();
        }
    }
}

impl FinishedUpload {
    /// What it counts against the budget.
    fn bytes(&self) -> usize {
        self.last_payload.len() + self.answer.as_ref().map_or(0, |a| a.payload.len())
    }
}

/// Counts a block-wise transfer started (`block1`) or a body served in blocks (`block2`).
pub(super) fn count_blockwise(metrics: &Metrics, kind: &'static str) {
    metrics.blockwise.get_or_create(&BlockLabels { kind }).inc();
}

impl Transport {
    /// Serves a later block of a body the gateway holds (a large response or a
    /// notification); `Ok(false)` when it holds none for this GET, which then goes upstream
    /// again. Other methods cannot be repeated, and a sync asked again answers with another
    /// body: they get 4.08.
    pub(super) fn serve_stored_block(
        &mut self,
        incoming: &Incoming,
        target: &Target,
        blocks: &Blocks,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<bool, ResponseContent> {
        let is_get = target.method == http::Method::GET;
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        let notification_path = is_get.then_some(target.path.as_str());
        if let Some(stored) = peer.blockwise.stored_body(&target.key, notification_path) {
            stored.expires = now + self.limits.blockwise_timeout;
            let content = Arc::clone(&stored.content);
            count_blockwise(&self.metrics, "block2");
            let reply = Reply {
                block2: Some((blocks.block2_num, blocks.szx)),
                ..Reply::plain(&content)
            };
            self.finish(incoming, target.route, reply, now, actions);
            return Ok(true);
        }
        if !is_get {
            return Err(refuse(
                incoming,
                code::REQUEST_ENTITY_INCOMPLETE,
                "M_UNKNOWN",
                "The earlier blocks of this response have expired; request block 0 again.",
            ));
        }
        if target.is_sync {
            // A sync asked again is another body: its later blocks would not continue this one.
            return Err(refuse(
                incoming,
                code::REQUEST_ENTITY_INCOMPLETE,
                "M_UNKNOWN",
                "The earlier blocks of this sync response are gone; sync again from your position.",
            ));
        }
        Ok(false)
    }

    /// Whether a Block1 block other than the repeat of a finished upload's last may be kept:
    /// one other than the last fills the block size, and it fits the memory budget unless the
    /// peer is on the link (5.03 Max-Age 1 otherwise).
    fn admit_block1(
        &self,
        incoming: &Incoming,
        block: BlockValue,
        payload: &[u8],
    ) -> Result<(), ResponseContent> {
        if block.more && payload.len() != block.size() {
            return Err(bad(
                incoming,
                "A Block1 block other than the last must fill the block size.",
            ));
        }
        if !incoming.peer.is_linked() && !self.budget.fits(payload.len()) {
            return Err(retry_later(
                incoming,
                code::SERVICE_UNAVAILABLE,
                "The gateway holds as much as its memory budget allows; try again shortly.",
            ));
        }
        Ok(())
    }

    /// Takes one Block1 block of the request under `key`.
    pub(super) fn take_block1(
        &mut self,
        incoming: &Incoming,
        block: BlockValue,
        payload: &[u8],
        key: &str,
        now: Instant,
    ) -> Result<Block1Step, ResponseContent> {
        let expires = now + self.limits.blockwise_timeout;
        if !self.is_authenticated(incoming.peer) {
            return Err(refuse(
                incoming,
                code::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "Block-wise uploads need an access token (option 256).",
            ));
        }
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        if !block.more
            && let Some(answer) = peer
                .blockwise
                .repeated_last_block(key, block, payload, expires)
        {
            return answer.map(Block1Step::Answered).ok_or_else(|| {
                retry_later(
                    incoming,
                    code::SERVICE_UNAVAILABLE,
                    "The homeserver has not answered this upload yet; send its last block again shortly.",
                )
            });
        }
        self.admit_block1(incoming, block, payload)?;
        let peer = self
            .peers
            .get_mut(&incoming.peer)
            .ok_or_else(|| internal(incoming))?;
        if block.num == 0 {
            peer.blockwise
                .start_upload(key, now, self.limits.blockwise_per_peer);
            count_blockwise(&self.metrics, "block1");
        }
        let taken = peer
            .blockwise
            .add_block(key, block, payload, incoming.body_limit, expires);
        peer.blockwise.recount();
        let taken = taken.map(|body| body.map_or(Block1Step::More, Block1Step::Complete));
        taken.map_err(|fault| fault.answer(incoming))
    }

    /// Answers a Block1 block other than the last: 2.31 Continue, echoing the block at the
    /// size the gateway takes.
    pub(super) fn continue_upload(
        &mut self,
        incoming: &Incoming,
        blocks: &Blocks,
        route: &'static str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let echo = blocks.block1.map(|b| BlockValue {
            num: b.num,
            more: true,
            szx: b.szx.min(self.own_szx),
        });
        let content = ResponseContent {
            code: code::CONTINUE,
            max_age: None,
            content_format: None,
            payload: Vec::new(),
        };
        let reply = Reply {
            block1_echo: echo,
            ..Reply::plain(&content)
        };
        self.finish(incoming, route, reply, now, actions);
    }
}

/// Puts block `num` of the content into the packet (with Block2 and Size2 when the body is
/// larger than one block); returns whether the body was split.
pub(super) fn fill_payload(
    packet: &mut Packet,
    content: &ResponseContent,
    num: u32,
    szx: u8,
) -> bool {
    if let Some(cf) = content.content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u64::from(cf)),
        );
    }
    if let Some(age) = content.max_age {
        packet.add_option(CoapOption::MaxAge, message::encode_uint(u64::from(age)));
    }
    let block = BlockValue {
        num,
        more: false,
        szx,
    };
    let size = block.size();
    if content.payload.len() <= size && num == 0 {
        packet.payload = content.payload.clone();
        return false;
    }
    let start = block.offset().min(content.payload.len());
    let end = start.saturating_add(size).min(content.payload.len());
    packet.payload = content
        .payload
        .get(start..end)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let more = end < content.payload.len();
    let block = BlockValue { more, ..block };
    packet.add_option(CoapOption::Block2, message::block_option(block));
    if num == 0 {
        packet.add_option(
            CoapOption::Size2,
            message::encode_uint(content.payload.len() as u64),
        );
    }
    true
}
