//! A signed-in browser, as far as the bench needs one: it signs in through the real `/login`
//! form (its CSRF token and cookies included) and fetches pages with the session cookie.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest page read; the pages the bench times are tens of kilobytes.
const MAX_PAGE: usize = 4 << 20;

/// A page that takes longer than this has failed for the bench's purposes.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A session of the web app.
pub struct WebSession {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    cookies: String,
}

impl WebSession {
    /// Opens `/login`, posts its form with `email` and `password`, and keeps the session cookie.
    pub async fn sign_in(base: &str, email: &str, password: &str) -> Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut session = Self { client, base: base.trim_end_matches('/').to_owned(), cookies: String::new() };
        let (status, headers, form) = session.send(Method::GET, "/login", None).await?;
        if status != StatusCode::OK {
            bail!("GET /login answered {status}");
        }
        session.keep_cookies(&headers);
        let token = csrf_token(&String::from_utf8_lossy(&form)).context("the sign-in form has no csrf_token")?;
        let body = form_body(&[("email", email), ("password", password), ("csrf_token", &token)]);
        let (status, headers, answer) = session.send(Method::POST, "/login", Some(body)).await?;
        session.keep_cookies(&headers);
        let to = headers.get(LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("");
        if !status.is_redirection() || to.starts_with("/login") || !session.cookies.contains("ecrm_session=") {
            bail!("signing in answered {status} to {to:?}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(session)
    }

    /// Fetches `path` whole and answers its body, failing on anything but 200.
    pub async fn page(&self, path: &str) -> Result<Bytes> {
        let (status, _, body) = self.send(Method::GET, path, None).await?;
        if status != StatusCode::OK {
            bail!("GET {path} answered {status}");
        }
        Ok(body)
    }

    async fn send(&self, method: Method, path: &str, form: Option<String>) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut request = Request::builder().method(method.clone()).uri(format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            request = request.header(COOKIE, &self.cookies);
        }
        if form.is_some() {
            request =
                request.header(CONTENT_TYPE, "application/x-www-form-urlencoded").header(ORIGIN, self.base.as_str());
        }
        let request = request.body(Full::new(Bytes::from(form.unwrap_or_default())))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_PAGE)
                .collect()
                .await
                .map_err(|err| anyhow::anyhow!("reading the page: {err}"))?
                .to_bytes();
            anyhow::Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(PAGE_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path} got no answer within {PAGE_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    /// Adds the cookies an answer sets (name=value only) to those sent from now on.
    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let Some(pair) = set.to_str().ok().and_then(|set| set.split(';').next()) else { continue };
            let Some((name, _)) = pair.split_once('=') else { continue };
            let mut kept: Vec<&str> =
                self.cookies.split("; ").filter(|c| !c.is_empty() && !c.starts_with(&format!("{name}="))).collect();
            kept.push(pair.trim());
            self.cookies = kept.join("; ");
        }
    }
}

/// The value of the `csrf_token` hidden input in a page, whatever the attributes' order.
fn csrf_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.split_once("value=\"")?.1;
    Some(value[..value.find('"')?].to_owned())
}

/// An `application/x-www-form-urlencoded` body.
fn form_body(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_read_in_either_attribute_order() {
        let page = r#"<form><input type="hidden" name="csrf_token" value="abc-123"><input name="x"></form>"#;
        assert_eq!(csrf_token(page).as_deref(), Some("abc-123"));
        let page = r#"<input value="z9" type="hidden" name="csrf_token">"#;
        assert_eq!(csrf_token(page).as_deref(), Some("z9"));
        assert_eq!(csrf_token("<form></form>"), None);
    }

    #[test]
    fn form_fields_are_encoded() {
        assert_eq!(
            form_body(&[("email", "a+b@example.com"), ("password", "two words&more")]),
            "email=a%2Bb%40example.com&password=two+words%26more"
        );
    }
}
