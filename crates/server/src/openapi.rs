//! The OpenAPI document, built from the same field table that validation uses, so the two cannot drift.

use estate_crm_domain::schema::{self, Access, Field, FieldType};
use estate_crm_domain::{EventName, RecordKind};
use serde_json::{Map, Value, json};

/// `GET /api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for kind in RecordKind::ALL {
        schemas.insert(input_name(kind), input_schema(kind));
        schemas.insert(title(kind), output_schema(kind));
        add_record_paths(&mut paths, kind);
    }
    add_webhook_paths(&mut paths);
    add_hubspot_paths(&mut paths);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "estate-crm", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A self-hosted real-estate CRM whose outgoing webhooks are its core."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

fn title(kind: RecordKind) -> String {
    let name = kind.name();
    name[..1].to_uppercase() + &name[1..]
}

fn input_name(kind: RecordKind) -> String {
    format!("{}Input", title(kind))
}

fn field_schema(field: &Field) -> Value {
    let schema = match field.ty {
        FieldType::Text(max) => json!({"type": "string", "maxLength": max}),
        FieldType::ExternalId => json!({"type": "string", "maxLength": 200}),
        FieldType::Ref(_) => json!({"type": "string", "maxLength": 100}),
        FieldType::Email => json!({"type": "string", "format": "email", "maxLength": 254}),
        // OpenAPI 3.0 lets `null` through an enum only when the enum lists it.
        FieldType::OneOf(values) => {
            let mut allowed: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            allowed.push(Value::Null);
            json!({"type": "string", "enum": allowed})
        }
        FieldType::Number { min, max } => json!({"type": "number", "minimum": min, "maximum": max}),
        FieldType::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::DateOrDateTime => json!({"type": "string"}),
        FieldType::StringList => {
            json!({"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 100}})
        }
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldType::Preferences => {
            let properties: Map<String, Value> =
                schema::PREFERENCES.iter().map(|f| (f.name.to_owned(), field_schema(f))).collect();
            json!({"type": "object", "properties": properties, "additionalProperties": false})
        }
    };
    let mut schema = schema;
    schema["nullable"] = json!(true);
    schema
}

fn input_schema(kind: RecordKind) -> Value {
    let properties: Map<String, Value> = schema::fields(kind)
        .iter()
        .filter(|f| f.access == Access::Writable)
        .map(|f| (f.name.to_owned(), field_schema(f)))
        .collect();
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

fn output_schema(kind: RecordKind) -> Value {
    let mut properties: Map<String, Value> =
        schema::fields(kind).iter().map(|f| (f.name.to_owned(), field_schema(f))).collect();
    for common in schema::COMMON {
        properties.insert((*common).to_owned(), json!({"type": "string"}));
    }
    json!({"type": "object", "properties": properties})
}

fn error_schema() -> Value {
    json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The error answers of an operation: those named, and 503, which any operation answers while the
/// database cannot be reached.
fn errors(statuses: &[u16]) -> Map<String, Value> {
    let mut responses: Map<String, Value> = statuses
        .iter()
        .map(|s| {
            (
                s.to_string(),
                json!({"description": "error", "content": {"application/json": {"schema": reference("Error")}}}),
            )
        })
        .collect();
    responses.insert(
        "503".into(),
        json!({
            "description": "the database cannot be reached (code `unavailable`); send the request again after Retry-After",
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": reference("Error")}}
        }),
    );
    responses
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(status: u16, schema: Value) -> Map<String, Value> {
    let mut responses = errors(&[400, 401, 403, 404, 409, 413, 415, 422]);
    responses.insert(
        status.to_string(),
        json!({"description": "success", "content": {"application/json": {"schema": schema}}}),
    );
    responses
}

fn list_parameters() -> Value {
    json!([
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        optional_query("cursor", json!({"type": "string"})),
    ])
}

/// A filter that may be given empty, which means "no filter".
fn optional_query(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "allowEmptyValue": true, "schema": schema})
}

fn id_parameter() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn page_of(schema: Value) -> Value {
    json!({"type": "object", "properties": {"items": {"type": "array", "items": schema},
           "next_cursor": {"type": "string", "nullable": true}}})
}

fn add_record_paths(paths: &mut Map<String, Value>, kind: RecordKind) {
    let plural = kind.plural();
    let record = reference(&title(kind));
    let input = reference(&input_name(kind));
    paths.insert(
        format!("/api/v1/{plural}"),
        json!({
            "post": {"summary": format!("Create a {kind}"), "requestBody": json_body(input.clone()), "responses": ok(201, record.clone())},
            "get": {"summary": format!("List {plural}, newest first"), "parameters": list_parameters(), "responses": ok(200, page_of(record.clone()))},
        }),
    );
    let mut item = json!({
        "parameters": id_parameter(),
        "get": {"summary": format!("One {kind}"), "responses": ok(200, record.clone())},
    });
    if kind.is_mutable() {
        item["patch"] = json!({"summary": format!("Change a {kind}; null clears a field"), "requestBody": json_body(input.clone()), "responses": ok(200, record.clone())});
        let mut deleted = errors(&[401, 403, 404]);
        deleted.insert("204".into(), json!({"description": "deleted"}));
        item["delete"] = json!({"summary": format!("Delete a {kind}"), "responses": deleted});
        let bulk = json!({"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": false, "properties": {
            "create": {"type": "array", "maxItems": 10000, "items": input},
            "update": {"type": "array", "maxItems": 10000, "items": {"type": "object"}},
            "delete": {"type": "array", "maxItems": 10000, "items": {"type": "string"}}}});
        let ids = json!({"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}}});
        paths.insert(
            format!("/api/v1/{plural}/bulk"),
            json!({"post": {"summary": format!("Create, change or delete up to 10,000 {plural}, all or nothing"), "requestBody": json_body(bulk), "responses": ok(200, ids)}}),
        );
    }
    paths.insert(format!("/api/v1/{plural}/{{id}}"), item);
    if kind == RecordKind::Task {
        paths.insert(
            "/api/v1/tasks/{id}/complete".into(),
            json!({"parameters": id_parameter(), "post": {"summary": "Complete a task", "responses": ok(200, record)}}),
        );
    }
}

/// The HubSpot integration (docs/HUBSPOT.md).
fn add_hubspot_paths(paths: &mut Map<String, Value>) {
    let any = json!({"type": "object"});
    let stages: Vec<&str> = schema::PIPELINE.iter().map(|(key, _)| *key).collect();
    let stage_map: Map<String, Value> =
        stages.iter().map(|stage| ((*stage).to_owned(), json!({"type": "string", "maxLength": 100}))).collect();
    let settings = json!({"type": "object", "properties": {
        "access_token": {"type": "string", "maxLength": 512, "description": "The private app's token; never shown again"},
        "base_url": {"type": "string", "maxLength": 2048, "default": "https://api.hubapi.com"},
        "deal_pipeline": {"type": "string", "maxLength": 100, "default": "default"},
        "stage_map": {"type": "object", "additionalProperties": false, "properties": stage_map},
        "enabled": {"type": "boolean"},
        "rate_limit": {"type": "object", "required": ["requests", "per_ms"], "properties": {
            "requests": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "per_ms": {"type": "integer", "minimum": 100, "maximum": 600_000, "default": 10_000}}}}});
    paths.insert("/api/v1/integrations/hubspot".into(), json!({
        "get": {"summary": "The HubSpot integration's settings and state (administrators)", "responses": ok(200, any.clone())},
        "put": {"summary": "Connect HubSpot or change its settings (administrators)", "requestBody": json_body(settings), "responses": ok(200, any.clone())},
    }));
    paths.insert("/api/v1/integrations/hubspot/check".into(), json!({
        "post": {"summary": "Check the saved token and its scopes against HubSpot", "responses": ok(200, any.clone())},
    }));
    paths.insert(
        "/api/v1/integrations/hubspot/backfill".into(),
        json!({
            "post": {"summary": "Sync every existing contact and deal to HubSpot", "responses": ok(202, any.clone())},
        }),
    );
    let mut log_parameters = list_parameters();
    if let Value::Array(list) = &mut log_parameters {
        list.push(json!({"name": "record_id", "in": "query", "schema": {"type": "string"}}));
    }
    paths.insert("/api/v1/integrations/hubspot/log".into(), json!({
        "get": {"summary": "The HubSpot sync log, newest first", "parameters": log_parameters, "responses": ok(200, page_of(any))},
    }));
}

fn add_webhook_paths(paths: &mut Map<String, Value>) {
    let names: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let endpoint_input = json!({"type": "object", "additionalProperties": false, "properties": {
        "url": {"type": "string", "maxLength": 2048}, "events": {"type": "string"}, "secret": {"type": "string", "nullable": true},
        "active": {"type": "boolean"}, "description": {"type": "string", "nullable": true},
        "retry_schedule": {"type": "string", "nullable": true}, "max_in_flight": {"type": "integer", "minimum": 1, "maximum": 1024},
        "format": {"type": "string", "enum": ["json", "slack"]}}});
    let any = json!({"type": "object"});
    paths.insert("/api/v1/webhooks".into(), json!({
        "get": {"summary": "List webhook endpoints", "parameters": list_parameters(), "responses": ok(200, page_of(any.clone()))},
        "post": {"summary": "Create a webhook endpoint", "requestBody": json_body(endpoint_input.clone()), "responses": ok(201, any.clone())},
    }));
    paths.insert("/api/v1/webhooks/{id}".into(), json!({
        "parameters": id_parameter(),
        "get": {"summary": "One webhook endpoint", "responses": ok(200, any.clone())},
        "patch": {"summary": "Change a webhook endpoint", "requestBody": json_body(endpoint_input), "responses": ok(200, any.clone())},
        "delete": {"summary": "Delete a webhook endpoint", "responses": deleted()},
    }));
    paths.insert("/api/v1/webhooks/{id}/test".into(), json!({
        "parameters": id_parameter(),
        "post": {"summary": "Send one webhook.test to this endpoint now", "requestBody": test_body(), "responses": ok(200, test_result())},
    }));
    paths.insert("/api/v1/webhooks/{id}/retry-failed".into(), json!({
        "parameters": id_parameter(),
        "post": {"summary": "Attempt every failed delivery of this endpoint again", "responses": ok(202, any.clone())},
    }));
    paths.insert("/api/v1/settings/webhook/test".into(), json!({
        "post": {"summary": "Send one webhook.test to the primary endpoint now", "requestBody": test_body(), "responses": ok(200, test_result())},
    }));
    paths.insert(
        "/api/v1/deliveries/{id}/retry".into(),
        json!({
            "parameters": id_parameter(),
            "post": {"summary": "Attempt this delivery again now", "responses": ok(202, any.clone())},
        }),
    );
    let user = json!({"type": "object", "additionalProperties": false, "required": ["name", "email", "role"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200}, "email": {"type": "string", "format": "email", "maxLength": 254},
        "role": {"type": "string", "enum": ["admin", "agent"]}, "password": {"type": "string", "minLength": 8, "maxLength": 1000, "nullable": true}}});
    paths.insert(
        "/api/v1/users".into(),
        json!({"post": {"summary": "Make a user", "requestBody": json_body(user), "responses": ok(201, any.clone())}}),
    );
    let token = json!({"type": "object", "additionalProperties": false, "properties": {
        "user_id": {"type": "string", "maxLength": 100, "nullable": true}, "name": {"type": "string", "minLength": 1, "maxLength": 200, "nullable": true}}});
    paths.insert("/api/v1/tokens".into(), json!({"post": {"summary": "Make a token; the answer is the only time it is shown", "requestBody": json_body(token), "responses": ok(201, any.clone())}}));
    paths.insert(
        "/api/v1/tokens/{id}".into(),
        json!({"parameters": id_parameter(), "delete": {"summary": "Revoke a token", "responses": deleted()}}),
    );
    add_public_paths(paths);
    add_integration_paths(paths);
    paths.insert(
        "/api/v1/settings/webhook".into(),
        json!({
            "get": {"summary": "The primary webhook settings", "responses": ok(200, any.clone())},
            "put": {"summary": "Change the primary webhook settings; an empty url switches webhooks off",
                    "requestBody": json_body(json!({"type": "object", "additionalProperties": false, "properties": {
                        "url": {"type": "string", "maxLength": 2048, "nullable": true}, "events": {"type": "string"},
                        "secret": {"type": "string", "nullable": true}, "active": {"type": "boolean"},
                        "has_secret": {"description": "read-only: sent back as read, ignored"},
                        "standard_webhooks_secret": {"description": "read-only: sent back as read, ignored"}}})),
                    "responses": ok(200, any.clone())},
        }),
    );
    paths.insert(
        "/api/v1/deliveries".into(),
        json!({
            "get": {"summary": "The delivery log", "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                optional_query("cursor", json!({"type": "string"})),
                optional_query("endpoint_id", json!({"type": "string"})),
                optional_query("status", json!({"type": "string", "enum": ["pending", "succeeded", "failed"]})),
                optional_query("event", json!({"type": "string", "enum": names}))],
                "responses": ok(200, page_of(any.clone()))},
        }),
    );
    paths.insert("/api/v1/deliveries/{id}".into(), json!({
        "parameters": id_parameter(), "get": {"summary": "One delivery with its attempts", "responses": ok(200, any.clone())},
    }));
    paths.insert(
        "/api/v1/events".into(),
        json!({
            "get": {"summary": "The event log, newest first", "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                optional_query("cursor", json!({"type": "string"})),
                optional_query("event", json!({"type": "string", "enum": names})),
                optional_query("since", json!({"type": "string", "description": "an RFC 3339 time"}))],
                "responses": ok(200, page_of(any.clone()))},
        }),
    );
    paths.insert(
        "/api/v1/event-types".into(),
        json!({"get": {"summary": "The event catalogue", "responses": ok(200, any.clone())}}),
    );
    paths.insert("/api/v1/pipeline".into(), json!({"get": {"summary": "The deal stages", "responses": ok(200, any)}}));
}

fn deleted() -> Map<String, Value> {
    let mut responses = errors(&[401, 403, 404]);
    responses.insert("204".into(), json!({"description": "deleted"}));
    responses
}

fn test_body() -> Value {
    json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
        "properties": {"url": {"type": "string", "maxLength": 2048}, "secret": {"type": "string", "nullable": true}}}}}})
}

