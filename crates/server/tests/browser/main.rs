//! Browser tests: the web app in headless Chromium (Debian's `chromium` and `chromium-driver`),
//! against the real binary and real receivers, through WebDriver. Every page a test visits is
//! checked with axe-core, and each screen is photographed (see `screens`).
//!
//! Without Chromium these tests fail, naming the command that installs it; they never skip.

#[path = "../api/helpers.rs"]
mod helpers;

mod axe;
mod chrome;
mod screens;

mod harness;

use chrome::Browser;
use helpers::TestApp;

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
}
