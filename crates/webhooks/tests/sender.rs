//! `Sender` against real servers on 127.0.0.1: a well-behaved hyper receiver
//! that records what it gets, and raw TCP servers that misbehave on purpose.
//!
//! Nothing here sleeps to wait: requests and accepted connections come back
//! through channels that are awaited with a timeout, and "no connection was
//! made" is proven by connecting a probe and checking it is the first
//! connection the server accepted.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use estate_crm_webhooks::{
    AddressPolicy, AttemptOutcome, Message, Sender, SenderConfig, TargetUrl, standard_webhooks_secret,
};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The bound on waiting for a server to report something; reached only when
/// a test is about to fail.
const WAIT: Duration = Duration::from_secs(5);

/// The timeout for attempts that are expected to finish on their own.
const GENEROUS: Duration = Duration::from_secs(5);

/// The timeout for attempts that are expected to time out.
const SHORT: Duration = Duration::from_millis(300);

const BODY: &str = r#"{"event":"contact.created"}"#;

fn sender(policy: AddressPolicy, timeout: Duration) -> Sender {
    Sender::new(SenderConfig { policy, timeout, user_agent: "estate-crm/test".to_owned() })
}

fn message(secrets: &[Vec<u8>]) -> Message<'_> {
    Message {
        delivery_id: "0190b6c2-6a4e-7c1e-9f00-00000000d001",
        event_name: "contact.created",
        body: Bytes::from_static(BODY.as_bytes()),
        secrets,
    }
}

fn target(url: &str) -> TargetUrl {
    TargetUrl::parse(url).expect("test URL is valid")
}

async fn send_to(url: &str, timeout: Duration) -> AttemptOutcome {
    let sender = sender(AddressPolicy::AllowPrivate, timeout);
    sender.send(&target(url), &message(&[])).await
}

/// What the hyper receiver answers.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: &'static str,
}

impl Canned {
    fn status(status: u16) -> Canned {
        Canned { status, headers: Vec::new(), body: "" }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Canned {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: &'static str) -> Canned {
        self.body = body;
        self
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(*name, value);
        }
        response.body(Full::new(Bytes::from_static(self.body.as_bytes()))).expect("canned response is valid")
    }
}

/// A request as the receiver got it.
struct Recorded {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A hyper server on 127.0.0.1 that answers every request with one canned
/// response and reports requests and accepted connections.
struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Recorded>,
    connections: mpsc::UnboundedReceiver<SocketAddr>,
}

