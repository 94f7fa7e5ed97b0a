//! A per-address limit for the public form: a token bucket per client address, in a bounded map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many addresses are tracked at most; past that, idle ones are forgotten.
const MAX_ADDRESSES: usize = 50_000;

/// Allows `per_minute` requests per address per minute, in bursts of up to `per_minute`.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter of `per_minute` requests per address.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute: f64::from(per_minute), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request's token for `address`; false when it has none left.
    pub fn allow(&self, address: IpAddr) -> bool {
        self.allow_at(address, Instant::now())
    }

    fn allow_at(&self, address: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            // A full bucket is the same as no bucket, so forgetting those loses nothing.
            let refill = Duration::from_secs(60);
            buckets.retain(|_, (_, last)| now.duration_since(*last) < refill);
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let (tokens, last) = buckets.entry(address).or_insert((self.per_minute, now));
        let refilled = now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refilled).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refills_per_address() {
        let limiter = RateLimiter::new(3);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at(a, start)));
        assert!(!limiter.allow_at(a, start));
        assert!(limiter.allow_at(b, start), "another address has its own bucket");
        assert!(limiter.allow_at(a, start + Duration::from_secs(20)), "one token back after a third of a minute");
        assert!(!limiter.allow_at(a, start + Duration::from_secs(20)));
    }
}
