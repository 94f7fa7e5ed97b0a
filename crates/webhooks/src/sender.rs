//! One webhook attempt: a signed POST and what came of it.
//!
//! [`Sender`] owns one keep-alive HTTP/1.1 client shared by every endpoint,
//! over the address-guarding connector of the `target` module. [`Sender::send`]
//! never fails: whatever happens, from a refused connection to a receiver
//! that trickles its answer, becomes an [`AttemptOutcome`] whose `error` is a
//! short phrase a person can act on, because that phrase is what the delivery
//! log and the test button show.
//!
//! The whole attempt runs under one deadline, and the response body is read
//! only up to a bound, so neither a slow nor a talkative receiver can hold a
//! sender for longer than the configured timeout.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, NaiveDateTime, Utc};
use http::header::{CONTENT_TYPE, HeaderName, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::signing::{crm_signature, standard_signature};
use crate::target::{
    AddressPolicy, ConnectFailure, SafeConnector, TargetUrl, error_chain, innermost_error, safe_connector,
};

/// How long an unused keep-alive connection stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per receiver: enough for a busy endpoint's
/// concurrent attempts to all find a warm connection.
const MAX_IDLE_PER_HOST: usize = 256;

/// The most of a response body read; reading small bodies to the end lets
/// the connection be reused, and the bound keeps a huge one from costing more.
const MAX_BODY_READ: usize = 64 * 1024;

/// The part of the response body kept with the attempt.
const HEAD_KEPT: usize = 1024;

/// The headers of an attempt besides those hyper adds (`host`, `content-length`): the most any
/// attempt carries, so that its header map never grows.
const ATTEMPT_HEADERS: usize = 9;

const X_CRM_EVENT: HeaderName = HeaderName::from_static("x-crm-event");
const X_CRM_DELIVERY: HeaderName = HeaderName::from_static("x-crm-delivery");
const X_CRM_SIGNATURE: HeaderName = HeaderName::from_static("x-crm-signature");
const X_CRM_SIGNATURE_PREVIOUS: HeaderName = HeaderName::from_static("x-crm-signature-previous");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The furthest a `Retry-After` header may push the next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// How a [`Sender`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Which destination addresses may be connected to.
    pub policy: AddressPolicy,
    /// The bound on a whole attempt: connecting, sending, and reading the
    /// response head and body.
    pub timeout: Duration,
    /// The `User-Agent` header, `estate-crm/<version>`.
    pub user_agent: String,
}

impl Default for SenderConfig {
    /// The server's defaults: public addresses only, 15 seconds.
    fn default() -> SenderConfig {
        SenderConfig {
            policy: AddressPolicy::PublicOnly,
            timeout: Duration::from_secs(15),
            user_agent: default_user_agent(),
        }
    }
}

fn default_user_agent() -> String {
    format!("estate-crm/{}", env!("CARGO_PKG_VERSION"))
}

/// Sends webhook attempts. Cloning is cheap and clones share one pool of
/// keep-alive connections.
#[derive(Clone)]
pub struct Sender {
    client: Client<SafeConnector, Full<Bytes>>,
    timeout: Duration,
    user_agent: HeaderValue,
    policy: AddressPolicy,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

/// What one attempt sends.
pub struct Message<'a> {
    /// The delivery's id, sent as `X-CRM-Delivery` and `webhook-id`; the same
    /// on every attempt so that receivers can deduplicate.
    pub delivery_id: &'a str,
    /// The event name, sent as `X-CRM-Event`.
    pub event_name: &'a str,
    /// The exact body bytes, fixed when the event was recorded.
    pub body: Bytes,
    /// The endpoint's secrets, current first. The first signs
    /// `X-CRM-Signature`, the second (a replaced one still valid)
    /// `X-CRM-Signature-Previous`; all of them sign `webhook-signature`.
    /// Empty means no signature headers.
    pub secrets: &'a [Vec<u8>],
}

impl fmt::Debug for Message<'_> {
    /// Leaves the secrets out, so a message can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("delivery_id", &self.delivery_id)
            .field("event_name", &self.event_name)
            .field("body_len", &self.body.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// What came of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The response status, if a status line was received.
    pub status: Option<u16>,
    /// What went wrong in words for a person, if anything did. `None` for any
    /// response that was received whole (or up to the read bound), 4xx and
    /// 5xx included; set alongside `status` when the body read timed out or
    /// was cut.
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response_head: Bytes,
    /// How long the receiver asked to be left alone, from `Retry-After` on a
    /// 429 or 503, at most one hour.
    pub retry_after: Option<Duration>,
    /// How long the attempt took.
    pub duration: Duration,
    /// When the attempt started, in Unix milliseconds.
    pub started_at_unix_ms: i64,
}

