//! Back-filling the gap of a `limited` timeline: the events a sync left out, fetched through
//! `GET /rooms/{roomId}/messages` (PROFILE.md section 9) and shown in the order they were sent.
//!
//! This module owns the gaps being filled ([`MAX_BACKFILLS`], on flash in
//! [`record::BACKFILL`] + slot, so that a power cut resumes them). A gap opens when a sync
//! brings a `limited` timeline with a `prev_batch` in a room the token followed (it reaches
//! back to where the token stood, the previous sync's position, `to`), or in a room it just
//! joined (it reaches back to the token's own latest membership event: its invite, or its
//! join when the join fell in the gap). It is filled in two walks, one request at a time on
//! the operation lane, pages of [`BACKFILL_PAGE_EVENTS`]:
//!
//! 1. back (`dir=b`) from `prev_batch` until it reaches where it ends, or after
//!    [`BACKFILL_PAGES`] pages: then the person is told that the earlier messages were not
//!    fetched ([`UiEvent::Gap`], with how many were);
//! 2. forward (`dir=f`) from where the first walk ended up to the room's newest event, each
//!    event shown like one of a sync (decrypted, dropped when taken in already).
//!
//! While a room has a gap open its timeline in syncs is not shown: the forward walk brings
//! those events too, after the earlier ones, so that the person reads the room in order with
//! no more than one page in memory. A request that fails is tried again after the operation
//! lane's back-off; a page too large for the response buffer is asked for with half as many
//! events. After [`BACKFILL_FAILURES`] failures in a row, a refusal, or a single event too
//! large, the walk is given up and the person told ([`UiEvent::Gap`]): a walk back gives way
//! to the forward walk from `prev_batch` (the sync's own events still show), a forward walk
//! ends the gap. The live sync never waits on a back-fill.

use heapless::String;
use minicbor::Decoder;

use jeton_proto::TableVersion;
use jeton_proto::ids::TEXT_LEN;
use jeton_proto::path::endpoint;
use jeton_proto::view::{Event, Map, Room, Value};

use super::flash::{Flash, corrupt, text};
use super::sync::{Item, digest, event_digest};
use super::*;
use crate::store::record;

/// A position of the homeserver's stream, as `/sync` and `/messages` hand them out.
type Position = String<MAX_CURSOR_LEN>;

/// Which walk a gap is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// Back from `prev_batch`, `pages` pages so far.
    Back { pages: u8 },
    /// Forward to the room's newest event.
    Forward,
}

/// A gap being filled.
#[derive(Debug)]
struct Gap {
    /// The room's slot, and a digest of its id (a slot given to another room is no match).
    room: u8,
    room_tag: u32,
    walk: Walk,
    /// Events asked for per page.
    limit: u8,
    /// The next page's `from` (empty going forward: from the room's first event).
    from: Position,
    /// The timeline's `prev_batch`: where the forward walk starts if the walk back is given up.
    top: Position,
    /// Walking back: where the token stood before the gap (`to`); empty for a room just
    /// joined, whose walk ends at the token's own membership event.
    to: Position,
    /// Going forward, events up to and including this one (its digest) were there before the
    /// gap: not shown.
    skip_to: u32,
    /// Earlier events fetched walking back.
    fetched: u16,
    /// Requests that failed in a row.
    failures: u8,
}

impl Gap {
    /// The gap's numbers as the record keeps them, in one byte string: room slot, room tag,
    /// walk, pages, page size, `skip_to`, events fetched.
    fn numbers(&self) -> [u8; 14] {
        let (walk, pages) = match self.walk {
            Walk::Back { pages } => (0, pages),
            Walk::Forward => (1, 0),
        };
        let [t0, t1, t2, t3] = self.room_tag.to_be_bytes();
        let [s0, s1, s2, s3] = self.skip_to.to_be_bytes();
        let [f0, f1] = self.fetched.to_be_bytes();
        [
            self.room, t0, t1, t2, t3, walk, pages, self.limit, s0, s1, s2, s3, f0, f1,
        ]
    }

    fn save<S: Store>(&self, flash: &mut Flash<S>, slot: usize) -> Result<(), TokenError> {
        flash.put(record::BACKFILL + slot as u16, |e| {
            e.array(4)?
                .bytes(&self.numbers())?
                .str(&self.from)?
                .str(&self.top)?
                .str(&self.to)
                .map(drop)
        })
    }

