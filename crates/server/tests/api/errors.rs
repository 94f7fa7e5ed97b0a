//! Errors: every status of api.md, each with the body `{"error": {"code", "message", "fields"}}`,
//! and never a 500 for anything a client sends.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Answer, TestApp};

/// Asserts an error answer: the status, a JSON content type, and exactly
/// `{"error": {"code": code, "message": "<words>", "fields": {<exactly these field paths>}}}`.
pub(super) fn assert_error(answer: &Answer, status: StatusCode, code: &str, fields: &[&str]) {
    let text = String::from_utf8_lossy(&answer.raw);
    assert_eq!(answer.status, status, "{text}");
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/json"), "an error is JSON, got {content_type:?}: {text}");
    let body = answer.body.as_object().unwrap_or_else(|| panic!("an error object, got {text}"));
    assert_eq!(body.keys().collect::<Vec<_>>(), ["error"], "{text}");
    let error = answer.body["error"].as_object().unwrap_or_else(|| panic!("an error object, got {text}"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "fields", "message"], "{text}");
    assert_eq!(error["code"], code, "{text}");
    assert!(error["message"].as_str().is_some_and(|m| !m.trim().is_empty()), "a message in words: {text}");
    let got = error["fields"].as_object().unwrap_or_else(|| panic!("fields is an object: {text}"));
    assert!(got.values().all(|m| m.as_str().is_some_and(|m| !m.is_empty())), "each field has a message: {text}");
    let mut got: Vec<&str> = got.keys().map(String::as_str).collect();
    let mut want = fields.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "the fields named by {text}");
}

/// A request with these headers and body bytes.
fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &[u8])],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(app.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("a valid request")
}

/// The admin's Authorization header.
fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// A JSON request with the admin token and these body bytes.
fn json_bytes(app: &TestApp, method: Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let bearer = bearer();
    raw(app, method, path, &[("authorization", bearer.as_bytes()), ("content-type", b"application/json")], body)
}

/// Makes a user with this role and a token for it; answers (user id, token).
pub(super) async fn user_with_token(app: &TestApp, name: &str, role: &str) -> (String, String) {
    let user =
        app.post("/api/v1/users", json!({"name": name, "email": format!("{name}@example.com"), "role": role})).await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.body);
    assert_eq!(user.body["role"], role);
    let user_id = user.body["id"].as_str().unwrap().to_owned();
    let token = app.post("/api/v1/tokens", json!({"user_id": user_id, "name": "tests"})).await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    assert_eq!(token.body["user_id"], user_id.as_str());
    (user_id, token.body["token"].as_str().unwrap().to_owned())
}

async fn contact_count(app: &TestApp) -> usize {
    app.get("/api/v1/contacts?limit=1000").await.body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn malformed_bodies_answer_400() {
    let app = TestApp::spawn().await;
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let deep_preferences = format!(r#"{{"first_name":"A","preferences":{}1{}}}"#, "[".repeat(5_000), "]".repeat(5_000));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{\"first_name\":".to_vec(),
        b"{first_name: \"A\"}".to_vec(),
        b"{\"first_name\": \"A\",}".to_vec(),
        b"{\"first_name\": \"A\"} trailing".to_vec(),
        b"{\"first_name\": \"\xff\xfe\"}".to_vec(),
        b"\xef\xbb\xbf{\"first_name\": \"A\"}".to_vec(),
        b"{\"first_name\": \"\\ud800\"}".to_vec(),
        // A number JSON allows but no parser represents: refused while parsing, before any field rule.
        b"{\"title\": \"T\", \"amount\": 1e400}".to_vec(),
        deep_arrays.into_bytes(),
        deep_objects.into_bytes(),
        deep_preferences.into_bytes(),
    ];
    for body in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        for path in ["/api/v1/contacts", "/api/v1/deals", "/api/v1/contacts/bulk"] {
            let answer = app.send(json_bytes(&app, Method::POST, path, body.clone())).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{path} {shown}: {}",
                String::from_utf8_lossy(&answer.raw)
            );
            assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_request", &[]);
        }
    }
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let path = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
    let answer = app.send(json_bytes(&app, Method::PATCH, &path, &b"{\"city\": "[..])).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_request", &[]);
    assert_eq!(app.get(&path).await.body, contact);
    assert_eq!(contact_count(&app).await, 1, "nothing else was stored");
    assert_eq!(app.event_names().await, ["contact.created"]);
}

