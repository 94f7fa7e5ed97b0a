//! Recently committed events, kept in memory so that a lane's read of what it is owed since its
//! last read needs no database read.
//!
//! With single creates each commit carries a handful of events, and every subscribed endpoint's
//! lane reads them right after the commit: five endpoints made five reads of the same few events
//! per commit, each handed to the blocking pool, each on a reader whose page cache SQLite drops
//! after every commit. The writer has each event's seq, name and body in hand when it inserts it,
//! so it keeps the newest ones here, and a lane's next read is answered from them.
//!
//! An answer from memory must be the one the database would give, so it is given only when every
//! fact it rests on is known; otherwise the read goes to the database as before:
//!
//! - **The events.** The ring holds every event committed since its oldest, in seq order: each
//!   commit's events are added after it commits (and before anyone is answered or woken). A commit
//!   whose events were not captured one by one (a bulk import, whose multi-row inserts number them
//!   in SQLite), or a purge that removed rows, empties it; it fills again from the next commit.
//! - **The endpoint's subscription** ([`View`]): its events filter and a floor (its cursor when the
//!   view was read: every event up to it has its row or is not subscribed to). A view is read from
//!   the database by a read that went there, and only kept when no pending row of the endpoint
//!   existed then; it is dropped when any endpoint's settings change or the endpoint gets a pending
//!   row (a retry, a retry by hand, a settled subscription). A view read while such a change was
//!   committing is not kept: each change bumps an epoch that the read took before it began.
//! - **Which events have a row already** for the endpoint: the writer notes the highest event seq
//!   of any row it writes for each endpoint. A lane's cursor is past every attempt it started, so
//!   its reads ask only after that; a read from further back goes to the database.
//!
//! A lane's first read after a start or a rescan (cursor 0), and any read from before the ring's
//! oldest event, go to the database.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;

use super::fanout::{delivery_key, split_key};
use super::webhooks::due_delivery;
use crate::DueDelivery;

/// How many events the ring holds at most: a few seconds of single creates, far more than the
/// events between two reads of a lane that keeps up.
const RING_EVENTS: usize = 4096;
/// How many body bytes the ring holds at most.
const RING_BYTES: usize = 8 * 1024 * 1024;

/// An event as the ring keeps it.
#[derive(Debug, Clone)]
struct RecentEvent {
    seq: i64,
    name: EventName,
    body: Bytes,
}

/// What an answer from memory needs to know of an endpoint's subscription.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub events: EventFilter,
    /// Every event up to here has its row or is not subscribed to (the endpoint's cursor).
    pub floor: i64,
}

/// What one commit did that the ring must hear of, gathered by its jobs (a failed job's notes are
/// dropped with its work) and applied once the commit is done.
#[derive(Debug, Default)]
pub(crate) struct RecentNotes {
    events: Vec<RecentEvent>,
    bytes: usize,
    /// Events were written that were not captured (or too many to keep): the ring starts again.
    reset: bool,
    /// The highest event seq of a row written, per endpoint.
    rows: BTreeMap<i64, i64>,
    /// Endpoints that got a pending row.
    pending: BTreeSet<i64>,
}

impl RecentNotes {
    /// An event this commit inserted.
    pub(super) fn event(&mut self, seq: i64, name: EventName, body: &[u8]) {
        if self.has_room_for(body.len()) {
            self.keep(RecentEvent { seq, name, body: Bytes::copy_from_slice(body) });
        }
    }

    /// Whether one more event of `len` body bytes is kept; when not, none of this commit's are.
    fn has_room_for(&mut self, len: usize) -> bool {
        if self.reset {
            return false;
        }
        if self.events.len() >= RING_EVENTS || self.bytes + len > RING_BYTES {
            // More than the ring holds: keeping none costs the next reads a trip to the database.
            self.forget_events();
            return false;
        }
        true
    }

    fn keep(&mut self, event: RecentEvent) {
        self.bytes += event.body.len();
        self.events.push(event);
    }

    /// Events were inserted (or rows removed) in a way the ring cannot follow: it empties.
    pub(super) fn forget_events(&mut self) {
        self.reset = true;
        self.events = Vec::new();
        self.bytes = 0;
    }

