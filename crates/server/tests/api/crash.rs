//! Crash safety: a steady load of changes while the server is killed with SIGKILL at random moments
//! and restarted on the same data directory; then proof that nothing acknowledged was lost, nothing
//! uncommitted was sent, a repeated delivery kept its webhook-id, and the database is sound.
//!
//! The suite runs a short version (10 kills, well under 20 s). The soak is the same test with more
//! kills, set by `ESTATE_CRM_SOAK_KILLS`; it prints one summary line (kills, requests, rows, events,
//! webhooks received, duplicates):
//!
//! ```text
//! ESTATE_CRM_SOAK_KILLS=100 cargo test --release -p estate-crm --test api crash:: -- --nocapture
//! ```
//!
//! What it proves, per endpoint: every acknowledged change's webhooks arrived; every webhook is an event
//! of the event log (through its delivery), sent with that event's bytes; every event in the log comes
//! from a request that was acknowledged or cut off, never from a refused one, and a cut-off change is
//! all there or not at all; each event has one delivery and one webhook-id, however many copies
//! arrived; a copy is repeated only across a crash, never within one server life (and no delivery has
//! a second recorded attempt); every delivery succeeded; `PRAGMA integrity_check` says `ok`.
//!
//! Each change carries a unique tag (a contact's email, a note, a deal's title), so every event and
//! every webhook names the request that caused it. A request's fate is what its client saw: a 2xx
//! (committed), no answer (the kill cut it off: committed or not, nobody knows) or any other answer
//! (nothing applied). The load runs in rounds: start it, wait a random moment, kill and restart the
//! server mid-load, let the round's tasks notice, and start the next round on the new address.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Receiver, Reply, TestApp};

/// Kills in the suite's short version.
const DEFAULT_KILLS: usize = 10;
/// Short delays, so that deliveries interrupted by kills get through soon after.
const SCHEDULE: &str = "100ms,100ms,200ms,500ms,1s,1s,2s,2s";
const BULK_CREATES: usize = 50;
const BULK_UPDATES: usize = 20;
/// A request with no answer after this long is counted as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many problems a failure message lists.
const SHOWN: usize = 25;

/// What the client saw of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// A 2xx: the change is committed.
    Acknowledged,
    /// No answer: the change may or may not have committed.
    Lost,
    /// Any other answer: nothing was applied.
    Refused,
}

/// An event as the load knows it: its name and the unique tag its change carried.
type Key = (String, String);

fn key(event: &str, tag: &str) -> Key {
    (event.to_owned(), tag.to_owned())
}

/// The key of an event body, `{"event", "timestamp", "data", "site_url"}`.
fn key_of(body: &Value) -> Result<Key, String> {
    let event = body["event"].as_str().ok_or_else(|| format!("no event name in {body}"))?;
    let field = match event {
        "contact.created" | "contact.deleted" => "email",
        "contact.updated" => "notes",
        "deal.created" | "deal.stage_changed" | "deal.won" => "title",
        other => return Err(format!("the load causes no {other} event, yet there is one: {body}")),
    };
    let tag = body["data"][field].as_str().ok_or_else(|| format!("no data.{field} in {body}"))?;
    Ok(key(event, tag))
}

/// One request that changes something, and the events it must (or may) cause.
struct Change {
    what: &'static str,
    fate: Fate,
    keys: Vec<Key>,
    answer: String,
}

/// Everything the load did, as its clients saw it.
#[derive(Default)]
struct Ledger {
    changes: Vec<Change>,
    /// Contacts whose creation was acknowledged: the ones updates pick from.
    contacts: Vec<String>,
    rows_created: usize,
}

impl Ledger {
    fn note(&mut self, what: &'static str, outcome: &Outcome, keys: Vec<Key>) {
        let (fate, answer) = match outcome {
            Outcome::Ok(_) => (Fate::Acknowledged, String::new()),
            Outcome::Lost(error) => (Fate::Lost, error.clone()),
            Outcome::Refused(status, body) => (Fate::Refused, format!("{status} {body}")),
        };
        self.changes.push(Change { what, fate, keys, answer });
    }
}

