//! Sync answers as the client gets them (PROFILE.md section 9): translated, cut to the client's
//! Response-Capacity (option 258), and the parts after the first kept per peer until the client
//! confirms the part before.
//!
//! Every part but the last carries an intermediate position `<since>~<split>.<i>`: the
//! homeserver position the split answers (empty for a sync without `since`), the split's id (8
//! hex digits, random) and the number of parts delivered so far. The homeserver never sees one.
//! A position the gateway does not hold (it restarted, or the split expired or was evicted) is
//! read as its `<since>`: the homeserver is asked again from there and the client gets it all
//! from the start again, duplicates and no loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Transport;
use crate::message::code;
use crate::profile::{self, TableVersion};
use crate::translate::{self, Encoding, ResponseContent, UpstreamOutcome};

/// Splits kept per peer; a new one evicts the oldest. A token follows one split at a time.
const SPLITS_PER_PEER: usize = 2;

/// How long a split waits for its next confirmation. A token confirms a part as soon as it has
/// stored it; one that takes longer gets everything again from the split's `since`.
const SPLIT_LIFETIME: Duration = Duration::from_secs(600);

/// The splits of one peer.
#[derive(Debug, Default)]
pub(super) struct Splits {
    kept: Vec<Split>,
}

/// The parts of one split answer after the first.
#[derive(Debug)]
struct Split {
    id: u32,
    /// The homeserver position the split answers (empty: a sync without `since`).
    base: String,
    /// Parts 2 to k with the position each carries.
    later: Vec<(String, Arc<ResponseContent>)>,
    expires: Instant,
}

impl Split {
    /// The position of the last part: the homeserver's.
    fn last_position(&self) -> Option<&str> {
        self.later.last().map(|(position, _)| position.as_str())
    }
}

impl Splits {
    /// Whether no split is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Forgets the splits nobody asked a part of for `SPLIT_LIFETIME`.
    pub(super) fn expire(&mut self, now: Instant) {
        self.kept.retain(|s| s.expires > now);
    }

    fn keep(&mut self, split: Split) {
        if self.kept.len() >= SPLITS_PER_PEER {
            self.kept.remove(0);
        }
        self.kept.push(split);
    }

    /// The part after the one that carries the intermediate `position`, with its own position;
    /// `None` when the gateway does not hold it.
    pub(super) fn next_part(
        &mut self,
        position: &str,
        now: Instant,
    ) -> Option<(Arc<ResponseContent>, String)> {
        let (base, id, delivered) = parse_position(position)?;
        let split = self
            .kept
            .iter_mut()
            .find(|s| s.id == id && s.base == base)?;
        let (next_position, content) = split.later.get(delivered.checked_sub(1)?)?;
        split.expires = now + SPLIT_LIFETIME;
        Some((Arc::clone(content), next_position.clone()))
    }

    /// The client confirmed `position`: a split whose last part carries it is done.
    pub(super) fn confirm(&mut self, position: &str) {
        self.kept.retain(|s| s.last_position() != Some(position));
    }
}

/// An intermediate position read back: the `since` it splits, the split's id and the parts
/// delivered; `None` for any other position (the homeserver's own).
pub(super) fn parse_position(position: &str) -> Option<(&str, u32, usize)> {
    let (base, tag) = position.rsplit_once('~')?;
    let (id, delivered) = tag.split_once('.')?;
    let hex = id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !delivered.is_empty() && delivered.bytes().all(|b| b.is_ascii_digit());
    if !(hex && digits) {
        return None;
    }
    Some((
        base,
        u32::from_str_radix(id, 16).ok()?,
        delivered.parse().ok()?,
    ))
}

/// The homeserver position to ask from for the client's `position`: the `since` an
/// intermediate position splits (`None`: a sync without `since`), else the position itself.
pub(super) fn upstream_since(position: &str) -> Option<&str> {
    match parse_position(position) {
        Some(("", _, _)) => None,
        Some((base, _, _)) => Some(base),
        None => Some(position),
    }
}

/// A sync answer as the client gets it.
#[derive(Debug)]
pub(super) struct SyncAnswer {
    /// The body (the first part of a split one).
    pub(super) content: Arc<ResponseContent>,
    /// The position the body carries; `None` unless the homeserver answered with a sync.
    pub(super) position: Option<String>,
    /// A sync that carries nothing but its position and the key counts.
    pub(super) nothing_new: bool,
}

impl SyncAnswer {
    /// An answer that is not a sync: an error, the homeserver's or the gateway's own.
    fn other(content: ResponseContent) -> Self {
        Self {
            content: Arc::new(content),
            position: None,
            nothing_new: false,
        }
    }
}

/// How a sync answer is made for one client.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncShape<'a> {
    pub(super) encoding: Encoding,
    /// The homeserver position the sync was asked from.
    pub(super) since: Option<&'a str>,
    /// The client's Response-Capacity; it applies to CBOR answers.
    pub(super) capacity: Option<usize>,
    /// An answer that carries nothing keeps the position `since` (nothing for the client to
    /// confirm).
    pub(super) hold_position: bool,
}

