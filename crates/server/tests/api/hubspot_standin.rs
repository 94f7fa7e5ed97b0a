//! A HubSpot stand-in: a real HTTP server on 127.0.0.1 implementing the part of HubSpot's CRM API
//! the integration uses, from HubSpot's public reference: bearer auth (401 on a wrong token), the
//! CRM v3 batch upsert/update/archive of contacts and deals (at most 100 inputs, 400 above),
//! batch create (409 on a duplicate), the v4 default association of deals with contacts, property
//! lookup, the private-app token info, and HubSpot's per-window request limit (429 with
//! `Retry-After` and the `X-HubSpot-RateLimit-*` headers). It can fail a share of calls with 429 or
//! 503 on purpose, and it keeps everything it holds so that a test can compare it with estate-crm.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

/// The token the stand-in accepts until a test changes it.
pub const GOOD_TOKEN: &str = "pat-na1-standin-good-token";
/// HubSpot's batch limit.
const MAX_INPUTS: usize = 100;

/// One CRM object.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: String,
    pub properties: Map<String, Value>,
    pub archived: bool,
}

impl Object {
    /// A property, `""` when unset (HubSpot shows cleared properties as empty).
    pub fn get(&self, name: &str) -> String {
        self.properties.get(name).and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
struct Inner {
    token: String,
    objects: HashMap<String, BTreeMap<u64, Object>>,
    associations: Vec<(String, String)>,
    next_id: u64,
    /// Each creation: (object type, the key it was made for).
    creations: Vec<(String, String)>,
    limit: Option<(usize, Duration)>,
    recent: VecDeque<Instant>,
    over_limit: u64,
    failure_percent: u64,
    rng: u64,
    injected: u64,
    unauthorized: u64,
    largest_batch: usize,
}

/// The running stand-in.
pub struct HubSpot {
    pub address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubSpot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

impl HubSpot {
    /// Starts a stand-in that accepts [`GOOD_TOKEN`], with no request limit and no failures.
    pub async fn start() -> HubSpot {
        let inner: Shared =
            Arc::new(Mutex::new(Inner { token: GOOD_TOKEN.to_owned(), next_id: 1000, rng: 42, ..Inner::default() }));
        let router = Router::new()
            .route("/crm/v3/objects/{object}", get(list_objects))
            .route("/crm/v3/objects/{object}/batch/{op}", post(batch))
            .route("/crm/v4/associations/deals/contacts/batch/associate/default", post(associate))
            .route("/crm/v3/properties/{object}/{name}", get(property))
            .route("/crm/v3/pipelines/deals/{pipeline}", get(pipeline))
            .route("/oauth/v2/private-apps/get/access-token-info", post(token_info))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        HubSpot { address, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// Enforces HubSpot's limit: at most `requests` in any window of `window`.
    pub fn limit(&self, requests: usize, window: Duration) {
        self.with(|s| s.limit = Some((requests, window)));
    }

    /// Fails this share of calls (after auth and the limit) with 429 or 503, half each.
    pub fn fail_percent(&self, percent: u64) {
        self.with(|s| s.failure_percent = percent);
    }

    /// Accepts only this token from now on (the old one is revoked).
    pub fn accept_token(&self, token: &str) {
        self.with(|s| s.token = token.to_owned());
    }

    /// The live (not archived) objects of a type.
    pub fn live(&self, object: &str) -> Vec<Object> {
        self.with(|s| s.objects.get(object).map(|o| o.values().filter(|o| !o.archived).cloned().collect()))
            .unwrap_or_default()
    }

    /// Every object of a type, archived ones included.
    pub fn all(&self, object: &str) -> Vec<Object> {
        self.with(|s| s.objects.get(object).map(|o| o.values().cloned().collect())).unwrap_or_default()
    }

    /// (deal id, contact id) pairs.
    pub fn associations(&self) -> Vec<(String, String)> {
        self.with(|s| s.associations.clone())
    }

    /// Requests that went over the limit.
    pub fn over_limit(&self) -> u64 {
        self.with(|s| s.over_limit)
    }

    /// Failures injected on purpose.
    pub fn injected(&self) -> u64 {
        self.with(|s| s.injected)
    }

    /// 401s answered.
    pub fn unauthorized(&self) -> u64 {
        self.with(|s| s.unauthorized)
    }

    /// The most inputs one batch carried.
    pub fn largest_batch(&self) -> usize {
        self.with(|s| s.largest_batch)
    }

    /// How many objects were created for each key (email or estate_crm_id).
    pub fn creations(&self) -> Vec<(String, String)> {
        self.with(|s| s.creations.clone())
    }
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (status, Json(json!({"status": "error", "message": message, "category": category}))).into_response()
}

/// What every call goes through: the limit, auth, then the failures asked for.
fn gate(state: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let mut s = state.lock().unwrap();
    if let Some((requests, window)) = s.limit {
        let now = Instant::now();
        while s.recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            s.recent.pop_front();
        }
        s.recent.push_back(now);
        if s.recent.len() > requests {
            s.over_limit += 1;
            let mut response =
                error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITS", "You have reached your secondly limit.");
            let h = response.headers_mut();
            h.insert("x-hubspot-ratelimit-max", requests.to_string().parse().unwrap());
            h.insert("x-hubspot-ratelimit-remaining", "0".parse().unwrap());
            h.insert("x-hubspot-ratelimit-interval-milliseconds", window.as_millis().to_string().parse().unwrap());
            return Err(Box::new(response));
        }
    }
    let expected = format!("Bearer {}", s.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        s.unauthorized += 1;
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        )));
    }
    // A small linear congruential generator: the same failures on every run.
    s.rng = s.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    if (s.rng >> 33) % 100 < s.failure_percent {
        s.injected += 1;
        if s.injected.is_multiple_of(2) {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITS",
                "You have reached your ten_secondly_rolling limit.",
            );
            response.headers_mut().insert("retry-after", "1".parse().unwrap());
            return Err(Box::new(response));
        }
        return Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "Service unavailable")));
    }
    Ok(())
}

