//! The web app through the real binary, as a browser without JavaScript uses it: cookies, forms,
//! CSRF tokens, the same-origin check, roles, security headers and escaping. (The headless-Chromium
//! tests drive the same pages with a real browser.)

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::helpers::{Answer, Receiver, Reply, TestApp};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const XSS: &str = "<img src=x onerror=alert(1)>";

/// A cookie jar and the pages it was sent, over one server.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    cookies: HashMap<String, String>,
}

/// A page: status, headers, HTML.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) html: String,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.html.find(marker).unwrap_or_else(|| panic!("no CSRF token in {}", self.html)) + marker.len();
        self.html[start..].split('"').next().unwrap().to_owned()
    }

    pub(crate) fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Browser { app, cookies: HashMap::new() }
    }

    async fn send(&mut self, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Page {
        let mut builder = Request::builder().method(method).uri(self.app.url(path)).header("accept", "text/html");
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            builder = builder.header("cookie", jar.join("; "));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let Answer { status, headers, raw, .. } =
            self.app.send(builder.body(Full::new(Bytes::from(body))).unwrap()).await;
        for cookie in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page { status, headers, html: String::from_utf8_lossy(&raw).into_owned() }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, &[], String::new()).await
    }

    /// Posts a form from this site (its `Origin`), as a browser does.
    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.app.url("");
        self.post_from(path, fields, &origin).await
    }

    async fn post_from(&mut self, path: &str, fields: &[(&str, &str)], origin: &str) -> Page {
        let body = url_encode(fields);
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("origin", origin)];
        self.send(Method::POST, path, &headers, body).await
    }

    /// Signs in through the login form.
    pub(crate) async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/login").await.csrf();
        self.post("/login", &[("csrf_token", &csrf), ("email", email), ("password", password), ("next", "/")]).await
    }
}

fn url_encode(fields: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    for (name, value) in fields {
        let encode = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        out.push(format!("{}={}", encode(name), encode(value)));
    }
    out.join("&")
}

async fn setup_link(app: &TestApp) -> String {
    let line = app.printed_line("/setup?code=").await.expect("the setup link is printed on a first start");
    let start = line.find("http://").expect("a full URL");
    line[start..].split_whitespace().next().unwrap().to_owned()
}

/// A user made through the API, who can sign in.
pub(crate) async fn make_user(app: &TestApp, email: &str, role: &str) {
    let answer = app
        .post(
            "/api/v1/users",
            json!({"name": "Agent Smith", "email": email, "role": role, "password": "agent-password"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

/// A signed-in administrator made through the API.
pub(crate) async fn admin<'a>(app: &'a TestApp) -> Browser<'a> {
    make_user(app, "admin@example.com", "admin").await;
    let mut browser = Browser::new(app);
    assert_eq!(browser.sign_in("admin@example.com", "agent-password").await.status, StatusCode::SEE_OTHER);
    browser
}

#[tokio::test]
async fn the_setup_link_makes_the_first_admin_once_and_then_is_gone() {
    let app = TestApp::spawn().await;
    let link = setup_link(&app).await;
    let path = link.split_once(&app.address.to_string()).unwrap().1.to_owned();
    let code = path.split_once("code=").unwrap().1.to_owned();
    let mut browser = Browser::new(&app);
    assert_eq!(browser.get("/setup?code=wrong").await.status, StatusCode::NOT_FOUND);
    let page = browser.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("Create admin"));
    let csrf = page.csrf();

    let short = [
        ("csrf_token", csrf.as_str()),
        ("code", &code),
        ("name", "Ann"),
        ("email", "ann@example.com"),
        ("password", "short"),
    ];
    let refused = browser.post("/setup", &short).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("id=\"f-password-error\""), "{}", refused.html);

    let fields = [
        ("csrf_token", csrf.as_str()),
        ("code", &code),
        ("name", "Ann"),
        ("email", "ann@example.com"),
        ("password", "a good password"),
    ];
    let made = browser.post("/setup", &fields).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.html);
    let cookie = made.set_cookie("ecrm_session").expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
    assert_eq!(browser.get("/settings/webhooks").await.status, StatusCode::OK, "the new admin is signed in");

    assert_eq!(browser.get(&path).await.status, StatusCode::NOT_FOUND, "the link works once");
    assert_eq!(browser.post("/setup", &fields).await.status, StatusCode::NOT_FOUND);
    let mut other = Browser::new(&app);
    assert_eq!(other.sign_in("ann@example.com", "a good password").await.status, StatusCode::SEE_OTHER);

    let app = app.restart().await;
    assert!(app.printed_line("/setup?code=").await.is_none(), "no setup link once an admin has a password");
}