impl Transport {
    /// The homeserver's answer to a sync, translated for the client at `addr` as `shape` says;
    /// the parts after the first of a split answer are kept for the peer.
    pub(super) fn sync_answer(
        &mut self,
        addr: super::PeerId,
        outcome: &UpstreamOutcome,
        shape: SyncShape<'_>,
        now: Instant,
    ) -> SyncAnswer {
        let SyncShape {
            encoding, since, ..
        } = shape;
        let Some(mut value) = translate::sync_success(outcome) else {
            let route = translate::Route::Sync {
                since: since.map(str::to_owned),
            };
            let content =
                translate::translate_response(outcome, &http::Method::GET, encoding, &route);
            return SyncAnswer::other(content);
        };
        let nothing_new = profile::carries_nothing(&value);
        if let (true, true, Some(since)) = (nothing_new, shape.hold_position, since) {
            value["next_batch"] = Value::from(since);
        }
        let parts = match self.split(&value, shape) {
            Ok(parts) => parts,
            Err(content) => {
                return SyncAnswer::other(content);
            }
        };
        let mut answers = parts.into_iter().map(|part| {
            let position = part["next_batch"].as_str().unwrap_or_default().to_owned();
            let content = translate::encode_body(code::CONTENT, &part, encoding);
            (position, Arc::new(content))
        });
        let Some((position, content)) = answers.next() else {
            let content = translate::gateway_error(
                code::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Internal gateway error.",
                encoding,
            );
            return SyncAnswer::other(content);
        };
        self.keep_later(addr, &position, answers.collect(), now);
        SyncAnswer {
            content,
            position: Some(position),
            nothing_new,
        }
    }

    /// Keeps the parts after the first of a split answer for the peer, under the split its
    /// first part's `position` names.
    fn keep_later(
        &mut self,
        addr: super::PeerId,
        position: &str,
        later: Vec<(String, Arc<ResponseContent>)>,
        now: Instant,
    ) {
        let split = parse_position(position).filter(|_| !later.is_empty());
        if let (Some((base, id, _)), Some(peer)) = (split, self.peers.get_mut(&addr)) {
            peer.splits.keep(Split {
                id,
                base: base.to_owned(),
                later,
                expires: now + SPLIT_LIFETIME,
            });
        }
    }

    /// The parts of `value` as `shape` wants them: pruned under v2 (a part after the first
    /// keeps every `prev_batch`: its client reads it against an intermediate position), and
    /// cut to the capacity of a CBOR client. `Err` is the error answer when it cannot be cut.
    fn split(
        &mut self,
        value: &Value,
        shape: SyncShape<'_>,
    ) -> Result<Vec<Value>, ResponseContent> {
        let encoding = shape.encoding;
        let v2 = encoding.cbor && encoding.version == TableVersion::V2;
        let Some(capacity) = shape.capacity.filter(|_| encoding.cbor) else {
            let mut value = value.clone();
            if v2 {
                profile::prune_sync_response(&mut value, shape.since);
            }
            return Ok(vec![value]);
        };
        let mut value = value.clone();
        if v2 {
            profile::prune_sync_response(&mut value, None);
        }
        let id = self.next_random() as u32;
        let base = shape.since.unwrap_or_default();
        let position = |i: usize| format!("{base}~{id:08x}.{i}");
        let split = profile::split_sync_response(&value, encoding.version, capacity, position)
            .map_err(|why| {
                tracing::warn!(%why, capacity, "a sync response could not be cut to the client's capacity");
                translate::gateway_error(
                    code::BAD_GATEWAY,
                    "M_TOO_LARGE",
                    &format!("The sync response cannot be cut to the client's capacity: {why}."),
                    encoding,
                )
            })?;
        for stubbed in &split.stubbed {
            tracing::info!(
                event_type = stubbed.event_type.as_deref().unwrap_or("-"),
                size = stubbed.size,
                capacity,
                "an event larger than the client's capacity went as a stub"
            );
        }
        self.metrics.sync_stubs.inc_by(split.stubbed.len() as u64);
        if split.parts.len() > 1 {
            self.metrics.sync_parts.inc_by(split.parts.len() as u64);
        }
        let mut parts = split.parts;
        if let (true, Some(first)) = (v2, parts.first_mut()) {
            profile::prune_sync_response(first, shape.since);
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_positions_read_back_and_others_are_the_homeservers() {
        assert_eq!(
            parse_position("s72_4~00c0ffee.2"),
            Some(("s72_4", 0x00c0_ffee, 2))
        );
        assert_eq!(parse_position("~0000abcd.1"), Some(("", 0xabcd, 1)));
        for theirs in [
            "s72_4",
            "s~1",
            "a~b.c",
            "s~0000abcd.",
            "s~abcd.1",
            "t1~0000abcg.1",
        ] {
            assert_eq!(parse_position(theirs), None, "{theirs}");
            assert_eq!(upstream_since(theirs), Some(theirs));
        }
        assert_eq!(upstream_since("s72_4~00c0ffee.2"), Some("s72_4"));
        assert_eq!(upstream_since("~00c0ffee.2"), None);
    }
}
