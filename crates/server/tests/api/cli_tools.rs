//! The developer tools: `estate-crm listen` receiving from a running server (checking signatures,
//! forwarding), `estate-crm trigger` making the server send a sample, and `estate-crm verify` on a
//! raw request file. Each runs as the real binary.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use hyper::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, PATIENCE, Received, Receiver, Reply, TestApp};

/// `estate-crm listen` running on a free port, its stdout read line by line.
struct Listen {
    child: Child,
    address: SocketAddr,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Listen {
    async fn start(args: &[&str]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
            .args(["listen", "--port", "0"])
            .args(args)
            .env_remove("ESTATE_CRM_WEBHOOK_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("estate-crm listen starts");
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first =
            tokio::time::timeout(PATIENCE, lines.recv()).await.ok().flatten().expect("listen prints where it listens");
        let address = first
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Listen { child, address, lines }
    }

    fn url(&self) -> String {
        format!("http://{}/webhooks", self.address)
    }

    /// The lines printed up to and including the first that contains `needle` (from the block of
    /// the webhook that has it, on).
    async fn block_with(&mut self, needle: &str, until: &str) -> Vec<String> {
        let mut block: Vec<String> = Vec::new();
        let mut found = false;
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("no {needle:?}, then {until:?}, in {block:#?}"));
            found |= line.contains(needle);
            if found {
                block.push(line.clone());
                if line.contains(until) {
                    return block;
                }
            }
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a tool to its end (within [`PATIENCE`]) with `stdin`, off the test's runtime so that the
/// receivers it serves keep answering.
async fn run_tool(args: &[&str], stdin: &[u8]) -> Output {
    let (args, stdin): (Vec<String>, Vec<u8>) = (args.iter().map(|a| a.to_string()).collect(), stdin.to_vec());
    tokio::task::spawn_blocking(move || run_tool_blocking(&args, &stdin)).await.expect("the tool's thread")
}

fn run_tool_blocking(args: &[String], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
        .args(args)
        .env_remove("ESTATE_CRM_TOKEN")
        .env_remove("ESTATE_CRM_SERVER")
        .env_remove("ESTATE_CRM_WEBHOOK_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    child.stdin.take().expect("piped stdin").write_all(stdin).expect("stdin takes the body");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("estate-crm {args:?} did not finish")
        })
        .expect("the output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn listen_prints_each_webhook_and_which_signatures_hold() {
    let app = TestApp::spawn().await;
    let mut listen = Listen::start(&["--secret", "listen-secret", "--print-body"]).await;
    let id = app.add_endpoint(json!({"url": listen.url(), "events": "*", "secret": "listen-secret"})).await;
    app.create("contacts", json!({"first_name": "Ada", "last_name": "Lovelace"})).await;
    let block = listen.block_with("contact.created", "body:").await;
    let text = block.join("\n");
    assert!(block[0].contains("New contact: Ada Lovelace"), "{text}");
    for line in [
        "webhook-signature: valid (entry 1 of 1)",
        "X-CRM-Signature: valid",
        "timestamp: ",
        "  verified",
        "\"first_name\":\"Ada\"",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let delivery = &app.settled_deliveries().await[0];
    assert!(text.contains(delivery["id"].as_str().unwrap()), "the webhook-id is shown: {text}");
    assert_eq!(delivery["last_status_code"], 200, "{delivery}");

    // After a rotation the listener still holds the old secret: the old entry and header hold.
    let rotated = app.post(&format!("/api/v1/webhooks/{id}/rotate-secret"), json!({"grace": "1h"})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    app.create("deals", json!({"title": "12 Elm St", "stage": "closed_won", "amount": 450000})).await;
    let text = listen.block_with("deal.won", "verified").await.join("\n");
    for line in [
        "Deal won: 12 Elm St, $450,000",
        "webhook-signature: valid (entry 2 of 2)",
        "X-CRM-Signature: INVALID",
        "X-CRM-Signature-Previous: valid",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }

    // A stranger's secret verifies nothing, and says so.
    let mut stranger = Listen::start(&["--secret", "whsec_c3RyYW5nZXI="]).await;
    app.add_endpoint(json!({"url": stranger.url(), "events": "task.completed", "secret": "listen-secret"})).await;
    let task = app.create("tasks", json!({"title": "Call back"})).await;
    app.post(&format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()), json!({})).await;
    let text = stranger.block_with("task.completed", "verified").await.join("\n");
    assert!(text.contains("webhook-signature: INVALID") && text.contains("NOT verified"), "{text}");
}

#[tokio::test]
async fn listen_forwards_and_answers_what_the_app_answered() {
    let app = TestApp::spawn().await;
    let mut target = Receiver::answering(|_| Reply::status(202).with_body("queued")).await;
    let mut listen = Listen::start(&["--forward-to", &target.url("/my-app/hook")]).await;
    app.add_endpoint(json!({"url": listen.url(), "events": "*", "secret": "s3cret"})).await;
    app.create("contacts", json!({"first_name": "Fwd"})).await;
    let forwarded: Received = target.next().await;
    assert_eq!(forwarded.path, "/my-app/hook");
    assert!(forwarded.check_signatures("s3cret").standard, "headers and body go through untouched");
    assert_eq!(forwarded.json()["event"], "contact.created");
    let text = listen.block_with("contact.created", "forwarded").await.join("\n");
    assert!(text.contains("answered 202"), "{text}");
    let delivery = &app.settled_deliveries().await[0];
    assert_eq!(delivery["last_status_code"], 202, "the server saw the app's answer: {delivery}");

    // A forward target that is down: 502, and the delivery fails (to be retried), not lost.
    drop(target);
    let mut down = Listen::start(&["--forward-to", "http://127.0.0.1:9/", "--forward-timeout", "2s"]).await;
    let id = app.add_endpoint(json!({"url": down.url(), "events": "deal.created", "retry_schedule": ""})).await;
    app.create("deals", json!({"title": "Nowhere"})).await;
    let text = down.block_with("deal.created", "forwarded").await.join("\n");
    assert!(text.contains("failed"), "{text}");
    let deliveries = app.get(&format!("/api/v1/deliveries?endpoint_id={id}&status=failed")).await.body;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut deliveries = deliveries;
    while deliveries["items"].as_array().is_none_or(|items| items.is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "the delivery never failed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        deliveries = app.get(&format!("/api/v1/deliveries?endpoint_id={id}&status=failed")).await.body;
    }
    assert_eq!(deliveries["items"][0]["last_status_code"], 502, "{deliveries}");
}

#[tokio::test]
async fn trigger_sends_a_sample_to_the_subscribed_endpoints() {
    let app = TestApp::spawn().await;
    let mut won = Receiver::start().await;
    let mut other = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": won.url("/won"), "events": "deal.won", "secret": "trig"})).await;
    app.add_endpoint(json!({"url": other.url("/other"), "events": "contact.created"})).await;
    let server = format!("http://{}", app.address);

    let output = run_tool(&["trigger", "deal.won", "--server", &server, "--token", ADMIN_TOKEN], b"").await;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed} {}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains(&id) && printed.contains("200 ok"), "{printed}");
    let sample = won.next().await;
    assert_eq!(sample.header("x-crm-event"), "deal.won");
    assert_eq!(sample.json()["event"], "deal.won");
    assert_eq!(sample.json()["data"]["stage"], "closed_won");
    assert!(sample.check_signatures("trig").standard, "signed like any delivery");
    assert!(other.drain().is_empty(), "an endpoint not subscribed to deal.won gets nothing");
    // Kept in the log as a test, so it is never owed to subscribers a second time.
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={id}")).await.body;
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");

    // Failures say what happened and exit 1.
    won.answer_with(|_| Reply::status(500));
    let output = run_tool(&["trigger", "deal.won", "--server", &server, "--token", ADMIN_TOKEN], b"").await;
    assert!(!output.status.success() && stdout(&output).contains("500 failed"), "{}", stdout(&output));
    let output = run_tool(&["trigger", "deal.won", "--server", &server, "--token", "wrong-token"], b"").await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));
    let output = run_tool(&["trigger", "task.completed", "--server", &server, "--token", ADMIN_TOKEN], b"").await;
    assert!(!output.status.success() && stdout(&output).contains("no active endpoint"), "{}", stdout(&output));
}

