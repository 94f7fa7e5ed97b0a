//! Events this server's writer committed lately, kept in memory so that a lane's read of what it is
//! owed since its last read needs no round trip to the database.
//!
//! After each commit of single creates every subscribed endpoint's lane reads the commit's few
//! events: a round trip per lane per commit, through two schedulers (this process's and the
//! backend's), which was most of the time from a create's answer to its webhooks. The writer has
//! each created event's seq, name and body in hand, so it keeps the newest here, and a lane's next
//! read is answered from them. The same idea as the SQLite store's `sqlite/recent.rs`, whose
//! module documentation gives the rules; what differs here is that other servers write to the same
//! database:
//!
//! - **The events.** The ring vouches for every event with a seq in `(from, last]`. On PostgreSQL
//!   seqs are given without a gap and committed in seq order under the writers' advisory lock
//!   (`writer.rs`), and each writer transaction reads the newest committed seq when it begins. So a
//!   commit's events follow on from the ring only if that newest seq is the ring's `last`: anything
//!   else means another server committed events in between, and the ring starts again from this
//!   commit. A commit with events the writer did not capture one by one (a bulk import, an update,
//!   an enquiry: their statements number them) empties it, and so does a purge.
//! - **What other servers change.** A wake-up heard from another server (`cluster.rs`: it names
//!   what its commit made owed or due, or changed endpoints) empties the ring and drops every view
//!   before the lanes hear of it, so a lane woken by another server's change reads the database. A
//!   read answered from memory before that wake-up arrives is the database's answer as of this
//!   server's last commit: a snapshot as any read's, and the wake-up that follows brings a new read.
//! - **The endpoint's subscription** ([`View`]): its events filter, its cursor and the newest event
//!   it has a row for, read from the database with a lane's database read and kept only if the
//!   endpoint had no pending row then and nothing that drops views committed meanwhile (an epoch,
//!   as in SQLite's). The rows another server wrote for the endpoint (while it held the lease) are
//!   in the view; those this server writes later are noted by its writer.
//!
//! A lane's first read after a start or a rescan (cursor 0), a read from before the ring's oldest
//! event, and any read of an endpoint with no view go to the database, which refreshes the view.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;

use super::fanout::{delivery_key, split_key};
use crate::{DueDelivery, ids};

/// How many events the ring holds at most: seconds of single creates, far more than the events
/// between two reads of a lane that keeps up.
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
    /// The newest event the endpoint had a delivery row for when the view was read.
    pub rows_up_to: i64,
}

/// What one transaction did that the ring must hear of, gathered by its jobs (a failed job's notes
/// are dropped with its work) and applied once the commit is done.
#[derive(Debug, Default)]
pub(crate) struct RecentNotes {
    /// The newest committed event when the transaction began: its events number on from here.
    began_after: i64,
    events: Vec<RecentEvent>,
    bytes: usize,
    /// Events were written that were not captured (or too many to keep): the ring starts again.
    reset: bool,
    /// Every view is dropped (rows were removed).
    drop_views: bool,
    /// The highest event seq of a row written, per endpoint.
    rows: BTreeMap<i64, i64>,
    /// Endpoints that got a pending row.
    pending: BTreeSet<i64>,
}

impl RecentNotes {
    /// The notes of a transaction that began with `newest` as the newest committed event.
    pub(super) fn began_after(newest: i64) -> RecentNotes {
        RecentNotes { began_after: newest, ..RecentNotes::default() }
    }

    /// An event this transaction inserted; `seq` must follow the last one noted.
    pub(super) fn event(&mut self, seq: i64, name: EventName, body: &[u8]) {
        if self.has_room_for(seq, body.len()) {
            self.keep(RecentEvent { seq, name, body: Bytes::copy_from_slice(body) });
        }
    }

