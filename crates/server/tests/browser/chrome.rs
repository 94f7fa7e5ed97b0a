//! Headless Chromium driven through chromedriver: [`Browser`] is one WebDriver session with a
//! fresh profile, on a chromedriver of its own.
//!
//! Each browser gets its own chromedriver, started in a process group of its own behind a tiny
//! shell watcher that holds the read end of a pipe from this process. Dropping the [`Browser`],
//! a panicking test and even this process being killed all close that pipe, and the watcher then
//! kills the whole group (chromedriver and every Chromium process it started), so no browser
//! outlives the tests.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::PATIENCE;
use crate::{axe, screens};

/// The one command that gives a machine what these tests need.
pub const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// The window every page is seen in.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 900;

/// How long chromedriver may take to say it is listening.
const DRIVER_START: Duration = Duration::from_secs(30);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// The flags every Chromium gets: headless, no sandbox (CI runs as root), and nothing that
/// reaches past 127.0.0.1 or slows a start.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// Keeps stdin's pipe in a watcher that kills the process group once the pipe closes, and runs
/// chromedriver in the foreground of that group on a port of its choosing.
const WATCHED_DRIVER: &str = r#"exec 3<&0
(cat <&3 >/dev/null 2>&1; kill -KILL 0) </dev/null >/dev/null 2>&1 &
exec "$1" --port=0 </dev/null 3<&-"#;

/// A chromedriver process and the watcher that ends its process group.
struct Chromedriver {
    child: Child,
    /// Closing this ends chromedriver and its browsers.
    lifeline: Option<ChildStdin>,
    url: String,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let driver = find_on_path("chromedriver");
        let mut child = Command::new("sh")
            .args(["-c", WATCHED_DRIVER, "sh"])
            .arg(&driver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", driver.display()));
        let lifeline = child.stdin.take();
        let stdout = child.stdout.take().expect("chromedriver's stdout");
        let port = read_port(stdout).unwrap_or_else(|why| {
            let _ = child.kill();
            panic!("chromedriver did not start: {why}; if it is broken, reinstall it with `{INSTALL}`")
        });
        Chromedriver { child, lifeline, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// Reads chromedriver's stdout until it names its port, then keeps draining it on the same
/// thread so that chromedriver never writes to a closed pipe.
fn read_port(stdout: std::process::ChildStdout) -> Result<u16, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut said = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(port) = started_port(&line) {
                let _ = tx.send(Ok(port));
                lines.for_each(drop);
                return;
            }
            said.push(line);
        }
        let _ = tx.send(Err(format!("it exited after printing {said:?}")));
    });
    rx.recv_timeout(DRIVER_START).map_err(|_| format!("it named no port within {DRIVER_START:?}"))?
}

/// The port in `ChromeDriver was started successfully on port 40033.`
fn started_port(line: &str) -> Option<u16> {
    line.split_once("started successfully on port ")?.1.trim_end_matches('.').trim().parse().ok()
}

/// `name` on the PATH; fails the test (never skips it) with the command that installs it.
fn find_on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed, and the browser tests need it: install it with `{INSTALL}`")
        })
}