impl AttemptOutcome {
    /// Whether the attempt succeeded: a 2xx status and nothing else.
    ///
    /// A 2xx whose body then timed out or was cut is not a success: the spec
    /// counts a timeout as a failed attempt, and a retry carries the same
    /// `webhook-id`, so a receiver that did process it can deduplicate.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && matches!(self.status, Some(200..=299))
    }
}

impl Sender {
    /// Builds a sender; no connection is opened until the first attempt.
    ///
    /// A `user_agent` that is not a valid header value is replaced by
    /// `estate-crm/<version>` (with a warning) rather than failing, since it
    /// is configuration the server itself controls.
    pub fn new(cfg: SenderConfig) -> Sender {
        let user_agent = HeaderValue::try_from(cfg.user_agent.as_str()).unwrap_or_else(|_| {
            tracing::warn!(user_agent = %cfg.user_agent, "invalid User-Agent, using the default");
            HeaderValue::try_from(default_user_agent()).unwrap_or(HeaderValue::from_static("estate-crm"))
        });
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool never evicts idle connections.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(safe_connector(cfg.policy));
        Sender { client, timeout: cfg.timeout, user_agent, policy: cfg.policy }
    }

    /// Makes one POST attempt of `msg` to `url`. Redirects are not followed:
    /// a 3xx is reported as its status.
    pub async fn send(&self, url: &TargetUrl, msg: &Message<'_>) -> AttemptOutcome {
        let started_at = Utc::now();
        let started = Instant::now();
        let mut reply = Reply::default();

        let result = match self.build_request(url, msg, started_at.timestamp()) {
            Ok(request) => {
                let exchange = self.exchange(request, !url.is_plain_http(), &mut reply);
                tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(AttemptError::TimedOut(self.timeout)))
            }
            Err(err) => Err(err),
        };