#[tokio::test]
async fn a_wrong_password_gets_one_message_and_a_right_one_a_session_that_survives_a_restart() {
    let app = TestApp::spawn().await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut browser = Browser::new(&app);
    for (email, password) in [("agent@example.com", "wrong-password"), ("nobody@example.com", "agent-password")] {
        let page = browser.sign_in(email, password).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.html.contains("Wrong email or password.") && page.html.contains("role=\"alert\""));
        assert!(page.set_cookie("ecrm_session").is_none());
    }
    assert_eq!(browser.get("/").await.location(), "/login?next=/", "still signed out");
    assert_eq!(
        browser.get("/settings/deliveries?status=failed").await.location(),
        "/login?next=/settings/deliveries%3Fstatus%3Dfailed"
    );

    let page = browser.sign_in("Agent@Example.com", "agent-password").await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(browser.get("/").await.html.contains("Agent Smith"));

    let cookies = std::mem::take(&mut browser.cookies);
    drop(browser);
    let app = app.restart().await;
    let mut browser = Browser { app: &app, cookies: cookies.clone() };
    let page = browser.get("/").await;
    assert_eq!(page.status, StatusCode::OK, "the session survives a restart");

    let signed_out = browser.post("/logout", &[("csrf_token", &page.csrf())]).await;
    assert_eq!(signed_out.location(), "/login");
    assert!(signed_out.set_cookie("ecrm_session").unwrap().contains("Max-Age=0"));
    let mut kept = Browser { app: &app, cookies };
    assert_eq!(kept.get("/").await.status, StatusCode::SEE_OTHER, "the old cookie no longer works");
}

#[tokio::test]
async fn repeated_failures_are_slowed_down() {
    let app = TestApp::spawn().await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut browser = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(browser.sign_in("agent@example.com", "wrong-password").await.status, StatusCode::OK);
    }
    let slowed = browser.sign_in("agent@example.com", "agent-password").await;
    assert_eq!(slowed.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(slowed.html.contains("Try again in"));
}

#[tokio::test]
async fn a_changing_form_without_its_token_or_from_another_site_is_refused() {
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let csrf = browser.get("/settings/webhooks").await.csrf();
    let url = "http://127.0.0.1:9/hook";
    let fields = [("url", url), ("all_events", "on"), ("active", "on")];
    assert_eq!(browser.post("/settings/webhooks", &fields).await.status, StatusCode::FORBIDDEN, "no token");
    let zeros = "0".repeat(64);
    let wrong = [("csrf_token", zeros.as_str()), ("url", url), ("all_events", "on")];
    assert_eq!(browser.post("/settings/webhooks", &wrong).await.status, StatusCode::FORBIDDEN, "a wrong token");
    let with_token = [("csrf_token", csrf.as_str()), ("url", url), ("all_events", "on"), ("active", "on")];
    let foreign = browser.post_from("/settings/webhooks", &with_token, "http://evil.example").await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "another site");
    assert_eq!(app.get("/api/v1/settings/webhook").await.body["url"], "", "nothing was saved");

    let saved = browser.post("/settings/webhooks", &with_token).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.html);
    assert!(saved.html.contains("Saved."));
    assert_eq!(app.get("/api/v1/settings/webhook").await.body["url"], url);
}

