//! Secrets: endpoint secrets, passwords and tokens never appear in a response after the one that
//! created them, nor in a webhook, nor in a line the server prints. The harness silences the
//! server's output, so these tests start the binary themselves, with `RUST_LOG=debug` and both
//! streams captured to files, and scan everything it said.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{PATIENCE, Received, Receiver, Reply};

/// The server binary, started by hand so that its output can be kept.
struct Server {
    child: Child,
    address: SocketAddr,
    copier: Option<std::thread::JoinHandle<()>>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What a server printed, once it has stopped.
struct Output {
    stdout: String,
    stderr: String,
}

impl Server {
    /// Starts `estate-crm serve` on a free port with debug logs; `name` names its output files in `logs`.
    async fn start(data_dir: &Path, logs: &Path, name: &str, admin_token: Option<&str>) -> Server {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_estate-crm"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--allow-private-targets"])
            .args(["--retry-schedule", "200ms,200ms", "--delivery-timeout", "2s"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "debug")
            .env_remove("ESTATE_CRM_ADMIN_TOKEN")
            .env_remove("ESTATE_CRM_LOG_JSON")
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("a file for stderr"));
        if let Some(token) = admin_token {
            command.args(["--admin-token", token]);
        }
        let mut child = command.spawn().expect("the estate-crm binary starts");

        // A thread copies stdout to its file and hands each line over, so the start line is a signal.
        let pipe = child.stdout.take().expect("piped stdout");
        let (lines, seen) = std::sync::mpsc::channel::<String>();
        let mut file = File::create(&stdout).expect("a file for stdout");
        let copier = std::thread::spawn(move || {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                file.write_all(&line).expect("copying stdout");
                let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
                line.clear();
            }
        });
        let start_line = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match seen.recv_timeout(left) {
                    Ok(line) if line.contains("listening on http://") => return Some(line),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await
        .expect("waiting for the start line");
        let Some(start_line) = start_line else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start line; stderr: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        };
        let address = start_line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ', '\n']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in the start line {start_line:?}"));
        Server { child, address, copier: Some(copier), stdout, stderr }
    }

    /// Stops the server with SIGTERM and answers everything it printed.
    fn stop(mut self) -> Output {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let status = self.child.wait().expect("the server exits");
        assert!(status.success(), "a graceful stop exits 0, got {status}");
        if let Some(copier) = self.copier.take() {
            copier.join().expect("the stdout copier");
        }
        Output {
            stdout: std::fs::read_to_string(&self.stdout).expect("the stdout file"),
            stderr: std::fs::read_to_string(&self.stderr).expect("the stderr file"),
        }
    }

    fn client(&self) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", self.address),
            seen: Vec::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer the server gave, as text: status line, headers and body.
struct Seen {
    request: String,
    text: String,
}

/// A client that keeps every answer it gets, to scan them all at the end.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    seen: Vec<Seen>,
}

impl Api {
    /// Sends a request as `token` ("" for none) with a JSON body; answers the status and the body.
    async fn call(&mut self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_raw(token, method, path, body.map(|b| b.to_string())).await
    }