impl Receiver {
    async fn start(canned: Canned) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (request_tx, requests) = mpsc::unbounded_channel();
        let (connection_tx, connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let _ = connection_tx.send(peer);
                let (request_tx, canned) = (request_tx.clone(), canned.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (request_tx, canned) = (request_tx.clone(), canned.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let _ = request_tx.send(Recorded {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, hyper::Error>(canned.response())
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Receiver { addr, requests, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn next_request(&mut self) -> Recorded {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("the receiver got a request in time")
            .expect("the receiver is running")
    }

    async fn assert_no_connection_so_far(&mut self) {
        assert_probe_is_first_connection(self.addr, &mut self.connections).await;
    }
}

/// Connects a probe and checks that it is the first connection the server
/// accepted: connections are accepted in order, so any earlier one would
/// have been reported before it.
async fn assert_probe_is_first_connection(addr: SocketAddr, connections: &mut mpsc::UnboundedReceiver<SocketAddr>) {
    let probe = TcpStream::connect(addr).await.expect("probe connects");
    let first = tokio::time::timeout(WAIT, connections.recv())
        .await
        .expect("the server reported the probe in time")
        .expect("the server is running");
    assert_eq!(first, probe.local_addr().expect("probe address"), "the server accepted a connection before the probe");
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).unwrap_or_else(|| panic!("{name} is present")).to_str().expect("header is text")
}

fn unix_seconds(time: SystemTime) -> i64 {
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit")
}

#[tokio::test]
async fn a_signed_delivery_carries_every_header_and_both_signatures() {
    let mut receiver = Receiver::start(Canned::status(200).body("thanks")).await;
    let secrets = vec![b"secret-1".to_vec(), b"old-secret".to_vec()];
    let before = SystemTime::now();

    let outcome = sender(AddressPolicy::AllowPrivate, GENEROUS)
        .send(&target(&receiver.url("/hooks/in?x=1")), &message(&secrets))
        .await;

    let after = SystemTime::now();
    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.error, None);
    assert!(outcome.is_success());
    assert_eq!(outcome.response_head, Bytes::from_static(b"thanks"));
    assert_eq!(outcome.retry_after, None);
    let started_at = outcome.started_at_unix_ms / 1000;
    assert!((unix_seconds(before)..=unix_seconds(after)).contains(&started_at));

    let request = receiver.next_request().await;
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.uri, "/hooks/in?x=1");
    assert_eq!(request.body, BODY.as_bytes());
    let headers = &request.headers;
    assert_eq!(header(headers, "content-type"), "application/json");
    assert_eq!(header(headers, "user-agent"), "estate-crm/test");
    assert_eq!(header(headers, "x-crm-event"), "contact.created");
    let id = "0190b6c2-6a4e-7c1e-9f00-00000000d001";
    assert_eq!(header(headers, "x-crm-delivery"), id);
    assert_eq!(header(headers, "webhook-id"), id);
    let timestamp: i64 = header(headers, "webhook-timestamp").parse().expect("timestamp is an integer");
    assert_eq!(timestamp, started_at);

    // Computed independently: hmac.new(b"secret-1", body, sha256).hexdigest()
    assert_eq!(header(headers, "x-crm-signature"), "6f299b3de14c1dff122f6c734fac5b3e4623cbbbf1b1c7e679389e6738a00889");
    assert_eq!(header(headers, "webhook-signature").split(' ').count(), 2);
    // "whsec_" + base64(b"secret-1"), computed independently.
    let whsec_current = "whsec_c2VjcmV0LTE=";
    let whsec_old = standard_webhooks_secret(b"old-secret");
    for whsec in [whsec_current, whsec_old.as_str()] {
        standardwebhooks::Webhook::new(whsec)
            .expect("valid whsec secret")
            .verify(&request.body, headers)
            .unwrap_or_else(|err| panic!("standardwebhooks rejected {whsec}: {err}"));
    }
}

#[tokio::test]
async fn a_delivery_without_secret_is_not_signed() {
    let mut receiver = Receiver::start(Canned::status(204)).await;

    let outcome = send_to(&receiver.url("/"), GENEROUS).await;

    assert!(outcome.is_success(), "{outcome:?}");
    let request = receiver.next_request().await;
    assert!(request.headers.get("x-crm-signature").is_none());
    assert!(request.headers.get("webhook-signature").is_none());
    assert!(request.headers.get("webhook-id").is_some());
    assert!(request.headers.get("webhook-timestamp").is_some());
}

#[tokio::test]
async fn statuses_decide_success_and_retry_after() {
    async fn check(canned: Canned, success: bool, retry_after: Option<u64>) {
        let status = canned.status;
        let receiver = Receiver::start(canned).await;
        let outcome = send_to(&receiver.url("/"), GENEROUS).await;
        assert_eq!(outcome.status, Some(status));
        assert_eq!(outcome.error, None, "a status is not an error ({status})");
        assert_eq!(outcome.is_success(), success, "{status}");
        assert_eq!(outcome.retry_after, retry_after.map(Duration::from_secs), "{status}");
    }

    check(Canned::status(200), true, None).await;
    check(Canned::status(201).body("created"), true, None).await;
    check(Canned::status(204), true, None).await;
    check(Canned::status(400), false, None).await;
    check(Canned::status(404), false, None).await;
    check(Canned::status(410), false, None).await;
    check(Canned::status(500).body("oops"), false, None).await;
    check(Canned::status(429).header("retry-after", "7"), false, Some(7)).await;
    check(Canned::status(503).header("retry-after", "3"), false, Some(3)).await;
    check(Canned::status(429).header("retry-after", "86400"), false, Some(3600)).await;
    check(Canned::status(429), false, None).await;
    check(Canned::status(500).header("retry-after", "7"), false, None).await;
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let mut elsewhere = Receiver::start(Canned::status(200)).await;
    let redirect = Canned::status(302).header("location", elsewhere.url("/"));
    let receiver = Receiver::start(redirect).await;

    let outcome = send_to(&receiver.url("/"), GENEROUS).await;

    assert_eq!(outcome.status, Some(302));
    assert_eq!(outcome.error, None);
    assert!(!outcome.is_success());
    elsewhere.assert_no_connection_so_far().await;
}

#[tokio::test]
async fn a_refused_connection_is_reported_in_words() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    drop(listener);

    let outcome = send_to(&format!("http://{addr}/"), GENEROUS).await;

    assert_eq!(outcome.status, None);
    assert_eq!(outcome.error.as_deref(), Some("connection refused"));
    assert!(!outcome.is_success());
}

/// How a raw TCP server misbehaves on each connection.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Reads the request and never answers.
    NeverAnswers,
    /// Sends the response head one byte at a time.
    TricklesHead,
    /// Sends the head, then the body one byte at a time.
    TricklesBody,
    /// Sends a 10 MiB body as fast as it can.
    SendsTenMegabytes,
    /// Sends part of the body, then resets the connection.
    ResetsMidBody,
    /// Sends part of the body, then closes the connection cleanly.
    ClosesMidBody,
    /// Closes the connection without answering.
    ClosesWithoutAnswer,
    /// Answers with bytes that are not HTTP.
    SendsGarbage,
    /// Answers a TLS ClientHello with plain HTTP.
    AnswersTlsWithPlainText,
    /// Closes the connection on a TLS ClientHello.
    HangsUpOnTls,
}

const TRICKLE_EVERY: Duration = Duration::from_millis(50);

/// A raw TCP server on 127.0.0.1 that misbehaves on every connection.
async fn start_misbehaving(misbehaviour: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // The client hanging up makes writes fail; that ends the script.
            tokio::spawn(misbehave(stream, misbehaviour));
        }
    });
    addr
}

