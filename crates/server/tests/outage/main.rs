//! A database outage under load: the real `estate-crm serve` on a PostgreSQL cluster of the test's
//! own (`initdb` + `pg_ctl` in a temporary directory, never the machine's server), with a real
//! receiver. Clients create contacts while the cluster is stopped (`pg_ctl stop -m fast`) for 10 s
//! and started again. Then, without a restart of the server: the API answered 503 with its error
//! shape and `Retry-After` meanwhile and never a 500, `/readyz` said not ready and is ready again,
//! every create answered 201 is in the API, its webhook reached the receiver, and the delivery log
//! has nothing left pending (the outcomes held during the outage were recorded).
//!
//! A create answered 503 may still exist (the connection may break after the database committed);
//! the API never said it did, so the test does not count it either way.

#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../../../store/tests/support/pg.rs"]
mod pg;
#[path = "../../../store/tests/support/throwaway_pg.rs"]
mod throwaway_pg;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use helpers::{PATIENCE, Receiver, Reply, TestApp};
use throwaway_pg::ThrowawayPostgres;

/// Clients sending creates at once.
const CLIENTS: usize = 4;
/// Load before the database stops, and after it is back.
const BEFORE: Duration = Duration::from_millis(1500);
const AFTER: Duration = Duration::from_secs(3);
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(10);

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Contacts answered 201: (id, email).
    created: Vec<(String, String)>,
    /// 503s answered with the error shape, code `unavailable` and a `Retry-After` of whole seconds.
    unavailable: usize,
    /// Anything else: a 500, a 503 without its shape or header, another status.
    wrong: Vec<String>,
}

