//! Sign-in throttling: failures are counted per address and per account, and after a few of them
//! each further try must wait, twice as long after each failure, up to a cap. The maps are bounded:
//! when one is full, the entry quiet for longest makes room.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before any wait.
pub const FREE_FAILURES: u32 = 5;
/// The wait after the first failure beyond the free ones; it doubles with each further failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(2);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// A key with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// How many addresses and how many accounts are tracked at most (each).
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// When the next try is allowed.
    fn allowed_at(&self) -> Instant {
        if self.count < FREE_FAILURES {
            return self.last;
        }
        let doublings = (self.count - FREE_FAILURES).min(16);
        self.last + FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
    }
}

#[derive(Debug)]
struct Tracker<K> {
    entries: Mutex<HashMap<K, Failures>>,
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new() -> Self {
        Tracker { entries: Mutex::new(HashMap::new()) }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries.get(key)?.allowed_at();
        (at > now).then(|| at - now)
    }

    fn fail(&self, key: K, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= MAX_TRACKED {
            entries.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if entries.len() >= MAX_TRACKED
                && let Some(oldest) = entries.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(key).or_insert(Failures { count: 0, last: now });
        if now.saturating_duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    fn clear(&self, key: &K) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    fn tracks(&self, key: &K) -> bool {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }
}

/// Failed sign-ins per address and per account.
#[derive(Debug)]
pub struct Throttle {
    addresses: Tracker<IpAddr>,
    accounts: Tracker<String>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { addresses: Tracker::new(), accounts: Tracker::new() }
    }
}

impl Throttle {
    /// How long this address or this account must still wait before trying again, if at all.
    pub fn wait(&self, address: IpAddr, account: &str, now: Instant) -> Option<Duration> {
        let account = account.trim().to_lowercase();
        match (self.addresses.wait(&address, now), self.accounts.wait(&account, now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts a failed sign-in.
    pub fn failed(&self, address: IpAddr, account: &str, now: Instant) {
        self.addresses.fail(address, now);
        self.accounts.fail(account.trim().to_lowercase(), now);
    }

    /// How long this account must still wait (for checks of a signed-in user's current password,
    /// where the account is what is guessed at).
    pub fn account_wait(&self, account: &str, now: Instant) -> Option<Duration> {
        self.accounts.wait(&account.trim().to_lowercase(), now)
    }

    /// Counts a wrong current password against the account alone.
    pub fn account_failed(&self, account: &str, now: Instant) {
        self.accounts.fail(account.trim().to_lowercase(), now);
    }

    /// Forgets the failures of an account and an address after a successful sign-in.
    pub fn succeeded(&self, address: IpAddr, account: &str) {
        self.addresses.clear(&address);
        self.accounts.clear(&account.trim().to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_few_failures_are_free_then_the_wait_doubles_up_to_the_cap() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(HOME, "ann@example.com", now);
        }
        assert_eq!(throttle.wait(HOME, "ann@example.com", now), None);
        throttle.failed(HOME, "ann@example.com", now);
        assert_eq!(throttle.wait(HOME, "ann@example.com", now), Some(FIRST_WAIT));
        throttle.failed(HOME, "ann@example.com", now);
        assert_eq!(throttle.wait(HOME, "ann@example.com", now), Some(FIRST_WAIT * 2));
        for _ in 0..40 {
            throttle.failed(HOME, "ann@example.com", now);
        }
        assert_eq!(throttle.wait(HOME, "ann@example.com", now), Some(MAX_WAIT));
        assert_eq!(throttle.wait(HOME, "ann@example.com", now + MAX_WAIT), None, "the wait ends");
    }

    #[test]
    fn an_account_is_slowed_from_any_address_and_an_address_for_any_account() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            throttle.failed(HOME, "Ann@Example.com", now);
        }
        assert!(throttle.wait(AWAY, "ann@example.com", now).is_some(), "same account elsewhere");
        assert!(throttle.wait(HOME, "bob@example.com", now).is_some(), "same address, other account");
        assert_eq!(throttle.wait(AWAY, "bob@example.com", now), None);
        throttle.succeeded(HOME, "ann@example.com");
        assert_eq!(throttle.wait(AWAY, "ann@example.com", now), None);
        for _ in 0..FREE_FAILURES {
            throttle.account_failed("carol@example.com", now);
        }
        assert!(throttle.account_wait("carol@example.com", now).is_some());
        assert_eq!(throttle.wait(AWAY, "dave@example.com", now), None, "no address is blamed");
    }

    #[test]
    fn the_maps_stay_bounded() {
        let tracker = Tracker::<u32>::new();
        let now = Instant::now();
        for key in 0..(MAX_TRACKED as u32 + 50) {
            tracker.fail(key, now + Duration::from_millis(u64::from(key)));
        }
        assert_eq!(tracker.len(), MAX_TRACKED);
        assert!(!tracker.tracks(&0) && tracker.tracks(&(MAX_TRACKED as u32 + 49)), "the oldest made room");
    }
}
