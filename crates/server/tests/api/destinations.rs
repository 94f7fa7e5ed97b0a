//! Safety of destinations: a server started without `--allow-private-targets` refuses loopback,
//! private, link-local, shared and unspecified destinations, when saved and when sent to.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, PATIENCE, Receiver};

/// The real server as `TestApp` starts it, but with private targets refused (the default).
struct GuardedApp {
    address: SocketAddr,
    child: Child,
    client: Client<HttpConnector, Full<Bytes>>,
    _data_dir: tempfile::TempDir,
}

impl GuardedApp {
    async fn spawn() -> GuardedApp {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let data_path = data_dir.path().to_owned();
        let (child, address) = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN, "--retry-schedule", "200ms"])
                .arg("--data-dir")
                .arg(&data_path)
                .env_remove("ESTATE_CRM_ALLOW_PRIVATE_TARGETS")
                .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()))
                .stdout(Stdio::piped())
                .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
                .spawn()
                .expect("the estate-crm binary starts");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("the start line");
            let address = line
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split([',', ' ', '\n']).next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in the start line {line:?}"));
            (child, address)
        })
        .await
        .expect("spawning the server");
        let client = Client::builder(TokioExecutor::new()).build_http();
        GuardedApp { address, child, client, _data_dir: data_dir }
    }

    async fn request(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.address))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the server answers");
        let status = response.status();
        let raw = response.into_body().collect().await.expect("a whole body").to_bytes();
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }
}

impl Drop for GuardedApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves `url` by each way there is and checks the refusal: 422 with a url message starting
/// `blocked: ` that contains `words`.
async fn check(app: &GuardedApp, existing: &str, url: &str, words: &str) {
    let attempts = [
        (Method::POST, "/api/v1/webhooks".to_owned()),
        (Method::PATCH, format!("/api/v1/webhooks/{existing}")),
        (Method::PUT, "/api/v1/settings/webhook".to_owned()),
    ];
    for (method, path) in attempts {
        let (status, body) = app.request(method.clone(), &path, json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {url}: {body}");
        let message = body["error"]["fields"]["url"].as_str().unwrap_or_default();
        assert!(message.starts_with("blocked: "), "{method} {path} {url}: {message:?}");
        assert!(message.contains(words), "{method} {path} {url}: {message:?} should say {words:?}");
    }
}

#[tokio::test]
async fn private_destinations_are_refused_when_saved() {
    let app = GuardedApp::spawn().await;
    let receiver = Receiver::start().await;
    // A public address is accepted (nothing is sent to it here: no record changes).
    let (status, created) =
        app.request(Method::POST, "/api/v1/webhooks", json!({"url": "https://93.184.216.34/"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let existing = created["id"].as_str().unwrap();

    check(&app, existing, &receiver.url("/"), "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://2130706433/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://0x7f000001/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://127.1/", "127.0.0.1 is a loopback address").await;
    check(&app, existing, "http://[::1]/", "::1 is a loopback address").await;
    check(&app, existing, "http://[::ffff:127.0.0.1]/", "loopback").await;
    check(&app, existing, "http://0.0.0.0/", "0.0.0.0 is an unspecified address").await;
    check(&app, existing, "http://10.0.0.5/", "10.0.0.5 is a private address").await;
    check(&app, existing, "http://192.168.1.10:8080/hook", "private").await;
    check(&app, existing, "http://172.16.0.1/", "private").await;
    check(&app, existing, "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address").await;
    check(&app, existing, "http://100.64.0.1/", "100.64.0.1").await;
    check(&app, existing, "http://[fd00::1]/", "unique-local").await;
    check(&app, existing, "http://[fe80::1]/", "link-local").await;
    check(&app, existing, "http://224.0.0.1/", "multicast").await;
    check(&app, existing, "http://LOCALHOST./", "localhost is a loopback address").await;
    check(&app, existing, "http://localhost/", "localhost is a loopback address").await;
    check(&app, existing, "http://api.localhost:9000/", "loopback").await;

    // Nothing refused was saved.
    let (_, listed) = app.request(Method::GET, "/api/v1/webhooks", json!(null)).await;
    let urls: Vec<&Value> = listed["items"].as_array().unwrap().iter().map(|e| &e["url"]).collect();
    assert_eq!(urls, [&json!("https://93.184.216.34/")]);
    let (_, settings) = app.request(Method::GET, "/api/v1/settings/webhook", json!(null)).await;
    assert_eq!(settings["has_secret"], false);
    assert_ne!(settings["url"], receiver.url("/"));
}

#[tokio::test]
async fn the_test_button_refuses_a_private_destination_and_sends_nothing() {
    let app = GuardedApp::spawn().await;
    let mut receiver = Receiver::start().await;
    for url in [receiver.url("/"), format!("http://localhost:{}/", receiver.address.port())] {
        let (status, result) = app.request(Method::POST, "/api/v1/settings/webhook/test", json!({"url": url})).await;
        assert_eq!(status, StatusCode::OK, "{url}: {result}");
        assert_eq!(result["ok"], false, "{url}: {result}");
        assert_eq!(result["status_code"], Value::Null, "{url}: {result}");
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.contains("blocked"), "{url}: error {error:?}");
    }
    assert!(receiver.drain().is_empty(), "a blocked destination received a request");
}

#[tokio::test]
async fn credentials_and_over_long_urls_are_refused() {
    let app = GuardedApp::spawn().await;
    let too_long = format!("https://93.184.216.34/{}", "a".repeat(2048));
    let cases = [
        ("https://user:pw@93.184.216.34/", "password"),
        ("https://user@93.184.216.34/", "user"),
        (too_long.as_str(), "2048"),
        ("ftp://93.184.216.34/", "http"),
        ("file:///etc/passwd", "http"),
    ];
    for (url, words) in cases {
        let (status, body) = app.request(Method::POST, "/api/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        let message = body["error"]["fields"]["url"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{url}: {message:?} should say {words:?}");
        let (status, body) = app.request(Method::POST, "/api/v1/settings/webhook/test", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "test button {url}: {body}");
    }
}
