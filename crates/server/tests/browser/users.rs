//! Users and my account: an admin adds an agent and resets a password; a password change ends
//! my other sessions; a token made on my account page works against the API.

use hyper::{Method, StatusCode};

use crate::{MAIN_MENU, PASSWORD, Web, is_sign_in_redirect};

#[tokio::test]
async fn an_admin_adds_an_agent_and_resets_their_password() {
    let web = Web::admin().await;
    let browser = &web.browser;
    browser.visit("/settings/users").await;
    browser.fill("name", "Grace Agent").await;
    browser.fill("email", "grace@example.com").await;
    browser.select("role", "agent").await;
    browser.fill("password", PASSWORD).await;
    browser.press("email", "Add user", "#users").await;

    let id = browser
        .script(
            "const row = [...document.querySelectorAll('#users tr[data-user-id]')] \
               .find(r => r.innerText.includes('grace@example.com')); \
             return row ? row.dataset.userId : null",
        )
        .await;
    let id = id.as_str().expect("the new user has a row in #users").to_owned();
    let row = browser.text(&format!("#users tr[data-user-id='{id}']")).await;
    assert!(row.contains("Grace Agent") && row.contains("agent"), "{row:?}");
    browser.screenshot("users").await;

    // The reset form of the agent's row: its fields are not named by the contract, so the test
    // finds the form by where it posts.
    let form = format!("form[action$='/settings/users/{id}/password']");
    if let Some(summary) = browser.all(&format!("#users tr[data-user-id='{id}'] summary")).await.first() {
        summary.click().await.expect("opening the reset form");
    }
    let new_password = "a brand new password for grace";
    let field = browser.find(&format!("{form} input[type='password']")).await;
    field.send_keys(new_password).await.expect("typing the new password");
    let reset = browser.find(&format!("{form} button")).await;
    assert_eq!(reset.text().await.unwrap(), "Reset password");
    browser.submit(reset, "[role='status'].flash.ok").await;

    web.sign_out().await;
    web.browser.visit("/login").await;
    web.browser.fill("email", "grace@example.com").await;
    web.browser.fill("password", PASSWORD).await;
    web.browser.press("password", "Sign in", "[role='alert'].flash.error").await;
    web.sign_in("grace@example.com", new_password).await;
    let menu = web.browser.text(MAIN_MENU).await;
    assert!(!menu.contains("Settings"), "the agent's menu: {menu:?}");
    web.browser.close().await;
}

#[tokio::test]
async fn changing_my_password_ends_my_other_sessions_and_a_token_i_make_works() {
    let web = Web::admin().await;
    let browser = &web.browser;
    let other_session = web.session_cookie().await;
    browser.client().delete_all_cookies().await.expect("forgetting the first session");
    web.sign_in("admin@example.com", PASSWORD).await;

    browser.visit("/account").await;
    let token = create_token(&web).await;
    let me = web.app.request_as(&token, Method::GET, "/api/v1/contacts", None).await;
    assert_eq!(me.status, StatusCode::OK, "the token works against the API: {}", me.body);
    browser.screenshot("account").await;

    let new_password = "another long password of mine";
    browser.fill("current_password", PASSWORD).await;
    browser.fill("new_password", new_password).await;
    browser.press("new_password", "Change password", "[role='status'].flash.ok, [id='f-password']").await;
    let answer = web.send_as(&other_session, Method::GET, "/account", None).await;
    assert!(is_sign_in_redirect(&answer), "a password change ends my other sessions: {:?}", answer.status);

    if browser.has(MAIN_MENU).await {
        web.sign_out().await;
    }
    web.sign_in("admin@example.com", new_password).await;
    web.browser.close().await;
}

/// Presses Create token (naming the token "Laptop" if the form asks for a name) and answers the
/// token the page shows once.
async fn create_token(web: &Web) -> String {
    let form = "//form[.//button[normalize-space(.)='Create token']]";
    let name_it = "const form = document.evaluate(arguments[0], document, null, 9, null).singleNodeValue; \
                   form.querySelectorAll('input[type=text], input:not([type])').forEach(i => { if (!i.value) i.value = 'Laptop'; });";
    web.browser.script_with(name_it, vec![serde_json::json!(form)]).await;
    web.browser.mark_document().await;
    web.browser.find_xpath(&format!("{form}//button")).await.click().await.expect("pressing Create token");
    // The token may be shown as text or in a read-only field to copy it from.
    let script = "const m = document.querySelector('main'); if (!m) return null; \
                  const shown = m.innerText + ' ' + [...m.querySelectorAll('input')].map(i => i.value).join(' '); \
                  const found = shown.match(/ecrm_[A-Za-z0-9_-]{20,}/); return found ? found[0] : null";
    let token = web
        .browser
        .eventually("the new token to be shown", || async {
            let found = web.browser.client().execute(script, vec![]).await.ok()?;
            found.as_str().map(str::to_owned)
        })
        .await;
    web.browser.check_page().await;
    token
}