fn object_json(object: &Object, new: Option<bool>) -> Value {
    let mut value = json!({"id": object.id, "properties": object.properties, "archived": object.archived,
                           "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"});
    if let Some(new) = new {
        value["new"] = json!(new);
    }
    value
}

async fn list_objects(State(state): State<Shared>, Path(object): Path<String>, headers: HeaderMap) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    let s = state.lock().unwrap();
    let results: Vec<Value> = s
        .objects
        .get(&object)
        .map(|o| o.values().filter(|o| !o.archived).take(1).map(|o| object_json(o, None)).collect())
        .unwrap_or_default();
    Json(json!({"results": results})).into_response()
}

async fn property(
    State(state): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    if name != "estate_crm_id" {
        return error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "Property does not exist");
    }
    Json(json!({"name": name, "type": "string", "fieldType": "text", "hasUniqueValue": true})).into_response()
}

async fn pipeline(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    if id != "default" {
        return error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", &format!("Unable to find pipeline {id}"));
    }
    let stages: Vec<Value> =
        STAGES.iter().map(|stage| json!({"id": stage, "label": stage, "archived": false})).collect();
    Json(json!({"id": "default", "label": "Sales Pipeline", "archived": false, "stages": stages})).into_response()
}

async fn token_info(State(state): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    let token = state.lock().unwrap().token.clone();
    if body.get("tokenKey").and_then(Value::as_str) != Some(token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "INVALID_AUTHENTICATION", "The token is not valid");
    }
    Json(json!({"userId": 1, "hubId": 1, "appId": 1, "scopes": [
        "crm.objects.contacts.read", "crm.objects.contacts.write",
        "crm.objects.deals.read", "crm.objects.deals.write", "crm.schemas.contacts.write"]}))
    .into_response()
}

/// A batch's inputs: 400 unless 1 to 100. The size is noted first, refused or not.
fn inputs(state: &Shared, body: &Value) -> Result<Vec<Value>, Box<Response>> {
    let inputs = body.get("inputs").and_then(Value::as_array).cloned().unwrap_or_default();
    {
        let mut s = state.lock().unwrap();
        s.largest_batch = s.largest_batch.max(inputs.len());
    }
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("inputs must hold 1 to {MAX_INPUTS} items, got {}", inputs.len()),
        )));
    }
    Ok(inputs)
}

fn merge(properties: &mut Map<String, Value>, given: Option<&Value>) {
    for (key, value) in given.and_then(Value::as_object).cloned().unwrap_or_default() {
        properties.insert(key, value);
    }
}