#[tokio::test]
async fn requests_without_a_valid_token_answer_401() {
    let app = TestApp::spawn().await;
    let wrong: &[&[u8]] = &[
        b"Bearer wrong-token-0123456789",
        b"Bearer ",
        b"Bearer",
        b"Basic dGVzdC1hZG1pbi10b2tlbi0wMTIzNDU2Nzg5",
        b"test-admin-token-0123456789",
        b"Token test-admin-token-0123456789",
        b"Bearer test-admin-token-0123456789 extra",
        b"Bearer test-admin-token-012345678",
        b"Bearer \xfftest-admin-token-0123456789",
    ];
    let paths: &[(Method, &str, &[u8])] = &[
        (Method::GET, "/api/v1/contacts", b""),
        (Method::POST, "/api/v1/contacts", b"{\"first_name\": \"A\"}"),
        (Method::POST, "/api/v1/deals/bulk", b"{\"create\": [{\"title\": \"T\"}]}"),
        (Method::GET, "/api/v1/events", b""),
        (Method::GET, "/api/v1/event-types", b""),
        (Method::GET, "/api/v1/pipeline", b""),
        (Method::GET, "/api/v1/settings/webhook", b""),
        (Method::POST, "/api/v1/tokens", b"{\"name\": \"mine\"}"),
    ];
    for (method, path, body) in paths {
        let answer = app.send(raw(&app, method.clone(), path, &[("content-type", b"application/json")], *body)).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", &[]);
        for authorization in wrong {
            let headers: &[(&str, &[u8])] = &[("authorization", authorization), ("content-type", b"application/json")];
            let answer = app.send(raw(&app, method.clone(), path, headers, *body)).await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", &[]);
        }
    }
    assert_eq!(contact_count(&app).await, 0, "nothing was created");
    assert!(app.event_names().await.is_empty());
    // The scheme is case-insensitive, as in HTTP.
    let lower = app
        .send(raw(
            &app,
            Method::GET,
            "/api/v1/contacts",
            &[("authorization", b"bearer test-admin-token-0123456789")],
            "",
        ))
        .await;
    assert_eq!(lower.status, StatusCode::OK, "{}", lower.body);
}

#[tokio::test]
async fn agents_are_refused_the_admin_areas() {
    let app = TestApp::spawn().await;
    let (agent_id, agent) = user_with_token(&app, "agent", "agent").await;
    let (admin_id, _) = user_with_token(&app, "boss", "admin").await;
    let endpoint = app.add_endpoint(json!({"url": "http://127.0.0.1:9/hook", "events": "*"})).await;
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v1/webhooks".into(), None),
        (Method::POST, "/api/v1/webhooks".into(), Some(json!({"url": "http://127.0.0.1:9/x", "events": "*"}))),
        (Method::GET, format!("/api/v1/webhooks/{endpoint}"), None),
        (Method::PATCH, format!("/api/v1/webhooks/{endpoint}"), Some(json!({"active": false}))),
        (Method::DELETE, format!("/api/v1/webhooks/{endpoint}"), None),
        (Method::POST, format!("/api/v1/webhooks/{endpoint}/test"), Some(json!({}))),
        (Method::POST, format!("/api/v1/webhooks/{endpoint}/retry-failed"), Some(json!({}))),
        (Method::GET, "/api/v1/settings/webhook".into(), None),
        (Method::PUT, "/api/v1/settings/webhook".into(), Some(json!({"url": "http://127.0.0.1:9/y"}))),
        (Method::POST, "/api/v1/settings/webhook/test".into(), Some(json!({}))),
        (Method::GET, "/api/v1/deliveries".into(), None),
        (Method::GET, "/api/v1/deliveries/dlv_x".into(), None),
        (Method::POST, "/api/v1/deliveries/dlv_x/retry".into(), None),
        (Method::GET, "/api/v1/events".into(), None),
        (Method::POST, "/api/v1/users".into(), Some(json!({"name": "x", "email": "x@example.com", "role": "admin"}))),
        (Method::POST, "/api/v1/tokens".into(), Some(json!({"user_id": admin_id, "name": "stolen"}))),
    ];
    for (method, path, body) in cases {
        let answer = app.request_as(&agent, method.clone(), &path, body).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.body);
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden", &[]);
    }
    let endpoints = app.get("/api/v1/webhooks").await;
    assert_eq!(endpoints.body["items"].as_array().unwrap().len(), 1, "the agent changed no endpoint");
    assert_eq!(endpoints.body["items"][0]["active"], true);
    // What an agent may do: use the records, read the catalogues, make a token for themself.
    for path in ["/api/v1/contacts", "/api/v1/event-types", "/api/v1/pipeline"] {
        assert_eq!(app.request_as(&agent, Method::GET, path, None).await.status, StatusCode::OK, "{path}");
    }
    let own = app.request_as(&agent, Method::POST, "/api/v1/tokens", Some(json!({"name": "second"}))).await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
    assert_eq!(own.body["user_id"], agent_id.as_str());
}

