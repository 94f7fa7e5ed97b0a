//! Several servers on one PostgreSQL database deliver together: each endpoint's deliveries are sent
//! by one server at a time, so a webhook goes out once however many servers take the load; servers
//! joining mid-load take their share without a repeat; a server killed mid-load loses its endpoints
//! to the others, and only what it had in flight is sent again, with the same `webhook-id`; a change
//! made on one server is sent at once by the server that holds its endpoint.
//!
//! PostgreSQL only: in the `api` run (the embedded store, one server per data directory) each test
//! says so and does nothing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Receiver, Reply, TestApp, on_postgres};
use crate::pg::TestDatabase;

/// Short leases keep the test quick: a killed server's endpoints move within about this long.
const LEASE_TTL: &str = "2s";
const MAX_IN_FLIGHT: usize = 2;
const CREATES: usize = 240;
const CLIENTS: usize = 6;
/// How long everything acknowledged may take to arrive once the load is over.
const SETTLE: Duration = Duration::from_secs(30);

/// A webhook as a receiver saw it, and when.
#[derive(Debug, Clone)]
struct Receipt {
    at: Instant,
    webhook_id: String,
    email: String,
}

type Log = Arc<Mutex<Vec<Receipt>>>;

/// A receiver that logs each webhook as it arrives and answers after a moment, so that attempts
/// are in flight when a server is killed.
async fn logging_receiver() -> (Receiver, Log) {
    let log: Log = Arc::default();
    let writer = log.clone();
    let receiver = Receiver::answering(move |received| {
        let email = received.json()["data"]["email"].as_str().unwrap_or_default().to_owned();
        let webhook_id = received.header("webhook-id").to_owned();
        writer.lock().unwrap().push(Receipt { at: Instant::now(), webhook_id, email });
        Reply::status(200).with_body("ok").with_delay(Duration::from_millis(20))
    })
    .await;
    (receiver, log)
}

async fn database() -> Option<Arc<TestDatabase>> {
    if !on_postgres() {
        eprintln!("several servers share a database only on PostgreSQL; left out of the SQLite run");
        return None;
    }
    TestDatabase::create().await.map(Arc::new)
}

async fn server(database: &Arc<TestDatabase>, lease_ttl: &str) -> TestApp {
    TestApp::spawn_on_with(database.clone(), &["--lease-ttl", lease_ttl]).await
}

/// Two endpoints of contact.created, each on its own logging receiver.
async fn two_endpoints(app: &TestApp) -> Vec<(Receiver, Log, String)> {
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let (receiver, log) = logging_receiver().await;
        let id = app
            .add_endpoint(json!({
                "url": receiver.url("/hook"),
                "events": ["contact.created"],
                "max_in_flight": MAX_IN_FLIGHT,
            }))
            .await;
        endpoints.push((receiver, log, id));
    }
    endpoints
}

/// Creates contacts round-robin through the servers listed, from several clients at once; answers
/// the emails of the creates acknowledged (201). A server that is gone just refuses.
struct Load {
    servers: Arc<RwLock<Vec<SocketAddr>>>,
    next: Arc<AtomicUsize>,
    acknowledged: Arc<Mutex<HashSet<String>>>,
}

impl Load {
    fn new(first: SocketAddr) -> Load {
        Load { servers: Arc::new(RwLock::new(vec![first])), next: Arc::default(), acknowledged: Arc::default() }
    }

    fn add_server(&self, address: SocketAddr) {
        self.servers.write().unwrap().push(address);
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn run(&self) -> HashSet<String> {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let (client, servers, next, acknowledged) =
                (client.clone(), self.servers.clone(), self.next.clone(), self.acknowledged.clone());
            clients.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= CREATES {
                        return;
                    }
                    let address = {
                        let servers = servers.read().unwrap();
                        servers[n % servers.len()]
                    };
                    let email = format!("c{n}@cluster.test");
                    if create_contact(&client, address, &email).await == Some(StatusCode::CREATED) {
                        acknowledged.lock().unwrap().insert(email);
                    }
                }
            });
        }
        while clients.join_next().await.is_some() {}
        self.acknowledged.lock().unwrap().clone()
    }
}

/// The answer's status; `None` when no answer came (the server is gone, or was killed meanwhile).
async fn create_contact(
    client: &Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
    email: &str,
) -> Option<StatusCode> {
    let body = serde_json::to_vec(&json!({"first_name": "Cluster", "email": email})).unwrap();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{address}/api/v1/contacts"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Ok(Ok(response)) => Some(response.status()),
        _ => None,
    }
}