    fn load<S: Store>(flash: &mut Flash<S>, slot: usize) -> Result<Option<Self>, TokenError> {
        let id = record::BACKFILL + slot as u16;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(None);
        };
        let d = &mut Decoder::new(meta);
        d.array().map_err(corrupt(id))?;
        let numbers: [u8; 14] = d
            .bytes()
            .map_err(corrupt(id))?
            .try_into()
            .map_err(|_| TokenError::CorruptRecord(id))?;
        let [
            room,
            t0,
            t1,
            t2,
            t3,
            walk,
            pages,
            limit,
            s0,
            s1,
            s2,
            s3,
            f0,
            f1,
        ] = numbers;
        Ok(Some(Gap {
            room,
            room_tag: u32::from_be_bytes([t0, t1, t2, t3]),
            walk: if walk == 0 {
                Walk::Back { pages }
            } else {
                Walk::Forward
            },
            limit: limit.clamp(1, BACKFILL_PAGE_EVENTS),
            from: text(d, id)?,
            top: text(d, id)?,
            to: text(d, id)?,
            skip_to: u32::from_be_bytes([s0, s1, s2, s3]),
            fetched: u16::from_be_bytes([f0, f1]),
            failures: 0,
        }))
    }
}

/// A digest of room id `room_id`, to tell a room's slot from another room's later.
fn room_tag(room_id: &str) -> u32 {
    digest(&[b"room", room_id.as_bytes()])
}

/// The homeserver's position in `position`: an intermediate position of a split sync
/// (`<since>~<split>.<i>`, PROFILE.md section 9) never reaches the homeserver, its `<since>`
/// does.
fn upstream(position: &str) -> &str {
    position
        .rsplit_once('~')
        .map_or(position, |(since, _)| since)
}

/// The gaps being filled.
#[derive(Debug)]
pub(super) struct Backfills {
    gaps: [Option<Gap>; MAX_BACKFILLS],
}

impl Backfills {
    /// No gap.
    pub(super) const fn new() -> Self {
        Backfills {
            gaps: [const { None }; MAX_BACKFILLS],
        }
    }

