//! `estate-crm trigger EVENT`: asks a running server to send a sample of the event to its active
//! endpoints subscribed to it (`POST /api/v1/event-types/{event}/trigger`), and prints what each
//! answered. Exit status 0 when every endpoint answered 2xx.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::Value;

use super::{TriggerArgs, http_client, runtime};

/// The longest the server may take: it sends to every endpoint, each within its delivery timeout.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Runs `estate-crm trigger`.
pub fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let base = url::Url::parse(args.server.trim_end_matches('/'))
        .with_context(|| format!("--server {:?} is not a URL like http://127.0.0.1:8080", args.server))?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--server must start with http:// or https://");
    }
    let event = args.event.trim();
    if event.is_empty() || !event.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
        bail!("{event:?} is not an event name like deal.won");
    }
    let url = format!("{}/api/v1/event-types/{event}/trigger", base.as_str().trim_end_matches('/'));
    let (status, answer) = runtime()?.block_on(post(&url, &args.token))?;
    if status != 200 {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        bail!("the server answered {status}: {message}");
    }
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("no active endpoint is subscribed to {event}; nothing was sent");
        return Ok(ExitCode::FAILURE);
    }
    let mut all_ok = true;
    for result in &results {
        all_ok &= result["ok"] == Value::Bool(true);
        println!("{}", result_line(result));
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn post(url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let request = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", "0")
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
    let response = tokio::time::timeout(TRIGGER_TIMEOUT, http_client().request(request))
        .await
        .context("the server did not answer within 2 minutes")?
        .with_context(|| format!("could not reach {url}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// `ep_1  https://hooks.example.com/  200  12ms  ok` or `... failed: connection refused`.
fn result_line(result: &Value) -> String {
    let endpoint = result["endpoint_id"].as_str().unwrap_or("?");
    let url = result["url"].as_str().unwrap_or("?");
    let duration = result["duration_ms"].as_u64().unwrap_or(0);
    let verdict = match (&result["status_code"], result["error"].as_str(), result["ok"].as_bool()) {
        (status, None, Some(true)) => format!("{status} ok"),
        (Value::Number(status), None, _) => format!("{status} failed"),
        (Value::Number(status), Some(error), _) => format!("{status} failed: {error}"),
        (_, Some(error), _) => format!("failed: {error}"),
        _ => "failed".to_owned(),
    };
    format!("{endpoint}  {url}  {verdict}  {duration}ms")
}