async fn misbehave(mut stream: TcpStream, misbehaviour: Misbehaviour) -> io::Result<()> {
    use Misbehaviour::*;
    if matches!(misbehaviour, AnswersTlsWithPlainText | HangsUpOnTls) {
        // The ClientHello fits in one read.
        let mut hello = [0; 4096];
        let _ = stream.read(&mut hello).await?;
    } else {
        read_request(&mut stream).await?;
    }
    let head_of_1000 = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
    match misbehaviour {
        NeverAnswers => std::future::pending().await,
        TricklesHead => {
            trickle(&mut stream, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
            std::future::pending().await
        }
        TricklesBody => {
            stream.write_all(head_of_1000).await?;
            trickle(&mut stream, &[b'x'; 1000]).await
        }
        SendsTenMegabytes => {
            let size = 10 * 1024 * 1024;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..size / chunk.len() {
                stream.write_all(&chunk).await?;
            }
            Ok(())
        }
        ResetsMidBody => {
            stream.write_all(head_of_1000).await?;
            stream.write_all(b"0123456789").await?;
            // A zero linger turns the close into a reset.
            stream.set_zero_linger()?;
            Ok(())
        }
        ClosesMidBody => {
            stream.write_all(head_of_1000).await?;
            stream.write_all(b"0123456789").await?;
            stream.shutdown().await
        }
        ClosesWithoutAnswer | HangsUpOnTls => stream.shutdown().await,
        SendsGarbage => {
            stream.write_all(b"this is not HTTP at all\r\n\r\n").await?;
            stream.shutdown().await
        }
        AnswersTlsWithPlainText => {
            stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await?;
            stream.shutdown().await
        }
    }
}

async fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut ticks = tokio::time::interval(TRICKLE_EVERY);
    for byte in bytes {
        ticks.tick().await;
        stream.write_all(&[*byte]).await?;
    }
    Ok(())
}

/// Reads one request, head and `content-length` body, so that closing
/// afterwards is a clean close rather than a reset for unread data.
async fn read_request(stream: &mut TcpStream) -> io::Result<()> {
    const MAX_REQUEST: usize = 64 * 1024;
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_REQUEST {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|len| len.trim().parse().ok())
        .unwrap_or(0);
    let mut remaining = (head_end + body_len).saturating_sub(buf.len());
    while remaining > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        remaining = remaining.saturating_sub(n);
    }
    Ok(())
}