#[tokio::test]
async fn webhook_settings_show_the_apis_messages_beside_their_fields_and_test_in_place() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::answering(|_| Reply::status(200).with_body("thanks from the receiver")).await;
    let mut browser = admin(&app).await;
    let csrf = browser.get("/settings/webhooks").await.csrf();

    let bad = browser
        .post("/settings/webhooks", &[("csrf_token", &csrf), ("url", "not a url"), ("events", "contact.created")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let api = app.put("/api/v1/settings/webhook", json!({"url": "not a url"})).await;
    let message = api.body["error"]["fields"]["url"].as_str().unwrap().to_owned();
    assert!(bad.html.contains(&format!("<p class=\"field-error\" id=\"f-url-error\">{message}</p>")), "{}", bad.html);
    assert!(bad.html.contains("aria-invalid=\"true\" aria-describedby=\"f-url-error\""));

    let none = browser.post("/settings/webhooks", &[("csrf_token", &csrf), ("url", &receiver.url("/hook"))]).await;
    assert!(none.html.contains("id=\"f-events-error\""), "no event ticked: {}", none.html);

    let good = [
        ("csrf_token", csrf.as_str()),
        ("url", &receiver.url("/hook")),
        ("events", "contact.created"),
        ("events", "deal.won"),
        ("secret", "s3cret"),
        ("active", "on"),
    ];
    assert!(browser.post("/settings/webhooks", &good).await.html.contains("Saved."));
    let settings = app.get("/api/v1/settings/webhook").await.body;
    assert_eq!(
        (settings["events"].as_str(), settings["has_secret"].as_bool()),
        (Some("contact.created,deal.won"), Some(true))
    );
    let page = browser.get("/settings/webhooks").await;
    assert!(!page.html.contains("s3cret"), "a saved secret is never shown again");

    let tested = browser
        .send(
            Method::POST,
            "/settings/webhooks/test",
            &[("content-type", "application/x-www-form-urlencoded"), ("x-requested-with", "fetch")],
            url_encode(&[("csrf_token", &csrf)]),
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK);
    assert!(
        tested.html.contains("<strong class=\"code\">200</strong>") && tested.html.contains("thanks from the receiver"),
        "{}",
        tested.html
    );
    assert!(!tested.html.contains("<html"), "only the result, to put in place");
}

#[tokio::test]
async fn agents_get_403_on_settings_and_no_settings_link() {
    let app = TestApp::spawn().await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("agent@example.com", "agent-password").await;
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(!home.html.contains("/settings/"), "no Settings in an agent's menu");
    for path in [
        "/settings/webhooks",
        "/settings/endpoints",
        "/settings/endpoints/new",
        "/settings/deliveries",
        "/settings/users",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.html.contains("<h1>Not allowed</h1>"));
    }
    let csrf = home.csrf();
    let posted = browser
        .post("/settings/webhooks", &[("csrf_token", &csrf), ("url", "http://127.0.0.1:9/"), ("all_events", "on")])
        .await;
    assert_eq!(posted.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/account").await.status, StatusCode::OK, "their own account page");
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_assets_are_cached_for_a_year() {
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    for path in ["/login", "/", "/settings/webhooks", "/settings/nothing-here"] {
        let page = browser.get(path).await;
        assert_eq!(page.headers["content-security-policy"], CSP, "{path}");
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["referrer-policy"], "same-origin");
        assert!(!page.html.contains("<script>") && !page.html.contains(" style="), "no inline script or style");
    }
    let page = browser.get("/").await;
    let css = page.html.split("href=\"/assets/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let asset = browser.get(&format!("/assets/{css}")).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.headers["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(browser.get("/assets/app.0000000000.css").await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.get("/nothing").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/nothing").await.body["error"]["code"], "not_found", "the API's JSON 404 stays");
}

#[tokio::test]
async fn record_data_is_shown_as_text_everywhere() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::answering(|_| Reply::status(500).with_body(XSS)).await;
    app.add_endpoint(json!({"url": receiver.url("/"), "description": XSS, "retry_schedule": ""})).await;
    app.create("contacts", json!({"first_name": XSS})).await;
    let mut browser = admin(&app).await;
    let deadline = tokio::time::Instant::now() + crate::helpers::PATIENCE;
    let id = loop {
        let log = browser.get("/settings/deliveries?status=failed").await;
        if let Some(rest) = log.html.split("data-delivery-id=\"").nth(1) {
            break rest.split('"').next().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery failed in time");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for path in
        ["/settings/endpoints".to_owned(), format!("/settings/deliveries/{id}"), "/settings/deliveries".to_owned()]
    {
        let page = browser.get(&path).await;
        assert!(!page.html.contains("<img"), "{path}: {}", page.html);
    }
    let page = browser.get(&format!("/settings/deliveries/{id}")).await;
    assert!(page.html.contains("&lt;img src=x onerror=alert(1)&gt;"), "the body and the answer as text");
    assert!(page.html.contains("id=\"delivery-status\""));
}

#[tokio::test]
async fn a_password_change_ends_the_users_other_sessions() {
    let app = TestApp::spawn().await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut first = Browser::new(&app);
    let mut second = Browser::new(&app);
    first.sign_in("agent@example.com", "agent-password").await;
    second.sign_in("agent@example.com", "agent-password").await;
    let csrf = first.get("/account").await.csrf();
    let wrong = first
        .post(
            "/account/password",
            &[("csrf_token", &csrf), ("current_password", "nope"), ("new_password", "a new password")],
        )
        .await;
    assert!(wrong.html.contains("id=\"f-current_password-error\""));
    let changed = first
        .post(
            "/account/password",
            &[("csrf_token", &csrf), ("current_password", "agent-password"), ("new_password", "a new password")],
        )
        .await;
    assert!(changed.html.contains("Password changed."), "{}", changed.html);
    assert_eq!(first.get("/account").await.status, StatusCode::OK, "this session goes on");
    assert_eq!(second.get("/account").await.status, StatusCode::SEE_OTHER, "the other one ended");
    let mut third = Browser::new(&app);
    assert_eq!(third.sign_in("agent@example.com", "a new password").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_agent_lists_only_their_own_records() {
    let app = TestApp::spawn().await;
    make_user(&app, "agent@example.com", "agent").await;
    app.create("contacts", json!({"first_name": "Admins Own"})).await;
    let mut browser = Browser::new(&app);
    browser.sign_in("agent@example.com", "agent-password").await;
    let csrf = browser.get("/account").await.csrf();
    let made = browser.post("/account/tokens", &[("csrf_token", &csrf), ("name", "import")]).await;
    let token = made
        .html
        .split("id=\"new-token\" type=\"text\" readonly value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let mine =
        app.request_as(&token, Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Agents Own"}))).await;
    assert_eq!(mine.status, StatusCode::CREATED, "the token shown once works: {}", mine.body);
    let page = browser.get("/contacts").await;
    assert!(page.html.contains("Agents Own") && !page.html.contains("Admins Own"), "{}", page.html);
    assert!(browser.get("/account").await.html.contains("import"), "the token is listed by name");
    assert!(!browser.get("/account").await.html.contains(&token), "and never shown again");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_site_is_served_over_https() {
    let app = TestApp::spawn_with(&["--site-url", "https://crm.example.com"]).await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut browser = Browser::new(&app);
    let login = browser.get("/login").await;
    assert!(login.set_cookie("ecrm_login").unwrap().contains("Secure"), "the login form's cookie too");
    let page = browser.sign_in("agent@example.com", "agent-password").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    let cookie = page.set_cookie("ecrm_session").expect("a session cookie");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}

/// The value of the input with this id (the page's read-only fields).
fn input_value(page: &Page, id: &str) -> String {
    let at = page.html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {}", page.html));
    let tag = &page.html[page.html[..at].rfind('<').unwrap()..];
    let tag = &tag[..tag.find('>').unwrap()];
    let start = tag.find("value=\"").unwrap_or_else(|| panic!("no value in {tag}")) + "value=\"".len();
    tag[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn rotate_secret_on_an_endpoints_page_shows_the_new_secret_once_and_both_sign_during_the_grace() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/hook"), "events": "*", "secret": "old-secret"})).await;
    let mut browser = admin(&app).await;
    let path = format!("/settings/endpoints/{id}");
    let page = browser.get(&path).await;
    assert!(page.html.contains("<label for=\"f-grace\">Keep the old secret valid for</label>"), "{}", page.html);
    assert!(page.html.contains("<option value=\"24h\" selected>24 hours</option>"), "24 hours is the default");
    assert!(!page.html.contains("previous secret keeps signing"), "no rotation in progress yet");
    let csrf = page.csrf();

    let rotate = format!("{path}/rotate-secret");
    let forged = browser.post(&rotate, &[("grace", "1h")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF token");

    let rotated = browser.post(&rotate, &[("csrf_token", &csrf), ("grace", "1h")]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.html);
    let secret = input_value(&rotated, "f-new-secret");
    assert!(secret.len() >= 32 && secret != "old-secret", "{secret}");
    let standard = base64::engine::general_purpose::STANDARD.encode(&secret);
    assert_eq!(input_value(&rotated, "f-new-secret-standard"), format!("whsec_{standard}"));
    assert!(rotated.html.contains("It won't be shown again") && rotated.html.contains("The old secret stays valid"));
    assert!(rotated.html.contains("readonly"));

    let again = browser.get(&path).await;
    assert!(!again.html.contains(&secret), "shown once");
    assert!(again.html.contains("The previous secret keeps signing until <time"), "{}", again.html);
    let api = app.get(&format!("/api/v1/webhooks/{id}")).await.body;
    assert_eq!(api["has_secret"], true, "{api}");

    app.create("contacts", json!({"first_name": "Rota"})).await;
    let delivery = receiver.next().await;
    let signatures = delivery.header("webhook-signature");
    assert_eq!(signatures.split(' ').filter(|s| s.starts_with("v1,")).count(), 2, "{signatures}");
    let new = delivery.check_signatures(&secret);
    assert!(new.standard && new.crm, "{new:?}");
    // The previous secret is the one set before: the refused post changed nothing.
    let old = delivery.check_signatures("old-secret");
    assert!(old.standard && old.crm_previous, "{old:?} {:?}", delivery.headers);
}

#[tokio::test]
async fn rotate_secret_on_the_webhooks_screen_takes_the_apis_grace_rules() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let mut browser = admin(&app).await;
    let unsigned = browser.get("/settings/webhooks").await;
    assert!(!unsigned.html.contains("f-grace"), "nothing to rotate without a saved secret");
    let saved = app.put("/api/v1/settings/webhook", json!({"url": receiver.url("/"), "secret": "old-secret"})).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let page = browser.get("/settings/webhooks").await;
    assert!(page.html.contains(">Rotate secret</button>"), "{}", page.html);
    let csrf = page.csrf();

    let bad = browser.post("/settings/webhooks/rotate-secret", &[("csrf_token", &csrf), ("grace", "9999h")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.html);
    let api = app.post("/api/v1/settings/webhook/rotate-secret", json!({"grace": "9999h"})).await;
    let message = api.body["error"]["fields"]["grace"].as_str().unwrap().replace('"', "&quot;");
    assert!(bad.html.contains(&format!("<p class=\"field-error\" id=\"f-grace-error\">{message}</p>")), "{}", bad.html);
    assert!(bad.html.contains("aria-invalid=\"true\" aria-describedby=\"f-grace-error\""));
    assert!(!bad.html.contains("f-new-secret"), "not rotated");

    let rotated = browser.post("/settings/webhooks/rotate-secret", &[("csrf_token", &csrf), ("grace", "0s")]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.html);
    assert!(input_value(&rotated, "f-new-secret").len() >= 32);
    assert!(rotated.html.contains("The old secret no longer signs"), "{}", rotated.html);
    assert_eq!(app.get("/api/v1/settings/webhook").await.body["has_secret"], true);
}

#[tokio::test]
async fn an_agent_cannot_rotate_a_secret() {
    let app = TestApp::spawn().await;
    let id = app.add_endpoint(json!({"url": "http://127.0.0.1:9/", "events": "*", "secret": "old-secret"})).await;
    make_user(&app, "agent@example.com", "agent").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("agent@example.com", "agent-password").await;
    let csrf = browser.get("/").await.csrf();
    for path in [format!("/settings/endpoints/{id}/rotate-secret"), "/settings/webhooks/rotate-secret".to_owned()] {
        let posted = browser.post(&path, &[("csrf_token", &csrf), ("grace", "1h")]).await;
        assert_eq!(posted.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!posted.html.contains("f-new-secret"));
    }
}

#[tokio::test]
async fn the_endpoint_form_saves_its_format_through_the_apis_parser() {
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let new = browser.get("/settings/endpoints/new").await;
    assert!(new.html.contains("<label for=\"f-format\">Format</label>"), "{}", new.html);
    assert!(new.html.contains("<option value=\"json\" selected>JSON (signed, Standard Webhooks)</option>"));
    let csrf = new.csrf();
    let url = "http://127.0.0.1:9/slack";
    let fields = |format| [("csrf_token", csrf.as_str()), ("url", url), ("all_events", "on"), ("format", format)];

    let bad = browser.post("/settings/endpoints", &fields("xml")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.html);
    let api = app.post("/api/v1/webhooks", json!({"url": url, "format": "xml"})).await;
    let message = api.body["error"]["fields"]["format"].as_str().unwrap().replace('"', "&quot;");
    assert!(
        bad.html.contains(&format!("<p class=\"field-error\" id=\"f-format-error\">{message}</p>")),
        "{}",
        bad.html
    );

    let created = browser.post("/settings/endpoints", &fields("slack")).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.html);
    let id = created.location().rsplit('/').next().unwrap().to_owned();
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.body["format"], "slack");
    let page = browser.get(created.location()).await;
    assert!(page.html.contains("<option value=\"slack\" selected>Slack message</option>"), "{}", page.html);
    let list = browser.get("/settings/endpoints").await;
    assert!(list.html.contains("<td class=\"format\">Slack message</td>"), "{}", list.html);

    let back = [("csrf_token", csrf.as_str()), ("url", url), ("all_events", "on"), ("format", "json")];
    assert_eq!(browser.post(created.location(), &back).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.body["format"], "json");
}

#[tokio::test]
async fn deleting_an_endpoint_without_ticking_that_its_deliveries_go_too_deletes_nothing() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let id = app.add_endpoint(json!({"url": receiver.url("/hook"), "events": "*"})).await;
    app.create("contacts", json!({"first_name": "Kept"})).await;
    receiver.next().await;
    let mut browser = admin(&app).await;
    let path = format!("/settings/endpoints/{id}");
    let page = browser.get(&path).await;
    assert!(page.html.contains("<label for=\"f-remove_deliveries\">"), "{}", page.html);
    let csrf = page.csrf();

    let refused = browser.post(&format!("{path}/delete"), &[("csrf_token", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert!(refused.html.contains("id=\"f-remove_deliveries-error\""), "{}", refused.html);
    assert!(refused.html.contains("Not deleted"), "{}", refused.html);
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.status, 200, "the endpoint stays");
    let log = app.get(&format!("/api/v1/deliveries?endpoint_id={id}")).await.body;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(1), "its delivery stays: {log}");

    let deleted = browser.post(&format!("{path}/delete"), &[("csrf_token", &csrf), ("remove_deliveries", "on")]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.html);
    assert_eq!(deleted.location(), "/settings/endpoints");
    assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.status, 404, "confirmed, it is gone");
}

#[tokio::test]
async fn the_users_list_says_what_the_built_in_administrator_is() {
    let app = TestApp::spawn().await;
    let mut browser = admin(&app).await;
    let page = browser.get("/settings/users").await;
    let row_start = page.html.find("admin@localhost").expect("the built-in administrator is listed");
    let row = &page.html[row_start..];
    let row = &row[..row.find("</tr>").expect("its row ends")];
    assert!(row.contains("owns the server's start-up API token"), "{row}");
}
