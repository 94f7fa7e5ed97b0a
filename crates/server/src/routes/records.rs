//! The CRM records: contacts, leads, enquiries, deals and tasks, with one set of generic handlers.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use estate_crm_domain::RecordKind;
use estate_crm_store::BulkOp;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, JsonBytes, Params, PathId};
use crate::state::AppState;

/// The most rows one bulk request may carry.
pub const MAX_BULK_ROWS: usize = 10_000;
/// Bulk bodies may be larger than others: 10,000 real contacts do not fit in 1 MiB.
pub const BULK_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    RecordKind::ALL.into_iter().fold(Router::new(), |router, kind| router.merge(kind_router(kind)))
}

fn kind_router(kind: RecordKind) -> Router<AppState> {
    let collection = format!("/{}", kind.plural());
    let item = format!("/{}/{{id}}", kind.plural());
    let mut item_routes =
        get(move |state: State<AppState>, caller: Caller, id: PathId| get_one(state, caller, kind, id));
    let mut router = Router::new().route(
        &collection,
        post(move |state: State<AppState>, caller: Caller, body: JsonBody| create(state, caller, kind, body))
            .get(move |state: State<AppState>, caller: Caller, params: Params| list(state, caller, kind, params)),
    );
    if kind.is_mutable() {
        item_routes = item_routes
            .patch(move |state: State<AppState>, caller: Caller, id: PathId, body: JsonBody| {
                update(state, caller, kind, id, body)
            })
            .delete(move |state: State<AppState>, caller: Caller, id: PathId| delete(state, caller, kind, id));
        router = router.route(
            &format!("/{}/bulk", kind.plural()),
            post(move |state: State<AppState>, caller: Caller, body: JsonBytes| bulk(state, caller, kind, body))
                .layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)),
        );
    }
    if kind == RecordKind::Task {
        router = router.route("/tasks/{id}/complete", post(complete_task));
    }
    router.route(&item, item_routes)
}

async fn create(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let record = state.store.create_record(&actor, kind, body).await?;
    Ok((StatusCode::CREATED, Json(record.to_api_json())))
}

async fn get_one(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.store.get_record(&actor, kind, &id).await?.to_api_json()))
}

async fn list(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    params: Params,
) -> ApiResult<Json<Value>> {
    let page = state.store.list_records(&actor, kind, params.page()?).await?;
    let items: Vec<Value> = page.items.iter().map(|r| r.to_api_json()).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})))
}

async fn update(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.store.update_record(&actor, kind, &id, body).await?.to_api_json()))
}

async fn delete(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state.store.delete_record(&actor, kind, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn complete_task(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let task = state.store.update_record(&actor, RecordKind::Task, &id, json!({"completed": true})).await?;
    Ok(Json(task.to_api_json()))
}

async fn bulk(
    State(state): State<AppState>,
    Caller(actor): Caller,
    kind: RecordKind,
    body: JsonBytes,
) -> ApiResult<Json<Value>> {
    // Parsing ten thousand rows is the first part of the import: deliveries make way from here on
    // (the body is read by now, so a slow client holds nothing back).
    let _importing = state.store.imports().start();
    let op = parse_bulk(body.parse()?)?;
    let ids = state.store.bulk(&actor, kind, op).await?;
    Ok(Json(json!({"ids": ids})))
}

/// `{"create": [...]}`, `{"update": [...]}` or `{"delete": [...]}`: exactly one, at most 10,000 rows.
fn parse_bulk(body: Value) -> ApiResult<BulkOp> {
    let Value::Object(object) = body else {
        return Err(ApiError::invalid_field("body", "must be an object with one of create, update, delete"));
    };
    if object.len() != 1 {
        return Err(ApiError::invalid_field("body", "must have exactly one of create, update, delete"));
    }
    let (op, rows) = object.into_iter().next().expect("one key");
    let Value::Array(rows) = rows else {
        return Err(ApiError::invalid_field(&op, "must be a list"));
    };
    if rows.len() > MAX_BULK_ROWS {
        return Err(ApiError::invalid_field(&op, format!("must have at most {MAX_BULK_ROWS} rows")));
    }
    match op.as_str() {
        "create" => Ok(BulkOp::Create(rows)),
        "update" => Ok(BulkOp::Update(rows)),
        "delete" => {
            let mut errors = estate_crm_domain::FieldErrors::new();
            let ids: Vec<String> = rows
                .into_iter()
                .enumerate()
                .filter_map(|(index, row)| match row {
                    Value::String(id) => Some(id),
                    _ => {
                        errors.add(format!("delete[{index}]"), "must be an id (a string)");
                        None
                    }
                })
                .collect();
            errors.into_result(BulkOp::Delete(ids)).map_err(ApiError::invalid)
        }
        other => Err(ApiError::invalid_field(other, "is not a bulk operation; use create, update or delete")),
    }
}