fn test_result() -> Value {
    json!({"type": "object", "properties": {
        "ok": {"type": "boolean"}, "status_code": {"type": "integer", "nullable": true}, "body": {"type": "string"},
        "error": {"type": "string", "nullable": true}, "duration_ms": {"type": "integer"}, "delivery_id": {"type": "string"}}})
}

/// Routes without a token: the public form and the operator's probes.
fn add_public_paths(paths: &mut Map<String, Value>) {
    let fields = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "email": {"type": "string"}, "phone": {"type": "string"}, "message": {"type": "string"},
        "property_id": {"type": "string"}, "source": {"type": "string"},
        // The honeypot and the redirect are read, never validated: any filled-in honeypot discards.
        "website": {}, "redirect": {}}});
    let mut form_responses = errors(&[400, 413, 415, 422, 429]);
    form_responses.insert(
        "201".into(),
        json!({"description": "received", "content": {"application/json": {"schema": {"type": "object"}}}}),
    );
    form_responses.insert("303".into(), json!({"description": "received; see the form's redirect"}));
    paths.insert("/forms/enquiry".into(), json!({"post": {
        "summary": "The public enquiry form", "security": [],
        "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": fields.clone()}, "application/json": {"schema": fields}}},
        "responses": form_responses}}));
    let status = json!({"type": "object", "properties": {"status": {"type": "string"}}});
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Alive", "security": [], "responses": {
        "200": {"description": "alive", "content": {"application/json": {"schema": status.clone()}}}}}}),
    );
    paths.insert("/readyz".into(), json!({"get": {"summary": "The database answers", "security": [], "responses": {
        "200": {"description": "ready", "content": {"application/json": {"schema": status}}},
        "503": {"description": "the database does not answer", "content": {"application/json": {"schema": reference("Error")}}}}}}));
    paths.insert("/metrics".into(), json!({"get": {"summary": "Prometheus metrics", "security": [], "responses": {
        "200": {"description": "metrics", "content": {"application/openmetrics-text; version=1.0.0; charset=utf-8": {"schema": {"type": "string"}}}}}}}));
}

