//! The request budget: at most `limit` requests in any window of `window`.
//!
//! HubSpot counts a private app's requests per rolling 10 seconds. A token bucket refilling at
//! `limit / window` lets a full bucket plus a window's refill through within one window (up to
//! twice the limit), so the budget is kept as the send times of the last `limit` requests instead:
//! a request waits until the oldest of them is a window (plus a margin for the trip) old. A new
//! process does not know what the previous one sent just before it stopped, so it starts as if
//! the whole budget had just been spent.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Slack for the time between our clock and HubSpot's count of a request.
const MARGIN: Duration = Duration::from_millis(100);

/// A rolling-window request budget.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
    /// HubSpot asked us to wait (a 429) until then.
    hold_until: Option<Instant>,
}

impl Budget {
    /// A budget that starts spent (see the module documentation).
    pub(crate) fn new(limit: u32, window: Duration) -> Budget {
        let limit = usize::try_from(limit.max(1)).unwrap_or(1);
        let now = Instant::now();
        Budget { limit, window, sent: std::iter::repeat_n(now, limit).collect(), hold_until: None }
    }

    /// Whether this budget was made with these numbers.
    pub(crate) fn is(&self, limit: u32, window: Duration) -> bool {
        usize::try_from(limit.max(1)).ok() == Some(self.limit) && self.window == window
    }

    /// When the next request may go.
    fn next_slot(&self, now: Instant) -> Instant {
        let by_window = if self.sent.len() >= self.limit {
            self.sent[self.sent.len() - self.limit] + self.window + MARGIN
        } else {
            now
        };
        by_window.max(self.hold_until.unwrap_or(now)).max(now)
    }

    /// Waits for a slot and takes it.
    pub(crate) async fn acquire(&mut self) {
        let slot = self.next_slot(Instant::now());
        tokio::time::sleep_until(slot).await;
        self.sent.push_back(Instant::now());
        while self.sent.len() > self.limit {
            self.sent.pop_front();
        }
    }

    /// Holds every request back for `delay` (HubSpot's `Retry-After`).
    pub(crate) fn hold(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        self.hold_until = Some(self.hold_until.map_or(until, |current| current.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_window() {
        let window = Duration::from_secs(10);
        let mut budget = Budget::new(5, window);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..23 {
            budget.acquire().await;
            times.push(Instant::now());
        }
        assert!(times[0] >= start + window, "a new budget starts spent");
        for (i, t) in times.iter().enumerate().skip(5) {
            assert!(*t >= times[i - 5] + window, "request {i} came within a window of the 5th before it");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_the_next_request() {
        let mut budget = Budget::new(100, Duration::from_millis(10));
        budget.acquire().await;
        budget.hold(Duration::from_secs(3));
        let before = Instant::now();
        budget.acquire().await;
        assert!(Instant::now() >= before + Duration::from_secs(3));
    }
}
