//! Signing in: the first-run setup link, the sign-in form, one message for a wrong email or
//! password, the session cookie, and signing out.

use hyper::{Method, StatusCode};

use crate::{MAIN_MENU, PASSWORD, Web, is_sign_in_redirect};

/// The `http://HOST:PORT/setup?code=...` URL in a line the server printed.
fn setup_url(line: &str) -> String {
    let start = line.find("http://").unwrap_or_else(|| panic!("no URL in {line:?}"));
    line[start..].split_whitespace().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_printed_setup_link_makes_the_first_admin_and_then_is_gone() {
    let web = Web::start().await;
    let line = web.app.printed_line("/setup?code=").await.expect("the server prints the setup link");
    let link = url::Url::parse(&setup_url(&line)).unwrap_or_else(|err| panic!("{line:?}: {err}"));
    assert_eq!(link.path(), "/setup", "{line}");
    assert_eq!(link.port(), Some(web.app.address.port()), "the link names the server's port: {line}");
    let path = format!("/setup?{}", link.query().unwrap_or_default());

    web.browser.visit(&path).await;
    web.browser.screenshot("setup").await;
    web.browser.fill("name", "Ada Admin").await;
    web.browser.fill("email", "ada@example.com").await;
    web.browser.fill("password", PASSWORD).await;
    web.browser.press("password", "Create admin", MAIN_MENU).await;

    let menu = web.browser.text(MAIN_MENU).await;
    assert!(menu.contains("Settings"), "the first user is an admin: the menu reads {menu:?}");
    web.browser.visit("/settings/users").await;
    let users = web.browser.text("#users").await;
    assert!(users.contains("ada@example.com") && users.contains("admin"), "the first user is an admin: {users:?}");

    let again = web.app.request_as("", Method::GET, &path, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "the setup page is gone once the first admin exists");

    web.sign_out().await;
    web.sign_in("ada@example.com", PASSWORD).await;
    web.browser.close().await;
}

#[tokio::test]
async fn a_wrong_password_gets_one_message_that_does_not_say_what_was_wrong() {
    let web = Web::start().await;
    web.make_user("admin", "Ada Admin", "ada@example.com").await;
    web.browser.visit("/login").await;
    web.browser.screenshot("login").await;

    let wrong_password = sign_in_refused(&web, "ada@example.com", "not the password").await;
    let unknown_email = sign_in_refused(&web, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password, unknown_email, "a wrong password and an unknown email read the same");

    web.browser.fill("email", "ada@example.com").await;
    web.browser.fill("password", PASSWORD).await;
    web.browser.press("password", "Sign in", MAIN_MENU).await;
    assert_eq!(web.browser.path().await, "/");
    let cookie = web.browser.cookie("ecrm_session").await;
    assert_eq!(cookie.http_only(), Some(true), "the session cookie is HttpOnly");
    let same_site = format!("{:?}", cookie.same_site());
    assert_eq!(same_site, "Some(Lax)", "the session cookie is SameSite=Lax");
    web.browser.close().await;
}

/// Submits the sign-in form with a wrong pair; answers the one error message shown.
async fn sign_in_refused(web: &Web, email: &str, password: &str) -> String {
    web.browser.fill("email", email).await;
    web.browser.fill("password", password).await;
    web.browser.press("password", "Sign in", "[role='alert'].flash.error").await;
    let alerts = web.browser.all("[role='alert']").await;
    assert_eq!(alerts.len(), 1, "one message for a refused sign-in");
    let message = alerts[0].text().await.expect("the message's text");
    assert!(!message.trim().is_empty(), "the message says something");
    assert!(!web.browser.has(MAIN_MENU).await, "a refused sign-in shows no signed-in page");
    message
}

#[tokio::test]
async fn a_page_asked_for_signed_out_leads_to_sign_in_and_signing_out_ends_the_session() {
    let web = Web::start().await;
    web.make_user("admin", "Ada Admin", "ada@example.com").await;

    web.browser.visit("/settings/webhooks").await;
    let url = web.browser.client().current_url().await.expect("the current URL");
    assert_eq!(url.path(), "/login", "signed out, a page leads to the sign-in form");
    let next: Vec<_> = url.query_pairs().filter(|(key, _)| key == "next").map(|(_, value)| value).collect();
    assert_eq!(next, ["/settings/webhooks"], "the sign-in page knows where to go next: {url}");

    web.sign_in("ada@example.com", PASSWORD).await;
    let cookie = web.session_cookie().await;
    let signed_in = web.send_as(&cookie, Method::GET, "/settings/webhooks", None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "the session opens the page");

    web.sign_out().await;
    let after = web.send_as(&cookie, Method::GET, "/settings/webhooks", None).await;
    assert!(is_sign_in_redirect(&after), "signing out ends the session at once: {:?}", after.status);
    web.browser.close().await;
}
