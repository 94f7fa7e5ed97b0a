//! The sending guarantees: endpoints do not hold each other up, `max_in_flight` bounds concurrency,
//! first attempts go in event order, and nothing is lost across a crash or a graceful restart.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::{PATIENCE, Receiver, Reply, TestApp};

/// Creates `n` contacts in one bulk request and answers their ids in order.
async fn bulk_contacts(app: &TestApp, n: usize) -> Vec<String> {
    let rows: Vec<Value> = (0..n).map(|i| json!({"first_name": format!("Contact {i}")})).collect();
    let answer = app.post("/api/v1/contacts/bulk", json!({"create": rows})).await;
    assert!(answer.status.is_success(), "{}", answer.body);
    answer.body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

fn contact_id(received: &crate::helpers::Received) -> String {
    received.json()["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_slow_endpoint_delays_no_other() {
    const N: usize = 5;
    let app = TestApp::spawn().await;
    let mut slow = Receiver::answering(|_| Reply::status(200).with_delay(Duration::from_millis(1500))).await;
    let mut fast = Receiver::start().await;
    app.add_endpoint(json!({"url": slow.url("/"), "max_in_flight": 1})).await;
    app.add_endpoint(json!({"url": fast.url("/")})).await;
    let ids = bulk_contacts(&app, N).await;

    let received: HashSet<String> = fast.take(N).await.iter().map(contact_id).collect();
    assert_eq!(received, ids.into_iter().collect());
    // The slow endpoint takes 1.5 s per webhook, one at a time: it is still busy with its first.
    let at_slow = slow.drain();
    assert!(at_slow.len() <= 1, "the slow endpoint got {} webhooks before the fast one got {N}", at_slow.len());
}

#[tokio::test]
async fn at_most_max_in_flight_attempts_run_at_once() {
    const HOLD: Duration = Duration::from_millis(300);
    let app = TestApp::spawn().await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (counting, peak) = (in_flight.clone(), most.clone());
    let mut receiver = Receiver::answering(move |_| {
        let now = counting.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        // Counted out just before the answer leaves, so the next request cannot be counted early.
        let counting = counting.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HOLD - Duration::from_millis(20)).await;
            counting.fetch_sub(1, Ordering::SeqCst);
        });
        Reply::status(200).with_delay(HOLD)
    })
    .await;
    app.add_endpoint(json!({"url": receiver.url("/"), "max_in_flight": 2})).await;
    let ids = bulk_contacts(&app, 6).await;
    let received: HashSet<String> = receiver.take(6).await.iter().map(contact_id).collect();
    assert_eq!(received, ids.into_iter().collect());
    assert_eq!(most.load(Ordering::SeqCst), 2, "with max_in_flight 2, the most requests in flight at once");
}

