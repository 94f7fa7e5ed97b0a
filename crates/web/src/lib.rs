//! estate-crm's web app: server-rendered pages for people, served by the same binary and port as
//! the API and over the same store calls, so a change made in a form fires exactly the webhooks the
//! same change through the API fires.
//!
//! - Pages are [maud] templates: checked when the crate compiles, and every value they show is
//!   escaped unless it is marked as markup.
//! - Who may do what is decided by extractors in [`session`]: a handler that takes a
//!   [`session::Visitor`] is signed in, an [`session::AdminVisitor`] is an administrator, and a
//!   [`session::ChangeForm`] or [`session::AdminForm`] has passed the same-origin and CSRF checks.
//! - Every page carries a strict Content-Security-Policy (scripts and styles from this site only, no
//!   inline script or style), set by [`security_headers`].
//! - The script (`assets/app.js`) only makes pages quicker: every form works without it.
#![deny(missing_docs)]

mod assets;
mod form;
mod import;
mod pages;
pub mod session;
pub mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use estate_crm_store::Store;
use estate_crm_webhooks::{AddressPolicy, Sender};

pub use pages::error_page::not_found_html;

/// The Content-Security-Policy of every page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What the web app needs from the server.
pub struct WebConfig {
    /// The records, users, sessions and deliveries.
    pub store: Arc<dyn Store>,
    /// The HTTP client of the test button.
    pub sender: Sender,
    /// The site's URL (`http://127.0.0.1:8080`): the origin forms must come from; https makes
    /// cookies Secure.
    pub site_url: String,
    /// Whether webhooks may go to private addresses.
    pub policy: AddressPolicy,
    /// Called when a token is deleted here, so that the API forgets tokens it remembers.
    pub on_token_revoked: Arc<dyn Fn() + Send + Sync>,
    /// The HubSpot sync worker's handle: woken when its settings change or a backfill is asked for.
    pub hubspot: estate_crm_webhooks::hubspot::HubspotHandle,
}

/// The handles every page shares. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebConfig,
    throttle: throttle::Throttle,
    /// The one-time setup code, made at start while no user has a password.
    setup_code: Option<String>,
    /// Held while the first administrator is made.
    setup_lock: tokio::sync::Mutex<()>,
    /// The last 24 hours' counts per endpoint, shared by every page that shows them for a moment:
    /// counting is a scan of the window's index entries, and each open dashboard asks every 2 s.
    health: tokio::sync::Mutex<Option<(std::time::Instant, pages::Health)>>,
    /// CSV uploads waiting for their mapping and the imports running or finished.
    imports: import::jobs::Imports,
}

impl WebState {
    /// Prepares the web app; makes a setup code when no user has a password yet.
    pub async fn new(config: WebConfig) -> Result<WebState, estate_crm_store::StoreError> {
        let setup_code = if config.store.any_password_set().await? {
            None
        } else {
            Some(estate_crm_store::credentials::random_base64(24))
        };
        let inner = Inner {
            config,
            throttle: throttle::Throttle::default(),
            setup_code,
            setup_lock: tokio::sync::Mutex::new(()),
            health: tokio::sync::Mutex::new(None),
            imports: import::jobs::Imports::default(),
        };
        Ok(WebState { inner: Arc::new(inner) })
    }

    /// The one-time setup link to print at start, if the first administrator is still to be made.
    pub fn setup_link(&self) -> Option<String> {
        let code = self.inner.setup_code.as_ref()?;
        Some(format!("{}/setup?code={code}", self.site_url()))
    }

    /// Counts the last 24 hours' deliveries per endpoint once, in the background, so the first
    /// dashboard or endpoints page after a start does not pay for it: with a million deliveries that
    /// first count takes about a tenth of a second, which later pages skip (the store remembers the
    /// settled part of it).
    pub fn warm_up(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            if let Err(err) = pages::endpoints::health_by_endpoint(&state).await {
                tracing::warn!(error = %err, "counting the endpoints' deliveries at start failed");
            }
        });
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.inner.config.store
    }

    fn imports(&self) -> &import::jobs::Imports {
        &self.inner.imports
    }

    fn site_url(&self) -> &str {
        self.inner.config.site_url.trim_end_matches('/')
    }

    fn secure_cookies(&self) -> bool {
        self.inner.config.site_url.starts_with("https://")
    }
}

/// Every page and asset of the web app, with its security headers.
pub fn router(state: WebState) -> Router {
    pages::router().layer(middleware::from_fn(security_headers)).with_state(state)
}

/// The headers every page carries: the CSP, no framing, no MIME sniffing, no referrer to other sites.
pub async fn security_headers(request: Request, next: Next) -> Response {
    with_security_headers(next.run(request).await)
}

/// Adds the pages' security headers to a response.
pub fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
