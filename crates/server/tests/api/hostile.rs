//! Hostile input. Property tests (proptest) throw arbitrary JSON, objects made of each record kind's
//! real field names with values of random types, random bytes, random content types, random query
//! strings and random path ids at every route of one running server, and check after each request:
//!
//! - nothing answers 5xx, and afterwards the server still answers and still writes;
//! - every 4xx carries `{"error": {"code", "message", "fields"}}`;
//! - a 4xx on a write leaves every collection's record count, the event log, the endpoints and the
//!   record it aimed at as they were: nothing is half written;
//! - a 2xx write answers the record that a GET then answers;
//! - unknown fields are refused with 422 naming them (docs/API-NOTES.md), except on the public form;
//! - a decimal in range is stored as the nearest double, not one next to it.
//!
//! Fixed cases cover what random generation rarely reaches: 100,000-deep nesting, bodies one byte
//! over each limit, numbers beyond f64 and u64, NaN-like strings, null bytes, very long strings,
//! duplicate keys (the last one wins), ids that are not UTF-8, and what a refusal that leaves a
//! body unread does to the connection.
//!
//! Each property starts its own server and runs its cases through proptest's `TestRunner`, one at a
//! time, on a multi-thread runtime that only carries the client. `PROPTEST_CASES=1000` runs deeper;
//! `PROPTEST_RNG_SEED=<n>` replays a run. Webhook URLs that a case would save are kept on the
//! loopback interface (port 9, where nothing listens), so no case makes the server send anywhere else.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use estate_crm_domain::RecordKind;
use estate_crm_domain::schema::{self, FieldType};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::helpers::{ADMIN_TOKEN, Answer, PATIENCE, TestApp};

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to meet every route a few
/// times with each kind of input, few enough for the module to stay within about 20 seconds.
const CASES: u32 = 128;

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

#[test]
fn arbitrary_bodies_on_every_write_route_are_refused_cleanly_or_stored_whole() {
    let fuzz = Fuzz::start();
    let attempts = (select(Write::all()), content_type(), any_body()).prop_map(|(write, content_type, body)| Attempt {
        write,
        content_type,
        body,
    });
    let outcomes = Outcomes::default();
    fuzz.run(attempts, async |fuzz, attempt| fuzz.attempt(attempt, &outcomes).await.map(drop));
    outcomes.assert_some_refused();
}

#[test]
fn objects_of_real_fields_with_random_values_are_refused_cleanly_or_stored_whole() {
    let fuzz = Fuzz::start();
    let outcomes = Outcomes::default();
    fuzz.run(field_attempts(&fuzz.seeds), async |fuzz, attempt| fuzz.attempt(attempt, &outcomes).await.map(drop));
    // Both halves of the property were exercised: some writes were stored, some refused.
    outcomes.assert_some_refused();
    outcomes.assert_some_accepted();
}

#[test]
fn unknown_fields_are_refused_with_422_naming_them_except_on_the_public_form() {
    let fuzz = Fuzz::start();
    let known = known_keys();
    let unknown = prop_oneof!["[a-z_][a-z0-9_]{0,20}", "\\PC{1,12}"]
        .prop_filter("not a field of any route", move |key| !known.contains(&key.as_str()) && key.trim() == key);
    let mut writes = Write::all();
    writes.retain(|w| *w != Write::CompleteTask);
    let cases = (select(writes), unknown, json_value(), any::<bool>());
    let outcomes = Outcomes::default();
    fuzz.run(cases, async |fuzz, (write, key, value, update)| {
        let least = |kind: RecordKind| match kind {
            RecordKind::Contact => json!({"first_name": "U"}),
            RecordKind::Lead => json!({"contact_id": fuzz.seeds.id(RecordKind::Contact)}),
            RecordKind::Enquiry => json!({"name": "U"}),
            RecordKind::Deal | RecordKind::Task => json!({"title": "U"}),
        };
        // Valid but for the unknown field, so that it alone is what is refused.
        let mut row = match write {
            Write::Create(kind) => least(kind),
            Write::Bulk(kind) if update => json!({"id": fuzz.seeds.id(kind)}),
            Write::Bulk(kind) => least(kind),
            Write::CreateEndpoint => json!({"url": "http://127.0.0.1:9/unknown"}),
            Write::Form => json!({"name": "U"}),
            _ => json!({}),
        };
        row[key.as_str()] = value;
        let (body, path) = match write {
            Write::Bulk(_) if update => (json!({"update": [row]}), format!("update[0].{key}")),
            Write::Bulk(_) => (json!({"create": [row]}), format!("create[0].{key}")),
            _ => (row, key.clone()),
        };
        let attempt = Attempt::json(write, body.clone());
        let too_large = write.body_limit().is_some_and(|limit| attempt.body.len() > limit);
        let answer = fuzz.attempt(attempt, &outcomes).await?;
        if too_large {
            prop_assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}: {}", write, shown(&answer.raw));
        } else if write == Write::Form {
            // Documented: a web page's extra fields are ignored, not refused.
            prop_assert_eq!(answer.status, StatusCode::CREATED, "{} {}", body, shown(&answer.raw));
        } else {
            let what = format!("{write:?} {body}");
            prop_assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {}", what, shown(&answer.raw));
            let named = answer.body["error"]["fields"].get(&path).and_then(Value::as_str);
            prop_assert_eq!(named, Some("is not a known field"), "{}: {}", what, answer.body);
        }
        Ok(())
    });
}

#[test]
fn random_query_strings_on_every_list_answer_a_page_or_a_4xx() {
    let fuzz = Fuzz::start();
    let cases = (select(LISTS), vec(query_param(&fuzz.seeds), 0..5));
    fuzz.run(cases, async |fuzz, (list, params)| {
        let path = if params.is_empty() { list.to_owned() } else { format!("{list}?{}", params.join("&")) };
        let answer = fuzz.app.get(&path).await;
        check_answer(&format!("GET {path}"), &answer)?;
        if answer.status.is_success() {
            prop_assert_eq!(answer.status, StatusCode::OK, "GET {}", path);
            let items = answer.body["items"].as_array();
            prop_assert!(items.is_some(), "GET {path}: a page has items: {}", shown(&answer.raw));
            prop_assert!(items.is_some_and(|i| i.len() <= 1000), "GET {path}: at most 1000 items");
            let paged = !["/api/v1/event-types", "/api/v1/pipeline"].contains(&list);
            let next = &answer.body["next_cursor"];
            prop_assert!(!paged || next.is_null() || next.is_string(), "GET {path}: next_cursor: {}", answer.body);
        }
        Ok(())
    });
}

