//! The test harness: [`TestApp`] runs the real server binary; [`Receiver`] is a real HTTP server that
//! records what it is sent and answers as a test tells it to.

#![allow(dead_code)] // Each test module uses a different part of the harness.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::mpsc;

/// The admin token every test server starts with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running server.
pub struct TestApp {
    pub address: SocketAddr,
    pub token: String,
    pub data_dir: Arc<tempfile::TempDir>,
    /// The PostgreSQL database the server keeps its data in, in the `api_postgres` run.
    pub database: Option<Arc<crate::pg::TestDatabase>>,
    args: Vec<String>,
    child: Child,
    client: Client<HttpConnector, Full<Bytes>>,
    /// What the server printed on stdout after its start line, read as it comes.
    output: Arc<Mutex<Vec<String>>>,
}

/// An HTTP answer: status, headers and the body (as JSON when it is JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

/// Whether this run keeps the servers' data in PostgreSQL (the `api_postgres` test binary).
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "api_postgres"
}

impl TestApp {
    /// Starts a server with a short retry schedule and private targets allowed.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// Starts a server with extra command-line arguments (later flags win over the defaults).
    pub async fn spawn_with(extra: &[&str]) -> TestApp {
        TestApp::spawn_args(&["--allow-private-targets"], extra).await
    }

    /// Starts a server on this PostgreSQL database (made and migrated by the test).
    pub async fn spawn_on(database: Arc<crate::pg::TestDatabase>) -> TestApp {
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let args = ["--allow-private-targets", "--retry-schedule", "200ms,200ms"].map(str::to_owned).to_vec();
        TestApp::start(data_dir, Some(database), args).await
    }

    /// Starts a server on this PostgreSQL database with extra command-line arguments.
    pub async fn spawn_on_with(database: Arc<crate::pg::TestDatabase>, extra: &[&str]) -> TestApp {
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let defaults = ["--allow-private-targets", "--retry-schedule", "200ms,200ms"];
        let args = defaults.iter().chain(extra).map(|s| s.to_string()).collect();
        TestApp::start(data_dir, Some(database), args).await
    }