/// Waits until every acknowledged email reached the log; fails naming what is missing.
async fn wait_for_all(log: &Log, acknowledged: &HashSet<String>, endpoint: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let missing: Vec<String> = {
            let log = log.lock().unwrap();
            let got: HashSet<&str> = log.iter().map(|r| r.email.as_str()).collect();
            acknowledged.iter().filter(|e| !got.contains(e.as_str())).cloned().collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint}: {} acknowledged creates never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The copies after the first of each webhook; fails if two copies of one change carry different
/// webhook-ids (that would be two deliveries of one event, not a repeat).
fn repeats(log: &[Receipt], endpoint: &str) -> Vec<(Receipt, Receipt)> {
    let mut first: HashMap<&str, &Receipt> = HashMap::new();
    let mut repeated = Vec::new();
    for receipt in log {
        match first.get(receipt.email.as_str()) {
            None => {
                first.insert(&receipt.email, receipt);
            }
            Some(earlier) => {
                assert_eq!(
                    earlier.webhook_id, receipt.webhook_id,
                    "{endpoint}: {} arrived as two different webhooks",
                    receipt.email
                );
                repeated.push(((*earlier).clone(), receipt.clone()));
            }
        }
    }
    repeated
}

/// Which server (by start order) holds the lease named `name`, once one does.
async fn holder_of(database: &TestDatabase, name: &str) -> usize {
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .query(
                "SELECT (SELECT count(*) FROM cluster_servers s WHERE s.started_at < mine.started_at)
                 FROM leases JOIN cluster_servers mine ON mine.id = leases.holder
                 WHERE leases.name = $1 AND leases.expires_at > now()",
                &[&name],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            return usize::try_from(row.get::<_, i64>(0)).unwrap();
        }
        assert!(Instant::now() < deadline, "nobody took the lease of {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn servers_joining_mid_load_take_their_share_without_a_repeat() {
    let Some(database) = database().await else { return };
    let first = server(&database, LEASE_TTL).await;
    let endpoints = two_endpoints(&first).await;
    let load = Arc::new(Load::new(first.address));
    let running = tokio::spawn({
        let load = load.clone();
        async move { load.run().await }
    });
    // Two more servers join while the first delivers everything: it hands them their endpoints.
    let mut joined = Vec::new();
    for share in [CREATES / 4, CREATES / 2] {
        while load.acknowledged() < share {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let server = server(&database, LEASE_TTL).await;
        load.add_server(server.address);
        joined.push(server);
    }
    let acknowledged = running.await.unwrap();
    assert_eq!(acknowledged.len(), CREATES, "with no server stopped, every create is acknowledged");

    for (_receiver, log, id) in &endpoints {
        wait_for_all(log, &acknowledged, id).await;
    }
    // Anything sent twice would arrive within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_receiver, log, id) in &endpoints {
        let log = log.lock().unwrap();
        let repeated = repeats(&log, id);
        assert!(repeated.is_empty(), "{id}: no server died, yet {} webhooks came twice: {repeated:?}", repeated.len());
        assert_eq!(log.len(), CREATES, "{id}: every change once");
    }
}

#[tokio::test]
async fn a_server_killed_mid_load_loses_its_endpoints_and_repeats_only_what_it_had_in_flight() {
    let Some(database) = database().await else { return };
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(server(&database, LEASE_TTL).await);
    }
    let endpoints = two_endpoints(&servers[0]).await;
    // The server to kill holds the first endpoint, so the kill interrupts its deliveries.
    let victim = holder_of(&database, &endpoints[0].2).await;
    let load = Arc::new(Load::new(servers[0].address));
    for server in &servers[1..] {
        load.add_server(server.address);
    }
    let running = tokio::spawn({
        let load = load.clone();
        async move { load.run().await }
    });
    while load.acknowledged() < CREATES / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kill_started = Instant::now();
    servers[victim].kill();
    // A request the killed server wrote before it died may be read just after.
    let killed = Instant::now() + Duration::from_millis(50);
    let acknowledged = running.await.unwrap();
    assert!(acknowledged.len() >= CREATES / 3, "the load went on");

    for (_receiver, log, id) in &endpoints {
        wait_for_all(log, &acknowledged, id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut total_repeats = 0;
    for (_receiver, log, id) in &endpoints {
        let log = log.lock().unwrap();
        let repeated = repeats(&log, id);
        for (first, again) in &repeated {
            assert!(
                first.at < killed && again.at > kill_started,
                "{id}: {} came twice, not across the kill (first {:?}, again {:?} after the kill began)",
                first.email,
                kill_started.checked_duration_since(first.at),
                again.at.checked_duration_since(kill_started)
            );
        }
        // In flight on the killed server: on a shared database an attempt counts against
        // `max_in_flight` until its outcome is committed.
        assert!(
            repeated.len() <= MAX_IN_FLIGHT,
            "{id}: {} repeats, more than the killed server can have had in flight: {repeated:?}",
            repeated.len()
        );
        total_repeats += repeated.len();
    }
    eprintln!(
        "cluster kill: {} of {CREATES} creates acknowledged, {total_repeats} repeats over both endpoints",
        acknowledged.len()
    );
}

#[tokio::test]
async fn a_change_made_on_one_server_is_sent_at_once_by_the_one_holding_the_endpoint() {
    let Some(database) = database().await else { return };
    // Leases renewed every 10 s: a change that waited for the holder's next look would be late.
    let servers = [server(&database, "30s").await, server(&database, "30s").await];
    let (mut receiver, _log) = logging_receiver().await;
    let id = servers[0].add_endpoint(json!({"url": receiver.url("/hook"), "events": ["contact.created"]})).await;
    let holder = holder_of(&database, &id).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // Through the server without the endpoint first: only its NOTIFY can wake the holder.
    for (n, through) in [1 - holder, holder].into_iter().enumerate() {
        let email = format!("prompt{n}@cluster.test");
        let sent = Instant::now();
        let status = create_contact(&client, servers[through].address, &email).await;
        assert_eq!(status, Some(StatusCode::CREATED));
        let received = receiver.next().await;
        let took = sent.elapsed();
        assert_eq!(received.json()["data"]["email"], email.as_str());
        assert!(
            took < Duration::from_secs(3),
            "a change through server {through} (the holder is {holder}) took {took:?}, as long as a lease renewal"
        );
    }
}