#[tokio::test]
async fn first_attempts_to_an_endpoint_start_in_event_order() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    app.add_endpoint(json!({"url": receiver.url("/"), "max_in_flight": 1, "events": "contact.created"})).await;
    let mut ids = bulk_contacts(&app, 20).await;
    for i in 0..5 {
        ids.push(
            app.create("contacts", json!({"first_name": format!("Single {i}")})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let received: Vec<String> = receiver.take(ids.len()).await.iter().map(contact_id).collect();
    assert_eq!(received, ids);
}

/// A receiver on a chosen port (`Receiver` picks its own): answers 200 and reports each webhook-id.
async fn receive_on(address: SocketAddr) -> (mpsc::UnboundedReceiver<String>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(address).await.expect("the port is free again");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let _ = tx.send(id);
                    async { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (rx, task)
}

/// Polls the delivery log until `ready` holds for the only delivery; answers it.
async fn wait_for_delivery(app: &TestApp, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = app.get("/api/v1/deliveries").await;
        let items = answer.body["items"].as_array().cloned().unwrap_or_default();
        if let [only] = items.as_slice()
            && ready(only)
        {
            return only.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery log never got there: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pending_delivery_survives_a_crash() {
    let app = TestApp::spawn().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let schedule = vec!["250ms"; 20].join(",");
    app.add_endpoint(json!({"url": format!("http://{address}/"), "retry_schedule": schedule})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let before = wait_for_delivery(&app, |d| d["attempts"].as_u64() >= Some(1)).await;
    assert_eq!(before["status"], "pending", "{before}");
    assert_eq!(before["last_error"], "connection refused", "{before}");

    let app = app.kill_and_restart().await;
    let (mut ids, _receiver) = receive_on(address).await;
    let delivered = tokio::time::timeout(PATIENCE, ids.recv()).await.expect("delivered after the restart").unwrap();
    assert_eq!(delivered, before["id"].as_str().unwrap(), "the same webhook-id as in the delivery log");

    let settled = app.settled_deliveries().await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["status"], "succeeded", "{settled:?}");
    assert!(ids.try_recv().is_err(), "delivered twice without a crash in between");
}

#[tokio::test]
async fn an_attempt_cut_short_by_a_crash_is_made_again_with_the_same_id() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering({
        let mut n = 0;
        move |_| {
            n += 1;
            // The first attempt hangs until the server is killed.
            if n == 1 { Reply::status(200).with_delay(Duration::from_secs(30)) } else { Reply::status(200) }
        }
    })
    .await;
    app.add_endpoint(json!({"url": receiver.url("/")})).await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    let cut = receiver.next().await;

    let app = app.kill_and_restart().await;
    let again = receiver.next().await;
    assert_eq!(again.header("webhook-id"), cut.header("webhook-id"));
    assert_eq!(again.body, cut.body);
    let settled = app.settled_deliveries().await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["status"], "succeeded", "{settled:?}");
}

// `TestApp::restart` blocks its thread while the server stops: the receiver needs another thread to
// answer the attempt in flight meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_loses_nothing() {
    const N: usize = 5;
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::answering(|_| Reply::status(200).with_delay(Duration::from_millis(200))).await;
    app.add_endpoint(json!({"url": receiver.url("/"), "max_in_flight": 1})).await;
    let ids = bulk_contacts(&app, N).await;
    let first = receiver.next().await;

    let app = app.restart().await;
    let mut seen: HashSet<String> = HashSet::from([contact_id(&first)]);
    let mut webhook_ids: HashSet<String> = HashSet::from([first.header("webhook-id").to_owned()]);
    let mut count = 1;
    while seen.len() < N {
        let received = receiver.next().await;
        count += 1;
        seen.insert(contact_id(&received));
        webhook_ids.insert(received.header("webhook-id").to_owned());
    }
    assert_eq!(seen, ids.into_iter().collect());
    let settled = app.settled_deliveries().await;
    assert_eq!(settled.len(), N);
    assert!(settled.iter().all(|d| d["status"] == "succeeded"), "{settled:?}");
    let logged: HashSet<String> = settled.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(logged, webhook_ids, "each delivery kept its webhook-id across the restart");
    count += receiver.drain().len();
    assert_eq!(count, N, "a graceful stop records what finished, so nothing is sent twice");
}

/// The delivery log's items, all pages.
async fn all_deliveries(app: &TestApp) -> Vec<Value> {
    app.get("/api/v1/deliveries?limit=1000").await.body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_down_endpoint_keeps_its_deliveries_attempts_until_it_is_back() {
    let app = TestApp::spawn().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    // Two attempts each: without holding back, every delivery would fail within a second.
    app.add_endpoint(json!({"url": format!("http://{address}/"), "retry_schedule": "100ms", "max_in_flight": 4})).await;
    let ids = bulk_contacts(&app, 60).await;

    // Once the endpoint counts as down, its other deliveries are held: pending, no attempt spent.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let held = loop {
        let deliveries = all_deliveries(&app).await;
        let tried: u64 = deliveries.iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
        let untouched = deliveries.iter().filter(|d| d["attempts"] == 0 && d["status"] == "pending").count();
        if tried >= 20 && untouched > 0 {
            break deliveries;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held back: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(held.iter().all(|d| d["status"] != "succeeded"), "nothing can have arrived: {held:?}");
    let attempts: u64 = held.iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
    assert!(attempts < 2 * 60, "a down endpoint was hammered: {attempts} attempts for 60 deliveries");

    // It comes back; a retry by hand probes it at once, and every delivery that still has an attempt
    // left arrives.
    let (mut received, _receiver) = receive_on(address).await;
    let failed = held.iter().find(|d| d["status"] == "failed").or_else(|| held.first()).unwrap();
    let retried = app.post(&format!("/api/v1/deliveries/{}/retry", failed["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    let settled = app.settled_deliveries().await;
    let succeeded = settled.iter().filter(|d| d["status"] == "succeeded").count();
    let failed_for_good = settled.iter().filter(|d| d["status"] == "failed").count();
    assert!(succeeded >= 40, "held deliveries were not sent when the endpoint came back: {settled:?}");
    assert_eq!(succeeded + failed_for_good, ids.len());
    let mut arrived = HashSet::new();
    while let Ok(id) = received.try_recv() {
        arrived.insert(id);
    }
    assert_eq!(arrived.len(), succeeded, "each succeeded delivery arrived, once per webhook-id");
}

#[tokio::test]
async fn deliveries_keep_moving_and_keep_their_order_under_back_to_back_imports() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    // One attempt at a time: every import that starts while deliveries are being sent makes the lane
    // put its next delivery back and read it again afterwards.
    app.add_endpoint(json!({"url": receiver.url("/"), "max_in_flight": 1})).await;
    let mut created = Vec::new();
    for _ in 0..6 {
        created.extend(bulk_contacts(&app, 300).await);
    }
    let mut arrived = Vec::with_capacity(created.len());
    while arrived.len() < created.len() {
        arrived.push(contact_id(&receiver.next().await));
    }
    assert_eq!(arrived, created, "each contact once, in the order they were created");
    app.settled_deliveries().await;
    assert!(receiver.drain().is_empty(), "a delivery was sent twice");
}
