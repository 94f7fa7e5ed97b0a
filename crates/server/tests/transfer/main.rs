//! `estate-crm export` and `estate-crm import`: a database moved from SQLite to PostgreSQL (and from
//! PostgreSQL to SQLite) answers the same through the API for every record, endpoint and delivery,
//! keeps its secrets and tokens, and its webhooks carry on from where they were, with the same
//! `webhook-id`s. The real binary on both stores, real receivers.

#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../../../store/tests/support/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use helpers::{PATIENCE, Receiver, Reply, SignatureCheck, TestApp};

/// Runs `estate-crm` with these arguments and nothing from the environment.
fn estate_crm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estate-crm")).args(args).env_clear().output().expect("the binary runs")
}

/// Runs `estate-crm` and fails the test unless it succeeds; answers its stdout and stderr.
fn succeed(args: &[&str]) -> (String, String) {
    let output = estate_crm(args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    assert!(output.status.success(), "estate-crm {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// Runs `estate-crm`, which must fail with one line on stderr; answers that line.
fn refused(args: &[&str]) -> String {
    let output = estate_crm(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "estate-crm {args:?} should have failed");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// What the API answers for each path, status and body, to compare before and after a move.
async fn answers(app: &TestApp, token: &str, paths: &[String]) -> Vec<(String, StatusCode, Value)> {
    let mut all = Vec::with_capacity(paths.len());
    for path in paths {
        let answer = app.request_as(token, Method::GET, path, None).await;
        all.push((path.clone(), answer.status, answer.body));
    }
    all
}

/// Every delivery in the log, newest first.
async fn deliveries(app: &TestApp) -> Vec<Value> {
    let answer = app.get("/api/v1/deliveries?limit=1000").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["items"].as_array().unwrap().clone()
}

/// Waits until the delivery log satisfies `settled`.
async fn wait_for_deliveries(app: &TestApp, what: &str, settled: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let items = deliveries(app).await;
        if settled(&items) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {items:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn of_endpoint<'a>(items: &'a [Value], endpoint: &str) -> Vec<&'a Value> {
    items.iter().filter(|d| d["endpoint_id"] == endpoint).collect()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

fn ids_in(answer: &Value) -> HashSet<String> {
    answer["items"].as_array().unwrap().iter().map(id_of).collect()
}

/// Starts a server on the database without `--admin-token`, answers the first line it prints, and
/// stops it: a server that made an admin token prints that before its start line.
fn first_line_of_a_server_without_admin_token(database_url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets", "--database-url", database_url])
        // It may take endpoints' leases before it is killed; the next server waits for them to
        // run out, so they are as short as the other tests' (the default 10 s outlasts a test's patience).
        .args(["--lease-ttl", "2s"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("a first line");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    line
}

#[tokio::test]
async fn a_sqlite_database_moved_to_postgres_answers_the_same_and_its_webhooks_carry_on() {
    let Some(database) = pg::TestDatabase::create().await else { return };
    let mut up = Receiver::start().await;
    let mut failing = Receiver::answering(|_| Reply::status(500).with_body("down for maintenance")).await;
    // Holds each request long past the test: an attempt to it is still in flight when the server dies.
    let mut slow = Receiver::answering(|_| Reply::status(200).with_delay(Duration::from_secs(60))).await;
    let app = TestApp::spawn_with(&["--delivery-timeout", "60s"]).await;

    // Endpoints: one whose secret was rotated, the primary one, one whose deliveries fail, one
    // whose delivery waits an hour for its retry, one whose deliveries are still owed, one deleted.
    let good = app.add_endpoint(json!({"url": up.url("/good"), "events": "*", "secret": "first-secret"})).await;
    let rotated = app.post(&format!("/api/v1/webhooks/{good}/rotate-secret"), json!({"grace": "1h"})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    let primary = app
        .put(
            "/api/v1/settings/webhook",
            json!({"url": up.url("/primary"), "events": "contact.created", "secret": "primary-secret", "active": true}),
        )
        .await;
    assert_eq!(primary.status, StatusCode::OK, "{}", primary.body);
    let broken = app
        .add_endpoint(json!({"url": failing.url("/broken"), "events": "deal.created", "retry_schedule": "100ms"}))
        .await;
    let flaky = app
        .add_endpoint(json!({"url": failing.url("/flaky"), "events": "enquiry.created", "retry_schedule": "1h"}))
        .await;
    let owing = app.add_endpoint(json!({"url": slow.url("/slow"), "events": "deal.won", "max_in_flight": 1})).await;
    let gone = app.add_endpoint(json!({"url": up.url("/gone"), "events": "lead.created"})).await;
    assert_eq!(app.delete(&format!("/api/v1/webhooks/{gone}")).await.status, StatusCode::NO_CONTENT);

    // A user with a password and a token of their own, and the HubSpot settings.
    let agent = app
        .post(
            "/api/v1/users",
            json!({"name": "Agnes Agent", "email": "agnes@example.com", "role": "agent", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{}", agent.body);
    let agent_id = id_of(&agent.body);
    let token = app.post("/api/v1/tokens", json!({"user_id": agent_id, "name": "laptop"})).await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    let agent_token = token.body["token"].as_str().unwrap().to_owned();
    let hubspot =
        app.put("/api/v1/integrations/hubspot", json!({"access_token": "pat-test-token", "enabled": false})).await;
    assert_eq!(hubspot.status, StatusCode::OK, "{}", hubspot.body);

    // Records of every kind; the newest is deleted, so the highest seq given is no record's.
    let contact = app
        .create(
            "contacts",
            json!({"first_name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0001", "assigned_agent_id": agent_id}),
        )
        .await;
    let lead = app.create("leads", json!({"contact_id": contact["id"], "lead_type": "Buyer"})).await;
    let mut records = vec![("contacts", id_of(&contact)), ("leads", id_of(&lead))];
    for n in 1..=3 {
        let deal = app
            .create("deals", json!({"title": format!("{n} Elm St"), "amount": 450_000, "stage": "closed_won"}))
            .await;
        records.push(("deals", id_of(&deal)));
    }
    records
        .push(("tasks", id_of(&app.create("tasks", json!({"title": "Call Ada", "contact_id": contact["id"]})).await)));
    let enquiry = app.create("enquiries", json!({"name": "Eve", "email": "eve@example.com", "message": "Flat?"})).await;
    records.push(("enquiries", id_of(&enquiry)));
    records.push(("contacts", enquiry["contact_id"].as_str().unwrap().to_owned()));
    let doomed = id_of(&app.create("contacts", json!({"first_name": "Doomed"})).await);
    assert_eq!(app.delete(&format!("/api/v1/contacts/{doomed}")).await.status, StatusCode::NO_CONTENT);

    // Settled: delivered, failed after its retry, waiting an hour for its retry; and the owing
    // endpoint's first delivery in flight with the two behind it owed.
    let first_slow = slow.next().await;
    let settled = wait_for_deliveries(&app, "deliveries settling", |items| {
        let done = |ep: &str| of_endpoint(items, ep).iter().all(|d| d["status"] != "pending");
        let flaky_waits = of_endpoint(items, &flaky).iter().all(|d| d["status"] == "pending" && d["attempts"] == 1);
        done(&good) && done(&broken) && flaky_waits && !of_endpoint(items, &flaky).is_empty()
    })
    .await;
    let primary_id = app.get("/api/v1/webhooks?limit=100").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["is_primary"] == true)
        .map(id_of)
        .expect("the primary endpoint");
    let statuses: HashSet<&str> = settled.iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, HashSet::from(["succeeded", "failed", "pending"]), "{settled:#?}");
    assert!(of_endpoint(&settled, &broken).iter().all(|d| d["status"] == "failed" && d["attempts"] == 2));
    let owed: HashSet<String> = of_endpoint(&settled, &owing).iter().map(|d| id_of(d)).collect();
    assert_eq!(owed.len(), 3, "{settled:#?}");
    assert!(owed.contains(first_slow.header("webhook-id")));
    let flaky_delivery = id_of(of_endpoint(&settled, &flaky)[0]);
    let first_flaky = failing.drain().into_iter().find(|r| r.path == "/flaky").expect("the flaky attempt");
    assert_eq!(first_flaky.header("webhook-id"), flaky_delivery);

    // Everything the API answers that the move must keep. The owing endpoint's deliveries are left
    // out of the detail: the new server delivers them as soon as it starts.
    let mut paths: Vec<String> = records.iter().map(|(plural, id)| format!("/api/v1/{plural}/{id}")).collect();
    for list in ["contacts", "leads", "deals", "tasks", "enquiries", "events", "webhooks"] {
        paths.push(format!("/api/v1/{list}?limit=1000"));
    }
    for endpoint in [&good, &primary_id, &broken, &flaky, &owing] {
        paths.push(format!("/api/v1/webhooks/{endpoint}"));
    }
    for endpoint in [&good, &primary_id, &broken, &flaky] {
        paths.push(format!("/api/v1/deliveries?endpoint_id={endpoint}&limit=1000"));
    }
    for delivery in settled.iter().filter(|d| d["endpoint_id"] != owing.as_str()) {
        paths.push(format!("/api/v1/deliveries/{}", id_of(delivery)));
    }
    paths.extend(["/api/v1/settings/webhook", "/api/v1/integrations/hubspot", "/api/v1/me"].map(str::to_owned));
    let before = answers(&app, &app.token, &paths).await;
    let agent_before = answers(&app, &agent_token, &["/api/v1/me".into(), "/api/v1/contacts".into()]).await;
    assert!(before.iter().all(|(_, status, _)| *status == StatusCode::OK), "{before:#?}");
    let old_records = ids_in(&app.get("/api/v1/contacts?limit=1000").await.body);
    let old_events = ids_in(&app.get("/api/v1/events?limit=1000").await.body);
    let old_endpoints = ids_in(&app.get("/api/v1/webhooks?limit=1000").await.body);

    // Stop it without a grace: the attempt in flight is not recorded, so all three stay owed.
    let data_dir = app.data_dir.clone();
    drop(app);
    let file = data_dir.path().join("moving.jsonl");
    let sqlite_dir = data_dir.path().to_str().unwrap();
    let (_, said) = succeed(&["export", "--data-dir", sqlite_dir, "--output", file.to_str().unwrap()]);
    assert!(said.starts_with("exported ") && said.contains("from ") && said.contains("deliveries "), "{said}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "the file holds secrets");

    let (said, _) = succeed(&["import", "--database-url", &database.url, "--input", file.to_str().unwrap()]);
    assert!(said.starts_with("imported ") && said.contains("PostgreSQL at"), "{said}");
    let first = first_line_of_a_server_without_admin_token(&database.url);
    assert!(first.starts_with("estate-crm listening"), "no new admin token is made over the imported one: {first}");

    // The receivers come back up; the server on PostgreSQL answers the same.
    slow.answer_with(|_| Reply::status(200));
    failing.answer_with(|_| Reply::status(200));
    let app = TestApp::spawn_on(Arc::new(database)).await;
    let after = answers(&app, &app.token, &paths).await;
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(was, is, "the same answer after the move");
    }
    assert_eq!(agent_before, answers(&app, &agent_token, &["/api/v1/me".into(), "/api/v1/contacts".into()]).await);

    // The owed deliveries are delivered, with the ids they had.
    let mut delivered = HashSet::new();
    while !owed.is_subset(&delivered) {
        let received = slow.next().await;
        assert!(owed.contains(received.header("webhook-id")), "only what was owed: {:?}", received.headers);
        delivered.insert(received.header("webhook-id").to_owned());
    }
    wait_for_deliveries(&app, "the owed deliveries recorded", |items| {
        of_endpoint(items, &owing).iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    // The one waiting for its retry keeps its id too.
    assert_eq!(
        app.post(&format!("/api/v1/deliveries/{flaky_delivery}/retry"), json!({})).await.status,
        StatusCode::ACCEPTED
    );
    let retried = failing.next().await;
    assert_eq!((retried.path.as_str(), retried.header("webhook-id")), ("/flaky", flaky_delivery.as_str()));

    // New things get new ids, never an old one, not even the deleted contact's or endpoint's.
    up.drain();
    let new_contact = id_of(&app.create("contacts", json!({"first_name": "Newcomer"})).await);
    assert!(!old_records.contains(&new_contact) && new_contact != doomed, "{new_contact} is new");
    let new_events = ids_in(&app.get("/api/v1/events?limit=1000").await.body);
    assert!(new_events.difference(&old_events).count() == 1, "one new event, with a new id");
    let new_endpoint = app.add_endpoint(json!({"url": up.url("/new"), "events": "deal.lost"})).await;
    assert!(!old_endpoints.contains(&new_endpoint) && new_endpoint != gone, "{new_endpoint} is new");

    // Secrets came along: the rotated endpoint signs with the new secret and the old one beside it.
    let mut signed = up.take(2).await;
    signed.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(signed[0].path, "/good");
    assert_eq!(
        signed[0].check_signatures(&second_secret),
        SignatureCheck { standard: true, crm: true, crm_previous: false }
    );
    assert!(signed[0].check_signatures("first-secret").crm_previous);
    assert_eq!(signed[1].path, "/primary");
    assert!(signed[1].check_signatures("primary-secret").crm);
}

#[tokio::test]
async fn a_postgres_database_moved_to_sqlite_answers_the_same() {
    let Some(database) = pg::TestDatabase::create().await else { return };
    let mut receiver = Receiver::start().await;
    let mut app = TestApp::spawn_on(Arc::new(database)).await;
    let endpoint = app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": "pg-secret"})).await;
    let contact =
        app.create("contacts", json!({"first_name": "Pat", "email": "pat@example.com", "phone": "555-0100"})).await;
    let deal =
        app.create("deals", json!({"title": "Harbour View", "contact_id": contact["id"], "stage": "closed_won"})).await;
    receiver.take(3).await;
    app.settled_deliveries().await;
    let mut paths = vec![
        format!("/api/v1/contacts/{}", id_of(&contact)),
        format!("/api/v1/deals/{}", id_of(&deal)),
        format!("/api/v1/webhooks/{endpoint}"),
        "/api/v1/events?limit=1000".to_owned(),
        "/api/v1/deliveries?limit=1000".to_owned(),
    ];
    paths.extend(deliveries(&app).await.iter().map(|d| format!("/api/v1/deliveries/{}", id_of(d))));
    let before = answers(&app, &app.token, &paths).await;
    let old_records = ids_in(&app.get("/api/v1/contacts?limit=1000").await.body);
    let url = app.database.as_ref().unwrap().url.clone();
    assert!(app.terminate().success());

    let file = tempfile::NamedTempFile::new().unwrap();
    succeed(&["export", "--database-url", &url, "--output", file.path().to_str().unwrap()]);
    let target = Arc::new(tempfile::tempdir().unwrap());
    succeed(&["import", "--data-dir", target.path().to_str().unwrap(), "--input", file.path().to_str().unwrap()]);
    let moved = TestApp::spawn_in(target).await;
    assert_eq!(before, answers(&moved, &moved.token, &paths).await);

    let new_contact = app_create_contact(&moved).await;
    assert!(!old_records.contains(&new_contact), "{new_contact} is new");
    let webhook = receiver.next().await;
    assert!(webhook.check_signatures("pg-secret").crm, "the endpoint's secret came along");
}

async fn app_create_contact(app: &TestApp) -> String {
    id_of(&app.create("contacts", json!({"first_name": "Second"})).await)
}

/// A small export of a SQLite server: a contact, and the admin with its token.
async fn small_export(into: &Path) -> String {
    let mut app = TestApp::spawn().await;
    app.create("contacts", json!({"first_name": "Ada"})).await;
    assert!(app.terminate().success());
    let file = into.join("small.jsonl");
    succeed(&["export", "--data-dir", app.data_dir.path().to_str().unwrap(), "--output", file.to_str().unwrap()]);
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test]
async fn import_refuses_a_database_in_use_and_a_file_cut_short_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let whole = small_export(dir.path()).await;
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let whole_file = write("whole.jsonl", &whole);
    let without_end = write("without-end.jsonl", &whole[..whole.trim_end().rfind('\n').unwrap() + 1]);
    let mid_line = write("mid-line.jsonl", &whole[..whole.len() / 2]);

    // A data directory a server has used already.
    let mut used = TestApp::spawn().await;
    assert!(used.terminate().success());
    let line = refused(&["import", "--data-dir", used.data_dir.path().to_str().unwrap(), "--input", &whole_file]);
    assert!(line.contains("is not empty (it has users, tokens)") && line.contains("new --data-dir"), "{line}");

    // A file cut short, at a line's end or within one, leaves the new directory empty: the whole file
    // goes in afterwards.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_dir = fresh.path().to_str().unwrap();
    let line = refused(&["import", "--data-dir", fresh_dir, "--input", &without_end]);
    assert!(line.contains("without its end line: it was cut short"), "{line}");
    let line = refused(&["import", "--data-dir", fresh_dir, "--input", &mid_line]);
    assert!(line.contains("is not a line of an estate-crm export"), "{line}");
    let (said, _) = succeed(&["import", "--data-dir", fresh_dir, "--input", &whole_file]);
    assert!(said.contains("records 1"), "{said}");

    // The same on PostgreSQL, and a database a server has used is refused.
    let Some(database) = pg::TestDatabase::create().await else { return };
    let line = refused(&["import", "--database-url", &database.url, "--input", &without_end]);
    assert!(line.contains("cut short"), "{line}");
    succeed(&["import", "--database-url", &database.url, "--input", &whole_file]);
    let line = refused(&["import", "--database-url", &database.url, "--input", &whole_file]);
    assert!(line.contains("is not empty (it has users, tokens, records, events)"), "{line}");

    // Not an export at all.
    let line = refused(&[
        "import",
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
        "--input",
        &write("x.csv", "a,b\n"),
    ]);
    assert!(line.contains("is not the header of an estate-crm export"), "{line}");
    assert!(!dir.path().join("other").exists(), "a wrong file makes no database");
}
