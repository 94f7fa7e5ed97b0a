//! The fast receiver every figure is measured at: a hyper server that answers 200 with an empty
//! body and counts what it gets, by endpoint.
//!
//! Endpoints are told apart by path, `/hook/N` being slot N. Counting is a pair of atomics per
//! slot, so that the receiver costs the same per request whoever posts to it: the bare client of
//! part 1 and the server of parts 2 to 6 meet the same limit. Only while part 4 records does it
//! parse bodies, to note when each event arrived, and only while part 13 tracks them does it keep
//! the `webhook-id`s it has seen, to tell deliveries from repeats.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How many endpoints one receiver tells apart; `/hook/N` with N outside this lands in no slot.
pub const SLOTS: usize = 24;

/// The largest webhook body read; the server's are about 500 bytes.
const MAX_BODY: usize = 1 << 20;

/// How long a stalled request waits to be released before answering anyway, so that a
/// forgotten stall cannot keep a connection forever.
const MAX_STALL: Duration = Duration::from_secs(300);

/// How often a waiter looks at the counters. Receipt times are taken by the handler itself, so
/// this only bounds how late the waiter notices, not what it measures.
const POLL: Duration = Duration::from_millis(5);

/// A running receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _stop: watch::Sender<()>,
}

impl Receiver {
    /// Binds `addr` (port 0 picks one) and starts answering.
    pub async fn start(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the receiver to {addr}"))?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::new());
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept_until_stopped(listener, Arc::clone(&stats), stopped));
        Ok(Self { addr, stats, _stop: stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL that delivers into `slot`.
    pub fn hook_url(&self, slot: usize) -> String {
        format!("http://{}/hook/{slot}", self.addr)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Accepts connections until the receiver is dropped; dropping the set then closes every
/// connection still open, stalled ones included.
async fn accept_until_stopped(listener: TcpListener, stats: Arc<Stats>, mut stopped: watch::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&stats)));
                }
                // Out of file descriptors, most likely: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, stats: Arc<Stats>) {
    // Answers are tiny; without this, Nagle's algorithm could hold them back.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| answer(Arc::clone(&stats), request));
    // A client closing its connection mid-request is its business, not a bench failure.
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

async fn answer(stats: Arc<Stats>, request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let slot = slot_of(request.uri().path());
    let request_id = request.headers().get("webhook-id").cloned();
    let Ok(body) = Limited::new(request.into_body(), MAX_BODY).collect().await else {
        return Ok(status_only(StatusCode::BAD_REQUEST));
    };
    if let Some(slot) = slot {
        stats.wait_while_stalled(slot).await;
        if stats.tracking_ids.load(Ordering::Acquire) {
            let id = request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or_default();
            stats.record_id(slot, id);
        }
        stats.record(slot, &body.to_bytes());
    }
    Ok(status_only(StatusCode::OK))
}

fn status_only(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

/// `/hook/N` gives slot N.
fn slot_of(path: &str) -> Option<usize> {
    let slot: usize = path.strip_prefix("/hook/")?.parse().ok()?;
    (slot < SLOTS).then_some(slot)
}

/// When the receipts of one event arrived, across endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Arrivals {
    pub count: u32,
    pub last: Instant,
}

/// A delivery fell short of what a waiter expected by its deadline.
#[derive(Debug, Clone, Copy)]
pub struct Shortfall {
    /// How many of the expected deliveries did arrive.
    pub received: u64,
}

/// What the receiver has seen, per slot.
pub struct Stats {
    epoch: Instant,
    received: [AtomicU64; SLOTS],
    /// Nanoseconds after `epoch` of the latest receipt.
    last_receipt_ns: [AtomicU64; SLOTS],
    stalled: [AtomicBool; SLOTS],
    /// Bumped whenever a stall is lifted, to wake the requests held by it.
    unstalled: watch::Sender<u64>,
    recording: AtomicBool,
    arrivals: Mutex<HashMap<String, Arrivals>>,
    tracking_ids: AtomicBool,
    /// While `tracking_ids`: the webhook-ids each slot has received, how many differ, and when the
    /// latest new one came (nanoseconds after `epoch`).
    ids: Mutex<HashMap<usize, HashSet<String>>>,
    unique: [AtomicU64; SLOTS],
    last_unique_ns: [AtomicU64; SLOTS],
}

/// What a slot received while ids were tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdCounts {
    /// Distinct webhook-ids.
    pub unique: u64,
    /// Receipts of a webhook-id already received (the same delivery sent again).
    pub repeats: u64,
}

/// Counts per slot at one moment, to measure what arrives after it.
pub type Snapshot = [u64; SLOTS];