    /// Whether event `seq` of `len` body bytes is kept; when not, none of this transaction's are.
    fn has_room_for(&mut self, seq: i64, len: usize) -> bool {
        if self.reset {
            return false;
        }
        let expected = self.events.last().map_or(self.began_after, |last| last.seq) + 1;
        if seq != expected || self.events.len() >= RING_EVENTS || self.bytes + len > RING_BYTES {
            // Out of order, or more than the ring holds: keeping none costs the next reads a trip
            // to the database.
            self.forget_events();
            return false;
        }
        true
    }

    fn keep(&mut self, event: RecentEvent) {
        self.bytes += event.body.len();
        self.events.push(event);
    }

    /// Events were inserted (or removed) in a way the ring does not follow: it empties.
    pub(super) fn forget_events(&mut self) {
        self.reset = true;
        self.events = Vec::new();
        self.bytes = 0;
    }

    /// Rows were removed: no view can be trusted any more.
    pub(super) fn forget_views(&mut self) {
        self.drop_views = true;
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

    /// Adds a later job's notes (of the same transaction).
    pub(super) fn absorb(&mut self, later: RecentNotes) {
        if later.reset {
            self.forget_events();
        }
        // The body was copied once when the job noted it; the job's notes are moved, not copied.
        for event in later.events {
            if !self.has_room_for(event.seq, event.body.len()) {
                break;
            }
            self.keep(event);
        }
        for (endpoint, event_seq) in later.rows {
            self.row(endpoint, event_seq);
        }
        self.pending.extend(later.pending);
        self.drop_views |= later.drop_views;
    }
}

/// The ring of recent events and what is known of each lane's endpoint. Shared by the writer, which
/// fills it, the listener, which empties it, and the readers.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every committed event with a seq in `(from, last]`, oldest first, when `known`.
    events: VecDeque<RecentEvent>,
    bytes: usize,
    from: i64,
    last: i64,
    known: bool,
    views: HashMap<i64, View>,
    /// The highest event seq of a row this server's writer wrote, per endpoint.
    rows_up_to: HashMap<i64, i64>,
    /// Bumped by every change that drops views.
    epoch: u64,
}

impl State {
    fn forget_events(&mut self) {
        self.events.clear();
        self.bytes = 0;
        self.known = false;
    }

    fn forget_views(&mut self) {
        self.views.clear();
        self.epoch += 1;
    }
}

impl Recent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a committed transaction's notes; `last_seq` is its newest event (the newest committed
    /// one, under the writers' lock). Called after the commit and before anyone hears of it, so that
    /// a read that follows the commit's answer or wake-up sees them.
    pub(super) fn apply(&self, notes: RecentNotes, last_seq: i64, settings_changed: bool) {
        let mut state = self.state();
        let captured_to = notes.events.last().map_or(notes.began_after, |event| event.seq);
        if notes.reset || captured_to != last_seq {
            state.forget_events();
        } else {
            if !state.known || state.last != notes.began_after {
                // Another server committed events since this server's last commit (or the ring was
                // emptied): it vouches for this commit's events on.
                state.forget_events();
                state.from = notes.began_after;
                state.known = true;
            }
            for event in notes.events {
                state.bytes += event.body.len();
                state.events.push_back(event);
            }
            state.last = last_seq;
            while state.events.len() > RING_EVENTS || state.bytes > RING_BYTES {
                let Some(oldest) = state.events.pop_front() else { break };
                state.bytes -= oldest.body.len();
                state.from = oldest.seq;
            }
        }
        for (endpoint, event_seq) in notes.rows {
            let highest = state.rows_up_to.entry(endpoint).or_default();
            *highest = (*highest).max(event_seq);
        }
        if settings_changed || notes.drop_views {
            state.forget_views();
        } else if !notes.pending.is_empty() {
            for endpoint in &notes.pending {
                state.views.remove(endpoint);
            }
            state.epoch += 1;
        }
    }

    /// Another server changed something (or what it said may have been missed): the ring empties
    /// and every view goes, so the next reads go to the database.
    pub(super) fn forget_all(&self) {
        let mut state = self.state();
        state.forget_events();
        state.forget_views();
    }

    /// The epoch to give [`Recent::keep_view`]; taken before the read of the view begins.
    pub(super) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Keeps (or replaces) a view read from the database, unless a change that drops views was
    /// applied since `epoch` was taken (the view may predate it).
    pub(super) fn keep_view(&self, endpoint: i64, view: View, epoch: u64) {
        let mut state = self.state();
        if state.epoch == epoch {
            state.views.insert(endpoint, view);
        }
    }

    /// Drops the view of `endpoint`, if any: it has a pending row or is not active.
    pub(super) fn drop_view(&self, endpoint: i64) {
        self.state().views.remove(&endpoint);
    }

    /// What the database would answer to `due_deliveries(endpoint, after_key, _, limit)` as of this
    /// server's last commit, when memory knows it; `None` when the database must be read.
    pub(super) fn due_after(&self, tag: &str, endpoint: i64, after_key: i64, limit: usize) -> Option<Vec<DueDelivery>> {
        if after_key <= 0 {
            return None;
        }
        let state = self.state();
        let view = state.views.get(&endpoint)?;
        let (after_event, _) = split_key(after_key);
        // The first event this read covers: the key's own event, unless the key is its delivery's.
        let first_covered = if delivery_key(after_event, endpoint) > after_key { after_event } else { after_event + 1 };
        if !state.known || first_covered <= state.from {
            return None;
        }
        let rows_up_to = state.rows_up_to.get(&endpoint).copied().unwrap_or(0).max(view.rows_up_to);
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
            .map(|event| due_delivery(tag, delivery_key(event.seq, endpoint), event));
        Some(owed.collect())
    }
}