#[tokio::test]
async fn misbehaving_receivers_end_in_words() {
    struct Expect {
        status: Option<u16>,
        error: Option<&'static str>,
        head: &'static [u8],
    }
    async fn check(misbehaviour: Misbehaviour, timeout: Duration, expect: Expect) {
        let addr = start_misbehaving(misbehaviour).await;
        let outcome = send_to(&format!("http://{addr}/"), timeout).await;
        assert_eq!(outcome.status, expect.status, "{misbehaviour:?}");
        assert_eq!(outcome.error.as_deref(), expect.error, "{misbehaviour:?}");
        assert_eq!(outcome.response_head, expect.head, "{misbehaviour:?}");
        assert!(!outcome.is_success(), "{misbehaviour:?}");
        assert!(
            outcome.duration < timeout + Duration::from_millis(500),
            "{misbehaviour:?} took {:?}",
            outcome.duration
        );
    }
    use Misbehaviour::*;
    let timed_out = Some("timed out after 300ms");

    check(NeverAnswers, SHORT, Expect { status: None, error: timed_out, head: b"" }).await;
    check(TricklesHead, SHORT, Expect { status: None, error: timed_out, head: b"" }).await;
    let reset = Expect { status: Some(200), error: Some("connection reset"), head: b"0123456789" };
    check(ResetsMidBody, GENEROUS, reset).await;
    let cut = Expect { status: Some(200), error: Some("response body ended early"), head: b"0123456789" };
    check(ClosesMidBody, GENEROUS, cut).await;
    let closed = Expect { status: None, error: Some("connection closed before a response was received"), head: b"" };
    check(ClosesWithoutAnswer, GENEROUS, closed).await;
    let garbage = Expect { status: None, error: Some("invalid HTTP response"), head: b"" };
    check(SendsGarbage, GENEROUS, garbage).await;
}

#[tokio::test]
async fn a_body_trickled_past_the_timeout_keeps_its_status() {
    let addr = start_misbehaving(Misbehaviour::TricklesBody).await;

    let outcome = send_to(&format!("http://{addr}/"), SHORT).await;

    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
    assert!(!outcome.is_success());
    assert!(outcome.response_head.iter().all(|b| *b == b'x'));
    assert!(outcome.response_head.len() < 1000);
    assert!(outcome.duration >= SHORT, "{:?}", outcome.duration);
    assert!(outcome.duration < SHORT * 3, "{:?}", outcome.duration);
}

#[tokio::test]
async fn a_huge_response_is_read_only_up_to_the_bound() {
    let addr = start_misbehaving(Misbehaviour::SendsTenMegabytes).await;

    let outcome = send_to(&format!("http://{addr}/"), GENEROUS).await;

    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.error, None);
    assert!(outcome.is_success());
    assert_eq!(outcome.response_head.len(), 1024);
    assert!(outcome.response_head.iter().all(|b| *b == b'a'));
    assert!(outcome.duration < Duration::from_secs(2), "{:?}", outcome.duration);
}

#[tokio::test]
async fn tls_failures_are_reported_as_such() {
    async fn check(misbehaviour: Misbehaviour, expected: &str) {
        let addr = start_misbehaving(misbehaviour).await;
        let outcome = send_to(&format!("https://{addr}/"), GENEROUS).await;
        assert_eq!(outcome.status, None, "{misbehaviour:?}");
        let error = outcome.error.unwrap_or_default();
        assert!(error.starts_with(expected), "{misbehaviour:?}: {error:?} does not start with {expected:?}");
    }

    check(Misbehaviour::AnswersTlsWithPlainText, "TLS handshake failed: ").await;
    check(Misbehaviour::HangsUpOnTls, "TLS handshake failed: the server closed the connection").await;
}

#[tokio::test]
async fn public_only_blocks_private_destinations_before_connecting() {
    async fn check(receiver: &mut Receiver, url: &str, expected: &str) {
        let url = url.replace("PORT", &receiver.addr.port().to_string());
        let sender = sender(AddressPolicy::PublicOnly, GENEROUS);
        let outcome = sender.send(&target(&url), &message(&[])).await;
        assert_eq!(outcome.status, None, "{url}");
        assert_eq!(outcome.error.as_deref(), Some(expected), "{url}");
        receiver.assert_no_connection_so_far().await;
    }
    let loopback = "blocked: 127.0.0.1 is a loopback address";

    let mut receiver = Receiver::start(Canned::status(200)).await;
    check(&mut receiver, "http://127.0.0.1:PORT/", loopback).await;
    check(&mut receiver, "http://2130706433:PORT/", loopback).await;
    check(&mut receiver, "http://0x7f000001:PORT/", loopback).await;
    check(&mut receiver, "https://127.1:PORT/", loopback).await;
    check(&mut receiver, "http://[::ffff:127.0.0.1]:PORT/", "blocked: ::ffff:127.0.0.1 is a loopback address").await;
    check(&mut receiver, "http://LOCALHOST.:PORT/", "blocked: localhost is a loopback address").await;
}
