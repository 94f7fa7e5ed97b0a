//! Which work this server may do when several servers share one database.
//!
//! Each endpoint's deliveries, and the HubSpot sync, must be run by one server at a time: that is
//! what keeps an endpoint's `max_in_flight` and its first-attempt order across servers, and what
//! keeps two servers from sending one webhook twice. A piece of work is named by a lease: an
//! endpoint's id, or [`HUBSPOT_LEASE`]. [`Leases`] is this server's view of the leases it holds, and
//! what the dispatcher and the HubSpot sync ask before they run anything.
//!
//! The embedded store serves one server, which holds everything always ([`Leases::everything`]).
//! The PostgreSQL store keeps the leases in the database (`postgres/cluster.rs`): a keeper task
//! renews them and takes and hands back endpoints, and publishes here what this server holds.
//!
//! Two promises rest on this handle:
//! - **Hand-over without repeats.** A lease the keeper no longer wants is taken out of the offered
//!   set at once, but given back only once nothing uses it ([`Leases::use_lease`]'s guard): the
//!   dispatcher keeps its guard until the lane has stopped and its attempts' outcomes are committed,
//!   so the next holder reads every outcome and sends nothing again.
//! - **Fencing.** A lease is good only until its last renewal plus the lease's time, less a margin,
//!   by this server's monotonic clock ([`Leases::may_run`]): a server cut off from the database stops
//!   starting attempts before any other server may take its endpoints.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The lease of the HubSpot sync.
pub const HUBSPOT_LEASE: &str = "hubspot";

/// This server's leases. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct Leases {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("everything", &self.holds_everything()).finish()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped whenever the offered set or its validity changes.
    changed: watch::Sender<u64>,
    /// Asks the keeper to look again now rather than at its next renewal.
    recheck: Notify,
}

#[derive(Default)]
struct State {
    /// The one server on its own database: everything is held, always.
    everything: bool,
    /// Leases held and wanted: their work may run.
    offered: HashSet<String>,
    /// Until when the leases held are good (see the module's documentation); `None` before the
    /// first renewal.
    good_until: Option<Instant>,
    /// How many guards use each lease.
    in_use: HashMap<String, usize>,
    /// The server is stopping: hand every lease back once unused.
    stopping: bool,
    /// The keeper has handed everything back.
    stopped: bool,
}

impl Leases {
    /// The leases of a server alone on its database: it holds everything, always.
    pub fn everything() -> Leases {
        Leases::with(State { everything: true, ..State::default() })
    }

    /// Leases kept by a keeper, none held yet.
    pub(crate) fn kept() -> Leases {
        Leases::with(State::default())
    }