async fn batch(
    State(state): State<Shared>,
    Path((object, op)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    let inputs = match inputs(&state, &body) {
        Ok(inputs) => inputs,
        Err(response) => return *response,
    };
    let mut s = state.lock().unwrap();
    match op.as_str() {
        "upsert" => upsert(&mut s, &object, &inputs),
        "update" => update(&mut s, &object, &inputs),
        "create" => create(&mut s, &object, &inputs),
        "archive" => {
            for input in &inputs {
                let id = input.get("id").and_then(Value::as_str).and_then(|id| id.parse::<u64>().ok());
                if let Some(found) = id.and_then(|id| s.objects.entry(object.clone()).or_default().get_mut(&id)) {
                    found.archived = true;
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown batch operation"),
    }
}

fn find_by(s: &Inner, object: &str, property: &str, value: &str) -> Option<u64> {
    // Compared in place: a copy of the property per object scanned (as `Object::get` makes) was
    // most of a test's time once it held a few thousand contacts.
    let matches =
        |o: &Object| o.properties.get(property).and_then(Value::as_str).unwrap_or_default().eq_ignore_ascii_case(value);
    s.objects.get(object)?.values().find(|o| !o.archived && matches(o)).map(|o| o.id.parse().unwrap())
}

fn make(s: &mut Inner, object: &str, key: &str, properties: Map<String, Value>) -> u64 {
    s.next_id += 1;
    let id = s.next_id;
    s.creations.push((object.to_owned(), key.to_owned()));
    s.objects
        .entry(object.to_owned())
        .or_default()
        .insert(id, Object { id: id.to_string(), properties, archived: false });
    id
}

/// The stage ids of the default sales pipeline, the only pipeline the stand-in has.
const STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// HubSpot refuses a whole batch when one input's property value is not allowed.
fn invalid_stage(inputs: &[Value]) -> Option<Response> {
    let bad = inputs
        .iter()
        .filter_map(|i| i.pointer("/properties/dealstage")?.as_str())
        .find(|stage| !STAGES.contains(stage))?;
    Some(error(
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &format!("Property values were not valid: {bad} was not one of the allowed options for dealstage"),
    ))
}

fn upsert(s: &mut Inner, object: &str, inputs: &[Value]) -> Response {
    if let Some(refused) = invalid_stage(inputs) {
        return refused;
    }
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::new();
    for input in inputs {
        let (Some(property), Some(key)) =
            (input.get("idProperty").and_then(Value::as_str), input.get("id").and_then(Value::as_str))
        else {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "each input needs idProperty and id");
        };
        let unique = matches!((object, property), ("contacts", "email") | (_, "estate_crm_id"));
        if !unique {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &format!("{property} is not a unique property"));
        }
        if !seen.insert(key.to_lowercase()) {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &format!("duplicate id {key} in one batch"));
        }
        let (id, new) = match find_by(s, object, property, key) {
            Some(id) => (id, false),
            None => {
                let mut properties = Map::new();
                properties.insert(
                    property.to_owned(),
                    json!(if property == "email" { key.to_lowercase() } else { key.to_owned() }),
                );
                (make(s, object, key, properties), true)
            }
        };
        let found = s.objects.get_mut(object).unwrap().get_mut(&id).unwrap();
        merge(&mut found.properties, input.get("properties"));
        results.push(object_json(found, Some(new)));
    }
    Json(json!({"status": "COMPLETE", "results": results, "startedAt": "2026-01-01T00:00:00Z",
                "completedAt": "2026-01-01T00:00:00Z"}))
    .into_response()
}

fn update(s: &mut Inner, object: &str, inputs: &[Value]) -> Response {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        let id = input.get("id").and_then(Value::as_str).and_then(|id| id.parse::<u64>().ok());
        match id.and_then(|id| s.objects.entry(object.to_owned()).or_default().get_mut(&id)).filter(|o| !o.archived) {
            Some(found) => {
                merge(&mut found.properties, input.get("properties"));
                results.push(object_json(found, None));
            }
            None => errors.push(json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                                      "message": "Object not found", "context": {"ids": [input.get("id")]}})),
        }
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    (status, Json(json!({"status": "COMPLETE", "results": results, "errors": errors, "numErrors": errors.len()})))
        .into_response()
}

fn create(s: &mut Inner, object: &str, inputs: &[Value]) -> Response {
    let mut results = Vec::new();
    for input in inputs {
        let mut properties = Map::new();
        merge(&mut properties, input.get("properties"));
        let key = properties.get(if object == "contacts" { "email" } else { "estate_crm_id" }).and_then(Value::as_str);
        let key = key.unwrap_or_default().to_owned();
        let unique = if object == "contacts" { "email" } else { "estate_crm_id" };
        if !key.is_empty() && find_by(s, object, unique, &key).is_some() {
            return error(StatusCode::CONFLICT, "CONFLICT", &format!("An object with {unique} {key} already exists"));
        }
        let id = make(s, object, &key, properties);
        results.push(object_json(&s.objects[object][&id], None));
    }
    (StatusCode::CREATED, Json(json!({"status": "COMPLETE", "results": results}))).into_response()
}

async fn associate(State(state): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(response) = gate(&state, &headers) {
        return *response;
    }
    let inputs = match inputs(&state, &body) {
        Ok(inputs) => inputs,
        Err(response) => return *response,
    };
    let mut s = state.lock().unwrap();
    let mut results = Vec::new();
    for input in inputs {
        let from = input.pointer("/from/id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let to = input.pointer("/to/id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let exists = |object: &str, id: &str| {
            id.parse::<u64>().ok().and_then(|id| s.objects.get(object)?.get(&id)).is_some_and(|o| !o.archived)
        };
        if !exists("deals", &from) || !exists("contacts", &to) {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &format!("no deal {from} or contact {to}"));
        }
        if !s.associations.contains(&(from.clone(), to.clone())) {
            s.associations.push((from.clone(), to.clone()));
        }
        results.push(json!({"from": {"id": from}, "to": {"id": to}}));
    }
    Json(json!({"status": "COMPLETE", "results": results})).into_response()
}
