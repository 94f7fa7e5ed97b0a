//! `estate-crm listen`: a receiver on this machine for developers, in the spirit of `stripe listen`.
//!
//! Each webhook is printed as one block: time, event, `webhook-id` and the event's one-line summary
//! (the same table Slack endpoints use), then, with `--secret`, the verdict on each signature and
//! the timestamp, and with `--print-body` the body. It answers 200, or with `--forward-to` whatever
//! the forward target answered (502 when it could not be reached). The first line printed says the
//! address, so a script (or a test) can read the port that `--port 0` picked.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use estate_crm_domain::slack::summary_of_body;
use estate_crm_domain::webhook::parse_delay;
use estate_crm_webhooks::{Signed, secret_keys};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{HttpClient, ListenArgs, http_client, runtime, verdict_lines};

/// The largest webhook body accepted; larger ones are answered 413.
const MAX_BODY: usize = 1024 * 1024;
/// The most of a forward target's answer relayed back.
const MAX_FORWARD_ANSWER: usize = 64 * 1024;
/// Headers that describe one hop of a connection, not the webhook: not forwarded.
const HOP_HEADERS: [&str; 6] = ["host", "connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"];

/// What every connection shares.
struct Listener {
    keys: Option<Vec<Vec<u8>>>,
    forward: Option<(hyper::Uri, HttpClient, Duration)>,
    print_body: bool,
}

/// Runs `estate-crm listen` until Ctrl-C.
pub fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let forward = match &args.forward_to {
        Some(url) => {
            let parsed = url::Url::parse(url).with_context(|| format!("--forward-to {url:?} is not a URL"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "--forward-to must be an http:// or https:// URL"
            );
            let timeout = parse_delay(&args.forward_timeout).map_err(|e| anyhow::anyhow!("--forward-timeout: {e}"))?;
            anyhow::ensure!(!timeout.is_zero(), "--forward-timeout must be longer than 0s");
            Some((parsed.as_str().parse::<hyper::Uri>()?, http_client(), timeout))
        }
        None => None,
    };
    let listener =
        Arc::new(Listener { keys: args.secret.as_deref().map(secret_keys), forward, print_body: args.print_body });
    runtime()?.block_on(serve(SocketAddr::new(args.host, args.port), listener, args.forward_to))
}

async fn serve(address: SocketAddr, listener: Arc<Listener>, forward_to: Option<String>) -> anyhow::Result<ExitCode> {
    let socket = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("could not listen on {address}; is the port taken? try --port 0"))?;
    let bound = socket.local_addr()?;
    let mut intro = format!("listening on http://{bound}, ready for webhooks (Ctrl-C to stop)");
    intro.push_str(match &listener.keys {
        Some(_) => "\nchecking signatures with the given secret",
        None => "\nsignatures are not checked: give --secret (the endpoint's secret, or its whsec_ form)",
    });
    if let Some(target) = forward_to {
        intro.push_str(&format!("\nforwarding each webhook to {target}"));
    }
    print_block(&intro);
    loop {
        let stream = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A failed accept (out of file descriptors, say) is the client's loss, not ours.
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let listener = listener.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let listener = listener.clone();
                async move { Ok::<_, Infallible>(listener.receive(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

impl Listener {
    async fn receive(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                print_block(&format!("{} {} refused: the body is larger than 1 MiB or was cut", now(), parts.uri));
                return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            }
        };
        let mut block = self.describe(&parts.headers, &parts.method, &parts.uri, &body);
        let response = match &self.forward {
            Some((target, client, timeout)) => {
                let (response, outcome) = forward(client, target, *timeout, &parts.headers, body).await;
                block.push_str(&format!("\n  forwarded: {outcome}"));
                response
            }
            None => answer(StatusCode::OK, "ok"),
        };
        print_block(&block);
        response
    }

    /// The block printed for one request.
    fn describe(&self, headers: &HeaderMap, method: &hyper::Method, uri: &hyper::Uri, body: &[u8]) -> String {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let id = header("webhook-id").unwrap_or("(no webhook-id)");
        let mut block = match summary_of_body(body) {
            Some((event, summary)) => format!("{}  {event}  {id}  {summary}", now()),
            None => format!("{}  {method} {uri}  {id}  not an estate-crm webhook ({} bytes)", now(), body.len()),
        };
        if let Some(keys) = &self.keys {
            let signed = Signed {
                webhook_id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                crm_signature: header("x-crm-signature"),
                crm_signature_previous: header("x-crm-signature-previous"),
                body,
            };
            let verdict = estate_crm_webhooks::verify(keys, &signed, chrono::Utc::now().timestamp());
            for line in verdict_lines(&verdict, &signed) {
                block.push_str(&format!("\n  {line}"));
            }
            block.push_str(if verdict.is_valid() { "\n  verified" } else { "\n  NOT verified" });
        }
        if self.print_body {
            block.push_str(&format!("\n  body: {}", String::from_utf8_lossy(body)));
        }
        block
    }
}

/// Sends the webhook on, headers and body as received; answers what to reply and a line saying
/// what happened.
async fn forward(
    client: &HttpClient,
    target: &hyper::Uri,
    timeout: Duration,
    headers: &HeaderMap,
    body: Bytes,
) -> (Response<Full<Bytes>>, String) {
    let mut request = Request::post(target.clone());
    for (name, value) in headers.iter().filter(|(name, _)| !HOP_HEADERS.contains(&name.as_str())) {
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return (answer(StatusCode::BAD_GATEWAY, "could not build the forwarded request"), "could not build it".into());
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| describe_error(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_FORWARD_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, body))) => {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            (response, format!("{target} answered {}", status.as_u16()))
        }
        Ok(Err(error)) => (answer(StatusCode::BAD_GATEWAY, &error), format!("{target} failed: {error}")),
        Err(_) => {
            let error = format!("no answer within {}s", timeout.as_secs_f64());
            (answer(StatusCode::GATEWAY_TIMEOUT, &error), format!("{target} failed: {error}"))
        }
    }
}

/// The innermost cause, which says what happened ("Connection refused").
fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

/// Prints a block at once, so that blocks of webhooks arriving together never interleave.
fn print_block(block: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{block}");
    let _ = out.flush();
}