    fn with(state: State) -> Leases {
        Leases {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: watch::Sender::new(0),
                recheck: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this server holds everything (a single server on its own database).
    pub fn holds_everything(&self) -> bool {
        self.state().everything
    }

    /// Whether this server holds `name` and means to keep it: its work should run here. Says nothing
    /// of whether the lease is still good; [`Leases::may_run`] does.
    pub fn holds(&self, name: &str) -> bool {
        let state = self.state();
        state.everything || state.offered.contains(name)
    }

    /// Whether work under `name` may start now: held, and renewed recently enough that no other
    /// server can have taken it.
    pub fn may_run(&self, name: &str) -> bool {
        let state = self.state();
        state.everything
            || (state.offered.contains(name) && state.good_until.is_some_and(|until| Instant::now() < until))
    }

    /// Wakes on every change of what is held (including each renewal).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Marks `name` as used until the guard is dropped: the keeper does not hand it back meanwhile.
    pub fn use_lease(&self, name: &str) -> LeaseUse {
        *self.state().in_use.entry(name.to_owned()).or_default() += 1;
        LeaseUse { leases: self.clone(), name: name.to_owned() }
    }

    /// Asks the keeper to look at the endpoints and leases now (an endpoint was added or changed,
    /// or another server handed a lease back).
    pub fn recheck(&self) {
        self.shared.recheck.notify_one();
    }

    /// Waits until work under `name` may start.
    pub async fn until_may_run(&self, name: &str) {
        let mut changes = self.subscribe();
        while !self.may_run(name) {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until work under `name` may no longer start: the lease is being handed over, or was
    /// not renewed in time.
    pub async fn lost(&self, name: &str) {
        let mut changes = self.subscribe();
        loop {
            let good_until = {
                let state = self.state();
                if state.everything {
                    None
                } else if !state.offered.contains(name) {
                    return;
                } else {
                    match state.good_until {
                        Some(until) if Instant::now() < until => Some(until),
                        _ => return,
                    }
                }
            };
            // Renewals move `good_until` without a change being published: at the old time, look
            // again.
            let expiry = async {
                match good_until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { std::future::pending::<()>().await },
                _ = expiry => {}
            }
        }
    }

    /// Hands every lease back once nothing uses it and leaves the cluster; waits for that up to
    /// `limit`. Call it once the dispatcher and the HubSpot sync have stopped.
    pub async fn let_go(&self, limit: Duration) {
        {
            let mut state = self.state();
            if state.everything {
                return;
            }
            state.stopping = true;
            state.offered.clear();
        }
        self.publish();
        self.recheck();
        let mut changes = self.subscribe();
        let _ = tokio::time::timeout(limit, async {
            while !self.state().stopped {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    fn publish(&self) {
        self.shared.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    // --- the keeper's side ---

    /// Waits for a recheck to be asked for, or `period`.
    pub(crate) async fn wait_for_recheck(&self, period: Duration) {
        let _ = tokio::time::timeout(period, self.shared.recheck.notified()).await;
    }

    /// Publishes what the keeper now holds and wants, good until `good_until` if renewed.
    /// Subscribers hear of it when the offered set changes or the leases become good again, not
    /// at every renewal (the dispatcher reads its endpoints again at each).
    pub(crate) fn offer(&self, offered: HashSet<String>, good_until: Option<Instant>) {
        let changed = {
            let mut state = self.state();
            if state.stopping {
                return;
            }
            let was_good = state.good_until.is_some_and(|until| Instant::now() < until);
            let changed = state.offered != offered || (!was_good && good_until.is_some());
            state.offered = offered;
            if good_until.is_some() {
                state.good_until = good_until;
            }
            changed
        };
        if changed {
            self.publish();
        }
    }

    /// Whether anything uses `name` now.
    pub(crate) fn in_use(&self, name: &str) -> bool {
        self.state().in_use.get(name).is_some_and(|n| *n > 0)
    }

    /// Whether the server is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.state().stopping
    }

    /// The keeper has handed everything back.
    pub(crate) fn mark_stopped(&self) {
        self.state().stopped = true;
        self.publish();
    }
}

/// Keeps a lease from being handed back while its work runs; see [`Leases::use_lease`].
#[must_use = "the lease counts as used only while the guard lives"]
pub struct LeaseUse {
    leases: Leases,
    name: String,
}

impl Drop for LeaseUse {
    fn drop(&mut self) {
        let mut state = self.leases.state();
        if let Some(count) = state.in_use.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                state.in_use.remove(&self.name);
            }
        }
        drop(state);
        // A lease waiting to be handed back can go now.
        self.leases.recheck();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_server_may_run_everything() {
        let leases = Leases::everything();
        assert!(leases.may_run("ep_abc1") && leases.may_run(HUBSPOT_LEASE) && leases.holds("anything"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_not_renewed_in_time_stops_work() {
        let leases = Leases::kept();
        assert!(!leases.may_run("ep_a"), "nothing is held before the keeper offers it");
        leases.offer(HashSet::from(["ep_a".to_owned()]), Some(Instant::now() + Duration::from_secs(3)));
        assert!(leases.may_run("ep_a") && !leases.may_run("ep_b"));
        tokio::time::timeout(Duration::from_secs(4), leases.lost("ep_a")).await.expect("lost when the renewal lapses");
        assert!(!leases.may_run("ep_a") && leases.holds("ep_a"));
    }

    #[tokio::test]
    async fn a_lease_handed_over_is_lost_at_once_and_stays_in_use_until_its_guard_goes() {
        let leases = Leases::kept();
        leases.offer(HashSet::from(["ep_a".to_owned()]), Some(Instant::now() + Duration::from_secs(60)));
        let guard = leases.use_lease("ep_a");
        leases.offer(HashSet::new(), None);
        tokio::time::timeout(Duration::from_secs(1), leases.lost("ep_a")).await.expect("lost at once");
        assert!(leases.in_use("ep_a"));
        drop(guard);
        assert!(!leases.in_use("ep_a"));
    }
}