    /// Stops the server with SIGKILL (no grace), for good.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
    }

    /// Starts an embedded-database server on a data directory that holds a database already (one
    /// made by `estate-crm import`).
    pub async fn spawn_in(data_dir: Arc<tempfile::TempDir>) -> TestApp {
        let args = ["--allow-private-targets", "--retry-schedule", "200ms,200ms"].map(str::to_owned).to_vec();
        TestApp::start(data_dir, None, args).await
    }

    /// Starts a server as it runs in production: webhooks may go to public addresses only.
    pub async fn spawn_public_only() -> TestApp {
        TestApp::spawn_args(&[], &[]).await
    }

    async fn spawn_args(policy: &[&str], extra: &[&str]) -> TestApp {
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        let defaults = ["--retry-schedule", "200ms,200ms", "--delivery-timeout", "2s"];
        let args = policy.iter().chain(&defaults).chain(extra).map(|s| s.to_string()).collect();
        // With the PostgreSQL variants turned off (said on stderr), this run's servers use SQLite.
        let database = match on_postgres() {
            true => crate::pg::TestDatabase::create().await.map(Arc::new),
            false => None,
        };
        TestApp::start(data_dir, database, args).await
    }

    async fn start(
        data_dir: Arc<tempfile::TempDir>,
        database: Option<Arc<crate::pg::TestDatabase>>,
        args: Vec<String>,
    ) -> TestApp {
        let data_path = data_dir.path().to_owned();
        let mut spawn_args = args.clone();
        if let Some(database) = &database {
            spawn_args.extend(["--database-url".to_owned(), database.url.clone()]);
            // A server restarted after a kill waits for its predecessor's leases to expire: short
            // ones keep those tests quick. First, so that a test's own `--lease-ttl` wins.
            spawn_args.splice(0..0, ["--lease-ttl".to_owned(), "2s".to_owned()]);
        }
        let (child, address, output) = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN])
                .arg("--data-dir")
                .arg(&data_path)
                .args(&spawn_args)
                .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()))
                .stdout(Stdio::piped())
                .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
                .spawn()
                .expect("the estate-crm binary starts");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            reader.read_line(&mut line).expect("the start line");
            let address = line
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split([',', ' ', '\n']).next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in the start line {line:?}"));
            // The rest of stdout is kept for tests that look for a line (the setup link).
            let output = Arc::new(Mutex::new(Vec::new()));
            let lines = output.clone();
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
            (child, address, output)
        })
        .await
        .expect("spawning the server");
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestApp { address, token: ADMIN_TOKEN.into(), data_dir, database, args, child, client, output }
    }

    /// The first line the server printed after its start line that contains `needle`, waiting for
    /// it up to [`PATIENCE`].
    pub async fn printed_line(&self, needle: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.output.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with SIGKILL (no grace) and starts it again on the same data directory.
    pub async fn kill_and_restart(mut self) -> TestApp {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
        TestApp::start(self.data_dir.clone(), self.database.clone(), self.args.clone()).await
    }

    /// Stops the server with SIGTERM and waits for it to exit; answers its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        self.child.wait().expect("the server exits")
    }

    /// Stops the server with SIGTERM; its exit status if it exits within `limit`, else `None` (and it
    /// is killed when this is dropped).
    pub async fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Stops the server gracefully and starts it again on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        let status = self.terminate();
        assert!(status.success(), "a graceful stop exits 0, got {status}");
        TestApp::start(self.data_dir.clone(), self.database.clone(), self.args.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Sends a request with the admin token.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.request_as(&self.token.clone(), method, path, body).await
    }

    /// Sends a request with this token ("" for none).
    pub async fn request_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut builder = Request::builder().method(method).uri(self.url(path));
        if !token.is_empty() {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&json).unwrap())
            }
            None => Bytes::new(),
        };
        self.send(builder.body(Full::new(body)).unwrap()).await
    }

    /// Sends a raw request (any headers, any bytes).
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = tokio::time::timeout(PATIENCE, self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.into_body().collect().await.expect("a whole body").to_bytes();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Answer { status, headers, body, raw }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a record and answers it, failing the test if that does not answer 201.
    pub async fn create(&self, plural: &str, body: Value) -> Value {
        let answer = self.post(&format!("/api/v1/{plural}"), body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body
    }

    /// Creates a webhook endpoint on `url` and answers its id.
    pub async fn add_endpoint(&self, body: Value) -> String {
        let answer = self.post("/api/v1/webhooks", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    /// The names of the events in the event log, oldest first.
    pub async fn event_names(&self) -> Vec<String> {
        let answer = self.get("/api/v1/events?limit=1000").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let mut names: Vec<String> =
            answer.body["items"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
        names.reverse();
        names
    }

    /// Waits until the delivery log shows no pending delivery; answers every delivery, newest first.
    pub async fn settled_deliveries(&self) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self.get("/api/v1/deliveries?limit=1000").await;
            let items = answer.body["items"].as_array().cloned().unwrap_or_default();
            if items.iter().all(|d| d["status"] != "pending") {
                return items;
            }
            assert!(tokio::time::Instant::now() < deadline, "deliveries still pending: {items:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waits this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: vec![], body: String::new(), delay: Duration::ZERO }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = Arc<Mutex<Box<dyn FnMut(&Received) -> Reply + Send>>>;

/// A real HTTP receiver on 127.0.0.1 at a free port.
pub struct Receiver {
    pub address: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 "ok" to everything.
    pub async fn start() -> Receiver {
        Receiver::answering(|_| Reply::status(200).with_body("ok")).await
    }

    /// A receiver that answers as `script` says, request by request.
    pub async fn answering(script: impl FnMut(&Received) -> Reply + Send + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, received) = mpsc::unbounded_channel();
        let script: Script = Arc::new(Mutex::new(Box::new(script)));
        let serving = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (tx, script) = (tx.clone(), serving.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (tx, script) = (tx.clone(), script.clone());
                        async move { Ok::<_, hyper::Error>(handle(request, tx, script).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { address, received, script, task }
    }

    /// Changes how the receiver answers from now on.
    pub fn answer_with(&self, script: impl FnMut(&Received) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// The next request, waiting at most [`PATIENCE`].
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("the receiver is running")
    }

    /// The next `n` requests.
    pub async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.next().await);
        }
        all
    }

    /// Whatever has arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(received) = self.received.try_recv() {
            all.push(received);
        }
        all
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    tx: mpsc::UnboundedSender<Received>,
    script: Script,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let received = Received { path, headers, body };
    let reply = (script.lock().unwrap())(&received);
    let _ = tx.send(received);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    response.body(Full::new(Bytes::from(reply.body))).unwrap()
}

/// How a received webhook stands against a secret, checked with the official Standard Webhooks
/// crate and a plain HMAC, not with the server's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureCheck {
    /// `webhook-signature` verifies (one of its entries, and a fresh timestamp).
    pub standard: bool,
    /// `X-CRM-Signature` is the HMAC of the body with this secret.
    pub crm: bool,
    /// `X-CRM-Signature-Previous` is.
    pub crm_previous: bool,
}

impl Received {
    /// Checks this webhook's signatures against `secret` (the raw secret, as set on the endpoint).
    pub fn check_signatures(&self, secret: &str) -> SignatureCheck {
        use base64::Engine as _;
        use hmac::{KeyInit as _, Mac as _};
        let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret));
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            if let Some(value) = self.headers.get(name) {
                headers.insert(name, value.parse().expect("a header value"));
            }
        }
        let standard =
            standardwebhooks::Webhook::new(&whsec).expect("a whsec secret").verify(&self.body, &headers).is_ok();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(&self.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        SignatureCheck {
            standard,
            crm: self.header("x-crm-signature") == expected,
            crm_previous: self.header("x-crm-signature-previous") == expected,
        }
    }
}
