//! A small client for the parts of the server's API the bench drives, over one pooled
//! keep-alive hyper client.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::payload::{self, Batch, SECRET};
use crate::receiver::id_key;

/// A bulk answer carries 10,000 ids; nothing the bench asks for is near this.
const MAX_RESPONSE: usize = 16 << 20;

/// A single call that takes longer than this has failed for the bench's purposes.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A bulk request of 10,000 rows may take a while on a slow machine, but not this long.
const BULK_TIMEOUT: Duration = Duration::from_secs(120);

/// Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
}

/// An endpoint as the bench creates it.
pub struct EndpointSpec<'a> {
    pub url: &'a str,
    pub events: &'a str,
    pub retry_schedule: &'a str,
    pub max_in_flight: u32,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            auth: HeaderValue::from_str(&format!("Bearer {token}"))?,
        })
    }

    /// Sends one request and answers the status and the body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|err| anyhow::anyhow!("reading the answer: {err}"))?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .with_context(|| format!("{method} {path} got no answer within {timeout:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    /// Like [`Api::call`], but anything other than `expected` is an error that quotes the body.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        expected: StatusCode,
        timeout: Duration,
    ) -> Result<Bytes> {
        let (status, answer) = self.call(method.clone(), path, body, timeout).await?;
        if status != expected {
            bail!("{method} {path} answered {status} (expected {expected}): {}", excerpt(&answer));
        }
        Ok(answer)
    }

    /// Creates a webhook endpoint and answers its id.
    pub async fn create_endpoint(&self, spec: &EndpointSpec<'_>) -> Result<String> {
        let body = json!({
            "url": spec.url,
            "events": spec.events,
            "secret": SECRET,
            "retry_schedule": spec.retry_schedule,
            "max_in_flight": spec.max_in_flight,
        });
        let answer = self
            .expect(
                Method::POST,
                "/api/v1/webhooks",
                Some(Bytes::from(body.to_string())),
                StatusCode::CREATED,
                CALL_TIMEOUT,
            )
            .await?;
        id_in(&answer)
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<()> {
        let path = format!("/api/v1/webhooks/{id}");
        self.expect(Method::DELETE, &path, None, StatusCode::NO_CONTENT, CALL_TIMEOUT).await?;
        Ok(())
    }

    /// Attempts again every failed delivery of an endpoint.
    pub async fn retry_failed(&self, endpoint_id: &str) -> Result<()> {
        let path = format!("/api/v1/webhooks/{endpoint_id}/retry-failed");
        let (status, answer) = self.call(Method::POST, &path, None, CALL_TIMEOUT).await?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {}", excerpt(&answer));
        }
        Ok(())
    }

    /// How many deliveries each endpoint is still owed, from `/metrics`: first attempts whose
    /// outcome is not yet recorded, and retries. An endpoint the server lists none for owes none.
    pub async fn queue_depths(&self) -> Result<HashMap<String, u64>> {
        let answer = self.expect(Method::GET, "/metrics", None, StatusCode::OK, CALL_TIMEOUT).await?;
        Ok(queue_depths_in(&String::from_utf8_lossy(&answer)))
    }

    /// Creates a batch of contacts and answers how many the server took.
    pub async fn bulk_create(&self, batch: &Batch) -> Result<u64> {
        let answer = self
            .expect(Method::POST, "/api/v1/contacts/bulk", Some(batch.body.clone()), StatusCode::OK, BULK_TIMEOUT)
            .await?;
        ids_in(&answer)
    }

    /// Creates one contact with number `n` and answers its id.
    pub async fn create_contact(&self, n: u64) -> Result<String> {
        let answer = self
            .expect(
                Method::POST,
                "/api/v1/contacts",
                Some(Bytes::from(payload::contact_row(n))),
                StatusCode::CREATED,
                CALL_TIMEOUT,
            )
            .await?;
        id_in(&answer)
    }

    /// Creates one task: a durable write that fires no event an endpoint subscribed to
    /// `contact.created` receives.
    pub async fn create_task(&self, n: u64) -> Result<()> {
        let body = json!({ "title": format!("bench probe {n}") });
        self.expect(
            Method::POST,
            "/api/v1/tasks",
            Some(Bytes::from(body.to_string())),
            StatusCode::CREATED,
            CALL_TIMEOUT,
        )
        .await?;
        Ok(())
    }
}

impl Api {
    /// Makes an admin user who can sign in to the web app with `password`.
    pub async fn create_user(&self, email: &str, password: &str) -> Result<()> {
        let body = json!({ "name": "Bench Admin", "email": email, "role": "admin", "password": password });
        self.expect(
            Method::POST,
            "/api/v1/users",
            Some(Bytes::from(body.to_string())),
            StatusCode::CREATED,
            CALL_TIMEOUT,
        )
        .await?;
        Ok(())
    }
}

/// Reads `estate_crm_queue_depth{endpoint="ID"} N` lines of the Prometheus text format.
fn queue_depths_in(metrics: &str) -> HashMap<String, u64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("estate_crm_queue_depth{endpoint=\"")?;
            let (endpoint, rest) = rest.split_once("\"}")?;
            let depth = rest.trim().parse::<u64>().ok()?;
            Some((endpoint.to_owned(), depth))
        })
        .collect()
}

fn id_in(answer: &[u8]) -> Result<String> {
    let answer: Value = serde_json::from_slice(answer).context("the answer is not JSON")?;
    match answer.get("id") {
        Some(id) => Ok(id_key(id)),
        None => bail!("the answer has no id: {}", excerpt(answer.to_string().as_bytes())),
    }
}

fn ids_in(answer: &[u8]) -> Result<u64> {
    let answer: Value = serde_json::from_slice(answer).context("the bulk answer is not JSON")?;
    let ids = answer["ids"].as_array().context("the bulk answer has no ids")?;
    Ok(ids.len() as u64)
}

/// The start of an answer, enough to say what went wrong without flooding the terminal.
fn excerpt(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depths_are_read_per_endpoint_from_the_metrics_text() {
        let metrics = "# HELP estate_crm_queue_depth Pending webhook deliveries per endpoint.\n\
                       # TYPE estate_crm_queue_depth gauge\n\
                       estate_crm_queue_depth{endpoint=\"ep_1\"} 12\n\
                       estate_crm_queue_depth{endpoint=\"ep_2\"} 0\n\
                       estate_crm_requests_total{method=\"GET\"} 3\n";
        let depths = queue_depths_in(metrics);
        assert_eq!(depths.len(), 2);
        assert_eq!(depths["ep_1"], 12);
        assert_eq!(depths["ep_2"], 0);
    }
}