fn ids(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn agents_see_only_the_records_they_created_or_are_assigned() {
    let app = TestApp::spawn().await;
    let (agent_id, agent) = user_with_token(&app, "agent", "agent").await;
    let (_, other) = user_with_token(&app, "other", "agent").await;
    let admins = app.create("contacts", json!({"first_name": "Admin's", "email": "a@example.com"})).await;
    let assigned = app.create("contacts", json!({"first_name": "Assigned", "assigned_agent_id": agent_id})).await;
    let task = app.create("tasks", json!({"title": "Admin's task"})).await;
    let created = app.request_as(&agent, Method::POST, "/api/v1/contacts", Some(json!({"first_name": "Own"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let own = created.body;
    let id = |r: &Value| r["id"].as_str().unwrap().to_owned();

    assert_eq!(ids(&app.request_as(&agent, Method::GET, "/api/v1/contacts", None).await), [id(&own), id(&assigned)]);
    assert_eq!(ids(&app.request_as(&other, Method::GET, "/api/v1/contacts", None).await), Vec::<String>::new());
    assert_eq!(ids(&app.get("/api/v1/contacts").await), [id(&own), id(&assigned), id(&admins)]);
    assert_eq!(ids(&app.request_as(&agent, Method::GET, "/api/v1/tasks", None).await), Vec::<String>::new());

    for record in [&own, &assigned] {
        let path = format!("/api/v1/contacts/{}", id(record));
        assert_eq!(app.request_as(&agent, Method::GET, &path, None).await.body, *record);
        assert_error(&app.request_as(&other, Method::GET, &path, None).await, StatusCode::NOT_FOUND, "not_found", &[]);
    }
    let admins_path = format!("/api/v1/contacts/{}", id(&admins));
    let task_path = format!("/api/v1/tasks/{}", id(&task));
    for (method, path, body) in [
        (Method::GET, admins_path.clone(), None),
        (Method::PATCH, admins_path.clone(), Some(json!({"city": "Austin"}))),
        (Method::DELETE, admins_path.clone(), None),
        (Method::GET, task_path.clone(), None),
        (Method::POST, format!("{task_path}/complete"), None),
    ] {
        let answer = app.request_as(&agent, method.clone(), &path, body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found", &[]);
    }
    // Another user's record is as good as missing, in a reference too.
    let lead = app.request_as(&agent, Method::POST, "/api/v1/leads", Some(json!({"contact_id": id(&admins)}))).await;
    assert_error(&lead, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["contact_id"]);
    let bulk =
        app.request_as(&agent, Method::POST, "/api/v1/contacts/bulk", Some(json!({"delete": [id(&admins)]}))).await;
    assert_error(&bulk, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["delete[0].id"]);
    assert_eq!(app.get(&admins_path).await.body, admins, "the admin's contact is untouched");
    assert_eq!(app.get(&task_path).await.body["completed"], false);
    // An agent changes what is theirs.
    let path = format!("/api/v1/contacts/{}", id(&assigned));
    let changed = app.request_as(&agent, Method::PATCH, &path, Some(json!({"city": "Austin"}))).await;
    assert_eq!(changed.body["city"], "Austin", "{}", changed.body);
}

#[tokio::test]
async fn unknown_records_and_paths_answer_404() {
    let app = TestApp::spawn().await;
    let deal = app.create("deals", json!({"title": "Sale"})).await;
    let deal_id = deal["id"].as_str().unwrap();
    let paths = [
        "/api/v1/contacts/con_nobody".to_owned(),
        "/api/v1/contacts/nothing-like-an-id".to_owned(),
        "/api/v1/contacts/con_zzzzzzzzzzzzzzzzzzzzzzzzzzzz".to_owned(),
        "/api/v1/contacts/%00".to_owned(),
        format!("/api/v1/contacts/{deal_id}"),
        format!("/api/v1/tasks/{deal_id}"),
        "/api/v1/webhooks/whk_nobody".to_owned(),
        "/api/v1/deliveries/dlv_nobody".to_owned(),
        "/api/v1/nothing".to_owned(),
        "/api/v1/contacts/x/y".to_owned(),
        "/api/v2/contacts".to_owned(),
        "/nothing".to_owned(),
    ];
    for path in &paths {
        assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found", &[]);
    }
    for path in &paths[..6] {
        assert_error(&app.patch(path, json!({"notes": "x"})).await, StatusCode::NOT_FOUND, "not_found", &[]);
        assert_error(&app.delete(path).await, StatusCode::NOT_FOUND, "not_found", &[]);
    }
    assert_eq!(app.get(&format!("/api/v1/deals/{deal_id}")).await.body, deal);
}

#[tokio::test]
async fn wrong_methods_answer_405() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let item = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
    for (method, path) in [
        (Method::PUT, item.as_str()),
        (Method::POST, item.as_str()),
        (Method::DELETE, "/api/v1/contacts"),
        (Method::PATCH, "/api/v1/contacts"),
        (Method::GET, "/api/v1/tasks/tsk_x/complete"),
        (Method::DELETE, "/api/v1/pipeline"),
        (Method::POST, "/api/v1/event-types"),
        (Method::GET, "/api/v1/users"),
    ] {
        let answer = app.request(method.clone(), path, Some(json!({"first_name": "B"}))).await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &[]);
    }
    assert_eq!(app.get(&item).await.body, contact);
}

/// A contact body of exactly `size` bytes.
fn contact_of_size(size: usize) -> Vec<u8> {
    let frame = r#"{"first_name":"A","notes":""}"#;
    let body = format!(r#"{{"first_name":"A","notes":"{}"}}"#, "n".repeat(size - frame.len()));
    assert_eq!(body.len(), size);
    body.into_bytes()
}

#[tokio::test]
async fn bodies_over_1_mib_answer_413() {
    let app = TestApp::spawn().await;
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let item = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
    for (method, path) in
        [(Method::POST, "/api/v1/contacts"), (Method::PATCH, item.as_str()), (Method::POST, "/api/v1/deals")]
    {
        let answer = app.send(json_bytes(&app, method, path, contact_of_size(1024 * 1024 + 1))).await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &[]);
    }
    // Exactly 1 MiB is within the limit (and then refused for the notes' length, not the size).
    let answer = app.send(json_bytes(&app, Method::POST, "/api/v1/contacts", contact_of_size(1024 * 1024))).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["notes"]);
    assert_eq!(app.get(&item).await.body, contact);
    assert_eq!(contact_count(&app).await, 1);
}

#[tokio::test]
async fn a_bulk_body_over_1_mib_is_accepted_up_to_32_mib() {
    let app = TestApp::spawn().await;
    let rows: Vec<Value> =
        (0..1200).map(|n| json!({"first_name": format!("C{n}"), "notes": "n".repeat(1000)})).collect();
    let body = serde_json::to_vec(&json!({"create": rows})).unwrap();
    assert!(body.len() > 1024 * 1024 && body.len() < 2 * 1024 * 1024);
    let answer = app.send(json_bytes(&app, Method::POST, "/api/v1/contacts/bulk", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.raw[..answer.raw.len().min(300)]));
    assert_eq!(answer.body["ids"].as_array().unwrap().len(), 1200);
    assert_eq!(contact_count(&app).await, 1000, "one full page of the 1200");

    let huge = vec![b' '; 32 * 1024 * 1024 + 1];
    let answer = app.send(json_bytes(&app, Method::POST, "/api/v1/contacts/bulk", huge)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &[]);
}

#[tokio::test]
async fn bodies_that_are_not_json_answer_415() {
    let app = TestApp::spawn().await;
    let body = &b"{\"first_name\": \"A\"}"[..];
    let bearer = bearer();
    for content_type in [
        None,
        Some(&b"text/plain"[..]),
        Some(b"application/x-www-form-urlencoded"),
        Some(b"multipart/form-data; boundary=x"),
        Some(b"text/json"),
        Some(b"application/jsonp"),
    ] {
        let mut headers: Vec<(&str, &[u8])> = vec![("authorization", bearer.as_bytes())];
        headers.extend(content_type.map(|c| ("content-type", c)));
        for path in ["/api/v1/contacts", "/api/v1/contacts/bulk"] {
            let answer = app.send(raw(&app, Method::POST, path, &headers, body)).await;
            assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", &[]);
        }
    }
    assert_eq!(contact_count(&app).await, 0);
    for content_type in [&b"application/json; charset=utf-8"[..], b"Application/JSON", b"application/merge-patch+json"]
    {
        let headers: &[(&str, &[u8])] = &[("authorization", bearer.as_bytes()), ("content-type", content_type)];
        let answer = app.send(raw(&app, Method::POST, "/api/v1/contacts", headers, body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}: {}", String::from_utf8_lossy(content_type), answer.body);
    }
}

/// Creates a `plural` record from `body` and expects a 422 naming exactly `fields`, with nothing stored.
async fn check_invalid(app: &TestApp, plural: &str, body: Value, fields: &[&str]) {
    let answer = app.post(&format!("/api/v1/{plural}"), body.clone()).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{plural} {body}: {}", answer.body);
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", fields);
}

#[tokio::test]
async fn invalid_values_answer_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(201);
    check_invalid(&app, "contacts", json!({"email": "not-an-email"}), &["email"]).await;
    check_invalid(&app, "contacts", json!({"email": "a@b"}), &["email"]).await;
    check_invalid(&app, "contacts", json!({"first_name": 5}), &["first_name"]).await;
    check_invalid(&app, "contacts", json!({"first_name": long}), &["first_name"]).await;
    check_invalid(&app, "contacts", json!({"first_name": "A\u{7}"}), &["first_name"]).await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "status": "Gold"}), &["status"]).await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "tags": "vip"}), &["tags"]).await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "tags": [1]}), &["tags"]).await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "preferences": "big"}), &["preferences"]).await;
    check_invalid(
        &app,
        "contacts",
        json!({"first_name": "A", "preferences": {"beds": "three"}}),
        &["preferences.beds"],
    )
    .await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "preferences": {"beds": 1.5}}), &["preferences.beds"])
        .await;
    check_invalid(&app, "contacts", json!({"first_name": "A", "preferences": {"beds": -1}}), &["preferences.beds"])
        .await;
    let huge: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
    check_invalid(&app, "contacts", json!({"first_name": "A", "preferences": {"baths": huge}}), &["preferences.baths"])
        .await;
    check_invalid(
        &app,
        "contacts",
        json!({"first_name": "A", "preferences": {"locations": "Austin"}}),
        &["preferences.locations"],
    )
    .await;
    check_invalid(
        &app,
        "contacts",
        json!({"first_name": "A", "preferences": {"min_price": 500, "max_price": 100}}),
        &["preferences.max_price"],
    )
    .await;
    check_invalid(&app, "contacts", json!({"city": "Austin"}), &["first_name"]).await;
    check_invalid(
        &app,
        "contacts",
        json!({"email": "x", "status": "Gold", "preferences": {"beds": "x", "baths": "y"}}),
        &["email", "status", "preferences.beds", "preferences.baths"],
    )
    .await;
    check_invalid(&app, "leads", json!({"contact_id": "con_x", "lead_type": "Renter"}), &["lead_type"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "amount": -1}), &["amount"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "amount": 1e16}), &["amount"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "amount": huge}), &["amount"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "amount": "100"}), &["amount"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "probability": 101}), &["probability"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "currency": "EURO"}), &["currency"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "stage": "won"}), &["stage"]).await;
    check_invalid(&app, "deals", json!({"title": "T", "expected_close_date": "2026-02-30"}), &["expected_close_date"])
        .await;
    check_invalid(&app, "deals", json!({"title": "T", "expected_close_date": "30/06/2026"}), &["expected_close_date"])
        .await;
    check_invalid(&app, "deals", json!({"title": ""}), &["title"]).await;
    check_invalid(&app, "deals", json!({}), &["title"]).await;
    check_invalid(&app, "tasks", json!({"title": "T", "due_date": "tomorrow"}), &["due_date"]).await;
    check_invalid(&app, "tasks", json!({"title": "T", "completed": "yes"}), &["completed"]).await;
    check_invalid(&app, "enquiries", json!({"message": "no way to answer"}), &["email"]).await;
    for body in [json!([{"first_name": "A"}]), json!("A"), json!(null), json!(7)] {
        check_invalid(&app, "contacts", body, &["body"]).await;
    }
    for plural in ["contacts", "leads", "enquiries", "deals", "tasks"] {
        let list = app.get(&format!("/api/v1/{plural}")).await;
        assert_eq!(list.body["items"], json!([]), "nothing was stored in {plural}");
    }
    assert!(app.event_names().await.is_empty());
    // The same rules on PATCH.
    let contact = app.create("contacts", json!({"first_name": "A"})).await;
    let path = format!("/api/v1/contacts/{}", contact["id"].as_str().unwrap());
    let answer = app.patch(&path, json!({"preferences": {"beds": 2.5}, "email": "nope"})).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["preferences.beds", "email"]);
    let answer = app.patch(&path, json!([])).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", &["body"]);
    assert_eq!(app.get(&path).await.body, contact);
}