    /// A delivery row of `endpoint` for event `event_seq` was written.
    pub(super) fn row(&mut self, endpoint: i64, event_seq: i64) {
        let highest = self.rows.entry(endpoint).or_default();
        *highest = (*highest).max(event_seq);
    }

    /// `endpoint` has a pending row: its reads go to the database until it has none.
    pub(super) fn pending(&mut self, endpoint: i64) {
        self.pending.insert(endpoint);
    }

    /// Adds a later job's notes.
    pub(super) fn absorb(&mut self, later: RecentNotes) {
        if later.reset {
            self.forget_events();
        }
        // The body was copied once when the job noted it; the job's notes are moved, not copied.
        for event in later.events {
            if !self.has_room_for(event.body.len()) {
                break;
            }
            self.keep(event);
        }
        for (endpoint, event_seq) in later.rows {
            self.row(endpoint, event_seq);
        }
        self.pending.extend(later.pending);
    }
}

/// The ring of recent events and what is known of each lane's endpoint. Shared by the writer,
/// which fills it, and the readers.
#[derive(Debug, Default)]
pub(super) struct Recent {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every event committed since the first one here, oldest first.
    events: VecDeque<RecentEvent>,
    bytes: usize,
    views: HashMap<i64, View>,
    /// The highest event seq of a row written since the store opened, per endpoint.
    rows_up_to: HashMap<i64, i64>,
    /// Bumped by every change that drops views.
    epoch: u64,
}

