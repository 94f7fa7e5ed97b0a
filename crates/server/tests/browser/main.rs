//! Browser tests: the web app in headless Chromium (Debian's `chromium` and `chromium-driver`),
//! against the real binary and real receivers, through WebDriver. Every page a test visits is
//! checked with axe-core, and each screen is photographed (see `screens`).
//!
//! Without Chromium these tests fail, naming the command that installs it; they never skip.

#[path = "../api/helpers.rs"]
mod helpers;
// The harness can keep data in PostgreSQL; the browser tests keep it in SQLite.
#[path = "../../../store/tests/support/pg.rs"]
mod pg;

mod axe;
mod chrome;
mod screens;

mod contacts;
mod dashboard;
mod deliveries;
mod endpoints;
mod harness;
mod import;
mod pipeline;
mod security;
mod signin;
mod users;
mod walkthrough;
mod webhook_settings;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use chrome::Browser;
use helpers::{Answer, TestApp};

/// The password of every user the tests make.
pub const PASSWORD: &str = "correct horse battery staple";

/// The menu, and the element a signed-in page always has.
pub const MAIN_MENU: &str = "nav[aria-label='Main']";

/// A server and a browser pointed at it.
pub struct Web {
    pub app: TestApp,
    pub browser: Browser,
}

impl Web {
    /// A fresh server (no user yet) and a fresh browser.
    pub async fn start() -> Web {
        let app = TestApp::spawn().await;
        let browser = Browser::open(&app.url("")).await;
        Web { app, browser }
    }

    /// A fresh server and a browser signed in as an admin, `admin@example.com`.
    pub async fn admin() -> Web {
        let web = Web::start().await;
        web.make_user("admin", "Ada Admin", "admin@example.com").await;
        web.sign_in("admin@example.com", PASSWORD).await;
        web
    }

    /// Makes a user with [`PASSWORD`] through the API; answers their id.
    pub async fn make_user(&self, role: &str, name: &str, email: &str) -> String {
        let body = json!({ "name": name, "email": email, "role": role, "password": PASSWORD });
        let answer = self.app.post("/api/v1/users", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "making a user: {}", answer.body);
        answer.body["id"].as_str().expect("a user id").to_owned()
    }

    /// Signs in through the login form and waits for a signed-in page.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.browser.visit("/login").await;
        self.browser.fill("email", email).await;
        self.browser.fill("password", password).await;
        self.browser.press("password", "Sign in", MAIN_MENU).await;
    }

    /// Signs out with the menu's button and waits for the sign-in form.
    pub async fn sign_out(&self) {
        let button = self.browser.button("Sign out").await;
        self.browser.submit(button, "[id='f-password']").await;
    }

    /// The browser's session cookie, as a `Cookie:` header value.
    pub async fn session_cookie(&self) -> String {
        let cookie = self.browser.cookie("ecrm_session").await;
        format!("ecrm_session={}", cookie.value())
    }

    /// Sends a request as a browser would, with `cookie`, and a form body when given.
    pub async fn send_as(&self, cookie: &str, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
        self.send_from(cookie, None, method, path, form).await
    }

    /// [`Web::send_as`] with an `Origin` header.
    pub async fn send_from(
        &self,
        cookie: &str,
        origin: Option<&str>,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(self.app.url(path)).header("cookie", cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let body = match form {
            Some(fields) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
            }
            None => String::new(),
        };
        self.app.send(request.body(Full::new(Bytes::from(body))).unwrap()).await
    }

    /// The value of the first `csrf_token` hidden input on the current page.
    pub async fn csrf_token(&self) -> String {
        let token = self.browser.script("return document.querySelector('input[name=csrf_token]').value").await;
        token.as_str().filter(|token| !token.is_empty()).expect("a form with a csrf_token").to_owned()
    }

    /// The deliveries the API lists, newest first, once none is pending.
    pub async fn settled(&self) -> Vec<Value> {
        self.app.settled_deliveries().await
    }
}

/// Whether an answer is a redirect to the sign-in page.
pub fn is_sign_in_redirect(answer: &Answer) -> bool {
    let location = answer.headers.get("location").and_then(|value| value.to_str().ok()).unwrap_or("");
    answer.status == StatusCode::SEE_OTHER && location.starts_with("/login")
}