#[tokio::test]
async fn dates_are_written_yyyy_mm_dd() {
    let app = TestApp::spawn().await;
    for date in ["2026-6-30", "2026-06-3", "26-06-30", "2026/06/30", "2026-06-31"] {
        check_invalid(&app, "deals", json!({"title": "T", "expected_close_date": date}), &["expected_close_date"])
            .await;
        check_invalid(&app, "tasks", json!({"title": "T", "due_date": date}), &["due_date"]).await;
    }
    assert_eq!(app.get("/api/v1/deals").await.body["items"], json!([]));
    let deal = app.create("deals", json!({"title": "T", "expected_close_date": "2026-06-30"})).await;
    assert_eq!(deal["expected_close_date"], "2026-06-30");
    let task = app.create("tasks", json!({"title": "T", "due_date": "2026-06-30"})).await;
    assert_eq!(task["due_date"], "2026-06-30");
}

#[tokio::test]
async fn odd_queries_and_ids_answer_4xx_not_500() {
    let app = TestApp::spawn().await;
    app.create("contacts", json!({"first_name": "A"})).await;
    for path in [
        "/api/v1/contacts?limit=%ff",
        "/api/v1/contacts?limit=99999999999999999999999",
        "/api/v1/contacts?cursor=%00",
        "/api/v1/events?since=yesterday",
        "/api/v1/events?event=contact.exploded",
        "/api/v1/deliveries?status=lost",
    ] {
        let answer = app.get(path).await;
        assert!(answer.status.is_client_error(), "{path}: {} {}", answer.status, answer.body);
        let code = answer.body["error"]["code"].as_str().unwrap_or("");
        assert!(["malformed_request", "validation_failed"].contains(&code), "{path}: {}", answer.body);
    }
    let answer = app.get("/api/v1/contacts?unknown=1&limit=5").await;
    assert_eq!(answer.status, StatusCode::OK, "unknown query parameters are ignored");
}

#[tokio::test]
async fn concurrent_requests_for_one_email_make_one_contact_and_no_500() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..24 {
        let app = app.clone();
        requests.spawn(async move {
            let email = if n % 2 == 0 { "same@example.com" } else { "SAME@example.com" };
            app.post("/api/v1/contacts", json!({"first_name": format!("C{n}"), "email": email})).await
        });
    }
    let mut created = 0;
    while let Some(answer) = requests.join_next().await {
        let answer = answer.expect("the request task");
        if answer.status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_error(&answer, StatusCode::CONFLICT, "conflict", &["email"]);
        }
    }
    assert_eq!(created, 1);
    assert_eq!(contact_count(&app).await, 1);
    assert_eq!(app.event_names().await, ["contact.created"]);
}
