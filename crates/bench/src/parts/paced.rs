//! Load at a steady rate, for the parts that measure latency under it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::stats::per_second;

/// What a paced load gave: each call's result, and how many ticks found no room.
pub struct Paced<T> {
    pub results: Vec<T>,
    pub skipped: u64,
    /// Calls started per second, over the time spent starting them.
    pub achieved_per_s: f64,
}

/// Starts `call(i)` at `rate_per_s`, open loop, until `count` ticks have passed or `stop`
/// answers true, then waits for the calls in flight.
///
/// Open loop means a slow answer does not delay the next call, so a stall shows in the
/// latencies instead of hiding in fewer samples. At most `max_in_flight` calls run at once; a
/// tick that finds none free is skipped and counted, which keeps the bench itself bounded.
pub async fn paced<F, Fut, T>(
    rate_per_s: u64,
    count: u64,
    max_in_flight: usize,
    stop: impl Fn() -> bool,
    mut call: F,
) -> Paced<T>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_s as f64));
    // A late tick is made up for at once, so the average rate holds.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = JoinSet::new();
    let mut skipped = 0;
    let mut started = 0;
    let sending = Instant::now();
    for i in 0..count {
        ticks.tick().await;
        if stop() {
            break;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        started += 1;
        let pending = call(i);
        calls.spawn(async move {
            let result = pending.await;
            drop(slot);
            result
        });
    }
    let achieved_per_s = per_second(started, sending.elapsed());
    let mut results = Vec::with_capacity(calls.len());
    while let Some(joined) = calls.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    Paced { results, skipped, achieved_per_s }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Time is paused in these tests and moves on only when every task waits, so a tick is never
    // late because the machine is busy: what they check is the pacing's logic, not its timing.

    #[tokio::test(start_paused = true)]
    async fn every_tick_starts_one_call() {
        let load = paced(1_000, 20, 4, || false, |i| async move { i }).await;
        let mut results = load.results;
        results.sort_unstable();
        assert_eq!(results, (0..20).collect::<Vec<u64>>());
        assert_eq!(load.skipped, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_starts_no_more_calls() {
        let load = paced(1_000, 1_000, 4, || true, |i| async move { i }).await;
        assert!(load.results.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_without_room_are_skipped() {
        // One slot and calls that outlast every tick: only the first call starts.
        let load = paced(
            1_000,
            5,
            1,
            || false,
            |i| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                i
            },
        )
        .await;
        assert_eq!(load.results, [0]);
        assert_eq!(load.skipped, 4);
    }
}
