//! The web app's contact reads (as in `sqlite/contacts.rs`): the contact list by search and
//! filters, a contact's records, and a record's webhook timeline.
//!
//! Search reads `contacts_search`, a `pg_trgm` GIN index on `contact_search_text(fields)` (the
//! contact's name, email and phones, and the phones' digits alone, in lower case; see migration 2):
//! each word becomes a `LIKE '%word%'` that the index answers for words of three characters or more.
//! A trigram index rather than a tsvector, because people search by part of a name, an email or a
//! phone number, which word stemming would not find.

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::webhook::EventFilter;
use estate_crm_domain::{EventName, Record, RecordKind};
use tokio_postgres::types::ToSql;

use super::fanout::delivery_key;
use super::records::{RECORD_COLUMNS, find_visible, record_from_row};
use super::webhooks::{DELIVERY_PREFIX, ENDPOINT_PREFIX};
use crate::prepare::{paginate, parse_cursor};
use crate::{
    Actor, ContactQuery, DeliveryStatus, Page, PageRequest, Role, StoreError, TimelineDelivery, TimelineEvent, ids,
};

/// The most endpoints a timeline looks at.
const MAX_ENDPOINTS: i64 = 1000;

/// The `WHERE` terms and their values, built up one filter at a time (`?` becomes `$n`).
#[derive(Default)]
struct Conditions {
    terms: Vec<String>,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    fn add(&mut self, term: &str, value: impl ToSql + Sync + Send + 'static) {
        self.values.push(Box::new(value));
        self.terms.push(term.replace('?', &format!("${}", self.values.len())));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect()
    }
}

/// A word as a `LIKE` pattern's inside: `\` is `LIKE`'s escape (`%` and `_` never reach here).
fn like_word(term: &str) -> String {
    format!("%{}%", term.to_lowercase().replace('\\', "\\\\"))
}

pub(super) async fn search(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    query: &ContactQuery,
    page: &PageRequest,
) -> Result<Page<Record>, StoreError> {
    let before = parse_cursor(page.cursor.as_deref())?;
    let limit = i64::try_from(page.limit).unwrap_or(1000);
    let mut conditions = Conditions::default();
    conditions.add("seq < ?", before);
    if actor.role != Role::Admin {
        conditions.add("(created_by = ? OR assigned_agent_id = ?)", actor.user_id.clone());
        let n = conditions.values.len();
        let last = conditions.terms.last_mut().expect("just added");
        *last = format!("(created_by = ${n} OR assigned_agent_id = ${n})");
    }
    for term in query.search_terms() {
        conditions.add("contact_search_text(fields) LIKE ?", like_word(&term));
    }
    if let Some(status) = &query.status {
        conditions.add("fields::jsonb ->> 'status' = ?", status.clone());
    }
    if let Some(stage) = &query.lifecycle_stage {
        conditions.add("lower(fields::jsonb ->> 'lifecycle_stage') = lower(?)", stage.clone());
    }
    if let Some(tag_name) = &query.tag {
        conditions.add(
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(fields::jsonb -> 'tags') = 'array' THEN fields::jsonb -> 'tags' ELSE '[]' END) t
               WHERE lower(t) = lower(?))",
            tag_name.clone(),
        );
    }
    if let Some(agent) = &query.agent {
        conditions.add("assigned_agent_id = ?", agent.clone());
    }
    conditions.values.push(Box::new(limit.saturating_add(1)));
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE kind = 'contact' AND {} ORDER BY seq DESC LIMIT ${}",
        conditions.terms.join(" AND "),
        conditions.values.len()
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &conditions.params()).await?;
    let records = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, record_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(records, page.limit)
}

pub(super) async fn records_of_contact(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    contact_id: &str,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    if kind == RecordKind::Contact {
        return Ok(Vec::new());
    }
    let agent = (actor.role != Role::Admin).then_some(actor.user_id.as_str());
    // `kind <> 'contact'` is spelled out so that the partial index `records_by_contact` applies.
    let statement = client
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records
             WHERE fields::jsonb ->> 'contact_id' = $1 AND kind <> 'contact' AND kind = $2
               AND ($3::TEXT IS NULL OR created_by = $3 OR assigned_agent_id = $3)
             ORDER BY seq DESC LIMIT $4"
        ))
        .await?;
    let limit = i64::try_from(limit).unwrap_or(1000);
    let rows = client.query(&statement, &[&contact_id, &kind.name(), &agent, &limit]).await?;
    rows.iter().map(|row| record_from_row(row, tag)).collect()
}

