//! The accessibility check: axe-core, vendored from npm for the tests only, injected into a page
//! through WebDriver (which the page's Content-Security-Policy does not govern) and run on it.
//! A page passes with no violation of serious or critical impact.

use fantoccini::Client;
use serde_json::Value;

/// axe-core 4 (see vendor/README.md).
const AXE: &str = include_str!("vendor/axe.min.js");

/// The impacts that fail a page.
const FAILING: [&str; 2] = ["serious", "critical"];

/// Runs axe on the current page of `client` and fails, listing them, on serious or critical
/// violations. `page` names the page in the message.
pub async fn assert_accessible(client: &Client, page: &str) {
    let violations = violations(client, page).await;
    let failing: Vec<&Value> =
        violations.iter().filter(|v| FAILING.contains(&v["impact"].as_str().unwrap_or(""))).collect();
    assert!(failing.is_empty(), "{page}: accessibility violations:\n{}", describe(&failing));
}

/// Every violation axe finds on the current page, of any impact.
pub async fn violations(client: &Client, page: &str) -> Vec<Value> {
    // The source becomes the body of the function WebDriver runs, which the page's CSP does not
    // govern (an `eval` of it inside the page would be refused, as it should be).
    let inject = format!("if (!window.axe) {{\n{AXE}\n}}\nreturn typeof window.axe;");
    let loaded = client.execute(&inject, vec![]).await;
    assert_eq!(loaded.ok(), Some(Value::from("object")), "{page}: axe-core could not be loaded into the page");
    let run = "const done = arguments[arguments.length - 1]; \
               axe.run(document, { resultTypes: ['violations'] }) \
                  .then(r => done({ ok: r.violations }), e => done({ error: String(e) }));";
    let answer = client.execute_async(run, vec![]).await.unwrap_or_else(|err| panic!("{page}: running axe: {err}"));
    if let Some(error) = answer.get("error") {
        panic!("{page}: axe failed: {error}");
    }
    answer["ok"].as_array().cloned().unwrap_or_else(|| panic!("{page}: axe answered {answer}"))
}

/// One paragraph per violation: its rule, impact and help, then each offending element.
fn describe(violations: &[&Value]) -> String {
    let mut text = String::new();
    for violation in violations {
        text.push_str(&format!(
            "- [{}] {}: {} ({})\n",
            violation["impact"].as_str().unwrap_or("?"),
            violation["id"].as_str().unwrap_or("?"),
            violation["help"].as_str().unwrap_or(""),
            violation["helpUrl"].as_str().unwrap_or(""),
        ));
        for node in violation["nodes"].as_array().into_iter().flatten().take(5) {
            text.push_str(&format!(
                "    at {}: {}\n      {}\n",
                node["target"],
                node["html"].as_str().unwrap_or(""),
                node["failureSummary"].as_str().unwrap_or("").replace('\n', "\n      "),
            ));
        }
    }
    text
}