impl Recent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a commit's notes. Called after the commit and before anyone hears of it, so that a
    /// read that follows the commit's answer or wake-up sees them.
    pub(super) fn apply(&self, notes: RecentNotes, settings_changed: bool) {
        let mut state = self.state();
        if notes.reset {
            state.events.clear();
            state.bytes = 0;
        }
        for event in notes.events {
            state.bytes += event.body.len();
            state.events.push_back(event);
        }
        while state.events.len() > RING_EVENTS || state.bytes > RING_BYTES {
            let Some(oldest) = state.events.pop_front() else { break };
            state.bytes -= oldest.body.len();
        }
        for (endpoint, event_seq) in notes.rows {
            let highest = state.rows_up_to.entry(endpoint).or_default();
            *highest = (*highest).max(event_seq);
        }
        if settings_changed {
            state.views.clear();
            state.epoch += 1;
        } else if !notes.pending.is_empty() {
            for endpoint in &notes.pending {
                state.views.remove(endpoint);
            }
            state.epoch += 1;
        }
    }

    /// The epoch to give [`Recent::keep_view`]; taken before the read of the view begins.
    pub(super) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Whether a view of `endpoint` is kept.
    pub(super) fn has_view(&self, endpoint: i64) -> bool {
        self.state().views.contains_key(&endpoint)
    }

    /// Keeps a view read from the database, unless a change that drops views committed since
    /// `epoch` was taken (the view may predate it).
    pub(super) fn keep_view(&self, endpoint: i64, view: View, epoch: u64) {
        let mut state = self.state();
        if state.epoch == epoch {
            state.views.insert(endpoint, view);
        }
    }

    /// What the database would answer to `due_deliveries(endpoint, after_key, _, limit)`, when
    /// memory knows it; `None` when the database must be read.
    pub(super) fn due_after(&self, tag: &str, endpoint: i64, after_key: i64, limit: usize) -> Option<Vec<DueDelivery>> {
        if after_key <= 0 {
            return None;
        }
        let state = self.state();
        let view = state.views.get(&endpoint)?;
        let (after_event, _) = split_key(after_key);
        if state.events.front()?.seq > after_event {
            return None;
        }
        let rows_up_to = state.rows_up_to.get(&endpoint).copied().unwrap_or(0);
        if delivery_key(rows_up_to, endpoint) > after_key {
            // A row exists for an event this read would cover: only the database knows which.
            return None;
        }
        let first = state.events.partition_point(|event| event.seq < after_event);
        let owed = state
            .events
            .range(first..)
            .filter(|event| event.seq > view.floor && delivery_key(event.seq, endpoint) > after_key)
            .filter(|event| event.name.is_subscribable() && view.events.matches(event.name))
            .take(limit)
            .map(|event| due_delivery(tag, delivery_key(event.seq, endpoint), 0, event.name, event.body.clone()));
        Some(owed.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "test";

    fn recent_with(events: &[(i64, EventName)], endpoint: i64, view: View) -> Recent {
        let recent = Recent::default();
        let mut notes = RecentNotes::default();
        for (seq, name) in events {
            notes.event(*seq, *name, b"{}");
        }
        recent.apply(notes, false);
        recent.keep_view(endpoint, view, recent.epoch());
        recent
    }

    fn all() -> View {
        View { events: EventFilter::All, floor: 0 }
    }

    fn events(due: Option<Vec<DueDelivery>>) -> Option<Vec<i64>> {
        due.map(|due| due.iter().map(|d| split_key(d.seq).0).collect())
    }

    #[test]
    fn owed_events_after_the_key_come_in_order_and_tests_never() {
        let recent = recent_with(
            &[(5, EventName::ContactCreated), (6, EventName::WebhookTest), (7, EventName::DealWon)],
            3,
            all(),
        );
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3), 10)), Some(vec![7]));
        // Put back: the event of the key itself is read again.
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 10)), Some(vec![5, 7]));
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 1)), Some(vec![5]));
    }

    #[test]
    fn the_database_is_read_when_memory_does_not_know() {
        let recent = recent_with(&[(5, EventName::ContactCreated), (6, EventName::ContactCreated)], 3, all());
        // A first read, a read from before the ring, an endpoint with no view.
        assert!(recent.due_after(TAG, 3, 0, 10).is_none());
        assert!(recent.due_after(TAG, 3, delivery_key(4, 3), 10).is_none());
        assert!(recent.due_after(TAG, 4, delivery_key(5, 4), 10).is_none());
        // A row for an event after the key.
        let mut notes = RecentNotes::default();
        notes.row(3, 6);
        recent.apply(notes, false);
        assert!(recent.due_after(TAG, 3, delivery_key(5, 3), 10).is_none());
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(6, 3), 10)), Some(vec![]));
        // A pending row drops the view.
        let mut notes = RecentNotes::default();
        notes.pending(3);
        recent.apply(notes, false);
        assert!(recent.due_after(TAG, 3, delivery_key(6, 3), 10).is_none());
    }

    #[test]
    fn a_view_read_across_a_change_is_not_kept() {
        let recent = recent_with(&[(5, EventName::ContactCreated)], 3, all());
        let epoch = recent.epoch();
        recent.apply(RecentNotes::default(), true);
        assert!(!recent.has_view(3), "a settings change drops every view");
        recent.keep_view(3, all(), epoch);
        assert!(!recent.has_view(3));
        recent.keep_view(3, all(), recent.epoch());
        assert!(recent.has_view(3));
    }

    #[test]
    fn the_filter_and_the_floor_hold() {
        let only = View { events: EventFilter::Only(vec![EventName::DealWon]), floor: 6 };
        let recent = recent_with(
            &[
                (5, EventName::DealWon),
                (6, EventName::DealWon),
                (7, EventName::ContactCreated),
                (8, EventName::DealWon),
            ],
            3,
            only,
        );
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 10)), Some(vec![8]));
    }

    #[test]
    fn the_ring_keeps_its_bound_and_starts_again_after_uncaptured_events() {
        let recent = Recent::default();
        let mut notes = RecentNotes::default();
        for seq in 1..=(RING_EVENTS as i64 + 10) {
            notes.event(seq, EventName::ContactCreated, b"{}");
        }
        assert!(notes.reset, "one commit of more than the ring holds keeps none");
        recent.apply(notes, false);
        recent.keep_view(3, all(), recent.epoch());
        assert!(recent.due_after(TAG, 3, delivery_key(1, 3), 10).is_none());
        for seq in 1..=(RING_EVENTS as i64 + 10) {
            let mut notes = RecentNotes::default();
            notes.event(seq, EventName::ContactCreated, b"{}");
            recent.apply(notes, false);
        }
        assert!(recent.due_after(TAG, 3, delivery_key(10, 3), 10).is_none(), "the oldest were let go");
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(RING_EVENTS as i64 + 9, 3), 10)), Some(vec![4106]));
        let mut notes = RecentNotes::default();
        notes.forget_events();
        recent.apply(notes, false);
        assert!(recent.due_after(TAG, 3, delivery_key(RING_EVENTS as i64 + 9, 3), 10).is_none());
    }
}