/// An endpoint as the timeline needs it.
struct TimelineEndpoint {
    seq: i64,
    url: String,
    description: Option<String>,
    events: EventFilter,
    active: bool,
    cursor: i64,
}

async fn endpoints(client: &ClientWrapper) -> Result<Vec<TimelineEndpoint>, StoreError> {
    let statement = client
        .prepare_cached("SELECT seq, url, description, events, active, cursor FROM endpoints ORDER BY seq LIMIT $1")
        .await?;
    client
        .query(&statement, &[&MAX_ENDPOINTS])
        .await?
        .iter()
        .map(|row| {
            let events = EventFilter::parse(&serde_json::Value::String(row.try_get(3)?))
                .map_err(|e| StoreError::internal("reading an endpoint's events", e))?;
            Ok(TimelineEndpoint {
                seq: row.try_get(0)?,
                url: row.try_get(1)?,
                description: row.try_get(2)?,
                events,
                active: row.try_get(4)?,
                cursor: row.try_get(5)?,
            })
        })
        .collect()
}

/// Read in one snapshot (the caller's), so that a delivery whose first attempt is being recorded is
/// seen either as owed or as its row, never as neither.
pub(super) async fn timeline(
    client: &ClientWrapper,
    tag: &str,
    actor: &Actor,
    kind: RecordKind,
    id: &str,
    limit: usize,
) -> Result<Vec<TimelineEvent>, StoreError> {
    let Some((record_seq, _)) = find_visible(client, tag, actor, kind, id).await? else {
        return Err(StoreError::not_found(format!("no {kind} has this id")));
    };
    let statement = client
        .prepare_cached("SELECT seq, name, created_at FROM events WHERE record_seq = $1 ORDER BY seq DESC LIMIT $2")
        .await?;
    let limit = i64::try_from(limit).unwrap_or(1000);
    let events = client.query(&statement, &[&record_seq, &limit]).await?;
    let endpoints = endpoints(client).await?;
    let mut timeline = Vec::with_capacity(events.len());
    for row in events {
        let (seq, name, created_at): (i64, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let Some(name) = EventName::parse(&name) else { continue };
        let mut deliveries = Vec::new();
        for endpoint in &endpoints {
            if let Some(delivery) = delivery_state(client, tag, seq, name, endpoint).await? {
                deliveries.push(delivery);
            }
        }
        timeline.push(TimelineEvent {
            id: ids::format("evt", tag, seq),
            name,
            at: chrono::DateTime::from_timestamp(created_at, 0).unwrap_or_default(),
            deliveries,
        });
    }
    Ok(timeline)
}

/// Where event `event_seq`'s webhook to `endpoint` stands: its row, else pending if the endpoint is
/// owed it, else `None`.
async fn delivery_state(
    client: &ClientWrapper,
    tag: &str,
    event_seq: i64,
    name: EventName,
    endpoint: &TimelineEndpoint,
) -> Result<Option<TimelineDelivery>, StoreError> {
    let key = delivery_key(event_seq, endpoint.seq);
    let statement = client
        .prepare_cached(
            "SELECT status, attempts, last_status_code, last_error, last_attempt_at, next_attempt_at
             FROM deliveries WHERE seq = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&key]).await?;
    let base = |status: DeliveryStatus| TimelineDelivery {
        id: ids::format(DELIVERY_PREFIX, tag, key),
        endpoint_id: ids::format(ENDPOINT_PREFIX, tag, endpoint.seq),
        endpoint_url: endpoint.url.clone(),
        endpoint_description: endpoint.description.clone(),
        status,
        attempts: 0,
        last_status_code: None,
        last_error: None,
        last_attempt_at: None,
        next_attempt_at: None,
    };
    if let Some(row) = row {
        let status = DeliveryStatus::from_code(i64::from(row.try_get::<_, i32>(0)?));
        return Ok(Some(TimelineDelivery {
            attempts: u32::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0),
            last_status_code: row.try_get::<_, Option<i32>>(2)?.and_then(|c| u16::try_from(c).ok()),
            last_error: row.try_get(3)?,
            last_attempt_at: row.try_get(4)?,
            next_attempt_at: (status == DeliveryStatus::Pending).then(|| row.try_get(5)).transpose()?,
            ..base(status)
        }));
    }
    let owed = endpoint.active && endpoint.events.matches(name) && event_seq > endpoint.cursor;
    Ok(owed.then(|| base(DeliveryStatus::Pending)))
}
