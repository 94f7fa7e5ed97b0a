//! How much each part does: the numbers, or small ones for `--quick`.

use std::time::Duration;

/// The counts, windows and deadlines of one run.
///
/// Every wait in the bench takes its bound from here, so that a quick run stays under a minute
/// and a full run cannot hang however slow the server is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// Part 1: how long the bare client posts, and over how many connections.
    pub raw_window: Duration,
    pub raw_connections: usize,
    /// Part 2: contacts created through the bulk API; each fires one delivery per endpoint.
    pub throughput_contacts: u64,
    /// Part 3: single creates (window, concurrency) and the rows sent through the bulk API.
    pub single_window: Duration,
    pub single_concurrency: usize,
    pub bulk_rows: u64,
    /// Part 4: the steady event rate and for how long it is kept up.
    pub latency_rate_per_s: u64,
    pub latency_window: Duration,
    /// Part 5: contacts created in each of the two phases (without, then with the dead endpoint).
    pub isolation_contacts: u64,
    /// Part 6: deliveries left pending while the endpoint is down, and the API probe rate.
    pub backlog_deliveries: u64,
    pub probe_rate_per_s: u64,
    /// Part 8: deliveries in the log when the pages are timed, and the requests per page
    /// before (warm-up) and while timing.
    pub ui_deliveries: u64,
    pub ui_warmup: usize,
    pub ui_requests: usize,
    /// Part 8: requests of the endpoints page timed with its shared counts expired.
    pub ui_cold_requests: usize,
    /// Part 9: small writes, each fsynced, timed in the data directory's filesystem.
    pub fsync_probes: usize,
    /// Part 10: how long each paced phase (200/s, then 1,000/s) lasts, and how many times the
    /// 1,000/s phase runs, to see how much its tail moves from run to run.
    pub paced_window: Duration,
    pub paced_runs: usize,
    /// Part 11: single creates with five endpoints subscribed, and how many are sent at once.
    pub fanout_creates: u64,
    pub fanout_concurrency: usize,
    /// Part 13: single creates spread over 1, 2 and then 3 servers on one database, six endpoints
    /// subscribed (sent by `fanout_concurrency` clients).
    pub cluster_creates: u64,
    /// The most rows in one bulk request (the API's own limit).
    pub bulk_batch_rows: u64,
    /// How long the receiver may take to get every expected delivery, in parts 2 to 5.
    pub delivery_deadline: Duration,
    /// How long the backlog may take to drain once its endpoint is up again.
    pub drain_deadline: Duration,
    /// How long creating the backlog's contacts may take in all.
    pub backlog_create_deadline: Duration,
}

impl Plan {
    /// The numbers.
    pub fn full() -> Self {
        Self {
            quick: false,
            raw_window: Duration::from_secs(5),
            raw_connections: 64,
            throughput_contacts: 50_000,
            single_window: Duration::from_secs(5),
            single_concurrency: 32,
            bulk_rows: 100_000,
            latency_rate_per_s: 1_000,
            latency_window: Duration::from_secs(10),
            isolation_contacts: 20_000,
            backlog_deliveries: 1_000_000,
            probe_rate_per_s: 50,
            ui_deliveries: 1_000_000,
            ui_warmup: 20,
            ui_requests: 200,
            ui_cold_requests: 10,
            fsync_probes: 1_000,
            paced_window: Duration::from_secs(10),
            paced_runs: 5,
            fanout_creates: 5_000,
            cluster_creates: 5_000,
            fanout_concurrency: 16,
            bulk_batch_rows: 10_000,
            delivery_deadline: Duration::from_secs(180),
            drain_deadline: Duration::from_secs(300),
            backlog_create_deadline: Duration::from_secs(600),
        }
    }

    /// Small counts that prove every part works, in under a minute even against a debug build.
    pub fn quick() -> Self {
        Self {
            quick: true,
            raw_window: Duration::from_secs(1),
            throughput_contacts: 2_000,
            single_window: Duration::from_secs(1),
            bulk_rows: 4_000,
            latency_window: Duration::from_secs(1),
            isolation_contacts: 1_000,
            backlog_deliveries: 20_000,
            ui_deliveries: 4_000,
            ui_warmup: 3,
            ui_requests: 20,
            ui_cold_requests: 2,
            fsync_probes: 200,
            paced_window: Duration::from_secs(1),
            paced_runs: 2,
            fanout_creates: 500,
            cluster_creates: 500,
            delivery_deadline: Duration::from_secs(15),
            drain_deadline: Duration::from_secs(15),
            backlog_create_deadline: Duration::from_secs(15),
            ..Self::full()
        }
    }
}