fn due_delivery(tag: &str, key: i64, event: &RecentEvent) -> DueDelivery {
    DueDelivery {
        seq: key,
        id: ids::format(super::webhooks::DELIVERY_PREFIX, tag, key),
        attempts: 0,
        event: event.name,
        body: event.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "test";

    /// A commit of `events` (numbered on from `began_after`).
    fn commit(recent: &Recent, began_after: i64, events: &[EventName]) {
        let mut notes = RecentNotes::began_after(began_after);
        for (n, name) in events.iter().enumerate() {
            notes.event(began_after + 1 + n as i64, *name, b"{}");
        }
        recent.apply(notes, began_after + events.len() as i64, false);
    }

    fn all() -> View {
        View { events: EventFilter::All, floor: 0, rows_up_to: 0 }
    }

    fn with_view(recent: &Recent, endpoint: i64, view: View) {
        recent.keep_view(endpoint, view, recent.epoch());
    }

    fn events(due: Option<Vec<DueDelivery>>) -> Option<Vec<i64>> {
        due.map(|due| due.iter().map(|d| split_key(d.seq).0).collect())
    }

    #[test]
    fn owed_events_after_the_key_come_in_order_and_tests_never() {
        let recent = Recent::default();
        commit(&recent, 4, &[EventName::ContactCreated, EventName::WebhookTest, EventName::DealWon]);
        with_view(&recent, 3, all());
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3), 10)), Some(vec![7]));
        // Put back: the event of the key itself is read again.
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 10)), Some(vec![5, 7]));
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 1)), Some(vec![5]));
    }

    #[test]
    fn the_database_is_read_when_memory_does_not_know() {
        let recent = Recent::default();
        commit(&recent, 4, &[EventName::ContactCreated, EventName::ContactCreated]);
        with_view(&recent, 3, all());
        // A first read, a read from before the ring, an endpoint with no view.
        assert!(recent.due_after(TAG, 3, 0, 10).is_none());
        assert!(recent.due_after(TAG, 3, delivery_key(4, 3) - 1, 10).is_none());
        assert!(recent.due_after(TAG, 4, delivery_key(5, 4), 10).is_none());
        // From the ring's first event on, memory knows.
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(4, 3), 10)), Some(vec![5, 6]));
        // A row for an event after the key, written here or (in the view) by another server.
        let mut notes = RecentNotes::began_after(6);
        notes.row(3, 6);
        recent.apply(notes, 6, false);
        assert!(recent.due_after(TAG, 3, delivery_key(5, 3), 10).is_none());
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(6, 3), 10)), Some(vec![]));
        with_view(&recent, 5, View { rows_up_to: 6, ..all() });
        assert!(recent.due_after(TAG, 5, delivery_key(5, 5), 10).is_none());
        // A pending row drops the view.
        let mut notes = RecentNotes::began_after(6);
        notes.pending(3);
        recent.apply(notes, 6, false);
        assert!(recent.due_after(TAG, 3, delivery_key(6, 3), 10).is_none());
    }

    #[test]
    fn events_another_server_committed_in_between_start_the_ring_again() {
        let recent = Recent::default();
        commit(&recent, 0, &[EventName::ContactCreated, EventName::ContactCreated]);
        with_view(&recent, 3, all());
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(1, 3), 10)), Some(vec![2]));
        // Event 3 was committed by another server; this server's next commit began after it.
        commit(&recent, 3, &[EventName::ContactCreated]);
        assert!(recent.due_after(TAG, 3, delivery_key(2, 3), 10).is_none(), "3 is not in memory");
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(3, 3), 10)), Some(vec![4]));
        // A commit without events still moves what the ring vouches for.
        commit(&recent, 4, &[]);
        commit(&recent, 4, &[EventName::DealWon]);
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(3, 3), 10)), Some(vec![4, 5]));
    }

    #[test]
    fn a_wake_up_from_another_server_empties_memory() {
        let recent = Recent::default();
        commit(&recent, 0, &[EventName::ContactCreated, EventName::ContactCreated]);
        with_view(&recent, 3, all());
        let epoch = recent.epoch();
        recent.forget_all();
        assert!(recent.due_after(TAG, 3, delivery_key(1, 3), 10).is_none());
        recent.keep_view(3, all(), epoch);
        commit(&recent, 2, &[EventName::ContactCreated]);
        assert!(recent.due_after(TAG, 3, delivery_key(2, 3), 10).is_none(), "a view read across it is not kept");
        with_view(&recent, 3, all());
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(2, 3), 10)), Some(vec![3]));
    }

    #[test]
    fn uncaptured_events_empty_the_ring() {
        let recent = Recent::default();
        commit(&recent, 0, &[EventName::ContactCreated]);
        with_view(&recent, 3, all());
        // A transaction numbered events 2 and 3 through a statement, capturing only 2.
        let mut notes = RecentNotes::began_after(1);
        notes.event(2, EventName::ContactCreated, b"{}");
        recent.apply(notes, 3, false);
        assert!(recent.due_after(TAG, 3, delivery_key(1, 3), 10).is_none());
        let mut notes = RecentNotes::began_after(3);
        notes.event(5, EventName::ContactCreated, b"{}");
        assert!(notes.reset, "a gap in what was captured keeps none");
    }

    #[test]
    fn the_filter_and_the_floor_hold() {
        let recent = Recent::default();
        commit(&recent, 4, &[EventName::DealWon, EventName::DealWon, EventName::ContactCreated, EventName::DealWon]);
        with_view(&recent, 3, View { events: EventFilter::Only(vec![EventName::DealWon]), floor: 6, rows_up_to: 0 });
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(5, 3) - 1, 10)), Some(vec![8]));
    }

    #[test]
    fn the_ring_keeps_its_bound() {
        let recent = Recent::default();
        let mut notes = RecentNotes::began_after(0);
        for seq in 1..=(RING_EVENTS as i64 + 10) {
            notes.event(seq, EventName::ContactCreated, b"{}");
        }
        assert!(notes.reset, "one commit of more than the ring holds keeps none");
        for seq in 1..=(RING_EVENTS as i64 + 10) {
            commit(&recent, seq - 1, &[EventName::ContactCreated]);
        }
        with_view(&recent, 3, all());
        assert!(recent.due_after(TAG, 3, delivery_key(10, 3) - 1, 10).is_none(), "the oldest were let go");
        let newest = RING_EVENTS as i64 + 10;
        assert_eq!(events(recent.due_after(TAG, 3, delivery_key(newest - 1, 3), 10)), Some(vec![newest]));
    }
}