/// A fresh tag for each change.
fn tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

enum Outcome {
    Ok(Value),
    Lost(String),
    Refused(StatusCode, String),
}

impl Outcome {
    fn is_lost(&self) -> bool {
        matches!(self, Outcome::Lost(_))
    }
}

/// A client that reports a lost answer instead of failing the test (the harness's client expects
/// the server to answer, which a killed server does not).
#[derive(Clone)]
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl Api {
    fn new(app: &TestApp) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", app.address),
            token: app.token.clone(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Outcome {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(body.map(|b| Bytes::from(b.to_string())).unwrap_or_default()))
            .expect("a valid request");
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            // A status without its whole body counts as lost: the ids it carried are unknown.
            let raw = response.into_body().collect().await.map_err(|e| format!("{e:?}"))?.to_bytes();
            Ok::<_, String>((status, raw))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => Outcome::Lost(format!("no answer in {REQUEST_TIMEOUT:?}")),
            Ok(Err(error)) => Outcome::Lost(error),
            Ok(Ok((status, raw))) if status.is_success() => {
                Outcome::Ok(serde_json::from_slice(&raw).unwrap_or(Value::Null))
            }
            Ok(Ok((status, raw))) => Outcome::Refused(status, String::from_utf8_lossy(&raw).into_owned()),
        }
    }
}

/// The kinds of load that run side by side.
#[derive(Clone, Copy, Debug)]
enum Load {
    CreateContact,
    BulkCreateContacts,
    UpdateContact,
    BulkUpdateContacts,
    CreateAndDeleteContact,
    OpenAndWinDeal,
}

const LOADS: [Load; 6] = [
    Load::CreateContact,
    Load::BulkCreateContacts,
    Load::UpdateContact,
    Load::BulkUpdateContacts,
    Load::CreateAndDeleteContact,
    Load::OpenAndWinDeal,
];

/// Runs one kind of load until the round ends or a request goes unanswered (the server is gone).
async fn load(kind: Load, api: Api, ledger: Arc<Mutex<Ledger>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let answered = match kind {
            Load::CreateContact => create_contact(&api, &ledger).await.is_some(),
            Load::BulkCreateContacts => bulk_create_contacts(&api, &ledger).await,
            Load::UpdateContact => update_contact(&api, &ledger).await,
            Load::BulkUpdateContacts => bulk_update_contacts(&api, &ledger).await,
            Load::CreateAndDeleteContact => create_and_delete_contact(&api, &ledger).await,
            Load::OpenAndWinDeal => open_and_win_deal(&api, &ledger).await,
        };
        if !answered {
            return;
        }
    }
}

