//! HubSpot's API over the webhooks' guarded connector: bearer auth, JSON in and out, a deadline per
//! call and a bound on what is read. A call never fails: a transport error is a [`Reply`] without a
//! status, worded for the sync log.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use crate::target::{AddressPolicy, SafeConnector, safe_connector};

/// The most of an answer read: a batch of 100 objects with their properties is far below it.
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The furthest HubSpot may push a retry back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What came back from one call.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status, if a response arrived.
    pub status: Option<u16>,
    /// The JSON answer (`Null` when empty or not JSON).
    pub body: Value,
    /// How long HubSpot asked us to wait (`Retry-After`, or the rate-limit interval on a 429).
    pub retry_after: Option<Duration>,
    /// What went wrong in transport, if anything.
    pub error: Option<String>,
}

impl Reply {
    /// HubSpot's own message, or the transport error, or the status.
    pub(crate) fn message(&self) -> String {
        if let Some(error) = &self.error {
            return error.clone();
        }
        let said = self.body.get("message").and_then(Value::as_str).unwrap_or("");
        match self.status {
            Some(status) if said.is_empty() => format!("HubSpot answered {status}"),
            Some(status) => format!("HubSpot answered {status}: {}", said.chars().take(300).collect::<String>()),
            None => "no answer".to_owned(),
        }
    }
}

/// HubSpot's client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HubClient {
    client: Client<SafeConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HubClient {
    pub(crate) fn new(policy: AddressPolicy, timeout: Duration) -> HubClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(safe_connector(policy));
        HubClient { client, timeout }
    }

    /// One call: `method base_url+path` with the token and an optional JSON body.
    pub(crate) async fn call(
        &self,
        base_url: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default())).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("estate-crm/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(bytes));
        let request = match request {
            Ok(request) => request,
            Err(_) => return failed("the base URL or the token cannot be sent in a request"),
        };
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(reply) => reply,
            Err(_) => failed(&format!("timed out after {}s", self.timeout.as_secs())),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => return failed(&transport_message(&err)),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(status, response.headers());
        let body = match Limited::new(response.into_body(), MAX_ANSWER).collect().await {
            Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
            Err(_) => {
                return Reply {
                    status: Some(status),
                    body: Value::Null,
                    retry_after,
                    error: Some("the answer was cut short or too large".to_owned()),
                };
            }
        };
        Reply { status: Some(status), body, retry_after, error: None }
    }
}

fn failed(message: &str) -> Reply {
    Reply { status: None, body: Value::Null, retry_after: None, error: Some(message.to_owned()) }
}

/// The innermost cause says it best ("connection refused", "blocked: ... is a private address").
fn transport_message(err: &hyper_util::client::legacy::Error) -> String {
    let innermost = crate::target::innermost_error(err);
    format!("could not reach HubSpot: {innermost}")
}

/// `Retry-After` in seconds or as an HTTP date; on a 429 without it, HubSpot's rate-limit interval.
fn retry_after(status: u16, headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_retry_after = header(RETRY_AFTER.as_str()).and_then(|value| {
        value.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
            let at = httpdate(value)?;
            Some(at.duration_since(SystemTime::now()).unwrap_or_default())
        })
    });
    let from_interval = (status == 429)
        .then(|| header("x-hubspot-ratelimit-interval-milliseconds").and_then(|v| v.parse::<u64>().ok()))
        .flatten()
        .map(Duration::from_millis);
    from_retry_after.or(from_interval).map(|d| d.min(MAX_RETRY_AFTER))
}

fn httpdate(value: &str) -> Option<SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = u64::try_from(parsed.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_falls_back_to_the_interval_on_a_429() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(503, &headers), Some(Duration::from_secs(3)));
        let mut headers = HeaderMap::new();
        headers.insert("x-hubspot-ratelimit-interval-milliseconds", "10000".parse().unwrap());
        assert_eq!(retry_after(429, &headers), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(503, &headers), None);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(retry_after(429, &headers), Some(MAX_RETRY_AFTER));
    }
}
