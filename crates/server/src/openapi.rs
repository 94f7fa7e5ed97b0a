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
        FieldType::ExternalId | FieldType::Ref(_) => json!({"type": "string", "maxLength": 100}),
        FieldType::Email => json!({"type": "string", "format": "email", "maxLength": 254}),
        FieldType::OneOf(values) => json!({"type": "string", "enum": values}),
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

fn errors(statuses: &[u16]) -> Map<String, Value> {
    statuses
        .iter()
        .map(|s| {
            (
                s.to_string(),
                json!({"description": "error", "content": {"application/json": {"schema": reference("Error")}}}),
            )
        })
        .collect()
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
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ])
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

fn add_webhook_paths(paths: &mut Map<String, Value>) {
    let names: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let endpoint_input = json!({"type": "object", "additionalProperties": false, "properties": {
        "url": {"type": "string", "maxLength": 2048}, "events": {"type": "string"}, "secret": {"type": "string", "nullable": true},
        "active": {"type": "boolean"}, "description": {"type": "string", "nullable": true},
        "retry_schedule": {"type": "string", "nullable": true}, "max_in_flight": {"type": "integer", "minimum": 1, "maximum": 1024}}});
    let any = json!({"type": "object"});
    paths.insert("/api/v1/webhooks".into(), json!({
        "get": {"summary": "List webhook endpoints", "parameters": list_parameters(), "responses": ok(200, page_of(any.clone()))},
        "post": {"summary": "Create a webhook endpoint", "requestBody": json_body(endpoint_input.clone()), "responses": ok(201, any.clone())},
    }));
    paths.insert("/api/v1/webhooks/{id}".into(), json!({
        "parameters": id_parameter(),
        "get": {"summary": "One webhook endpoint", "responses": ok(200, any.clone())},
        "patch": {"summary": "Change a webhook endpoint", "requestBody": json_body(endpoint_input), "responses": ok(200, any.clone())},
        "delete": {"summary": "Delete a webhook endpoint", "responses": {"204": {"description": "deleted"}, "404": {"description": "no such endpoint"}}},
    }));
    paths.insert(
        "/api/v1/settings/webhook".into(),
        json!({
            "get": {"summary": "The primary webhook settings", "responses": ok(200, any.clone())},
        }),
    );
    paths.insert("/api/v1/deliveries".into(), json!({
        "get": {"summary": "The delivery log", "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            {"name": "endpoint_id", "in": "query", "schema": {"type": "string"}},
            {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "succeeded", "failed"]}},
            {"name": "event", "in": "query", "schema": {"type": "string", "enum": names}}],
            "responses": ok(200, page_of(any.clone()))},
    }));
    paths.insert("/api/v1/deliveries/{id}".into(), json!({
        "parameters": id_parameter(), "get": {"summary": "One delivery with its attempts", "responses": ok(200, any.clone())},
    }));
    paths.insert(
        "/api/v1/events".into(),
        json!({
            "get": {"summary": "The event log, newest first", "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {"name": "event", "in": "query", "schema": {"type": "string", "enum": names}},
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}}],
                "responses": ok(200, page_of(any.clone()))},
        }),
    );
    paths.insert(
        "/api/v1/event-types".into(),
        json!({"get": {"summary": "The event catalogue", "responses": ok(200, any.clone())}}),
    );
    paths.insert("/api/v1/pipeline".into(), json!({"get": {"summary": "The deal stages", "responses": ok(200, any)}}));
}