impl Stats {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            received: Default::default(),
            last_receipt_ns: Default::default(),
            stalled: Default::default(),
            unstalled: watch::channel(0).0,
            recording: AtomicBool::new(false),
            arrivals: Mutex::new(HashMap::new()),
            tracking_ids: AtomicBool::new(false),
            ids: Mutex::new(HashMap::new()),
            unique: Default::default(),
            last_unique_ns: Default::default(),
        }
    }

    /// Notes `id` as received at `slot`; a new one counts as unique. Runs before [`Stats::record`]
    /// so that a waiter who sees every receipt counted also sees every id.
    fn record_id(&self, slot: usize, id: &str) {
        let mut ids = self.ids.lock().expect("ids lock poisoned");
        if ids.entry(slot).or_default().insert(id.to_owned()) {
            let now_ns = self.epoch.elapsed().as_nanos() as u64;
            self.last_unique_ns[slot].fetch_max(now_ns, Ordering::AcqRel);
            self.unique[slot].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// From now on, keeps every webhook-id received (counts start at zero), until
    /// [`Stats::stop_tracking_ids`]. Answers the receipt counts at this moment, for
    /// [`Stats::id_counts`].
    pub fn start_tracking_ids(&self) -> Snapshot {
        self.ids.lock().expect("ids lock poisoned").clear();
        for slot in 0..SLOTS {
            self.unique[slot].store(0, Ordering::Release);
            self.last_unique_ns[slot].store(0, Ordering::Release);
        }
        self.tracking_ids.store(true, Ordering::Release);
        self.snapshot()
    }

    /// Forgets the ids (their memory is only needed while a part counts them).
    pub fn stop_tracking_ids(&self) {
        self.tracking_ids.store(false, Ordering::Release);
        self.ids.lock().expect("ids lock poisoned").clear();
    }

    /// Unique ids and repeats received at `slot` since tracking began at `since`.
    pub fn id_counts(&self, slot: usize, since: &Snapshot) -> IdCounts {
        let unique = self.unique[slot].load(Ordering::Acquire);
        let received = self.snapshot()[slot] - since[slot];
        IdCounts { unique, repeats: received.saturating_sub(unique) }
    }

    /// Waits until each of `slots` has received `per_slot` distinct webhook-ids while tracking, and
    /// answers when the last new one came; or, at `deadline`, how many did.
    pub async fn wait_for_unique(
        &self,
        slots: &[usize],
        per_slot: u64,
        deadline: Instant,
    ) -> Result<Instant, Shortfall> {
        loop {
            let received: u64 = slots.iter().map(|&slot| self.unique[slot].load(Ordering::Acquire).min(per_slot)).sum();
            if received == per_slot * slots.len() as u64 {
                let ns = slots.iter().map(|&slot| self.last_unique_ns[slot].load(Ordering::Acquire)).max();
                return Ok(self.epoch + Duration::from_nanos(ns.unwrap_or(0)));
            }
            if Instant::now() >= deadline {
                return Err(Shortfall { received });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn record(&self, slot: usize, body: &[u8]) {
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        if self.recording.load(Ordering::Relaxed) {
            self.record_arrival(body, now_ns);
        }
        // The time goes in before the count, so that whoever sees the count also sees the time.
        self.last_receipt_ns[slot].fetch_max(now_ns, Ordering::AcqRel);
        self.received[slot].fetch_add(1, Ordering::AcqRel);
    }

    fn record_arrival(&self, body: &[u8], now_ns: u64) {
        let Ok(delivered) = serde_json::from_slice::<Delivered>(body) else {
            return;
        };
        let now = self.epoch + Duration::from_nanos(now_ns);
        let mut arrivals = self.arrivals.lock().expect("arrivals lock poisoned");
        let entry = arrivals.entry(id_key(&delivered.data.id)).or_insert(Arrivals { count: 0, last: now });
        entry.count += 1;
        entry.last = entry.last.max(now);
    }

    pub fn snapshot(&self) -> Snapshot {
        std::array::from_fn(|slot| self.received[slot].load(Ordering::Acquire))
    }

    /// The latest receipt in any of `slots`.
    pub fn last_receipt(&self, slots: &[usize]) -> Instant {
        let ns = slots.iter().map(|&slot| self.last_receipt_ns[slot].load(Ordering::Acquire)).max().unwrap_or(0);
        self.epoch + Duration::from_nanos(ns)
    }

    /// Waits until each of `slots` has received `per_slot` more than at `since`, and answers
    /// the time of the last receipt; or, at `deadline`, how many did arrive.
    pub async fn wait_for(
        &self,
        slots: &[usize],
        since: &Snapshot,
        per_slot: u64,
        deadline: Instant,
    ) -> Result<Instant, Shortfall> {
        loop {
            let now = self.snapshot();
            let received: u64 = slots.iter().map(|&slot| (now[slot] - since[slot]).min(per_slot)).sum();
            if received == per_slot * slots.len() as u64 {
                return Ok(self.last_receipt(slots));
            }
            if Instant::now() >= deadline {
                return Err(Shortfall { received });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Holds every request to `slot` unanswered until [`Stats::release`]: an endpoint that
    /// accepts connections and never answers.
    pub fn stall(&self, slot: usize) {
        self.stalled[slot].store(true, Ordering::Release);
    }

    /// Answers the requests held by [`Stats::stall`], and those to come.
    pub fn release(&self, slot: usize) {
        self.stalled[slot].store(false, Ordering::Release);
        self.unstalled.send_modify(|generation| *generation += 1);
    }

    async fn wait_while_stalled(&self, slot: usize) {
        if !self.stalled[slot].load(Ordering::Acquire) {
            return;
        }
        let mut unstalled = self.unstalled.subscribe();
        // wait_for checks before it sleeps, so a release between the two checks is not missed.
        let released = unstalled.wait_for(|_| !self.stalled[slot].load(Ordering::Acquire));
        let _ = tokio::time::timeout(MAX_STALL, released).await;
    }

    /// From now on, notes when each event (by its `data.id`) arrives.
    pub fn start_recording(&self) {
        self.arrivals.lock().expect("arrivals lock poisoned").clear();
        self.recording.store(true, Ordering::Release);
    }

    /// The arrivals of the events named by `ids`, as far as they have come.
    pub fn arrivals_of(&self, ids: &[String]) -> Vec<Option<Arrivals>> {
        let arrivals = self.arrivals.lock().expect("arrivals lock poisoned");
        ids.iter().map(|id| arrivals.get(id).copied()).collect()
    }

    pub fn stop_recording(&self) {
        self.recording.store(false, Ordering::Release);
        self.arrivals.lock().expect("arrivals lock poisoned").clear();
    }
}

/// The one field of a webhook body the latency part needs.
#[derive(Deserialize)]
struct Delivered {
    data: DeliveredData,
}

#[derive(Deserialize)]
struct DeliveredData {
    id: serde_json::Value,
}

/// Ids are opaque: a string is taken as it is, anything else by its JSON text, the same way for
/// the API's answers and the webhooks' bodies.
pub fn id_key(id: &serde_json::Value) -> String {
    match id {
        serde_json::Value::String(id) => id.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_slot(path: &str, expected: Option<usize>) {
        assert_eq!(slot_of(path), expected, "{path}");
    }

    #[test]
    fn paths_name_slots() {
        check_slot("/hook/0", Some(0));
        check_slot("/hook/7", Some(7));
        check_slot("/hook/23", Some(23));
        check_slot("/hook/24", None);
        check_slot("/hook/", None);
        check_slot("/hook/1/x", None);
        check_slot("/other/1", None);
    }

    #[test]
    fn ids_are_keyed_alike_whatever_their_json_type() {
        assert_eq!(id_key(&serde_json::json!("c_1")), "c_1");
        assert_eq!(id_key(&serde_json::json!(17)), "17");
    }

    #[tokio::test]
    async fn a_stalled_slot_answers_once_released() {
        let stats = Arc::new(Stats::new());
        stats.stall(5);
        let held = tokio::spawn({
            let stats = Arc::clone(&stats);
            async move {
                stats.wait_while_stalled(5).await;
                stats.record(5, b"{}");
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(stats.snapshot()[5], 0);
        stats.release(5);
        tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap();
        assert_eq!(stats.snapshot()[5], 1);
    }

    #[tokio::test]
    async fn waiting_reports_the_shortfall_at_the_deadline() {
        let stats = Stats::new();
        let since = stats.snapshot();
        stats.record(1, b"{}");
        let now = Instant::now();
        let shortfall = stats.wait_for(&[1, 2], &since, 1, now).await.unwrap_err();
        assert_eq!(shortfall.received, 1);
        stats.record(2, b"{}");
        assert!(stats.wait_for(&[1, 2], &since, 1, now).await.is_ok());
    }

    #[test]
    fn arrivals_count_every_endpoint_and_keep_the_last() {
        let stats = Stats::new();
        stats.start_recording();
        stats.record(1, br#"{"event":"contact.created","data":{"id":"a","x":{"id":"b"}}}"#);
        stats.record(2, br#"{"event":"contact.created","data":{"id":"a"}}"#);
        stats.record(2, b"not json");
        let arrivals = stats.arrivals_of(&["a".into(), "b".into()]);
        assert_eq!(arrivals[0].map(|arrived| arrived.count), Some(2));
        assert!(arrivals[1].is_none());
        assert_eq!(stats.snapshot()[1..3], [1, 2]);
    }

    #[tokio::test]
    async fn tracked_ids_tell_deliveries_from_repeats() {
        let stats = Stats::new();
        stats.record(3, b"{}");
        let since = stats.start_tracking_ids();
        for id in ["msg_a", "msg_b", "msg_a"] {
            stats.record_id(3, id);
            stats.record(3, b"{}");
        }
        // The same id at another slot is that endpoint's own delivery.
        stats.record_id(4, "msg_a");
        stats.record(4, b"{}");
        assert_eq!(stats.id_counts(3, &since), IdCounts { unique: 2, repeats: 1 });
        assert_eq!(stats.id_counts(4, &since), IdCounts { unique: 1, repeats: 0 });
        let now = Instant::now();
        assert_eq!(stats.wait_for_unique(&[3, 4], 2, now).await.unwrap_err().received, 3);
        assert!(stats.wait_for_unique(&[3, 4], 1, now).await.is_ok());
        stats.stop_tracking_ids();
        assert_eq!(stats.start_tracking_ids()[3], 4);
        assert_eq!(stats.id_counts(3, &stats.snapshot()).unique, 0);
    }
}