        let outcome = AttemptOutcome {
            status: reply.status,
            error: result.err().map(|err| err.to_string()),
            response_head: reply.head.freeze(),
            retry_after: reply.retry_after,
            duration: started.elapsed(),
            started_at_unix_ms: started_at.timestamp_millis(),
        };
        tracing::debug!(
            url = %url,
            delivery_id = msg.delivery_id,
            status = outcome.status,
            error = outcome.error.as_deref(),
            duration_ms = outcome.duration.as_millis() as u64,
            "webhook attempt"
        );
        outcome
    }

    /// The request of one attempt. The header map is filled in place with names made once (a name
    /// given as text is parsed and, for ours, copied into a new buffer on every request) and room
    /// for every header, since this runs for each attempt.
    fn build_request(
        &self,
        url: &TargetUrl,
        msg: &Message<'_>,
        timestamp: i64,
    ) -> Result<Request<Full<Bytes>>, AttemptError> {
        let delivery_id = header_value(msg.delivery_id, "the delivery id")?;
        let mut headers = HeaderMap::with_capacity(ATTEMPT_HEADERS);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(X_CRM_EVENT, header_value(msg.event_name, "the event name")?);
        headers.insert(X_CRM_DELIVERY, delivery_id.clone());
        headers.insert(WEBHOOK_ID, delivery_id);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        if let Some(current) = msg.secrets.first() {
            let all: Vec<&[u8]> = msg.secrets.iter().map(Vec::as_slice).collect();
            headers.insert(X_CRM_SIGNATURE, signature_value(crm_signature(current, &msg.body))?);
            let standard = standard_signature(&all, msg.delivery_id, timestamp, &msg.body);
            headers.insert(WEBHOOK_SIGNATURE, signature_value(standard)?);
            // While a replaced secret still signs, receivers written for X-CRM-Signature that hold
            // the old secret find its signature here.
            if let Some(previous) = msg.secrets.get(1) {
                headers.insert(X_CRM_SIGNATURE_PREVIOUS, signature_value(crm_signature(previous, &msg.body))?);
            }
        }
        let mut request = Request::new(Full::new(msg.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.uri().clone();
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends `request` and reads the response into `reply` as it arrives, so
    /// that what was received survives the deadline cutting this short.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        is_https: bool,
        reply: &mut Reply,
    ) -> Result<(), AttemptError> {
        let response =
            self.client.request(request).await.map_err(|err| AttemptError::from_request_error(&err, is_https))?;
        reply.status = Some(response.status().as_u16());
        reply.retry_after = retry_after(response.status(), response.headers(), SystemTime::now());
        read_body_head(response.into_body(), &mut reply.head).await
    }
}

/// What has been received so far.
#[derive(Default)]
struct Reply {
    status: Option<u16>,
    head: BytesMut,
    retry_after: Option<Duration>,
}

/// Reads at most [`MAX_BODY_READ`] bytes of `body`, keeping the first
/// [`HEAD_KEPT`] in `head`. Stopping early drops the body, which closes the
/// connection instead of returning it to the pool: nothing is left unread on
/// a pooled connection.
async fn read_body_head(mut body: Incoming, head: &mut BytesMut) -> Result<(), AttemptError> {
    let mut read = 0;
    while read < MAX_BODY_READ {
        let Some(frame) = body.frame().await else {
            return Ok(());
        };
        let frame = frame.map_err(|err| AttemptError::from_body_error(&err))?;
        // Trailers carry nothing we keep.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        let room = HEAD_KEPT.saturating_sub(head.len());
        head.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok(())
}

fn header_value(value: &str, what: &'static str) -> Result<HeaderValue, AttemptError> {
    HeaderValue::try_from(value).map_err(|_| AttemptError::BadRequest(what))
}

/// A signature (hex or base64 text, always a valid value) as a header value, taking its buffer.
fn signature_value(signature: String) -> Result<HeaderValue, AttemptError> {
    HeaderValue::try_from(signature).map_err(|_| AttemptError::BadRequest("a signature"))
}

/// Why an attempt failed, as the delivery log words it.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("could not build the request: {0} is not a valid header value")]
    BadRequest(&'static str),
    #[error(transparent)]
    Connect(ConnectFailure),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("timed out after {}", human_duration(*.0))]
    TimedOut(Duration),
    #[error("invalid HTTP response")]
    InvalidResponse,
    #[error("connection closed before a response was received")]
    ClosedBeforeResponse,
    #[error("response body ended early")]
    BodyEndedEarly,
    #[error("connection reset")]
    Reset,
    #[error("{0}")]
    Other(String),
}

impl AttemptError {
    /// Makes sense of a failure before the response head arrived.
    fn from_request_error(err: &hyper_util::client::legacy::Error, is_https: bool) -> AttemptError {
        if let Some(failure) = error_chain(err).find_map(|e| e.downcast_ref::<ConnectFailure>()) {
            return AttemptError::Connect(failure.clone());
        }
        if err.is_connect() {
            // Every failure below TLS comes up as a `ConnectFailure`, so on
            // https what is left happened during the handshake.
            return match is_https {
                true => AttemptError::Tls(describe_tls_failure(err)),
                false => AttemptError::Other(innermost_error(err).to_string()),
            };
        }
        AttemptError::from_exchange_error(err, AttemptError::ClosedBeforeResponse)
    }

    /// Makes sense of a failure while reading the response body.
    fn from_body_error(err: &hyper::Error) -> AttemptError {
        AttemptError::from_exchange_error(err, AttemptError::BodyEndedEarly)
    }

    /// Makes sense of an error from hyper once connected; `closed` is what a
    /// connection closed at this point means.
    fn from_exchange_error(err: &(dyn std::error::Error + 'static), closed: AttemptError) -> AttemptError {
        let io_kind = innermost_io_kind(err);
        match io_kind {
            Some(std::io::ErrorKind::ConnectionReset) => return AttemptError::Reset,
            // hyper's words for a body cut short by the peer closing.
            Some(std::io::ErrorKind::UnexpectedEof) => return closed,
            _ => {}
        }
        if let Some(hyper_err) = error_chain(err).find_map(|e| e.downcast_ref::<hyper::Error>()) {
            if hyper_err.is_parse() {
                return AttemptError::InvalidResponse;
            }
            if hyper_err.is_incomplete_message() {
                return closed;
            }
        }
        AttemptError::Other(innermost_error(err).to_string())
    }
}

/// The kind of the innermost `io::Error` in `err`'s chain: the most specific.
fn innermost_io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    error_chain(err).filter_map(|e| e.downcast_ref::<std::io::Error>()).last().map(std::io::Error::kind)
}

/// rustls's own message for a handshake failure, or plain words for the
/// peer hanging up, which rustls words as "tls handshake eof".
fn describe_tls_failure(err: &(dyn std::error::Error + 'static)) -> String {
    match innermost_io_kind(err) {
        Some(std::io::ErrorKind::UnexpectedEof) => "the server closed the connection".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_owned(),
        _ => innermost_error(err).to_string(),
    }
}

/// `15s` for whole seconds, `300ms` otherwise.
fn human_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// The delay a 429 or 503 asks for, at most [`MAX_RETRY_AFTER`]. Other
/// statuses' `Retry-After` is ignored, as the spec says.
fn retry_after(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value.trim(), now).map(|delay| delay.min(MAX_RETRY_AFTER))
}

/// `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date
/// in the past means no delay.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a long time"; the cap applies.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = parse_http_date(value)?;
    let now = DateTime::<Utc>::from(now);
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

/// The three HTTP-date forms: IMF-fixdate, and the obsolete RFC 850 and
/// asctime forms that recipients must still accept.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        // 2026-04-17T12:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_776_427_200);

        #[track_caller]
        fn check(now: SystemTime, status: u16, value: Option<&str>, expected: Option<u64>) {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(RETRY_AFTER, value.parse().expect("valid header"));
            }
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(retry_after(status, &headers, now), expected.map(Duration::from_secs), "{status} {value:?}");
        }

        check(now, 429, Some("7"), Some(7));
        check(now, 503, Some(" 120 "), Some(120));
        check(now, 429, Some("0"), Some(0));
        check(now, 429, Some("3601"), Some(3600));
        check(now, 429, Some("99999999999999999999999"), Some(3600));
        check(now, 429, None, None);
        check(now, 500, Some("7"), None);
        check(now, 200, Some("7"), None);
        check(now, 301, Some("7"), None);
        check(now, 429, Some("-5"), None);
        check(now, 429, Some("1.5"), None);
        check(now, 429, Some("soon"), None);
        check(now, 429, Some(""), None);
        check(now, 503, Some("Fri, 17 Apr 2026 12:01:30 GMT"), Some(90));
        check(now, 503, Some("Fri, 17 Apr 2026 11:00:00 GMT"), Some(0));
        check(now, 503, Some("Sat, 18 Apr 2026 12:00:00 GMT"), Some(3600));
        check(now, 503, Some("Friday, 17-Apr-26 12:00:42 GMT"), Some(42));
        check(now, 503, Some("Fri Apr 17 12:00:05 2026"), Some(5));
    }

    #[test]
    fn attempts_can_run_on_any_worker_thread() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_shareable<T: Send + Sync + Clone>() {}
        assert_shareable::<Sender>();

        let sender = Sender::new(SenderConfig::default());
        let url = TargetUrl::parse("https://hooks.example.com/").expect("valid");
        let secrets = [b"secret".to_vec()];
        let msg = Message { delivery_id: "d1", event_name: "webhook.test", body: Bytes::new(), secrets: &secrets };
        // Only built, never polled: this checks the type, not the network.
        assert_send(&sender.send(&url, &msg));
    }

    #[test]
    fn a_sender_from_a_bad_user_agent_falls_back_to_the_default() {
        let cfg = SenderConfig { user_agent: "bad\nagent".to_owned(), ..SenderConfig::default() };
        assert_eq!(Sender::new(cfg).user_agent, default_user_agent());
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_sent_as_headers_fails_in_words() {
        let sender = Sender::new(SenderConfig::default());
        let url = TargetUrl::parse("https://hooks.example.com/").expect("valid");
        let msg = Message { delivery_id: "d1\r\nx-injected: 1", event_name: "e", body: Bytes::new(), secrets: &[] };
        let outcome = sender.send(&url, &msg).await;
        assert_eq!(outcome.status, None);
        assert_eq!(
            outcome.error.as_deref(),
            Some("could not build the request: the delivery id is not a valid header value")
        );
    }

    #[test]
    fn durations_in_words() {
        #[track_caller]
        fn check(d: Duration, expected: &str) {
            assert_eq!(human_duration(d), expected);
        }
        check(Duration::from_secs(15), "15s");
        check(Duration::from_millis(300), "300ms");
        check(Duration::from_millis(1500), "1500ms");
        check(Duration::from_secs(60), "60s");
    }

    #[test]
    fn success_is_2xx_and_nothing_else() {
        #[track_caller]
        fn check(status: Option<u16>, error: Option<&str>, expected: bool) {
            let outcome = AttemptOutcome {
                status,
                error: error.map(str::to_owned),
                response_head: Bytes::new(),
                retry_after: None,
                duration: Duration::ZERO,
                started_at_unix_ms: 0,
            };
            assert_eq!(outcome.is_success(), expected, "{status:?} {error:?}");
        }
        check(Some(200), None, true);
        check(Some(204), None, true);
        check(Some(299), None, true);
        check(Some(199), None, false);
        check(Some(302), None, false);
        check(Some(410), None, false);
        check(Some(500), None, false);
        check(None, Some("connection refused"), false);
        check(Some(200), Some("timed out after 15s"), false);
    }
}