    /// Reads the gaps from flash: a back-fill a power cut interrupted goes on.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        for (slot, gap) in self.gaps.iter_mut().enumerate() {
            *gap = Gap::load(flash, slot)?;
        }
        Ok(())
    }

    /// Whether the timeline of the room in `slot` waits for its gap to be filled: its
    /// events are shown by the back-fill, in order.
    pub(super) fn defers(&self, slot: usize) -> bool {
        self.gaps
            .iter()
            .flatten()
            .any(|g| usize::from(g.room) == slot)
    }
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// The timeline of joined room `room_id` (slot `slot`) in a sync: if the homeserver left
    /// events out of it (`limited`), a gap opens, or the person is told that earlier messages
    /// were not fetched. `just_joined`: the sync of the token's own join, or of a room new to
    /// it. On the first sync there is no gap: the history came before the token.
    pub(super) fn note_gap(
        &mut self,
        slot: usize,
        room_id: &str,
        room: &Room<'_>,
        just_joined: bool,
    ) -> Result<(), TokenError> {
        if !self.sync.has_synced() || !room.timeline_limited()? || self.backfill.defers(slot) {
            // A gap open already: its forward walk reaches this sync's events too.
            return Ok(());
        }
        // Under v2 the gateway leaves out a `prev_batch` equal to the request's `since`
        // (PROFILE.md section 3.4).
        let since = upstream(self.sync.since());
        let prev_batch = room.timeline_prev_batch()?.unwrap_or(since);
        let free = self.backfill.gaps.iter().position(Option::is_none);
        let from = bounded::<MAX_CURSOR_LEN>(prev_batch);
        let (Some(free), Ok(from)) = (free, from) else {
            // No room for another gap (or a position longer than the token keeps).
            self.env.ui.event(&UiEvent::Gap {
                room_id,
                fetched: 0,
            });
            return Ok(());
        };
        let to = if just_joined {
            Position::new()
        } else {
            bounded(since)?
        };
        let gap = Gap {
            room: u8::try_from(slot).unwrap_or(u8::MAX),
            room_tag: room_tag(room_id),
            walk: Walk::Back { pages: 0 },
            limit: BACKFILL_PAGE_EVENTS,
            top: from.clone(),
            from,
            to,
            skip_to: 0,
            fetched: 0,
            failures: 0,
        };
        gap.save(&mut self.env.flash, free)?;
        if let Some(place) = self.backfill.gaps.get_mut(free) {
            *place = Some(gap);
        }
        Ok(())
    }

    /// Asks for the next page of the first gap, if there is one.
    pub(super) fn plan_backfill(&mut self, coap: &mut Coap) -> Result<(), TokenError> {
        let Some((slot, gap)) = self
            .backfill
            .gaps
            .iter()
            .enumerate()
            .find_map(|(slot, gap)| Some((slot, gap.as_ref()?)))
        else {
            return Ok(());
        };
        let Some(room) = self.rooms.get(usize::from(gap.room)) else {
            return self.end_gap(slot);
        };
        if room_tag(&room.id) != gap.room_tag {
            return self.end_gap(slot);
        }
        let room_id = room.id.clone();
        let dir = match gap.walk {
            Walk::Back { .. } => "dir=b",
            Walk::Forward => "dir=f",
        };
        let mut from: String<{ MAX_CURSOR_LEN + 5 }> = String::new();
        if !gap.from.is_empty() {
            let _ = from.push_str("from=");
            let _ = from.push_str(&gap.from);
        }
        let mut to: String<{ MAX_CURSOR_LEN + 3 }> = String::new();
        if matches!(gap.walk, Walk::Back { .. }) && !gap.to.is_empty() {
            let _ = to.push_str("to=");
            let _ = to.push_str(&gap.to);
        }
        let mut limit: String<12> = String::new();
        let _ = limit.push_str("limit=");
        push_number(&mut limit, u64::from(gap.limit), 10, 0)?;
        let mut queries: heapless::Vec<&str, 4> = heapless::Vec::new();
        for query in [dir, from.as_str(), to.as_str(), limit.as_str()] {
            if !query.is_empty() {
                let _ = queries.push(query);
            }
        }
        let sent = self.request(
            coap,
            Code::GET,
            &[endpoint::ROOM_MESSAGES, &room_id],
            &queries,
            0,
        )?;
        self.operation.begin(
            sent,
            Operation::Backfill {
                gap: u8::try_from(slot).unwrap_or(u8::MAX),
            },
        );
        Ok(())
    }

    /// A page of gap `slot`'s walk.
    pub(super) fn on_backfill_page(
        &mut self,
        slot: u8,
        body: &[u8],
        now: Instant,
    ) -> Result<(), TokenError> {
        let slot = usize::from(slot);
        let Value::Map(page) = Value::parse(body, TableVersion::V2)? else {
            return self.give_up_gap(slot);
        };
        let end: Option<Position> = match page.get("end")? {
            Some(Value::Text(end)) => Some(bounded(end)?),
            _ => None,
        };
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        gap.failures = 0;
        match gap.walk {
            Walk::Back { pages } => self.walked_back(slot, page, end, pages),
            Walk::Forward => self.walked_forward(slot, page, end, now),
        }
    }

    /// A page walking back: counted, searched for where the gap ends; then back further, or
    /// forward from where the walk ended.
    fn walked_back(
        &mut self,
        slot: usize,
        page: Map<'_>,
        end: Option<Position>,
        pages: u8,
    ) -> Result<(), TokenError> {
        let own_user = self
            .login
            .as_ref()
            .map(|l| l.user_id.clone())
            .unwrap_or_default();
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let mut events = 0u16;
        let mut arrival = 0;
        for event in chunk(page)? {
            let event = event?;
            let own_member = event.event_type()? == "m.room.member"
                && event.state_key()? == Some(own_user.as_str());
            let start = gap.to.is_empty() && (own_member || event.event_type()? == "m.room.create");
            if start {
                let mut text = [0; TEXT_LEN];
                let id = event.event_id()?.map_or("", |id| id.as_text(&mut text));
                arrival = event_digest(id).max(1);
                break;
            }
            events += 1;
        }
        gap.fetched = gap.fetched.saturating_add(events);
        let pages = pages.saturating_add(1);
        let bottom = match end {
            // The token's arrival is in this page: forward from below it, skipping up to it.
            _ if arrival != 0 => {
                gap.skip_to = arrival;
                end.unwrap_or_default()
            }
            // Nothing before this page's start.
            _ if events == 0 => core::mem::take(&mut gap.from),
            // Nothing more before the gap's start (`to`, or the room's first event).
            None => core::mem::take(&mut gap.to),
            Some(end) if pages < BACKFILL_PAGES => {
                gap.walk = Walk::Back { pages };
                gap.from = end;
                return gap.save(&mut self.env.flash, slot);
            }
            // As far back as the token goes: the person is told, before what was fetched.
            Some(end) => {
                let fetched = gap.fetched;
                if let Some(room) = self.rooms.get(usize::from(gap.room)) {
                    self.env.ui.event(&UiEvent::Gap {
                        room_id: &room.id,
                        fetched,
                    });
                }
                end
            }
        };
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        gap.walk = Walk::Forward;
        gap.from = bottom;
        gap.to.clear();
        gap.save(&mut self.env.flash, slot)
    }

    /// A page walking forward: its events shown in order; the gap is filled once a page
    /// brings nothing more.
    fn walked_forward(
        &mut self,
        slot: usize,
        page: Map<'_>,
        end: Option<Position>,
        now: Instant,
    ) -> Result<(), TokenError> {
        let Some(gap) = self.backfill.gaps.get(slot).and_then(Option::as_ref) else {
            return Ok(());
        };
        let Some(room_id) = self.rooms.get(usize::from(gap.room)).map(|r| r.id.clone()) else {
            return self.end_gap(slot);
        };
        let mut skip_to = gap.skip_to;
        let mut events = 0;
        for event in chunk(page)? {
            events += 1;
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    let item = Item {
                        room_id: &room_id,
                        ..Item::of("timeline")
                    };
                    self.item(item, Err(error.into()))?;
                    continue;
                }
            };
            if skip_to != 0 {
                let mut text = [0; TEXT_LEN];
                let id = event.event_id()?.map_or("", |id| id.as_text(&mut text));
                if event_digest(id).max(1) == skip_to {
                    skip_to = 0;
                }
                continue;
            }
            self.take_timeline_event(&room_id, &event, now)?;
        }
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        gap.skip_to = skip_to;
        match end {
            Some(end) if events > 0 => {
                gap.from = end;
                gap.save(&mut self.env.flash, slot)
            }
            // Caught up: the room's timeline shows live again.
            _ => self.end_gap(slot),
        }
    }

    /// Gap `slot`'s request failed; `too_large`: its answer did not fit the response buffer.
    /// Tried again after the operation lane's back-off (with a smaller page), or given up.
    pub(super) fn on_backfill_failed(
        &mut self,
        slot: u8,
        too_large: bool,
    ) -> Result<(), TokenError> {
        let slot = usize::from(slot);
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if too_large && gap.limit > 1 {
            gap.limit /= 2;
            return gap.save(&mut self.env.flash, slot);
        }
        gap.failures = gap.failures.saturating_add(1);
        if too_large || gap.failures >= BACKFILL_FAILURES {
            return self.give_up_gap(slot);
        }
        Ok(())
    }

    /// Gap `slot` cannot be filled: the person is told; the events from the timeline's
    /// `prev_batch` on are still fetched, unless it was that walk which failed.
    pub(super) fn give_up_gap(&mut self, slot: usize) -> Result<(), TokenError> {
        let Some(gap) = self.backfill.gaps.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if let Some(room) = self.rooms.get(usize::from(gap.room)) {
            // What the walk back fetched is not shown: the forward walk starts after it.
            let fetched = if gap.walk == Walk::Forward {
                gap.fetched
            } else {
                0
            };
            self.env.ui.event(&UiEvent::Gap {
                room_id: &room.id,
                fetched,
            });
        }
        if gap.walk == Walk::Forward {
            return self.end_gap(slot);
        }
        gap.walk = Walk::Forward;
        gap.from.clone_from(&gap.top);
        gap.to.clear();
        gap.skip_to = 0;
        gap.fetched = 0;
        gap.failures = 0;
        gap.save(&mut self.env.flash, slot)
    }

    /// Gap `slot` is closed (on flash first).
    fn end_gap(&mut self, slot: usize) -> Result<(), TokenError> {
        self.env.flash.remove(record::BACKFILL + slot as u16)?;
        if let Some(place) = self.backfill.gaps.get_mut(slot) {
            *place = None;
        }
        Ok(())
    }

    /// The room in `slot` is gone: its gap closes.
    pub(super) fn forget_gaps_of(&mut self, room: usize) -> Result<(), TokenError> {
        for slot in 0..MAX_BACKFILLS {
            let of_room = self
                .backfill
                .gaps
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|g| usize::from(g.room) == room);
            if of_room {
                self.end_gap(slot)?;
            }
        }
        Ok(())
    }
}

/// The events of a `/messages` page (`chunk`), in the order of the walk.
fn chunk<'a>(
    page: Map<'a>,
) -> Result<impl Iterator<Item = Result<Event<'a>, jeton_proto::view::ViewError>>, TokenError> {
    let elements = match page.get("chunk")? {
        Some(Value::Array(array)) => Some(array.iter()),
        None => None,
        Some(_) => return Err(jeton_proto::view::ViewError::WrongType { offset: 0 }.into()),
    };
    Ok(elements
        .into_iter()
        .flatten()
        .map(|element| match element? {
            Value::Map(map) => Ok(Event(map)),
            _ => Err(jeton_proto::view::ViewError::WrongType { offset: 0 }),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intermediate_position_reaches_the_homeserver_as_its_since() {
        assert_eq!(upstream("s72_4~00c0ffee.2"), "s72_4");
        assert_eq!(upstream("s72_4"), "s72_4");
        assert_eq!(upstream("~00c0ffee.1"), "");
    }
}