#[tokio::test]
async fn verify_reads_a_raw_request_file() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    app.add_endpoint(json!({"url": receiver.url("/"), "events": "*", "secret": "file-secret"})).await;
    app.create("contacts", json!({"first_name": "File"})).await;
    let received = receiver.next().await;
    let dir = tempfile::tempdir().unwrap();

    let write_request = |name: &str, body: &[u8]| {
        let mut raw = b"POST /hook HTTP/1.1\r\n".to_vec();
        for (name, value) in &received.headers {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        let path = dir.path().join(name);
        std::fs::write(&path, raw).unwrap();
        path
    };
    let good = write_request("good.http", &received.body);
    let output = run_tool(&["verify", "--secret", "file-secret", "--request", good.to_str().unwrap()], b"").await;
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("webhook-signature: valid"), "{}", stdout(&output));

    let mut tampered_body = received.body.to_vec();
    tampered_body[received.body.len() / 2] ^= 1;
    let tampered = write_request("tampered.http", &tampered_body);
    let output = run_tool(&["verify", "--secret", "file-secret", "--request", tampered.to_str().unwrap()], b"").await;
    assert!(!output.status.success() && stdout(&output).contains("NOT verified"), "{}", stdout(&output));

    let output = run_tool(&["verify", "--secret", "file-secret"], &received.body).await;
    assert!(!output.status.success(), "no signature given is not a pass");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no signature"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