/// Creates one contact; answers `None` when the answer was lost, else the id if it was acknowledged
/// (`Some(None)` when refused).
async fn create_contact(api: &Api, ledger: &Mutex<Ledger>) -> Option<Option<String>> {
    let email = format!("{}@crash.test", tag());
    let outcome =
        api.call(Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Single", "email": email}))).await;
    let mut ledger = ledger.lock().unwrap();
    ledger.note("create a contact", &outcome, vec![key("contact.created", &email)]);
    match &outcome {
        Outcome::Ok(body) => {
            let id = body["id"].as_str().expect("a created contact has an id").to_owned();
            ledger.contacts.push(id.clone());
            ledger.rows_created += 1;
            Some(Some(id))
        }
        Outcome::Lost(_) => None,
        Outcome::Refused(..) => Some(None),
    }
}

async fn bulk_create_contacts(api: &Api, ledger: &Mutex<Ledger>) -> bool {
    let emails: Vec<String> = (0..BULK_CREATES).map(|_| format!("{}@crash.test", tag())).collect();
    let rows: Vec<Value> = emails.iter().map(|e| json!({"first_name": "Bulk", "email": e})).collect();
    let outcome = api.call(Method::POST, "/api/v1/contacts/bulk", Some(json!({"create": rows}))).await;
    let mut ledger = ledger.lock().unwrap();
    ledger.note("bulk-create contacts", &outcome, emails.iter().map(|e| key("contact.created", e)).collect());
    if let Outcome::Ok(body) = &outcome {
        let ids = body["ids"].as_array().expect("a bulk answer lists its ids");
        assert_eq!(ids.len(), BULK_CREATES, "{body}");
        ledger.contacts.extend(ids.iter().map(|id| id.as_str().expect("an id").to_owned()));
        ledger.rows_created += ids.len();
    }
    !outcome.is_lost()
}

/// Some contacts whose creation was acknowledged, or `None` while there are too few.
fn pick_contacts(ledger: &Mutex<Ledger>, n: usize) -> Option<Vec<String>> {
    let ledger = ledger.lock().unwrap();
    (ledger.contacts.len() >= n).then(|| ledger.contacts.choose_multiple(&mut rand::rng(), n).cloned().collect())
}

async fn update_contact(api: &Api, ledger: &Mutex<Ledger>) -> bool {
    let Some(picked) = pick_contacts(ledger, 1) else {
        return create_contact(api, ledger).await.is_some();
    };
    let note = format!("note {}", tag());
    let outcome =
        api.call(Method::PATCH, &format!("/api/v1/contacts/{}", picked[0]), Some(json!({"notes": note}))).await;
    ledger.lock().unwrap().note("update a contact", &outcome, vec![key("contact.updated", &note)]);
    !outcome.is_lost()
}

async fn bulk_update_contacts(api: &Api, ledger: &Mutex<Ledger>) -> bool {
    let Some(picked) = pick_contacts(ledger, BULK_UPDATES) else {
        return create_contact(api, ledger).await.is_some();
    };
    let notes: Vec<String> = picked.iter().map(|_| format!("note {}", tag())).collect();
    let rows: Vec<Value> = picked.iter().zip(&notes).map(|(id, note)| json!({"id": id, "notes": note})).collect();
    let outcome = api.call(Method::POST, "/api/v1/contacts/bulk", Some(json!({"update": rows}))).await;
    ledger.lock().unwrap().note(
        "bulk-update contacts",
        &outcome,
        notes.iter().map(|n| key("contact.updated", n)).collect(),
    );
    !outcome.is_lost()
}

/// Creates a contact of its own (others' updates never pick it) and deletes it.
async fn create_and_delete_contact(api: &Api, ledger: &Mutex<Ledger>) -> bool {
    let email = format!("{}@crash.test", tag());
    let outcome =
        api.call(Method::POST, "/api/v1/contacts", Some(json!({"last_name": "Doomed", "email": email}))).await;
    let id = {
        let mut ledger = ledger.lock().unwrap();
        ledger.note("create a contact to delete", &outcome, vec![key("contact.created", &email)]);
        match &outcome {
            Outcome::Ok(body) => {
                ledger.rows_created += 1;
                body["id"].as_str().expect("a created contact has an id").to_owned()
            }
            Outcome::Lost(_) => return false,
            Outcome::Refused(..) => return true,
        }
    };
    let outcome = api.call(Method::DELETE, &format!("/api/v1/contacts/{id}"), None).await;
    ledger.lock().unwrap().note("delete a contact", &outcome, vec![key("contact.deleted", &email)]);
    !outcome.is_lost()
}

/// Opens a deal, then moves it to `closed_won`: one change, two events.
async fn open_and_win_deal(api: &Api, ledger: &Mutex<Ledger>) -> bool {
    let title = format!("deal {}", tag());
    let outcome = api.call(Method::POST, "/api/v1/deals", Some(json!({"title": title, "stage": "new"}))).await;
    let id = {
        let mut ledger = ledger.lock().unwrap();
        ledger.note("open a deal", &outcome, vec![key("deal.created", &title)]);
        match &outcome {
            Outcome::Ok(body) => {
                ledger.rows_created += 1;
                body["id"].as_str().expect("a created deal has an id").to_owned()
            }
            Outcome::Lost(_) => return false,
            Outcome::Refused(..) => return true,
        }
    };
    let outcome = api.call(Method::PATCH, &format!("/api/v1/deals/{id}"), Some(json!({"stage": "closed_won"}))).await;
    ledger.lock().unwrap().note(
        "win a deal",
        &outcome,
        vec![key("deal.stage_changed", &title), key("deal.won", &title)],
    );
    !outcome.is_lost()
}

/// Which server life a webhook arrived in. Life `k` is the server started by the `k`-th kill (life 0
/// is the first). `killing` is set to `k` just before kill `k`, `restarted` just after its restart:
/// while they are equal exactly one server is alive; while they differ, one is dying and the next
/// starting, and an arrival could be from either.
#[derive(Default)]
struct Lives {
    killing: AtomicUsize,
    restarted: AtomicUsize,
}

impl Lives {
    /// The life an arrival certainly belongs to, if it is certain.
    fn now(&self) -> Option<usize> {
        let restarted = self.restarted.load(Ordering::SeqCst);
        let killing = self.killing.load(Ordering::SeqCst);
        (killing == restarted).then_some(killing)
    }
}

/// One webhook's arrival: its id, the server life it certainly came from, and when (since the start).
#[derive(Clone)]
struct Arrival {
    webhook_id: String,
    life: Option<usize>,
    at: Duration,
}

/// A receiver that answers 200 at once and notes each arrival.
async fn receiver(lives: Arc<Lives>, started: Instant) -> (Receiver, Arc<Mutex<Vec<Arrival>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    let receiver = Receiver::answering(move |received| {
        let webhook_id = received.header("webhook-id").to_owned();
        noted.lock().unwrap().push(Arrival { webhook_id, life: lives.now(), at: started.elapsed() });
        Reply::status(200).with_body("ok")
    })
    .await;
    (receiver, arrivals)
}

/// Every item of a list, following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => app.get(&format!("{path}?limit=1000&cursor={cursor}")).await,
            None => app.get(&format!("{path}?limit=1000")).await,
        };
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        items.extend(page.body["items"].as_array().expect("a list has items").iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Polls the delivery log until no delivery is pending.
async fn wait_until_settled(app: &TestApp, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let pending = app.get("/api/v1/deliveries?status=pending&limit=1").await;
        assert_eq!(pending.status, StatusCode::OK, "{}", pending.body);
        if pending.body["items"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries still pending after {patience:?}, e.g. {}",
            pending.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn integrity_check(db: &std::path::Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(db).expect("the database opens");
    let mut statement = connection.prepare("PRAGMA integrity_check").expect("PRAGMA integrity_check");
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .expect("integrity_check runs")
        .collect::<Result<_, _>>()
        .expect("integrity_check answers text")
}

// `kill_and_restart` and `terminate` block their thread while the server stops: receivers and the
// load need another thread meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_under_load_loses_and_invents_nothing() {
    let kills: usize = std::env::var("ESTATE_CRM_SOAK_KILLS")
        .map(|n| n.parse().expect("ESTATE_CRM_SOAK_KILLS is a number"))
        .unwrap_or(DEFAULT_KILLS);
    let started = Instant::now();
    let lives = Arc::new(Lives::default());
    let (mut first, first_arrivals) = receiver(lives.clone(), started).await;
    let (mut second, second_arrivals) = receiver(lives.clone(), started).await;
    // When each life began (for life 0, the test's start), to say where a problem happened.
    let mut life_began = vec![Duration::ZERO];
    // A generous attempt timeout: a receiver slowed by the load must not turn into a failed attempt
    // (and a legitimate duplicate); here every repeat must come from a crash.
    let mut app = TestApp::spawn_with(&["--delivery-timeout", "10s"]).await;
    let mut endpoints = Vec::new();
    for receiver in [&first, &second] {
        endpoints
            .push(app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "retry_schedule": SCHEDULE})).await);
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for kill in 1..=kills {
        let api = Api::new(&app);
        let stop = CancellationToken::new();
        let tasks: Vec<_> =
            LOADS.iter().map(|&kind| tokio::spawn(load(kind, api.clone(), ledger.clone(), stop.clone()))).collect();
        // The one intended sleep: the kill must land at a random moment of the load.
        let delay = Duration::from_millis(rand::rng().random_range(50..=400));
        tokio::time::sleep(delay).await;
        lives.killing.store(kill, Ordering::SeqCst);
        app = app.kill_and_restart().await;
        lives.restarted.store(kill, Ordering::SeqCst);
        life_began.push(started.elapsed());
        stop.cancel();
        for task in tasks {
            task.await.expect("a load task failed");
        }
    }

    wait_until_settled(&app, Duration::from_secs(30 + kills as u64)).await;
    let events = all_pages(&app, "/api/v1/events").await;
    let deliveries = all_pages(&app, "/api/v1/deliveries").await;
    // Every receiver answers 200 at once, so each delivery's first recorded attempt succeeds and is
    // its last: a second recorded attempt means it was sent again within one server life.
    let mut attempted_again = Vec::new();
    for delivery in deliveries.iter().filter(|d| d["attempts"] != 1) {
        let id = delivery["id"].as_str().expect("a delivery has an id");
        let detail = match attempted_again.len() {
            0..3 => app.get(&format!("/api/v1/deliveries/{id}")).await.body["attempts_log"].to_string(),
            _ => String::new(),
        };
        attempted_again
            .push(format!("delivery {id} has {} recorded attempts: {delivery} {detail}", delivery["attempts"]));
    }
    let data_dir = app.data_dir.clone();
    let status = app.terminate();
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    drop(app);
    let received = [first.drain(), second.drain()];
    let arrivals = [first_arrivals.lock().unwrap().clone(), second_arrivals.lock().unwrap().clone()];
    let ledger = ledger.lock().unwrap();

    let mut problems: Vec<String> = attempted_again;

    // What the load asked for, by key.
    let mut asked: HashMap<&Key, &Change> = HashMap::new();
    for change in &ledger.changes {
        for key in &change.keys {
            assert!(asked.insert(key, change).is_none(), "the load used the tag of {key:?} twice");
        }
    }
    let count = |fate: Fate| ledger.changes.iter().filter(|c| c.fate == fate).count();
    let (acknowledged, lost, refused) = (count(Fate::Acknowledged), count(Fate::Lost), count(Fate::Refused));
    assert!(acknowledged > 0, "the load made no change at all");
    assert!(lost > 0, "no request was cut off by {kills} kills: the kills missed the load");
    for change in ledger.changes.iter().filter(|c| c.fate == Fate::Refused) {
        problems.push(format!("the server refused to {} under load: {}", change.what, change.answer));
    }

    // The event log: one event per committed change, and only for those.
    let mut logged: HashMap<Key, &Value> = HashMap::new();
    let mut events_by_id: HashMap<&str, &Value> = HashMap::new();
    for event in &events {
        let id = event["id"].as_str().expect("an event has an id");
        events_by_id.insert(id, event);
        let key = match key_of(&event["body"]) {
            Ok(key) => key,
            Err(problem) => {
                problems.push(format!("event {id}: {problem}"));
                continue;
            }
        };
        if event["event"] != key.0.as_str() {
            problems.push(format!("event {id} is listed as {} but its body says {}", event["event"], key.0));
        }
        match asked.get(&key) {
            None => problems.push(format!("event {id} {key:?} was caused by no request: {event}")),
            Some(change) if change.fate == Fate::Refused => {
                problems.push(format!("event {id} {key:?} is from a request the server refused: {}", change.answer))
            }
            Some(_) => {}
        }
        if logged.insert(key.clone(), event).is_some() {
            problems.push(format!("two events for one change {key:?}: the change was applied twice"));
        }
    }
    let mut cut_off_but_committed = 0;
    for change in &ledger.changes {
        let present = change.keys.iter().filter(|k| logged.contains_key(*k)).count();
        let whole = present == 0 || present == change.keys.len();
        if change.fate == Fate::Lost && present > 0 {
            cut_off_but_committed += 1;
        }
        match change.fate {
            Fate::Acknowledged if present < change.keys.len() => problems.push(format!(
                "acknowledged ({}) but {} of its {} events are not in the event log, e.g. {:?}",
                change.what,
                change.keys.len() - present,
                change.keys.len(),
                change.keys.iter().find(|k| !logged.contains_key(*k)),
            )),
            Fate::Lost if !whole => problems.push(format!(
                "a cut-off request ({}) was half applied: {present} of its {} events are in the log",
                change.what,
                change.keys.len()
            )),
            _ => {}
        }
    }

    // The delivery log: one delivery per event and endpoint, all of them delivered.
    let mut deliveries_by_id: HashMap<&str, &Value> = HashMap::new();
    let mut pairs: HashSet<(&str, &str)> = HashSet::new();
    for delivery in &deliveries {
        let id = delivery["id"].as_str().expect("a delivery has an id");
        let (endpoint, event) =
            (delivery["endpoint_id"].as_str().unwrap_or(""), delivery["event_id"].as_str().unwrap_or(""));
        deliveries_by_id.insert(id, delivery);
        if delivery["status"] != "succeeded" {
            problems.push(format!(
                "delivery {id} ended {}, though its receiver always answers 200: {delivery}",
                delivery["status"]
            ));
        }
        if !events_by_id.contains_key(event) {
            problems.push(format!("delivery {id} is for event {event}, which is not in the event log"));
        }
        if !pairs.insert((endpoint, event)) {
            problems.push(format!("event {event} has two deliveries to endpoint {endpoint}"));
        }
    }
    if deliveries.len() != events.len() * endpoints.len() {
        problems.push(format!(
            "{} deliveries for {} events to {} endpoints",
            deliveries.len(),
            events.len(),
            endpoints.len()
        ));
    }

    // What each receiver got: every event once or more, nothing else, repeats under the same id.
    let mut duplicates = 0;
    let mut duplicates_within_a_life = 0;
    for ((endpoint, got), arrived) in endpoints.iter().zip(&received).zip(&arrivals) {
        let mut copies: HashMap<&str, Vec<&Bytes>> = HashMap::new();
        let mut ids_by_key: HashMap<Key, HashSet<&str>> = HashMap::new();
        for webhook in got {
            let webhook_id = webhook.header("webhook-id");
            let body: Value = match serde_json::from_slice(&webhook.body) {
                Ok(body) => body,
                Err(_) => {
                    problems.push(format!("a webhook to {endpoint} is not JSON: {:?}", webhook.body));
                    continue;
                }
            };
            copies.entry(webhook_id).or_default().push(&webhook.body);
            match key_of(&body) {
                Ok(key) => {
                    ids_by_key.entry(key).or_default().insert(webhook_id);
                }
                Err(problem) => problems.push(format!("a webhook to {endpoint}: {problem}")),
            }
            if webhook.header("x-crm-event") != body["event"].as_str().unwrap_or("") {
                problems.push(format!("X-CRM-Event {} on a {} webhook", webhook.header("x-crm-event"), body["event"]));
            }
            let Some(delivery) = deliveries_by_id.get(webhook_id) else {
                problems.push(format!("webhook-id {webhook_id:?} at {endpoint} is in no delivery log: {body}"));
                continue;
            };
            if delivery["endpoint_id"] != endpoint.as_str() {
                problems.push(format!(
                    "webhook-id {webhook_id} arrived at {endpoint} but belongs to {}",
                    delivery["endpoint_id"]
                ));
            }
            match delivery["event_id"].as_str().and_then(|id| events_by_id.get(id)) {
                Some(event) if event["body"] == body => {}
                Some(event) => {
                    problems.push(format!("webhook {webhook_id} sent {body}, its event is {}", event["body"]))
                }
                None => problems.push(format!("webhook {webhook_id} is for an event not in the log: {body}")),
            }
        }
        for (webhook_id, bodies) in &copies {
            if bodies.iter().any(|b| *b != bodies[0]) {
                problems.push(format!("the copies of webhook {webhook_id} to {endpoint} differ"));
            }
            duplicates += bodies.len() - 1;
        }
        for (key, ids) in &ids_by_key {
            if ids.len() > 1 {
                problems.push(format!("one event {key:?} reached {endpoint} under {} webhook-ids: {ids:?}", ids.len()));
            }
        }
        for (key, change) in &asked {
            if change.fate == Fate::Acknowledged && !ids_by_key.contains_key(*key) {
                problems.push(format!("acknowledged ({}), never delivered to {endpoint}: {key:?}", change.what));
            }
        }
        for key in logged.keys() {
            if !ids_by_key.contains_key(key) {
                problems.push(format!("event {key:?} is in the log but never reached {endpoint}"));
            }
        }
        if copies.len() != events.len() {
            problems.push(format!(
                "{} distinct webhooks reached {endpoint}; the log has {} events",
                copies.len(),
                events.len()
            ));
        }
        // A repeat is only allowed from an outcome lost in a crash: never twice in one server life.
        let mut by_id: HashMap<&str, Vec<&Arrival>> = HashMap::new();
        for arrival in arrived {
            by_id.entry(&arrival.webhook_id).or_default().push(arrival);
        }
        for (webhook_id, arrivals) in by_id {
            let certain: Vec<usize> = arrivals.iter().filter_map(|a| a.life).collect();
            let distinct: HashSet<usize> = certain.iter().copied().collect();
            if distinct.len() < certain.len() {
                duplicates_within_a_life += 1;
                let times: Vec<String> = arrivals
                    .iter()
                    .map(|a| match a.life {
                        Some(life) => format!("+{:.3}s in life {life}", a.at.as_secs_f64()),
                        None => format!("+{:.3}s during a restart", a.at.as_secs_f64()),
                    })
                    .collect();
                let began: Vec<String> =
                    distinct.iter().map(|l| format!("life {l} began +{:.3}s", life_began[*l].as_secs_f64())).collect();
                problems.push(format!(
                    "webhook {webhook_id} reached {endpoint} twice from one server life, without a crash in between: \
                     arrived {} ({})",
                    times.join(", "),
                    began.join(", ")
                ));
            }
        }
    }

    let db = data_dir.path().join("estate-crm.db");
    let integrity = integrity_check(&db);
    if integrity != ["ok"] {
        problems.push(format!("PRAGMA integrity_check: {integrity:?}"));
    }

    let delivered: usize = received.iter().map(Vec::len).sum();
    println!(
        "crash soak: {kills} kills; {} requests ({acknowledged} acknowledged, {lost} cut off of which {cut_off_but_committed} committed, {refused} refused); \
         {} rows created; {} events; {delivered} webhooks received by {} endpoints, {duplicates} duplicates \
         ({duplicates_within_a_life} within one life); {:.1}s",
        ledger.changes.len(),
        ledger.rows_created,
        events.len(),
        endpoints.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        problems.is_empty(),
        "{} problems, the first {}:\n{}",
        problems.len(),
        SHOWN.min(problems.len()),
        problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("\n")
    );
}