/// Secret rotation, REST Hooks, `/me` and the trigger of a sample event.
fn add_integration_paths(paths: &mut Map<String, Value>) {
    let names: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let subscribable: Vec<&str> = EventName::ALL.iter().filter(|e| e.is_subscribable()).map(|e| e.as_str()).collect();
    let rotate_body = json!({"required": false, "content": {"application/json": {"schema": {"type": "object",
        "additionalProperties": false, "properties": {"grace": {"type": "string", "nullable": true,
            "description": "how long the replaced secret keeps signing, like 24h, 30m or 0s; at most 168h; default 24h"}}}}}});
    let rotation = json!({"type": "object", "required": ["id", "secret", "standard_webhooks_secret", "previous_secret_valid_until"],
        "properties": {"id": {"type": "string"}, "secret": {"type": "string"}, "standard_webhooks_secret": {"type": "string"},
            "previous_secret_valid_until": {"type": "string", "format": "date-time", "nullable": true}}});
    paths.insert("/api/v1/webhooks/{id}/rotate-secret".into(), json!({
        "parameters": id_parameter(),
        "post": {"summary": "Give the endpoint a new random secret, shown once; the old one keeps signing for the grace period",
                 "requestBody": rotate_body.clone(), "responses": ok(200, rotation.clone())},
    }));
    paths.insert("/api/v1/settings/webhook/rotate-secret".into(), json!({
        "post": {"summary": "Rotate the primary endpoint's secret", "requestBody": rotate_body, "responses": ok(200, rotation)},
    }));
    let hook_input = json!({"type": "object", "additionalProperties": false, "required": ["target_url", "event"], "properties": {
        "target_url": {"type": "string", "maxLength": 2048}, "event": {"type": "string", "enum": subscribable}}});
    let hook = json!({"type": "object", "required": ["id", "target_url", "event", "active", "created_at"], "properties": {
        "id": {"type": "string"}, "target_url": {"type": "string"}, "event": {"type": "string"}, "active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"}, "warnings": {"type": "array", "items": {"type": "string"}}}});
    paths.insert("/api/v1/hooks".into(), json!({
        "post": {"summary": "REST Hooks: subscribe target_url to one event (Zapier, Make)", "requestBody": json_body(hook_input),
                 "responses": ok(201, hook)},
    }));
    paths.insert(
        "/api/v1/hooks/{id}".into(),
        json!({
            "parameters": id_parameter(),
            "delete": {"summary": "REST Hooks: unsubscribe", "responses": deleted()},
        }),
    );
    let event_parameter =
        json!([{"name": "event", "in": "path", "required": true, "schema": {"type": "string", "enum": names}}]);
    paths.insert("/api/v1/hooks/samples/{event}".into(), json!({
        "parameters": event_parameter.clone(),
        "get": {"summary": "The data of the newest few events of this kind, newest first (a fake one while there is none)",
                "responses": ok(200, json!({"type": "array", "items": {"type": "object"}}))},
    }));
    let me = json!({"type": "object", "required": ["id", "name", "email", "role"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "agent"]}}});
    paths
        .insert("/api/v1/me".into(), json!({"get": {"summary": "Who the token belongs to", "responses": ok(200, me)}}));
    let mut result = test_result();
    result["properties"]["endpoint_id"] = json!({"type": "string"});
    result["properties"]["url"] = json!({"type": "string"});
    let triggered = json!({"type": "object", "required": ["event", "results"], "properties": {
        "event": {"type": "string"}, "results": {"type": "array", "items": result}}});
    paths.insert("/api/v1/event-types/{event}/trigger".into(), json!({
        "parameters": event_parameter,
        "post": {"summary": "Send a sample of this event now to every active endpoint subscribed to it, as the test button does",
                 "responses": ok(200, triggered)},
    }));
}