/// Where the database is: a request sent and answered while it was [`DOWN`] must be refused.
const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_answered_503_and_survived_without_losing_an_acknowledged_change() {
    let Some(cluster) = tokio::task::spawn_blocking(ThrowawayPostgres::init).await.unwrap() else {
        return;
    };
    let mut receiver = Receiver::start().await;
    let app = Arc::new(TestApp::spawn_with(&["--database-url", &cluster.url()]).await);
    app.add_endpoint(json!({"url": receiver.url("/hook"), "events": "contact.created"})).await;
    assert_eq!(dashboard_with_unknown_session(&app).await.status, StatusCode::SEE_OTHER, "to the sign-in page");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let created_after_outage = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (app, seen, stop, phase, after) =
            (app.clone(), seen.clone(), stop.clone(), phase.clone(), created_after_outage.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let email = format!("c{client}-{n}@outage.example.com");
                let sent_in = phase.load(Ordering::SeqCst);
                let answer = app.post("/api/v1/contacts", json!({"first_name": "Outage", "email": email})).await;
                let answered_in = phase.load(Ordering::SeqCst);
                {
                    let mut seen = seen.lock().unwrap();
                    match answer.status {
                        StatusCode::CREATED if sent_in == DOWN && answered_in == DOWN => {
                            seen.wrong.push(format!("201 while the database was down: {}", answer.body));
                        }
                        StatusCode::CREATED => {
                            seen.created.push((answer.body["id"].as_str().unwrap().to_owned(), email));
                            if sent_in == BACK {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        StatusCode::SERVICE_UNAVAILABLE if is_unavailable_shape(&answer.headers, &answer.body) => {
                            seen.unavailable += 1;
                        }
                        status => seen.wrong.push(format!("{status} {:?} {}", answer.headers, answer.body)),
                    }
                }
                if answer.status != StatusCode::CREATED {
                    // Less eager than the clients of a real outage, to keep the log short.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let readiness = {
        let (app, stop, phase) = (app.clone(), stop.clone(), phase.clone());
        tokio::spawn(async move {
            let mut not_ready_while_down = 0;
            let mut wrong = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent_in = phase.load(Ordering::SeqCst);
                let answer = app.get("/readyz").await;
                let down = sent_in == DOWN && phase.load(Ordering::SeqCst) == DOWN;
                match answer.status {
                    StatusCode::SERVICE_UNAVAILABLE if is_unavailable_shape(&answer.headers, &answer.body) => {
                        not_ready_while_down += usize::from(down);
                    }
                    StatusCode::OK if !down => {}
                    status => wrong.push(format!("/readyz {status} (database down: {down}): {}", answer.body)),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (not_ready_while_down, wrong)
        })
    };

    tokio::time::sleep(BEFORE).await;
    let created_before = seen.lock().unwrap().created.len();
    phase.store(STOPPING, Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.stop());
    phase.store(DOWN, Ordering::SeqCst);
    tokio::time::sleep(OUTAGE / 2).await;
    answered_unavailable_everywhere(&app).await;
    tokio::time::sleep(OUTAGE / 2).await;
    phase.store(STARTING, Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.start());
    phase.store(BACK, Ordering::SeqCst);
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client ran to its end");
    }
    let (not_ready_while_down, readiness_wrong) = readiness.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.wrong.is_empty(), "answers other than 201 or a well-formed 503: {:#?}", seen.wrong);
    assert!(readiness_wrong.is_empty(), "{readiness_wrong:#?}");
    assert!(created_before > 0, "no create succeeded before the outage");
    assert!(seen.unavailable > 0, "no 503 was answered while the database was down");
    assert!(not_ready_while_down > 0, "/readyz never said not ready while the database was down");
    let after = created_after_outage.load(Ordering::Relaxed);
    assert!(after > 0, "no create succeeded after the database was back, without a restart");
    eprintln!(
        "outage: {} creates acknowledged ({created_before} before the outage, {after} after it), {} answered 503",
        seen.created.len(),
        seen.unavailable
    );

    assert_eq!(app.get("/readyz").await.status, StatusCode::OK, "ready again");
    let stored: HashSet<String> = all_ids(&app, "/api/v1/contacts").await;
    let missing: Vec<&(String, String)> = seen.created.iter().filter(|(id, _)| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "{} acknowledged creates are not in the API: {missing:?}", missing.len());

    let acknowledged: HashSet<&str> = seen.created.iter().map(|(id, _)| id.as_str()).collect();
    let mut delivered = HashSet::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !acknowledged.iter().all(|id| delivered.contains(*id)) {
        for webhook in receiver.drain() {
            let body = webhook.json();
            assert_eq!(body["event"], "contact.created", "{body}");
            delivered.insert(body["data"]["id"].as_str().unwrap().to_owned());
        }
        let undelivered = acknowledged.iter().filter(|id| !delivered.contains(**id)).count();
        assert!(tokio::time::Instant::now() < deadline, "{undelivered} acknowledged creates' webhooks never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every attempt's outcome was recorded, those held during the outage too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let pending = app.get("/api/v1/deliveries?status=pending&limit=1000").await;
        assert_eq!(pending.status, StatusCode::OK, "{}", pending.body);
        let left = pending.body["items"].as_array().map_or(0, Vec::len);
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} deliveries still pending: {}", pending.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_during_an_outage_stops_in_time() {
    let Some(cluster) = tokio::task::spawn_blocking(ThrowawayPostgres::init).await.unwrap() else {
        return;
    };
    // The receiver answers late, so that the attempt ends after the database has gone: its outcome
    // is held by the dispatcher when the server is asked to stop.
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_delay(ANSWER_DELAY)).await;
    let mut app = TestApp::spawn_with(&["--database-url", &cluster.url()]).await;
    app.add_endpoint(json!({"url": receiver.url("/hook"), "events": "contact.created"})).await;
    app.create("contacts", json!({"first_name": "Held"})).await;
    receiver.next().await;
    tokio::task::block_in_place(|| cluster.stop());
    tokio::time::sleep(ANSWER_DELAY).await;
    let status = app.terminate_within(PATIENCE).await;
    assert!(status.is_some_and(|s| s.success()), "the server did not stop within {PATIENCE:?}: {status:?}");
}

/// How late the receiver answers in the stop test; the database's fast stop takes well under it.
const ANSWER_DELAY: Duration = Duration::from_secs(3);

/// While the database is down, reads, a token not seen before and the web app's pages answer 503
/// too (not 401 or 500): the server cannot tell.
async fn answered_unavailable_everywhere(app: &TestApp) {
    let read = app.get("/api/v1/contacts?limit=1").await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{}", read.body);
    assert!(is_unavailable_shape(&read.headers, &read.body), "{:?} {}", read.headers, read.body);
    let stranger = app.request_as("a-token-never-seen", hyper::Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(stranger.status, StatusCode::SERVICE_UNAVAILABLE, "{}", stranger.body);
    let page = dashboard_with_unknown_session(app).await;
    let html = String::from_utf8_lossy(&page.raw);
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(page.headers.contains_key("retry-after"), "{:?}", page.headers);
    assert!(html.contains("cannot reach its database"), "{html}");
}

/// The dashboard for a session cookie the database does not know: a 303 to the sign-in page when
/// the database answers.
async fn dashboard_with_unknown_session(app: &TestApp) -> helpers::Answer {
    let page = hyper::Request::get(app.url("/"))
        .header("accept", "text/html")
        .header("cookie", "ecrm_session=a-session-the-database-does-not-know")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    app.send(page).await
}

/// A 503 as the API answers one: `{"error": {"code": "unavailable", "message", "fields"}}` and a
/// `Retry-After` of whole seconds.
fn is_unavailable_shape(headers: &hyper::HeaderMap, body: &Value) -> bool {
    let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
    retry_after.is_some()
        && body["error"]["code"] == "unavailable"
        && body["error"]["message"].as_str().is_some_and(|m| !m.is_empty())
        && body["error"]["fields"].is_object()
}

/// Every id a list answers, following its cursors.
async fn all_ids(app: &TestApp, path: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => app.get(&format!("{path}?limit=1000&cursor={cursor}")).await,
            None => app.get(&format!("{path}?limit=1000")).await,
        };
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            ids.insert(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}