#[test]
fn random_ids_on_every_item_route_answer_404_or_act_on_that_item() {
    let fuzz = Fuzz::start();
    let cases = (select(item_routes()), path_id(&fuzz.seeds));
    let outcomes = Outcomes::default();
    fuzz.run(cases, async |fuzz, ((method, template), id)| {
        let path = template.replace("{id}", &id);
        let body = if method == Method::PATCH { b"{}".to_vec() } else { Vec::new() };
        let writes = method != Method::GET;
        let before = if writes { Some(Snapshot::read(&fuzz.app).await) } else { None };
        let answer = fuzz.send(fuzz.request(method.clone(), &path, Some(b"application/json"), body)).await?;
        let what = format!("{method} {path}");
        check_answer(&what, &answer)?;
        if answer.status.is_client_error() {
            outcomes.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(before) = before {
                let after = Snapshot::read(&fuzz.app).await;
                prop_assert_eq!(before, after, "{} answered {} yet changed what is stored", what, answer.status);
            }
        } else {
            outcomes.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    outcomes.assert_some_refused();
}

#[test]
fn decimals_in_range_are_stored_as_the_nearest_double() {
    let fuzz = Fuzz::start();
    let values = prop_oneof![
        (Just("amount"), 0.0..=1e15f64),
        (Just("amount"), (0u64..1 << 53).prop_map(|n| n as f64 / 1000.0)),
        (Just("probability"), 0.0..=100.0f64),
    ];
    fuzz.run(values, async |fuzz, (field, value)| {
        // Written as the shortest decimal that reads back as `value` (what serde_json and JavaScript
        // write), so a correct reader gets exactly `value`.
        let literal = serde_json::to_string(&value).expect("a finite number serialises");
        let body = format!(r#"{{"title":"T","{field}":{literal}}}"#);
        let request = fuzz.request(Method::POST, "/api/v1/deals", Some(b"application/json"), body.clone().into_bytes());
        let answer = fuzz.send(request).await?;
        prop_assert_eq!(answer.status, StatusCode::CREATED, "{}: {}", body, shown(&answer.raw));
        let id = answer.body["id"].as_str().unwrap_or_default();
        let read = fuzz.app.get(&format!("/api/v1/deals/{id}")).await;
        for (source, raw) in [("the create", &answer.raw), ("GET", &read.raw)] {
            let written = number_in(raw, field);
            // std's parser rounds correctly, unlike serde_json's default one.
            let kept = written.and_then(|w| w.parse::<f64>().ok());
            prop_assert_eq!(kept, Some(value), "{} sent {}; {} answered {:?}", field, literal, source, written);
        }
        Ok(())
    });
}

/// The number a JSON object's `field` holds, as written.
fn number_in<'a>(raw: &'a [u8], field: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(raw).ok()?;
    let start = text.find(&format!("\"{field}\":"))? + field.len() + 3;
    let rest = &text[start..];
    Some(&rest[..rest.find([',', '}'])?])
}

// ---------------------------------------------------------------------------------------------
// Fixed cases
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_100k_deep_answers_400_everywhere() {
    let app = TestApp::spawn().await;
    let seeds = Seeds::plant(&app).await;
    let before = Snapshot::read(&app).await;
    let bodies = [
        "[".repeat(100_000),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)),
        format!(r#"{{"first_name":"A","preferences":{}}}"#, r#"{"beds":"#.repeat(100_000)),
        format!(r#"{{"create":[{}]}}"#, "[".repeat(100_000)),
    ];
    for body in &bodies {
        // Completing a task takes no body, so it has nothing to refuse.
        for write in Write::all().into_iter().filter(|w| *w != Write::CompleteTask) {
            let path = write.path(&seeds);
            let answer =
                send_alone(request(&app, write.method(), &path, Some(b"application/json"), body.clone().into())).await;
            let what = format!("{} {path} with {}", write.method(), shown(body.as_bytes()));
            if write == Write::Form {
                // Over the form's 16 KiB before it is parsed.
                assert_error(&what, &answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
            } else {
                assert_error(&what, &answer, StatusCode::BAD_REQUEST, "malformed_request");
            }
        }
    }
    let after = Snapshot::read(&app).await;
    assert_eq!(before, after, "nothing was stored");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_one_byte_over_its_limit_answers_413_everywhere() {
    let app = TestApp::spawn().await;
    let seeds = Seeds::plant(&app).await;
    let before = Snapshot::read(&app).await;
    for write in Write::all() {
        let Some(limit) = write.body_limit() else { continue };
        let path = write.path(&seeds);
        // Valid JSON up to the last byte, so the size alone is what is refused.
        let over = string_body_of_size(limit + 1);
        let answer = send_alone(request(&app, write.method(), &path, Some(b"application/json"), over)).await;
        assert_error(
            &format!("{} {path}, {} bytes", write.method(), limit + 1),
            &answer,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        );
        // At the limit the body is read and judged on its content: a string is not an object.
        let at = string_body_of_size(limit);
        let answer = send_alone(request(&app, write.method(), &path, Some(b"application/json"), at)).await;
        let what = format!("{} {path}, {limit} bytes", write.method());
        check_status(&what, &answer);
        assert_ne!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{what} is within the limit");
    }
    // Endpoints that take no body do not choke on one either.
    for path in ["/api/v1/contacts", "/api/v1/events"] {
        let answer =
            send_alone(request(&app, Method::GET, path, Some(b"application/json"), string_body_of_size(2 << 20))).await;
        check_status(&format!("GET {path} with a 2 MiB body"), &answer);
    }
    assert_eq!(before, Snapshot::read(&app).await, "nothing was stored");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_beyond_f64_and_u64_are_refused_and_edge_numbers_round_trip() {
    let app = TestApp::spawn().await;
    let before = Snapshot::read(&app).await;
    let post = |plural: &str, field: &str, literal: &str| {
        let base = if plural == "contacts" { r#""first_name":"A""# } else { r#""title":"T""# };
        let body = format!(r#"{{{base},"{field}":{literal}}}"#);
        let request = request(&app, Method::POST, &format!("/api/v1/{plural}"), Some(b"application/json"), body.into());
        send_alone(request)
    };
    // Not representable, or not JSON numbers at all: refused while parsing, before any field rule.
    let zeros = format!("1{}", "0".repeat(400));
    for literal in [
        "1e400",
        "-1e400",
        "1e99999999999",
        "1e2000000000000000",
        &zeros,
        "NaN",
        "Infinity",
        "-Infinity",
        "+1",
        "01",
        "1.",
        ".5",
        "0x10",
        "1e",
        "--1",
    ] {
        for (plural, field) in [("deals", "amount"), ("deals", "probability"), ("contacts", "first_name")] {
            let answer = post(plural, field, literal).await;
            assert_error(
                &format!("{plural} {field}: {literal}"),
                &answer,
                StatusCode::BAD_REQUEST,
                "malformed_request",
            );
        }
    }
    // Representable but out of range, or a number in a string: 422 naming the field.
    for (plural, field, literal) in [
        ("deals", "amount", "1e308"),
        ("deals", "amount", "-1e308"),
        ("deals", "amount", "1.7976931348623157e308"),
        ("deals", "amount", "18446744073709551616"),
        ("deals", "amount", "1000000000000000.5"),
        ("deals", "amount", "-5e-324"),
        ("deals", "amount", r#""NaN""#),
        ("deals", "amount", r#""Infinity""#),
        ("deals", "amount", r#""-0""#),
        ("deals", "amount", r#""1e400""#),
        ("deals", "amount", r#""100""#),
        ("deals", "probability", "-1e-300"),
        ("contacts", "preferences", r#"{"beds":18446744073709551616}"#),
        ("contacts", "preferences", r#"{"beds":18446744073709551615}"#),
        ("contacts", "preferences", r#"{"beds":9223372036854775808}"#),
        ("contacts", "preferences", r#"{"beds":-9223372036854775809}"#),
        ("contacts", "preferences", r#"{"baths":1001}"#),
        ("contacts", "preferences", r#"{"min_price":1e308}"#),
        ("contacts", "preferences", r#"{"max_price":"Infinity"}"#),
    ] {
        let what = format!("{plural} {field}: {literal}");
        let answer = post(plural, field, literal).await;
        assert_error(&what, &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let fields = answer.body["error"]["fields"].as_object();
        assert!(fields.is_some_and(|f| f.keys().any(|k| k.starts_with(field))), "{what}: {}", answer.body);
    }
    assert_eq!(before, Snapshot::read(&app).await, "nothing was stored");
    // In range, however written: stored, and read back byte for byte as the create answered.
    for (plural, field, literal) in [
        ("deals", "amount", "-0"),
        ("deals", "amount", "-0.0"),
        ("deals", "amount", "0e0"),
        ("deals", "amount", "1e-400"),
        ("deals", "amount", "5e-324"),
        ("deals", "amount", "1e15"),
        ("deals", "amount", "999999999999999.9"),
        ("deals", "amount", "123456.789"),
        ("deals", "amount", "0.30000000000000004"),
        ("deals", "probability", "100"),
        ("deals", "probability", "1E2"),
        ("deals", "probability", "33.333333333333336"),
        ("deals", "probability", "2.2250738585072014e-308"),
        ("contacts", "preferences", r#"{"beds":0,"baths":1000,"min_price":0.1,"max_price":1e15}"#),
    ] {
        let what = format!("{plural} {field}: {literal}");
        let answer = post(plural, field, literal).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{what}: {}", shown(&answer.raw));
        let id = answer.body["id"].as_str().expect("an id");
        let read = app.get(&format!("/api/v1/{plural}/{id}")).await;
        assert_eq!(read.raw, answer.raw, "{what}: GET answers what the create answered");
    }
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_bytes_control_characters_and_odd_unicode_are_refused_or_kept_exactly() {
    let app = TestApp::spawn_with(&["--form-rate-per-minute", "1000"]).await;
    let before = Snapshot::read(&app).await;
    // Control characters in record text: 422 naming the field, as raw JSON escapes or decoded.
    for (plural, body, field) in [
        ("contacts", r#"{"first_name":"A\u0000B"}"#, "first_name"),
        ("contacts", r#"{"first_name":"\u0000"}"#, "first_name"),
        ("contacts", r#"{"first_name":"A","tags":["x\u0000"]}"#, "tags"),
        ("contacts", r#"{"first_name":"A","preferences":{"property_type":"\u001b[31m"}}"#, "preferences.property_type"),
        ("contacts", r#"{"first_name":"A","email":"a\u0000@example.com"}"#, "email"),
        ("deals", r#"{"title":"T\u007f"}"#, "title"),
        ("tasks", r#"{"title":"T","due_date":"2026-01-01\u0000"}"#, "due_date"),
        ("enquiries", r#"{"name":"N","message":"\u0000"}"#, "message"),
        ("contacts", r#"{"first_name":"A","\u0000":1}"#, "\u{0}"),
    ] {
        let answer = post_bytes(&app, &format!("/api/v1/{plural}"), b"application/json", body.as_bytes()).await;
        assert_error(&format!("POST {plural} {body}"), &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(answer.body["error"]["fields"].get(field).is_some(), "{body}: names {field:?}: {}", answer.body);
    }
    // A raw control character inside a JSON string is not JSON.
    let answer = post_bytes(&app, "/api/v1/contacts", b"application/json", b"{\"first_name\":\"A\x00B\"}").await;
    assert_error("a raw NUL in a string", &answer, StatusCode::BAD_REQUEST, "malformed_request");
    // Invalid UTF-8 in a body: 400 as JSON, and on the form (urlencoded) never a 5xx.
    let answer = post_bytes(&app, "/api/v1/contacts", b"application/json", b"{\"first_name\":\"\xc3\x28\"}").await;
    assert_error("invalid UTF-8", &answer, StatusCode::BAD_REQUEST, "malformed_request");
    let answer =
        post_bytes(&app, "/forms/enquiry", b"application/x-www-form-urlencoded", b"name=A%00B&email=a%40example.com")
            .await;
    assert_error("a NUL in a form field", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let answer =
        post_bytes(&app, "/forms/enquiry", b"application/x-www-form-urlencoded", b"name=%C3%28%FF\xff\xfe&phone=1")
            .await;
    check_status("invalid UTF-8 in a form", &answer);
    let mut after = Snapshot::read(&app).await;
    // The form may have kept its enquiry with the bad bytes replaced: that alone may differ.
    if answer.status.is_success() {
        after.records[2] -= 1;
        after.events -= 1;
    }
    assert_eq!(before, after, "nothing else was stored");
    // What is not a control character is kept exactly: bidi overrides, BOMs, combining marks,
    // astral characters, a surrogate pair written as escapes.
    let odd = "\u{202e}evil\u{2028}\u{feff}e\u{301}\u{1F3E0}\u{10FFFF}";
    let contact = app.create("contacts", json!({"first_name": odd, "tags": [odd]})).await;
    assert_eq!(contact["first_name"], odd);
    let id = contact["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body, contact);
    let answer = post_bytes(&app, "/api/v1/contacts", b"application/json", br#"{"first_name":"\ud83c\udfe0"}"#).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", shown(&answer.raw));
    assert_eq!(answer.body["first_name"], "\u{1F3E0}");
    // A webhook description is free text; a NUL in it is either refused or kept exactly.
    let answer = app.post("/api/v1/webhooks", json!({"url": "http://127.0.0.1:9/nul", "description": "a\u{0}b"})).await;
    check_status("a NUL in a description", &answer);
    if answer.status.is_success() {
        let id = answer.body["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/api/v1/webhooks/{id}")).await.body["description"], "a\u{0}b");
    }
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_strings_and_keys_are_refused_by_length_not_by_crashing() {
    let app = TestApp::spawn().await;
    let before = Snapshot::read(&app).await;
    let near_limit = 1024 * 1024 - 64;
    for (plural, body, field) in [
        ("contacts", json!({"first_name": "x".repeat(near_limit)}), "first_name"),
        ("contacts", json!({"first_name": "A", "notes": "\u{1F3E0}".repeat(10_001)}), "notes"),
        ("contacts", json!({"first_name": "A", "tags": vec!["t"; 101]}), "tags"),
        ("contacts", json!({"first_name": "A", "tags": ["x".repeat(101)]}), "tags"),
        ("deals", json!({"title": "T", "currency": "EURO"}), "currency"),
        (
            "tasks",
            json!({"title": "T", "due_date": "2026-01-01T00:00:00".to_owned() + &"0".repeat(100_000) + "Z"}),
            "due_date",
        ),
        ("leads", json!({"contact_id": "con_".to_owned() + &"z".repeat(100_000)}), "contact_id"),
    ] {
        let answer = app.post(&format!("/api/v1/{plural}"), body).await;
        assert_error(
            &format!("POST {plural} with a long {field}"),
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert!(answer.body["error"]["fields"].get(field).is_some(), "names {field}: {}", shown(&answer.raw));
    }
    // A 500,000-character key is an unknown field like any other.
    let key = "k".repeat(500_000);
    let answer = app.post("/api/v1/contacts", json!({"first_name": "A", key.clone(): 1})).await;
    assert_error("a long key", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(answer.body["error"]["fields"].get(&key).is_some());
    // 50,000 keys (just under 1 MiB): refused as unknown.
    let many: Map<String, Value> = (0..50_000).map(|n| (format!("k{n}"), Value::Null)).collect();
    let answer = app.post("/api/v1/contacts", Value::Object(many)).await;
    assert_error("50,000 unknown keys", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(before, Snapshot::read(&app).await, "nothing was stored");
    // At the limit, counted in characters, not bytes: kept whole.
    let notes = "\u{1F3E0}".repeat(10_000);
    let contact = app.create("contacts", json!({"first_name": "A", "notes": notes})).await;
    assert_eq!(contact["notes"], notes);
    let id = contact["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body, contact);
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_the_last_one_wins_as_in_javascript() {
    let app = TestApp::spawn().await;
    let send = |path: &'static str, body: &'static str| {
        let request = request(&app, Method::POST, path, Some(b"application/json"), body.as_bytes().to_vec());
        send_alone(request)
    };
    let answer = send("/api/v1/contacts", r#"{"first_name":"First","first_name":"Last"}"#).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", shown(&answer.raw));
    assert_eq!(answer.body["first_name"], "Last");
    let id = answer.body["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body, answer.body);
    // A valid value overridden by an invalid one is invalid, and the other way round is valid.
    let answer = send("/api/v1/contacts", r#"{"first_name":"A","first_name":5}"#).await;
    assert_error("first_name then 5", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let answer = send("/api/v1/deals", r#"{"title":"T","amount":-1,"amount":1}"#).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", shown(&answer.raw));
    assert_eq!(answer.body["amount"], 1);
    // A read-only field named twice is still refused; so is an unknown one.
    let answer = send("/api/v1/contacts", r#"{"first_name":"A","id":"x","id":"y"}"#).await;
    assert_error("id twice", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Bulk: one operation named twice is one operation, the last; two different ones are refused.
    let before = Snapshot::read(&app).await;
    let answer =
        send("/api/v1/deals/bulk", r#"{"create":[{"title":"A"}],"create":[{"title":"B"},{"title":"C"}]}"#).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", shown(&answer.raw));
    assert_eq!(answer.body["ids"].as_array().map(Vec::len), Some(2));
    let after = Snapshot::read(&app).await;
    assert_eq!(after.records[3], before.records[3] + 2, "two deals, B and C");
    let answer = send("/api/v1/deals/bulk", r#"{"create":[{"title":"A"}],"delete":[]}"#).await;
    assert_error("create and delete", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(after, Snapshot::read(&app).await);
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_just_over_its_maximum_is_refused() {
    let app = TestApp::spawn().await;
    // The nearest double to 100.00000000000001 is 100.0000000000000142: over the maximum of 100.
    let body = br#"{"title":"T","probability":100.00000000000001}"#.to_vec();
    let answer = post_bytes(&app, "/api/v1/deals", b"application/json", body).await;
    assert_error("probability 100.00000000000001", &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_webhooks_off_still_refuses_unknown_fields_and_wrong_types() {
    let app = TestApp::spawn().await;
    app.put("/api/v1/settings/webhook", json!({"url": "http://127.0.0.1:9/primary", "events": "*"})).await;
    let before = app.get("/api/v1/settings/webhook").await.body;
    assert_eq!(before["url"], "http://127.0.0.1:9/primary");
    // An empty url switches webhooks off (API-NOTES), but the rest of the body is still checked:
    // unknown fields are refused, as everywhere else.
    for (body, field) in [
        (json!({"url": "", "colour": 1}), "colour"),
        (json!({"url": null, "active": {}}), "active"),
        (json!({"url": "  ", "events": 5}), "events"),
    ] {
        let answer = app.put("/api/v1/settings/webhook", body.clone()).await;
        assert_error(&format!("PUT {body}"), &answer, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(answer.body["error"]["fields"].get(field).is_some(), "{body}: names {field}: {}", answer.body);
        assert_eq!(app.get("/api/v1/settings/webhook").await.body, before, "{body}: webhooks are still on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_is_not_utf8_answers_in_the_error_shape() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/api/v1/contacts/%ff"),
        (Method::PATCH, "/api/v1/deals/%c3%28"),
        (Method::DELETE, "/api/v1/tasks/%ed%a0%80"),
        (Method::POST, "/api/v1/tasks/%ff/complete"),
        (Method::GET, "/api/v1/webhooks/%ff"),
        (Method::GET, "/api/v1/deliveries/%ff"),
        (Method::POST, "/api/v1/deliveries/%ff/retry"),
        (Method::DELETE, "/api/v1/tokens/%ff"),
    ] {
        let answer = send_alone(request(&app, method.clone(), path, Some(b"application/json"), b"{}".to_vec())).await;
        let what = format!("{method} {path}");
        // No record has such an id (404); calling it malformed (400) would do too.
        check_status(&what, &answer);
        let code = answer.body["error"]["code"].as_str();
        assert!(matches!(code, Some("not_found" | "malformed_request")), "{what}: {}", shown(&answer.raw));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_does_not_break_the_next_request_on_its_connection() {
    let app = TestApp::spawn().await;
    // One pooled connection, as any HTTP client keeps: each refusal is followed by a request that
    // reuses it. If the server closes a connection whose body it did not read, it must say so
    // (`Connection: close`) or read the rest first.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let unread = string_body_of_size(100_000);
    for round in 0..10 {
        for (what, token, content_type, status) in [
            ("415", true, "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("401", false, "application/json", StatusCode::UNAUTHORIZED),
        ] {
            let refused = exchange(&client, contact_post(&app, token, content_type, unread.clone())).await;
            assert_eq!(refused.map(|a| a.status), Ok(status), "round {round}: the {what} itself");
            let next = contact_post(&app, true, "application/json", br#"{"first_name":"Next"}"#.to_vec());
            let next = exchange(&client, next).await.map(|a| a.status);
            assert_eq!(
                next,
                Ok(StatusCode::CREATED),
                "round {round}: the request after a {what} that left 100 KB unread"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_refused_body_still_gets_its_answer() {
    let app = TestApp::spawn().await;
    // A client that writes the whole body before it reads must still read the refusal: the server
    // may stop reading, but must not reset the connection under the answer.
    let huge = string_body_of_size(8 * 1024 * 1024);
    for round in 0..3 {
        for (what, token, content_type, status) in [
            ("401", false, "application/json", StatusCode::UNAUTHORIZED),
            ("415", true, "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("413", true, "application/json", StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
            let request = contact_post(&app, token, content_type, huge.clone());
            let answer = exchange(&client, request).await.map(|a| a.status);
            assert_eq!(answer, Ok(status), "round {round}: the {what} for an 8 MiB body");
        }
    }
}

/// `POST /api/v1/contacts` with or without the admin token.
fn contact_post(app: &TestApp, token: bool, content_type: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(Method::POST).uri(app.url("/api/v1/contacts"));
    if token {
        builder = builder.header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    }
    builder.header("content-type", content_type).body(Full::new(Bytes::from(body))).expect("a request")
}

// ---------------------------------------------------------------------------------------------
// The server under test, its seed records, and what is stored
// ---------------------------------------------------------------------------------------------

/// One server for all the cases of one property, and the runtime its client lives on.
struct Fuzz {
    app: TestApp,
    seeds: Seeds,
    /// Opens a connection per request: see [`Fuzz::send`].
    client: HttpClient,
    runtime: tokio::runtime::Runtime,
}

impl Fuzz {
    fn start() -> Fuzz {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        // The form's rate limit would turn most form cases into 429s.
        let app = runtime.block_on(TestApp::spawn_with(&["--form-rate-per-minute", "1000000"]));
        let seeds = runtime.block_on(Seeds::plant(&app));
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
        Fuzz { app, seeds, client, runtime }
    }

    /// Sends a fuzzed request on a connection of its own. A refusal that leaves a body unread can
    /// break the connection for the request after it
    /// (`a_refused_body_does_not_break_the_next_request_on_its_connection`); on a pooled connection
    /// that would fail a later case and blame the wrong input.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, TestCaseError> {
        exchange(&self.client, request).await.map_err(TestCaseError::fail)
    }

    /// Runs `case` on values of `strategy`, then checks that the server still serves.
    fn run<S: Strategy>(&self, strategy: S, case: impl AsyncFn(&Fuzz, S::Value) -> Result<(), TestCaseError>) {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(CASES);
        let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
        let mut runner = TestRunner::new(config);
        if let Err(failure) = runner.run(&strategy, |value| self.runtime.block_on(case(self, value))) {
            panic!("{failure}");
        }
        self.runtime.block_on(still_serving(&self.app));
    }

    fn request(&self, method: Method, path: &str, content_type: Option<&[u8]>, body: Vec<u8>) -> Request<Full<Bytes>> {
        request(&self.app, method, path, content_type, body)
    }

    /// Sends one write, checks the answer and what it left stored, and answers the answer.
    async fn attempt(&self, attempt: Attempt, outcomes: &Outcomes) -> Result<Answer, TestCaseError> {
        if attempt.write.saves_urls() {
            prop_assume!(urls_stay_local(&attempt.body), "the URL would leave the loopback interface");
        }
        let app = &self.app;
        let target = attempt.write.target(&self.seeds);
        let before = Stored::read(app, target.as_deref()).await;
        let path = attempt.write.path(&self.seeds);
        let method = attempt.write.method();
        let request = self.request(method.clone(), &path, attempt.content_type.as_deref(), attempt.body.clone());
        let answer = self.send(request).await?;
        let what = format!("{method} {path} {attempt:?}");
        check_answer(&what, &answer)?;
        if answer.status.is_client_error() {
            outcomes.refused.fetch_add(1, Ordering::Relaxed);
            let after = Stored::read(app, target.as_deref()).await;
            prop_assert_eq!(before, after, "{} answered {} yet changed what is stored", what, answer.status);
            return Ok(answer);
        }
        outcomes.accepted.fetch_add(1, Ordering::Relaxed);
        self.check_stored(&attempt, &what, &before.snapshot, &answer).await?;
        Ok(answer)
    }

    /// After a 2xx or 3xx: the server answered what it stored, and stored all of it.
    async fn check_stored(
        &self,
        attempt: &Attempt,
        what: &str,
        before: &Snapshot,
        answer: &Answer,
    ) -> Result<(), TestCaseError> {
        let app = &self.app;
        let after = Snapshot::read(app).await;
        let reread = |path: String| async move { app.get(&path).await };
        match attempt.write {
            Write::Create(kind) => {
                prop_assert_eq!(answer.status, StatusCode::CREATED, "{}", what);
                check_record_keys(kind, &answer.body, what)?;
                let id = answer.body["id"].as_str().unwrap_or_default();
                let read = reread(format!("/api/v1/{}/{id}", kind.plural())).await;
                prop_assert_eq!(&read.body, &answer.body, "{}: GET answers what the create answered", what);
                prop_assert_eq!(after.count(kind), before.count(kind) + 1, "{}: one {} more", what, kind);
            }
            Write::Patch(_) | Write::CompleteTask if answer.status == StatusCode::OK => {
                let kind = match attempt.write {
                    Write::Patch(kind) => kind,
                    _ => RecordKind::Task,
                };
                check_record_keys(kind, &answer.body, what)?;
                let read = reread(attempt.write.target(&self.seeds).expect("a target")).await;
                prop_assert_eq!(&read.body, &answer.body, "{}: GET answers what the PATCH answered", what);
                prop_assert_eq!(&after.records, &before.records, "{}: a PATCH adds or removes nothing", what);
                if attempt.write == Write::CompleteTask {
                    prop_assert_eq!(&answer.body["completed"], &json!(true), "{}", what);
                }
            }
            Write::Bulk(kind) => {
                prop_assert_eq!(answer.status, StatusCode::OK, "{}", what);
                let sent: Value = serde_json::from_slice(&attempt.body).unwrap_or_default();
                let (op, rows) = sent.as_object().and_then(|o| o.iter().next()).expect("an accepted bulk body");
                let rows = rows.as_array().map(Vec::len).unwrap_or_default();
                let ids: Vec<&str> =
                    answer.body["ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                prop_assert_eq!(ids.len(), rows, "{}: one id per row: {}", what, answer.body);
                let (expected_count, expected_status) = match op.as_str() {
                    "create" => (before.count(kind).checked_add(rows), StatusCode::OK),
                    "update" => (Some(before.count(kind)), StatusCode::OK),
                    _ => (before.count(kind).checked_sub(rows), StatusCode::NOT_FOUND),
                };
                prop_assert_eq!(Some(after.count(kind)), expected_count, "{}: every row applied", what);
                for id in ids {
                    let read = reread(format!("/api/v1/{}/{id}", kind.plural())).await;
                    prop_assert_eq!(read.status, expected_status, "{}: GET {}", what, id);
                }
            }
            Write::CreateEndpoint | Write::PatchEndpoint if answer.status.is_success() => {
                let id = answer.body["id"].as_str().unwrap_or_default();
                let read = reread(format!("/api/v1/webhooks/{id}")).await;
                let mut saved = answer.body.clone();
                if let Some(saved) = saved.as_object_mut() {
                    saved.remove("warnings");
                    saved.remove("standard_webhooks_secret");
                }
                prop_assert_eq!(&read.body, &saved, "{}: GET answers the endpoint that was saved", what);
                let local = read.body["url"].as_str().is_some_and(is_local_or_invalid);
                prop_assert!(local, "{}: the URL saved is on the loopback interface: {}", what, read.body);
            }
            Write::PutSettings if answer.status == StatusCode::OK => {
                let read = reread("/api/v1/settings/webhook".to_owned()).await;
                let mut saved = answer.body.clone();
                if let Some(saved) = saved.as_object_mut() {
                    saved.remove("warnings");
                }
                prop_assert_eq!(&read.body, &saved, "{}: GET answers the settings that were saved", what);
            }
            Write::Form => {
                let redirected = answer.status == StatusCode::SEE_OTHER && answer.headers.contains_key("location");
                let created = answer.status == StatusCode::CREATED && answer.body == json!({"ok": true});
                prop_assert!(redirected || created, "{}: {} {}", what, answer.status, shown(&answer.raw));
                let enquiries = (before.count(RecordKind::Enquiry), after.count(RecordKind::Enquiry));
                prop_assert!(enquiries.1 - enquiries.0 <= 1, "{}: at most one enquiry", what);
            }
            write => prop_assert!(false, "{:?} answered {} {}", write, answer.status, shown(&answer.raw)),
        }
        Ok(())
    }
}

/// Records made before the cases, for ids that exist and references that resolve.
struct Seeds {
    /// One record of each kind, which cases may change.
    records: Vec<(RecordKind, String)>,
    /// One record of each mutable kind, which cases may delete.
    doomed: Vec<String>,
    endpoint: String,
    /// A cursor this server gave out.
    cursor: String,
}

impl Seeds {
    async fn plant(app: &TestApp) -> Seeds {
        let id = |record: Value| record["id"].as_str().expect("an id").to_owned();
        let contact = id(app.create("contacts", json!({"first_name": "Seed", "email": "seed@example.com"})).await);
        let deal = id(app.create("deals", json!({"title": "Seed", "contact_id": contact})).await);
        let records = vec![
            (RecordKind::Lead, id(app.create("leads", json!({"contact_id": contact})).await)),
            (RecordKind::Enquiry, id(app.create("enquiries", json!({"email": "seed@example.com"})).await)),
            (RecordKind::Task, id(app.create("tasks", json!({"title": "Seed", "deal_id": deal})).await)),
            (RecordKind::Contact, contact),
            (RecordKind::Deal, deal),
        ];
        let mut doomed = Vec::new();
        for (plural, body) in [
            ("contacts", json!({"last_name": "Doomed"})),
            ("leads", json!({"contact_id": records[3].1})),
            ("deals", json!({"title": "Doomed"})),
            ("tasks", json!({"title": "Doomed"})),
        ] {
            doomed.push(id(app.create(plural, body).await));
        }
        let endpoint = app.add_endpoint(json!({"url": "http://127.0.0.1:9/seed", "events": "*"})).await;
        let page = app.get("/api/v1/contacts?limit=1").await;
        let cursor = page.body["next_cursor"].as_str().expect("a second page").to_owned();
        Seeds { records, doomed, endpoint, cursor }
    }

    fn id(&self, kind: RecordKind) -> &str {
        self.records.iter().find(|(k, _)| *k == kind).map(|(_, id)| id.as_str()).expect("a seed of each kind")
    }

    fn all_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.records.iter().map(|(_, id)| id.clone()).collect();
        ids.extend(self.doomed.iter().cloned());
        ids.push(self.endpoint.clone());
        ids
    }
}

/// How many records of each kind, events and endpoints are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// In the order of `RecordKind::ALL`.
    records: Vec<usize>,
    events: usize,
    endpoints: usize,
}

impl Snapshot {
    async fn read(app: &TestApp) -> Snapshot {
        let mut records = Vec::new();
        for kind in RecordKind::ALL {
            records.push(count(app, &format!("/api/v1/{}", kind.plural())).await);
        }
        Snapshot {
            records,
            events: count(app, "/api/v1/events").await,
            endpoints: count(app, "/api/v1/webhooks").await,
        }
    }

    fn count(&self, kind: RecordKind) -> usize {
        self.records[RecordKind::ALL.iter().position(|k| *k == kind).expect("a kind")]
    }
}

/// The snapshot and the record a write aims at (status and body of its GET).
#[derive(Debug, PartialEq)]
struct Stored {
    snapshot: Snapshot,
    target: Option<(StatusCode, Value)>,
}

impl Stored {
    async fn read(app: &TestApp, target: Option<&str>) -> Stored {
        let target = match target {
            Some(path) => {
                let answer = app.get(path).await;
                Some((answer.status, answer.body))
            }
            None => None,
        };
        Stored { snapshot: Snapshot::read(app).await, target }
    }
}

/// Every item of a list, following its cursors.
async fn count(app: &TestApp, list: &str) -> usize {
    let mut total = 0;
    let mut path = format!("{list}?limit=1000");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "GET {path}: {}", shown(&page.raw));
        total += page.body["items"].as_array().map(Vec::len).expect("a page has items");
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("{list}?limit=1000&cursor={cursor}"),
            None => return total,
        }
    }
}

/// The server answers, reads and writes.
async fn still_serving(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK, "the server is alive");
    let contact = app.create("contacts", json!({"first_name": "Still here"})).await;
    let id = contact["id"].as_str().expect("an id");
    assert_eq!(app.get(&format!("/api/v1/contacts/{id}")).await.body, contact, "the server still writes");
}

#[derive(Default)]
struct Outcomes {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Outcomes {
    fn assert_some_accepted(&self) {
        assert!(self.accepted.load(Ordering::Relaxed) > 0, "no case was accepted: the generators only make junk");
    }

    fn assert_some_refused(&self) {
        assert!(self.refused.load(Ordering::Relaxed) > 0, "no case was refused: the generators are too tame");
    }
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// A route that takes a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Create(RecordKind),
    Patch(RecordKind),
    Bulk(RecordKind),
    CreateEndpoint,
    PatchEndpoint,
    PutSettings,
    Form,
    CompleteTask,
}

impl Write {
    fn all() -> Vec<Write> {
        let mut all = Vec::new();
        for kind in RecordKind::ALL {
            all.push(Write::Create(kind));
            if kind.is_mutable() {
                all.extend([Write::Patch(kind), Write::Bulk(kind)]);
            }
        }
        all.extend([Write::CreateEndpoint, Write::PatchEndpoint, Write::PutSettings, Write::Form, Write::CompleteTask]);
        all
    }

    fn method(self) -> Method {
        match self {
            Write::Patch(_) | Write::PatchEndpoint => Method::PATCH,
            Write::PutSettings => Method::PUT,
            _ => Method::POST,
        }
    }

    fn path(self, seeds: &Seeds) -> String {
        match self {
            Write::Create(kind) => format!("/api/v1/{}", kind.plural()),
            Write::Patch(kind) => format!("/api/v1/{}/{}", kind.plural(), seeds.id(kind)),
            Write::Bulk(kind) => format!("/api/v1/{}/bulk", kind.plural()),
            Write::CreateEndpoint => "/api/v1/webhooks".into(),
            Write::PatchEndpoint => format!("/api/v1/webhooks/{}", seeds.endpoint),
            Write::PutSettings => "/api/v1/settings/webhook".into(),
            Write::Form => "/forms/enquiry".into(),
            Write::CompleteTask => format!("/api/v1/tasks/{}/complete", seeds.id(RecordKind::Task)),
        }
    }

    /// Where the one thing this write changes can be read.
    fn target(self, seeds: &Seeds) -> Option<String> {
        match self {
            Write::Patch(kind) => Some(format!("/api/v1/{}/{}", kind.plural(), seeds.id(kind))),
            Write::PatchEndpoint => Some(format!("/api/v1/webhooks/{}", seeds.endpoint)),
            Write::PutSettings => Some("/api/v1/settings/webhook".into()),
            Write::CompleteTask => Some(format!("/api/v1/tasks/{}", seeds.id(RecordKind::Task))),
            _ => None,
        }
    }

    /// The largest body the route reads, if it reads one.
    fn body_limit(self) -> Option<usize> {
        match self {
            Write::Bulk(_) => Some(32 * 1024 * 1024),
            Write::Form => Some(16 * 1024),
            Write::CompleteTask => None,
            _ => Some(1024 * 1024),
        }
    }

    fn saves_urls(self) -> bool {
        matches!(self, Write::CreateEndpoint | Write::PatchEndpoint | Write::PutSettings)
    }
}

/// One write: where, with which content type, and which bytes.
#[derive(Clone)]
struct Attempt {
    write: Write,
    content_type: Option<Vec<u8>>,
    body: Vec<u8>,
}

impl Attempt {
    fn json(write: Write, body: Value) -> Attempt {
        let body = serde_json::to_vec(&body).expect("a JSON value serialises");
        Attempt { write, content_type: Some(b"application/json".to_vec()), body }
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content_type = self.content_type.as_deref().map(String::from_utf8_lossy);
        write!(f, "{:?} content-type {:?} body {}", self.write, content_type, shown(&self.body))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Never a 5xx; a 4xx in the API's error shape.
fn check_answer(what: &str, answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(!answer.status.is_server_error(), "{} answered {}: {}", what, answer.status, shown(&answer.raw));
    if answer.status.is_client_error() {
        error_shape(answer).map_err(|problem| {
            TestCaseError::fail(format!("{what} answered {} {problem}: {}", answer.status, shown(&answer.raw)))
        })?;
    }
    Ok(())
}

/// `Ok` for `{"error": {"code": "...", "message": "...", "fields": {"...": "..."}}}` as JSON.
fn error_shape(answer: &Answer) -> Result<(), &'static str> {
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err("without a JSON content type");
    }
    let Some(body) = answer.body.as_object().filter(|b| b.len() == 1) else {
        return Err("with a body that is not {\"error\": ...}");
    };
    let Some(error) = body.get("error").and_then(Value::as_object) else {
        return Err("with a body that is not {\"error\": {...}}");
    };
    let keys: BTreeSet<&str> = error.keys().map(String::as_str).collect();
    if keys != BTreeSet::from(["code", "fields", "message"]) {
        return Err("whose error does not hold exactly code, message and fields");
    }
    let words = |value: &Value| value.as_str().is_some_and(|text| !text.trim().is_empty());
    if !(words(&error["code"]) && words(&error["message"])) {
        return Err("whose code or message is not a non-empty string");
    }
    if !error["fields"].as_object().is_some_and(|f| f.values().all(Value::is_string)) {
        return Err("whose fields are not an object of strings");
    }
    Ok(())
}

/// The same, for the fixed cases: panics instead.
fn check_status(what: &str, answer: &Answer) {
    if let Err(failure) = check_answer(what, answer) {
        panic!("{failure}");
    }
}

fn assert_error(what: &str, answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{what}: {}", shown(&answer.raw));
    check_status(what, answer);
    assert_eq!(answer.body["error"]["code"], code, "{what}");
}

/// A record answer has exactly its kind's fields and the common ones.
fn check_record_keys(kind: RecordKind, record: &Value, what: &str) -> Result<(), TestCaseError> {
    let keys: BTreeSet<&str> = record.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
    let expected: BTreeSet<&str> =
        schema::fields(kind).iter().map(|f| f.name).chain(schema::COMMON.iter().copied()).collect();
    prop_assert_eq!(keys, expected, "{}: the fields of a {}", what, kind);
    prop_assert!(record["id"].as_str().is_some_and(|id| !id.is_empty()), "{}: an id", what);
    Ok(())
}

/// Whether a body's `url`, as the server would read it, stays on this machine (or is no URL).
fn urls_stay_local(body: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map.get("url").and_then(Value::as_str).is_none_or(is_local_or_invalid),
        _ => true,
    }
}

fn is_local_or_invalid(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text.trim()) else { return true };
    match url.host() {
        None => true,
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn request(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&[u8]>,
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    let mut builder =
        Request::builder().method(method).uri(app.url(path)).header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", HeaderValue::from_bytes(content_type).expect("a header value"));
    }
    builder.body(Full::new(Bytes::from(body))).unwrap_or_else(|err| panic!("a request for {path:?}: {err}"))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// POSTs these bytes with the admin token on a connection of its own.
async fn post_bytes(app: &TestApp, path: &str, content_type: &[u8], body: impl Into<Vec<u8>>) -> Answer {
    send_alone(request(app, Method::POST, path, Some(content_type), body.into())).await
}

/// Sends a request on a connection of its own (see [`Fuzz::send`]); panics when there is no answer.
async fn send_alone(request: Request<Full<Bytes>>) -> Answer {
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
    exchange(&client, request).await.unwrap_or_else(|err| panic!("{err}"))
}

/// Sends a request and reads the whole answer; `Err` says why there was none.
async fn exchange(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Answer, String> {
    let what = format!("{} {}", request.method(), request.uri().path());
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .map_err(|_| format!("{what}: no answer within {PATIENCE:?}"))?
        .map_err(|err| format!("{what}: no answer: {err:?}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response.into_body().collect().await.map_err(|err| format!("{what}: a broken body: {err:?}"))?.to_bytes();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Ok(Answer { status, headers, body, raw })
}

/// A JSON string body of exactly `size` bytes.
fn string_body_of_size(size: usize) -> Vec<u8> {
    let mut body = vec![b'x'; size];
    body[0] = b'"';
    body[size - 1] = b'"';
    body
}

/// At most 300 characters of a body, for messages.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    if bytes.len() > 300 { format!("{text}... ({} bytes)", bytes.len()) } else { text.into_owned() }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Numbers as JSON writes them, at the edges of what parsers and fields take.
const NUMBER_LITERALS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "1",
    "-1",
    "100",
    "100.0",
    "101",
    "1E2",
    "0.1",
    "1e-7",
    "1e15",
    "1000000000000000.5",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "1e-400",
    "1e400",
    "-1e400",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
];

/// JSON text that serialising a value never makes: bad escapes, lone surrogates, bare words.
const RAW_LITERALS: &[&str] = &[
    r#""\ud800""#,
    r#""\udc00\ud800""#,
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#""\ud83d\ude00""#,
    r#""\/\/""#,
    r#""\x41""#,
    r#""\u12""#,
    "\"unterminated",
    "\"tab\tinside\"",
    "\"\u{feff}\"",
    "NaN",
    "Infinity",
    "-Infinity",
    "undefined",
    "'single'",
    "True",
    "nul",
    "1.",
    ".5",
    "+1",
    "01",
    "0x10",
    "1e",
    "--1",
    "[",
    "{",
    "]",
    "}",
    ",",
    "\u{feff}{}",
    "{}{}",
    "[1,]",
    "{\"a\":1,}",
    "{\"a\"}",
    "{1:2}",
];

/// Strings that break naive code: blanks, controls, bidi, huge, NaN-like, injections.
fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "\\PC{0,16}",
        1 => "[ \\t\\r\\n]{0,4}",
        1 => "[\\x00-\\x1f\\x7f]{1,3}",
        2 => select(&[
            "", " ", "NaN", "Infinity", "-0", "1e400", "true", "null", "\u{202e}evil", "\u{feff}", "a\u{0}b",
            "\u{1F3E0}", "e\u{301}", "\u{10FFFF}", "\u{2028}", "<script>alert(1)</script>",
            "'; DROP TABLE records; --", "../../etc/passwd", "%00", "\\", "\"", "{}", "[]", "Active", "vip",
            "closed_won", "2026-02-30", "2026-01-01T00:00:00Z", "seed@example.com", "SEED@EXAMPLE.COM ",
            "contact.created", "*",
        ][..]).prop_map(str::to_owned),
        1 => (select(&["x", "\u{e9}", "\u{1F3E0}", " "][..]), 1usize..12_000).prop_map(|(unit, n)| unit.repeat(n)),
    ]
    .boxed()
}

fn number_value() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        (-1000i64..1000).prop_map(Value::from),
        select(NUMBER_LITERALS).prop_filter_map("representable", |text| serde_json::from_str(text).ok()),
    ]
    .boxed()
}

/// Every field name of every kind, of endpoints and of the form, and the bulk operations.
fn known_keys() -> Vec<&'static str> {
    let mut keys: BTreeSet<&'static str> =
        RecordKind::ALL.iter().flat_map(|k| schema::fields(*k)).map(|f| f.name).collect();
    keys.extend(schema::PREFERENCES.iter().map(|f| f.name));
    keys.extend(schema::COMMON);
    keys.extend(ENDPOINT_FIELDS);
    keys.extend(["create", "update", "delete", "website", "redirect", "has_secret", "standard_webhooks_secret"]);
    keys.into_iter().collect()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => select(known_keys()).prop_map(str::to_owned), 1 => hostile_string()].boxed()
}

/// Any JSON value, nested a few levels.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number_value(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((key(), inner), 0..5).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

/// JSON text, possibly broken: literals no serialiser makes, duplicate keys, and a cut anywhere.
fn json_text() -> BoxedStrategy<Vec<u8>> {
    let leaf = prop_oneof![
        select(NUMBER_LITERALS).prop_map(str::to_owned),
        select(RAW_LITERALS).prop_map(str::to_owned),
        select(&["true", "false", "null"][..]).prop_map(str::to_owned),
        hostile_string().prop_map(|s| serde_json::to_string(&s).expect("a string serialises")),
    ];
    let text = leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(","))),
            vec((key(), inner), 0..5).prop_map(|entries| {
                let pairs: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).expect("a key serialises")))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }),
        ]
    });
    (text, proptest::option::weighted(0.2, any::<Index>()))
        .prop_map(|(text, cut)| {
            let mut bytes = text.into_bytes();
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
        .boxed()
}

fn urlencoded() -> BoxedStrategy<Vec<u8>> {
    vec((key(), hostile_string()), 0..6)
        .prop_map(|pairs| {
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
        })
        .boxed()
}

fn any_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("a value serialises")),
        3 => json_text(),
        1 => vec(any::<u8>(), 0..256),
        1 => urlencoded(),
    ]
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    const OTHERS: &[&str] = &[
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/merge-patch+json",
        "application/vnd.api+json",
        "application/+json",
        "application/json;",
        "application/jsonx",
        "text/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
        "application/json, text/plain",
        " application/json ",
        "application/json; charset=latin1",
        "*/*",
        "",
    ];
    prop_oneof![
        8 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        4 => select(OTHERS).prop_map(|c| Some(c.as_bytes().to_vec())),
        1 => vec(any::<u8>(), 0..40)
            .prop_filter("a header value", |bytes| HeaderValue::from_bytes(bytes).is_ok())
            .prop_map(Some),
    ]
    .boxed()
}

/// A value for a field of this type: often one that fits, sometimes anything at all.
fn value_for(ty: FieldType, ids: &Arc<Vec<String>>) -> BoxedStrategy<Value> {
    let ids = ids.clone();
    let fitting: BoxedStrategy<Value> = match ty {
        FieldType::Text(max) => prop_oneof![
            4 => "[A-Za-z][A-Za-z .'-]{0,15}".prop_map(Value::from),
            1 => Just(Value::from("\u{e9}".repeat(max))),
            1 => Just(Value::from("x".repeat(max + 1))),
            1 => Just(Value::from("  padded\t")),
        ]
        .boxed(),
        FieldType::Email => prop_oneof![
            4 => "[a-z]{1,8}(\\.[a-z]{1,4})?(\\+[a-z]{1,3})?@[a-z]{1,8}\\.(com|org|co)".prop_map(Value::from),
            1 => Just(Value::from(" SEED@Example.com ")),
            1 => select(&["a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co"][..]).prop_map(Value::from),
        ]
        .boxed(),
        FieldType::OneOf(values) => (select(values), 0..3u8)
            .prop_map(|(v, case)| {
                Value::from(match case {
                    0 => v.to_owned(),
                    1 => v.to_uppercase(),
                    _ => format!(" {} ", v.to_lowercase()),
                })
            })
            .boxed(),
        FieldType::Number { min, max } => prop_oneof![
            3 => (min..=max).prop_map(Value::from),
            2 => ((min as i64)..=(max as i64)).prop_map(Value::from),
            1 => select(vec![min, max, -0.0, min - 1.0, max + 1.0, max * 2.0]).prop_map(Value::from),
        ]
        .boxed(),
        FieldType::Integer { min, max } => prop_oneof![
            3 => (min..=max).prop_map(Value::from),
            1 => select(vec![json!(min - 1), json!(max + 1), json!(1.5), json!(2.0), json!(u64::MAX)]),
        ]
        .boxed(),
        FieldType::Date => date().prop_map(Value::from).boxed(),
        FieldType::DateOrDateTime => (
            date(),
            select(&["", "T10:00:00Z", "T23:59:60+05:30", "T10:00:00.123456789-00:00", "T25:00:00Z", " 10:00"][..]),
        )
            .prop_map(|(date, time)| Value::from(date + time))
            .boxed(),
        FieldType::StringList => prop_oneof![
            4 => vec("[a-z]{1,10}", 0..4).prop_map(|items| json!(items)),
            1 => Just(json!(vec!["t"; 101])),
            1 => vec(hostile_string(), 0..3).prop_map(|items| json!(items)),
        ]
        .boxed(),
        FieldType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldType::Ref(_) | FieldType::ExternalId => prop_oneof![
            2 => select(ids.to_vec()).prop_map(Value::from),
            1 => "[a-z]{3}_[a-z0-9]{1,14}".prop_map(Value::from),
        ]
        .boxed(),
        FieldType::Preferences => {
            let entry =
                select(schema::PREFERENCES).prop_flat_map(move |f| (Just(f.name.to_owned()), value_for(f.ty, &ids)));
            prop_oneof![
                3 => vec(entry, 0..4).prop_map(|entries| Value::Object(entries.into_iter().collect())),
                1 => vec((key(), json_value()), 0..3).prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
            .boxed()
        }
        FieldType::Timestamp => Just(Value::from("2026-01-01T00:00:00Z")).boxed(),
    };
    prop_oneof![4 => fitting, 1 => json_value()].boxed()
}

/// `YYYY-MM-DD`, sometimes a day that does not exist.
fn date() -> impl Strategy<Value = String> {
    (1..10_000u32, 0..14u32, 0..33u32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

/// An object of a kind's real field names (and some read-only or unknown ones) with random values,
/// often on top of the least that makes a valid record.
fn record_object(kind: RecordKind, ids: &Arc<Vec<String>>, contact: &str) -> BoxedStrategy<Map<String, Value>> {
    let field_ids = ids.clone();
    let entry = prop_oneof![
        10 => select(schema::fields(kind)).prop_flat_map(move |f| (Just(f.name.to_owned()), value_for(f.ty, &field_ids))),
        1 => (select(schema::COMMON).prop_map(str::to_owned), json_value()),
        1 => (key(), json_value()),
    ];
    let base = match kind {
        RecordKind::Contact => json!({"first_name": "Base"}),
        RecordKind::Lead => json!({"contact_id": contact}),
        RecordKind::Enquiry => json!({"name": "Base"}),
        RecordKind::Deal | RecordKind::Task => json!({"title": "Base"}),
    };
    let Value::Object(base) = base else { unreachable!("an object") };
    (any::<bool>(), vec(entry, 0..6))
        .prop_map(move |(on_base, entries)| {
            let mut object = if on_base { base.clone() } else { Map::new() };
            object.extend(entries);
            object
        })
        .boxed()
}

const ENDPOINT_FIELDS: &[&str] =
    &["url", "events", "secret", "active", "description", "retry_schedule", "max_in_flight"];

/// URLs that stay on this machine, or are not URLs a webhook can go to.
fn webhook_url() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[a-zA-Z0-9/._~%-]{0,30}".prop_map(|path| Value::from(format!("http://127.0.0.1:9/{path}"))),
        2 => select(&[
            "https://[::1]:9/hook", "http://localhost:9/", "HTTP://127.0.0.1:9/", " http://127.0.0.1:9/x ",
            "http://127.0.0.1:9/#fragment", "http://2130706433:9/", "", " ", "not a url", "ftp://127.0.0.1/",
            "javascript:alert(1)", "http://", "http:///x", "http://user:pw@127.0.0.1:9/", "http://127.0.0.1:99999/",
            "//127.0.0.1/", "http://127.0.0.1:9/\u{0}", "http://[::1/", "http://127.0.0.1:9/\u{1F3E0}",
        ][..]).prop_map(Value::from),
        1 => (2000..2100usize).prop_map(|n| Value::from(format!("http://127.0.0.1:9/{}", "a".repeat(n)))),
        1 => json_value(),
    ]
    .boxed()
}

fn endpoint_value(field: &'static str) -> BoxedStrategy<Value> {
    let fitting: BoxedStrategy<Value> = match field {
        "url" => return webhook_url(),
        "events" => prop_oneof![
            select(
                &[
                    "*",
                    "contact.created",
                    "contact.created,deal.won",
                    " contact.created , lead.created ",
                    "webhook.test",
                    "",
                    "nope",
                    "contact.*",
                    "*,contact.created",
                    "CONTACT.CREATED"
                ][..]
            )
            .prop_map(Value::from),
            Just(json!(["contact.created"])),
        ]
        .boxed(),
        "secret" => prop_oneof![
            select(&["", "s3cret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a\u{0}b", "\u{e9}\u{e9}"][..])
                .prop_map(Value::from),
            Just(Value::from("x".repeat(512))),
            Just(Value::from("x".repeat(513))),
            Just(Value::from("\u{e9}".repeat(300))),
            Just(Value::Null),
        ]
        .boxed(),
        "active" => any::<bool>().prop_map(Value::Bool).boxed(),
        "description" => prop_oneof![
            "[a-z ]{0,20}".prop_map(Value::from),
            Just(Value::from("d".repeat(500))),
            Just(Value::from("d".repeat(501))),
            Just(Value::Null),
        ]
        .boxed(),
        "retry_schedule" => select(
            &[
                "1s",
                "1s,5m",
                "0s",
                "5m,5m,5m",
                "",
                "-1s",
                "1x",
                "99999999999999h",
                "1s,",
                "1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h",
            ][..],
        )
        .prop_map(Value::from)
        .boxed(),
        _ => prop_oneof![
            (-5i64..2000).prop_map(Value::from),
            select(vec![json!(0), json!(1024), json!(1025), json!(i64::MAX), json!(u64::MAX), json!(1.5)])
        ]
        .boxed(),
    };
    prop_oneof![4 => fitting, 1 => json_value()].boxed()
}

fn endpoint_object(names: &'static [&'static str]) -> BoxedStrategy<Map<String, Value>> {
    let entry = prop_oneof![
        8 => select(names).prop_flat_map(|name| (Just(name.to_owned()), endpoint_value(name))),
        1 => (key(), json_value()),
    ];
    (any::<bool>(), vec(entry, 0..5))
        .prop_map(|(on_base, entries)| {
            let mut object = Map::new();
            if on_base {
                object.insert("url".into(), Value::from("http://127.0.0.1:9/base"));
            }
            object.extend(entries);
            object
        })
        .boxed()
}

/// Writes made of real field names: every record route, bulk, the endpoints, the settings, the form.
fn field_attempts(seeds: &Seeds) -> BoxedStrategy<Attempt> {
    let ids = Arc::new(seeds.all_ids());
    let contact = seeds.id(RecordKind::Contact).to_owned();
    let doomed: Vec<Value> = seeds.doomed.iter().map(|id| Value::from(id.as_str())).collect();
    let mut options: Vec<BoxedStrategy<Attempt>> = Vec::new();
    for kind in RecordKind::ALL {
        let object = record_object(kind, &ids, &contact);
        options.push(object.clone().prop_map(move |o| Attempt::json(Write::Create(kind), Value::Object(o))).boxed());
        if !kind.is_mutable() {
            continue;
        }
        options.push(object.clone().prop_map(move |o| Attempt::json(Write::Patch(kind), Value::Object(o))).boxed());
        let bulk = Write::Bulk(kind);
        options
            .push(vec(object.clone(), 0..4).prop_map(move |rows| Attempt::json(bulk, json!({"create": rows}))).boxed());
        let seed = Value::from(seeds.id(kind));
        let row_id = prop_oneof![4 => Just(seed), 1 => select(ids.to_vec()).prop_map(Value::from), 1 => json_value()];
        options.push(
            vec((proptest::option::weighted(0.95, row_id), object.clone()), 1..4)
                .prop_map(move |rows| {
                    let rows: Vec<Value> = rows
                        .into_iter()
                        .map(|(id, mut row)| {
                            row.extend(id.map(|id| ("id".to_owned(), id)));
                            Value::Object(row)
                        })
                        .collect();
                    Attempt::json(bulk, json!({"update": rows}))
                })
                .boxed(),
        );
        let delete_id = prop_oneof![2 => select(doomed.clone()), 1 => json_value()];
        options.push(vec(delete_id, 0..3).prop_map(move |ids| Attempt::json(bulk, json!({"delete": ids}))).boxed());
    }
    let form = (
        record_object(RecordKind::Enquiry, &ids, &contact),
        vec((select(&["website", "redirect", "submit", "utm_source"][..]), hostile_string()), 0..2),
        any::<bool>(),
    );
    options.push(
        form.prop_map(|(mut object, extra, as_json)| {
            object.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))));
            if as_json {
                return Attempt::json(Write::Form, Value::Object(object));
            }
            let pairs = object.into_iter().map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            });
            let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
            Attempt {
                write: Write::Form,
                content_type: Some(b"application/x-www-form-urlencoded".to_vec()),
                body: body.into_bytes(),
            }
        })
        .boxed(),
    );
    for write in [Write::CreateEndpoint, Write::PatchEndpoint] {
        options
            .push(endpoint_object(ENDPOINT_FIELDS).prop_map(move |o| Attempt::json(write, Value::Object(o))).boxed());
    }
    const SETTINGS_FIELDS: &[&str] = &["url", "events", "secret", "active", "has_secret", "standard_webhooks_secret"];
    options.push(
        endpoint_object(SETTINGS_FIELDS).prop_map(|o| Attempt::json(Write::PutSettings, Value::Object(o))).boxed(),
    );
    Union::new(options).boxed()
}

/// The lists and what they filter on.
const LISTS: &[&str] = &[
    "/api/v1/contacts",
    "/api/v1/leads",
    "/api/v1/enquiries",
    "/api/v1/deals",
    "/api/v1/tasks",
    "/api/v1/webhooks",
    "/api/v1/deliveries",
    "/api/v1/events",
    "/api/v1/event-types",
    "/api/v1/pipeline",
];

/// One `key=value` of a query string, percent-encoded or raw.
fn query_param(seeds: &Seeds) -> BoxedStrategy<String> {
    let events: Vec<&'static str> = estate_crm_domain::EventName::ALL.iter().map(|e| e.as_str()).collect();
    let cursor = seeds.cursor.clone();
    let endpoint = seeds.endpoint.clone();
    let pair = prop_oneof![
        3 => (Just("limit".to_owned()), prop_oneof![
            (-5i64..1100).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            select(&["", "1.5", "1e3", "+5", " 5", "0x10", "99999999999999999999", "\u{ff15}", "NaN", "1000", "1001", "0"][..])
                .prop_map(str::to_owned),
        ]),
        2 => (Just("cursor".to_owned()), prop_oneof![
            Just(cursor),
            select(&["", "c", "c0", "czzzzzzzzzzzzz", "c-1", "C1", "c\u{0}", "c\u{1F3E0}"][..]).prop_map(str::to_owned),
            "\\PC{0,12}",
        ]),
        2 => (Just("event".to_owned()), prop_oneof![
            select(events.clone()).prop_map(str::to_owned),
            select(events).prop_map(|e| e.to_uppercase()),
            "\\PC{0,12}",
        ]),
        2 => (Just("since".to_owned()), prop_oneof![
            select(&["2026-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                "9999-12-31T23:59:60+23:59", "0000-01-01T00:00:00-23:59", "2026-01-01", "2026-13-01T00:00:00Z",
                "2026-01-01T00:00:00.1234567890123Z", "2026-01-01t00:00:00z", "yesterday", ""][..])
                .prop_map(str::to_owned),
            "\\PC{0,12}",
        ]),
        1 => (Just("status".to_owned()), prop_oneof![
            select(&["pending", "succeeded", "failed", "PENDING", "lost", ""][..]).prop_map(str::to_owned),
            "\\PC{0,8}",
        ]),
        1 => (Just("endpoint_id".to_owned()), prop_oneof![Just(endpoint), "\\PC{0,12}".boxed()]),
        1 => ("\\PC{0,8}", "\\PC{0,8}"),
    ];
    let encoded = pair.prop_map(|(key, value)| {
        let mut out = String::new();
        url::form_urlencoded::Serializer::new(&mut out).append_pair(&key, &value);
        out
    });
    prop_oneof![
        6 => encoded,
        1 => select(&["%", "%zz", "%ff", "%c3%28", "%00", "=", "&", "limit", "limit=1&limit=2", "limit=%ff", "cursor=%00", ";", "+", "%2B", "limit=1%00", "since=2026-01-01T00:00:00%2B01:00", "a[b]=c", "limit[]=1"][..]).prop_map(str::to_owned),
    ]
    .boxed()
}

/// Every route with an id in its path, and its method.
fn item_routes() -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    for kind in RecordKind::ALL {
        let item = format!("/api/v1/{}/{{id}}", kind.plural());
        routes.push((Method::GET, item.clone()));
        if kind.is_mutable() {
            routes.push((Method::PATCH, item.clone()));
            routes.push((Method::DELETE, item));
        }
    }
    routes.push((Method::POST, "/api/v1/tasks/{id}/complete".into()));
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        routes.push((method, "/api/v1/webhooks/{id}".into()));
    }
    routes.push((Method::POST, "/api/v1/webhooks/{id}/retry-failed".into()));
    routes.push((Method::POST, "/api/v1/webhooks/{id}/test".into()));
    routes.push((Method::GET, "/api/v1/deliveries/{id}".into()));
    routes.push((Method::POST, "/api/v1/deliveries/{id}/retry".into()));
    routes
}

/// An id as it appears in a path: real ones, near misses, and percent-encoded anything.
fn path_id(seeds: &Seeds) -> BoxedStrategy<String> {
    let ids = seeds.all_ids();
    let real = select(ids.clone());
    let encode = |text: String| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    prop_oneof![
        3 => real,
        2 => (select(ids), 0..5u8, "[a-z0-9]{0,3}").prop_map(|(id, how, extra)| match how {
            0 => format!("{id}{extra}"),
            1 => id.to_uppercase(),
            2 => id[..id.len() - 1].to_owned(),
            3 => format!("{}{}", &id[..4], "z".repeat(13)),
            _ => format!("{extra}{}", &id[3..]),
        }),
        2 => "\\PC{0,20}".prop_map(encode),
        2 => select(&["%00", "%ff", "%c3%28", "%2F", "%2e%2e", "..", ".", "~", "con_", "con_%00", "%ed%a0%80", "%F0%9F%8F%A0", "a%20b", "+"][..]).prop_map(str::to_owned),
        1 => (1usize..5000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}