    async fn call_raw(&mut self, token: &str, method: Method, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method.clone()).uri(format!("{}{path}", self.base));
        if !token.is_empty() {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("a valid request");
        let response = tokio::time::timeout(PATIENCE, self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the server answers");
        let status = response.status();
        let mut text = format!("{status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        let raw = response.into_body().collect().await.expect("a whole body").to_bytes();
        text.push_str(&String::from_utf8_lossy(&raw));
        self.seen.push(Seen { request: format!("{method} {path}"), text });
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    /// The index the next answer will have.
    fn next_index(&self) -> usize {
        self.seen.len()
    }
}

/// Something that must stay hidden, in each form it could leak in.
struct Secret {
    name: &'static str,
    /// Never anywhere, after the answer that created it.
    raw: String,
    /// Its base64 (the body of `whsec_...`), which the settings screen shows by spec and nothing else.
    encoded: Option<String>,
    /// The answer that created it, which may show it.
    created_in: Option<usize>,
}

impl Secret {
    /// A webhook signing secret: the raw string and its base64 (without padding, so that it is also
    /// found inside a longer encoding).
    fn signing(name: &'static str, raw: String) -> Secret {
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw.as_bytes());
        Secret { name, raw, encoded: Some(encoded), created_in: None }
    }

    fn plain(name: &'static str, raw: String) -> Secret {
        Secret { name, raw, encoded: None, created_in: None }
    }

    fn forms(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.raw.as_str()).chain(self.encoded.as_deref())
    }

    /// The forms of this secret in `text`.
    fn found_in(&self, text: &str) -> Vec<&str> {
        self.forms().filter(|form| text.contains(form)).collect()
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A webhook as text: headers and body.
fn webhook_text(received: &Received) -> String {
    let mut text: String = received.headers.iter().map(|(name, value)| format!("{name}: {value}\n")).collect();
    text.push_str(&String::from_utf8_lossy(&received.body));
    text
}

fn random_word() -> String {
    let mut rng = rand::rng();
    (0..12).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect()
}

/// Polls the delivery log until no delivery is pending.
async fn wait_until_settled(api: &mut Api, token: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = api.call(token, Method::GET, "/api/v1/deliveries?status=pending&limit=1", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["items"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries still pending: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// `Server::stop` blocks its thread while the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_appear_after_creation_nor_in_the_output() {
    let run = random_word();
    let admin_token = format!("admin-token-{run}");
    let mut first_secret = Secret::signing("the endpoint's first secret", format!("first-secret-{run}"));
    let mut rotated_secret = Secret::signing("the endpoint's rotated secret", format!("rotated-secret-{run}"));
    let mut primary_secret = Secret::signing("the primary endpoint's secret", format!("primary-secret-{run}"));
    let tested_secret = Secret::signing("a secret tried with the test button", format!("tested-secret-{run}"));
    let refused_secret = Secret::signing("a secret in a refused change", format!("refused-secret-{run}"));
    let garbled_secret = Secret::signing("a secret in malformed JSON", format!("garbled-secret-{run}"));
    let password = Secret::plain("an agent's password", format!("password-{run}"));
    let wrong_token = Secret::plain("a wrong token", format!("wrong-token-{run}"));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, dir.path(), "first", Some(&admin_token)).await;
    let mut api = server.client();
    let admin = admin_token.as_str();

    let mut endpoint_receiver = Receiver::start().await;
    // The primary endpoint's first event webhook fails once, so that a retry is logged too.
    let failed_once = Arc::new(AtomicUsize::new(0));
    let failures = failed_once.clone();
    let mut primary_receiver = Receiver::answering(move |received| {
        if received.header("x-crm-event") != "webhook.test" && failures.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(500).with_body("try again")
        } else {
            Reply::status(200).with_body("ok")
        }
    })
    .await;

    // Secrets are set: an endpoint, a rotation, the simple settings.
    first_secret.created_in = Some(api.next_index());
    let (status, body) = api
        .call(
            admin,
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": endpoint_receiver.url("/"), "events": "*", "secret": first_secret.raw})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let endpoint = body["id"].as_str().expect("an endpoint id").to_owned();
    rotated_secret.created_in = Some(api.next_index());
    let (status, body) = api
        .call(
            admin,
            Method::PATCH,
            &format!("/api/v1/webhooks/{endpoint}"),
            Some(json!({"secret": rotated_secret.raw})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    primary_secret.created_in = Some(api.next_index());
    let (status, body) = api
        .call(
            admin,
            Method::PUT,
            "/api/v1/settings/webhook",
            Some(json!({"url": primary_receiver.url("/"), "events": "*", "secret": primary_secret.raw})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Secrets in changes that are refused are never stored, echoed or logged either.
    let (status, body) = api
        .call(
            admin,
            Method::PATCH,
            &format!("/api/v1/webhooks/{endpoint}"),
            Some(json!({"url": "not a url", "secret": refused_secret.raw})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let garbled = format!("{{\"secret\": \"{}\", \"url\": ", garbled_secret.raw);
    let (status, body) = api.call_raw(admin, Method::PUT, "/api/v1/settings/webhook", Some(garbled)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A user with a password, and a token for them, shown once.
    let (status, body) = api
        .call(
            admin,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "Agent", "email": format!("{run}@agents.test"), "role": "agent", "password": password.raw})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = body["id"].as_str().expect("a user id").to_owned();
    let token_created_in = api.next_index();
    let (status, body) =
        api.call(admin, Method::POST, "/api/v1/tokens", Some(json!({"user_id": user, "name": "secrets test"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent_token = Secret {
        created_in: Some(token_created_in),
        ..Secret::plain("the agent's new token", body["token"].as_str().expect("the new token").to_owned())
    };
    let token_id = body["id"].as_str().expect("a token id").to_owned();

    // The token is used; changes cause deliveries to both endpoints.
    let (status, body) = api.call(&agent_token.raw, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        api.call(&agent_token.raw, Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Agent's"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        api.call(admin, Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Admin's"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let contact = body["id"].as_str().expect("a contact id").to_owned();
    let (status, body) =
        api.call(admin, Method::PATCH, &format!("/api/v1/contacts/{contact}"), Some(json!({"notes": "changed"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.call(&wrong_token.raw, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = api.call(&agent_token.raw, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The test buttons: with the saved secrets, and with one given in the request.
    for (path, request) in [
        (format!("/api/v1/webhooks/{endpoint}/test"), None),
        (format!("/api/v1/webhooks/{endpoint}/test"), Some(json!({"secret": tested_secret.raw}))),
        ("/api/v1/settings/webhook/test".to_owned(), None),
    ] {
        let (status, body) = api.call(admin, Method::POST, &path, request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ok"], true, "{body}");
    }

    // Three events to each endpoint, the tests, and the primary endpoint's retry.
    let at_endpoint = endpoint_receiver.take(5).await;
    let at_primary = primary_receiver.take(5).await;
    wait_until_settled(&mut api, admin).await;
    // The secrets were really used: each webhook is signed with the secret it should be.
    for webhook in &at_endpoint {
        let signature = webhook.header("x-crm-signature");
        let with_rotated = hmac_hex(rotated_secret.raw.as_bytes(), &webhook.body);
        let with_tested = hmac_hex(tested_secret.raw.as_bytes(), &webhook.body);
        let is_test = webhook.header("x-crm-event") == "webhook.test";
        assert!(signature == with_rotated || (is_test && signature == with_tested), "{webhook:?}");
    }
    let signed_with_tested = at_endpoint
        .iter()
        .filter(|w| w.header("x-crm-signature") == hmac_hex(tested_secret.raw.as_bytes(), &w.body))
        .count();
    assert_eq!(signed_with_tested, 1, "one test webhook is signed with the secret given to the test button");
    for webhook in &at_primary {
        assert_eq!(webhook.header("x-crm-signature"), hmac_hex(primary_secret.raw.as_bytes(), &webhook.body));
    }

    // Everything is read back.
    for path in [
        "/api/v1/webhooks".to_owned(),
        format!("/api/v1/webhooks/{endpoint}"),
        "/api/v1/settings/webhook".to_owned(),
        "/api/v1/events?limit=1000".to_owned(),
        "/api/v1/event-types".to_owned(),
        "/api/v1/contacts".to_owned(),
        format!("/api/v1/contacts/{contact}"),
        "/api/v1/openapi.json".to_owned(),
        "/metrics".to_owned(),
        "/healthz".to_owned(),
        "/readyz".to_owned(),
    ] {
        let (status, body) = api.call(admin, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, deliveries) = api.call(admin, Method::GET, "/api/v1/deliveries?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    let deliveries = deliveries["items"].as_array().expect("a delivery list").clone();
    assert_eq!(deliveries.len(), 9, "three events to two endpoints and three tests: {deliveries:?}");
    for delivery in &deliveries {
        let id = delivery["id"].as_str().expect("a delivery id");
        let (status, body) = api.call(admin, Method::GET, &format!("/api/v1/deliveries/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, settings) = api.call(admin, Method::GET, "/api/v1/settings/webhook", None).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    let standard = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(primary_secret.raw.as_bytes()));
    assert_eq!(settings["standard_webhooks_secret"], standard.as_str(), "as the spec says the settings show it");

    // A revoked token no longer works.
    let (status, body) = api.call(admin, Method::DELETE, &format!("/api/v1/tokens/{token_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = api.call(&agent_token.raw, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let output = server.stop();
    assert!(
        output.stderr.contains("webhook attempt"),
        "debug logs were captured (a line per attempt): {}",
        output.stderr
    );
    let admin_secret = Secret::plain("the admin token", admin_token.clone());
    let secrets = [
        &first_secret,
        &rotated_secret,
        &primary_secret,
        &tested_secret,
        &refused_secret,
        &garbled_secret,
        &password,
        &wrong_token,
        &agent_token,
        &admin_secret,
    ];

    let mut leaks: Vec<String> = Vec::new();
    for (index, seen) in api.seen.iter().enumerate() {
        for secret in secrets {
            if secret.created_in == Some(index) {
                continue;
            }
            for form in secret.found_in(&seen.text) {
                // The settings screen shows the primary secret's Standard Webhooks form, by spec.
                let allowed = std::ptr::eq(secret, &primary_secret)
                    && Some(form) == primary_secret.encoded.as_deref()
                    && seen.request.ends_with("/api/v1/settings/webhook")
                    && index > primary_secret.created_in.unwrap_or(0);
                if !allowed {
                    leaks.push(format!("{} ({form}) in the answer to {}: {}", secret.name, seen.request, seen.text));
                }
            }
        }
    }
    for webhook in at_endpoint.iter().chain(&at_primary) {
        let text = webhook_text(webhook);
        for secret in secrets {
            for form in secret.found_in(&text) {
                leaks.push(format!("{} ({form}) in a webhook: {text}", secret.name));
            }
        }
    }
    for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        for secret in secrets {
            for form in secret.found_in(text) {
                let line = text.lines().find(|l| l.contains(form)).unwrap_or_default();
                leaks.push(format!("{} ({form}) on the server's {stream}: {line}", secret.name));
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_token_is_printed_once_on_the_first_start_and_nowhere_else() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, dir.path(), "first", None).await;
    let token = std::fs::read_to_string(data_dir.join("admin-token")).expect("<data-dir>/admin-token");
    let token = token.trim().to_owned();
    assert!(token.len() >= 32, "a generated token is long: {token:?}");
    let mut api = server.client();
    let mut receiver = Receiver::start().await;
    let (status, body) =
        api.call(&token, Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url("/")}))).await;
    assert_eq!(status, StatusCode::CREATED, "the token in the file is the admin's: {body}");
    let (status, body) = api.call(&token, Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Ada"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    receiver.next().await;
    wait_until_settled(&mut api, &token).await;
    let first = server.stop();

    // A second start on the same data directory keeps the token and does not print it again.
    let server = Server::start(&data_dir, dir.path(), "second", None).await;
    let mut again = server.client();
    let (status, body) = again.call(&token, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::OK, "the token still works after a restart: {body}");
    let second = server.stop();

    assert_eq!(first.stdout.matches(&token).count(), 1, "printed once on the first start: {}", first.stdout);
    let line = first.stdout.lines().find(|l| l.contains(&token)).unwrap_or_default();
    assert!(line.contains("admin-token"), "the line says where the token is saved: {line}");
    for (what, text) in [
        ("the first start's stderr", &first.stderr),
        ("the second start's stdout", &second.stdout),
        ("the second start's stderr", &second.stderr),
    ] {
        assert!(!text.contains(&token), "the token appears in {what}: {text}");
    }
    assert!(first.stderr.contains("webhook attempt"), "debug logs were captured: {}", first.stderr);
    for (index, seen) in api.seen.iter().chain(&again.seen).enumerate() {
        assert!(!seen.text.contains(&token), "the token in answer {index} to {}: {}", seen.request, seen.text);
    }
}