/// One headless Chromium session, on its own chromedriver and profile, pointed at one server.
pub struct Browser {
    client: Client,
    base: String,
    // Dropped in this order: the driver (and its browsers) before their profile.
    _driver: Chromedriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens a browser on the server at `base` (`http://127.0.0.1:PORT`).
    pub async fn open(base: &str) -> Browser {
        let chromium = find_on_path("chromium");
        let driver = tokio::task::spawn_blocking(Chromedriver::start).await.expect("starting chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            // An alert left open stays open, so that a test can see it was opened.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = tokio::time::timeout(
            PATIENCE * 3,
            ClientBuilder::new(HttpConnector::new()).capabilities(capabilities).connect(&driver.url),
        )
        .await
        .expect("Chromium starts in time")
        .unwrap_or_else(|err| panic!("Chromium did not start: {err}; if it is broken, reinstall it with `{INSTALL}`"));
        client.set_window_size(WIDTH, HEIGHT).await.expect("sizing the window");
        Browser { client, base: base.trim_end_matches('/').to_owned(), _driver: driver, _profile: profile }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Opens `path` (or a full URL), waits for it to load and checks it (see [`Browser::check_page`]).
    pub async fn visit(&self, path: &str) {
        let url = if path.starts_with("http") { path.to_owned() } else { self.url(path) };
        self.client.goto(&url).await.unwrap_or_else(|err| panic!("opening {url}: {err}"));
        self.check_page().await;
    }

    /// What every page keeps to, and no serious or critical accessibility violation.
    pub async fn check_page(&self) {
        let shape = self
            .script(
                "return { lang: document.documentElement.lang, title: document.title.trim(), \
                 mains: document.querySelectorAll('main').length, \
                 h1s: document.querySelectorAll('main h1').length, path: location.pathname }",
            )
            .await;
        let path = shape["path"].as_str().unwrap_or("?").to_owned();
        assert_eq!(shape["lang"], "en", "{path}: <html lang> is {}", shape["lang"]);
        assert_ne!(shape["title"], "", "{path}: the page has no <title>");
        assert_eq!(shape["mains"], 1, "{path}: pages have one <main>");
        assert_eq!(shape["h1s"], 1, "{path}: a page's <main> has one <h1>");
        axe::assert_accessible(&self.client, &path).await;
    }

    /// Runs `script` in the page and answers what it returns.
    pub async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|err| panic!("running {script:?}: {err}"))
    }

    /// Runs `script` with arguments (`arguments[0]`, ...).
    pub async fn script_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|err| panic!("running {script:?}: {err}"))
    }

    /// The current page's path and query.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element `css` matches, waiting for it at most [`PATIENCE`].
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(PATIENCE).every(POLL).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(err) => panic!("no {css} on {} within {PATIENCE:?}: {err}", self.path().await),
        }
    }

    /// Every element `css` matches now (no waiting).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.expect("finding elements")
    }

    /// Whether `css` matches anything now.
    pub async fn has(&self, css: &str) -> bool {
        !self.all(css).await.is_empty()
    }

    /// The visible text of the element `css` matches.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|err| panic!("reading {css}: {err}"))
    }

    /// Types `value` into the field named `name` (`#f-NAME`), replacing what was there.
    pub async fn fill(&self, name: &str, value: &str) {
        let field = self.find(&field_css(name)).await;
        field.clear().await.unwrap_or_else(|err| panic!("clearing #f-{name}: {err}"));
        if !value.is_empty() {
            field.send_keys(value).await.unwrap_or_else(|err| panic!("typing into #f-{name}: {err}"));
        }
    }

    /// Ticks or unticks the checkbox `#f-ID`.
    pub async fn set_checked(&self, id: &str, checked: bool) {
        let field = self.find(&field_css(id)).await;
        if field.is_selected().await.expect("reading a checkbox") != checked {
            field.click().await.unwrap_or_else(|err| panic!("clicking #f-{id}: {err}"));
        }
    }

    /// Chooses the option with `value` in the select `#f-NAME`.
    pub async fn select(&self, name: &str, value: &str) {
        let field = self.find(&field_css(name)).await;
        field.select_by_value(value).await.unwrap_or_else(|err| panic!("choosing {value} in #f-{name}: {err}"));
    }

    /// The `<button>` whose text is exactly `text` (the first, when there are several).
    pub async fn button(&self, text: &str) -> Element {
        self.find_xpath(&format!("//button[normalize-space(.)='{text}']")).await
    }

    /// The `<button>` whose text is `text` in the form that holds the field `#f-FIELD`.
    pub async fn button_by_field(&self, field: &str, text: &str) -> Element {
        self.find_xpath(&format!("//form[.//*[@id='f-{field}']]//button[normalize-space(.)='{text}']")).await
    }

    pub async fn find_xpath(&self, xpath: &str) -> Element {
        match self.client.wait().at_most(PATIENCE).every(POLL).for_element(Locator::XPath(xpath)).await {
            Ok(element) => element,
            Err(err) => panic!("nothing matches {xpath} on {}: {err}", self.path().await),
        }
    }

    /// Clicks `button` and waits until an element matching `expect` is there that was not there
    /// before the click, whether the page was replaced or updated in place; then checks the page.
    pub async fn submit(&self, button: Element, expect: &str) {
        self.script_with(
            "document.querySelectorAll(arguments[0]).forEach(e => e.setAttribute('data-test-stale', ''))",
            vec![json!(expect)],
        )
        .await;
        button.click().await.unwrap_or_else(|err| panic!("clicking a button: {err}"));
        let fresh = "return document.readyState === 'complete' && \
                     [...document.querySelectorAll(arguments[0])].some(e => !e.hasAttribute('data-test-stale'))";
        let found = self
            .eventually(&format!("{expect} after the click"), || async {
                // Running a script while the next page loads can fail; that is "not yet".
                let ready = self.client.execute(fresh, vec![json!(expect)]).await.ok()?;
                ready.as_bool().filter(|ready| *ready)
            })
            .await;
        assert!(found);
        self.check_page().await;
    }

    /// Presses the button `text` of the form holding `#f-FIELD` and waits for `expect`.
    pub async fn press(&self, field: &str, text: &str, expect: &str) {
        let button = self.button_by_field(field, text).await;
        self.submit(button, expect).await;
    }

    /// Waits at most [`PATIENCE`] for `probe` to answer something, looking every [`POLL`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let path = self.client.current_url().await.map(|url| url.to_string()).unwrap_or_default();
                panic!("waited {PATIENCE:?} for {what} on {path}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the text of `css` contains every one of `parts`; answers the text.
    pub async fn wait_for_text(&self, css: &str, parts: &[&str]) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null";
        self.eventually(&format!("{css} to show {parts:?}"), || async {
            let text = self.client.execute(script, vec![json!(css)]).await.ok()?;
            let text = text.as_str()?.to_owned();
            parts.iter().all(|part| text.contains(part)).then_some(text)
        })
        .await
    }

    /// Waits until the text of `css` is exactly `expected`, opening the page again now and then:
    /// for figures the page does not promise to update by itself, or shares for a moment.
    pub async fn wait_for_text_reloading(&self, css: &str, expected: &str) {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null";
        let mut looks = 0;
        self.eventually(&format!("{css} to read {expected:?}"), || {
            looks += 1;
            let reload = looks % 20 == 0;
            async move {
                if reload {
                    self.client.refresh().await.ok()?;
                }
                let now = self.client.execute(script, vec![json!(css)]).await.ok()?;
                (now.as_str()? == expected).then_some(())
            }
        })
        .await;
        self.check_page().await;
    }

    /// Marks the current document so that [`Browser::assert_not_reloaded`] can tell it is the same.
    pub async fn mark_document(&self) {
        self.script("window.__testMark = 'still here'").await;
    }

    /// Fails if the document marked by [`Browser::mark_document`] was replaced.
    pub async fn assert_not_reloaded(&self, what: &str) {
        let mark = self.script("return window.__testMark || null").await;
        assert_eq!(mark, "still here", "{what} reloaded the page");
    }

    /// The value of the cookie `name`.
    pub async fn cookie(&self, name: &str) -> fantoccini::cookies::Cookie<'static> {
        self.client.get_named_cookie(name).await.unwrap_or_else(|err| panic!("no cookie {name}: {err}"))
    }

    /// Fails if a JavaScript dialog (alert, confirm, prompt) is open.
    pub async fn assert_no_dialog(&self) {
        if let Ok(text) = self.client.get_alert_text().await {
            panic!("a dialog opened on {}: {text:?}", self.path().await);
        }
    }

    /// Saves a picture of the whole page as `NAME.png` (see [`screens`]).
    pub async fn screenshot(&self, name: &str) {
        // The window is made tall enough for the whole page (its frame included) and the page
        // is shown from its top, whatever a click scrolled to.
        let sizes = self
            .script(
                "window.scrollTo(0, 0); \
                 return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]",
            )
            .await;
        let page = sizes[0].as_u64().unwrap_or(0) as u32;
        let frame = sizes[1].as_u64().unwrap_or(0) as u32;
        let tall = (page + frame).clamp(HEIGHT, 4 * HEIGHT);
        self.client.set_window_size(WIDTH, tall).await.expect("sizing the window");
        let png = self.client.screenshot().await.expect("a screenshot");
        self.client.set_window_size(WIDTH, HEIGHT).await.expect("sizing the window");
        screens::save(name, &png);
    }

    /// Ends the session cleanly (dropping the browser also ends it, less politely).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// The CSS selector of the field with id `f-NAME` (ids may hold dots, as in `f-event-contact.created`).
pub fn field_css(name: &str) -> String {
    format!("[id='f-{name}']")
}

#[cfg(test)]
mod tests {
    use super::started_port;

    #[test]
    fn the_port_is_read_from_chromedriver_start_line() {
        assert_eq!(started_port("ChromeDriver was started successfully on port 40033."), Some(40033));
        assert_eq!(started_port("Only local connections are allowed."), None);
    }
}
