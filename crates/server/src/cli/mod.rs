//! The developer tools beside `serve`: `listen` (a local receiver that prints and checks each
//! webhook), `verify` (checks one webhook given by hand) and `trigger` (asks a server to send a
//! sample of an event), and `export` / `import`, which move a database to another (the stream's
//! format and both stores' sides are in `estate_crm_store`; this module opens files and says what
//! was moved).
//!
//! Signatures are checked by `estate_crm_webhooks::verify`, next to the code that makes them, so
//! the tools and the server cannot disagree about a signature; this module only gathers the
//! headers and words the verdict.

mod listen;
mod transfer;
mod trigger;
mod verify;

use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use estate_crm_webhooks::{Signed, TIMESTAMP_TOLERANCE_SECS, Verification};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use listen::listen;
pub use transfer::{export, import};
pub use trigger::trigger;
pub use verify::verify;

/// `estate-crm listen`'s flags.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The port to listen on; 0 picks a free one (the first line printed says which).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The endpoint's secret, as set or as its `whsec_` form: each webhook's signatures are checked.
    #[arg(long, env = "ESTATE_CRM_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Also sends each webhook on to this URL (your app), with its body and headers, and answers
    /// with what it answered.
    #[arg(long)]
    pub forward_to: Option<String>,
    /// How long a forwarded request may take.
    #[arg(long, default_value = "10s")]
    pub forward_timeout: String,
    /// Prints each webhook's body too.
    #[arg(long)]
    pub print_body: bool,
}

/// `estate-crm verify`'s flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The endpoint's secret, as set or as its `whsec_` form.
    #[arg(long, env = "ESTATE_CRM_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// A raw HTTP request (head, blank line, body) to check instead of stdin and header flags.
    #[arg(long, conflicts_with_all = ["id", "timestamp", "signature", "crm_signature", "crm_signature_previous"])]
    pub request: Option<PathBuf>,
    /// The `webhook-id` header.
    #[arg(long)]
    pub id: Option<String>,
    /// The `webhook-timestamp` header.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// The `webhook-signature` header.
    #[arg(long)]
    pub signature: Option<String>,
    /// The `X-CRM-Signature` header.
    #[arg(long)]
    pub crm_signature: Option<String>,
    /// The `X-CRM-Signature-Previous` header.
    #[arg(long)]
    pub crm_signature_previous: Option<String>,
}

/// `estate-crm trigger`'s flags.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The event to send a sample of, like deal.won (GET /api/v1/event-types lists them).
    pub event: String,
    /// The server's URL.
    #[arg(long, env = "ESTATE_CRM_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An administrator's API token.
    #[arg(long, env = "ESTATE_CRM_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// The HTTP client of `listen --forward-to` and `trigger`: http and https, HTTP/1.1.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> HttpClient {
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A runtime for one tool: a single thread is plenty.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// The verdict on a webhook in lines a person reads, one per signature and one for the time.
fn verdict_lines(verdict: &Verification, signed: &Signed<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    let entries = signed.signature.map_or(0, |s| s.split_whitespace().count());
    lines.push(match (verdict.standard, signed.signature) {
        (Some(Some(entry)), _) => format!("webhook-signature: valid (entry {entry} of {entries})"),
        (Some(None), _) => format!("webhook-signature: INVALID (none of its {entries} entries matches the secret)"),
        (None, Some(_)) => "webhook-signature: not checked (webhook-id or webhook-timestamp missing)".to_owned(),
        (None, None) => "webhook-signature: not sent".to_owned(),
    });
    for (name, holds) in [("X-CRM-Signature", verdict.crm), ("X-CRM-Signature-Previous", verdict.crm_previous)] {
        lines.push(match holds {
            Some(true) => format!("{name}: valid"),
            Some(false) => format!("{name}: INVALID"),
            None => format!("{name}: not sent"),
        });
    }
    lines.push(match verdict.age_secs {
        Some(age) if verdict.timestamp_fresh() => format!("timestamp: {}, within 5 minutes", age_words(age)),
        Some(age) => format!(
            "timestamp: STALE, {} (more than {} minutes: a replay, or this machine's clock is off)",
            age_words(age),
            TIMESTAMP_TOLERANCE_SECS / 60
        ),
        None => "timestamp: not sent".to_owned(),
    });
    lines
}

fn age_words(age: i64) -> String {
    if age >= 0 { format!("{age}s ago") } else { format!("{}s in the future", -age) }
}
