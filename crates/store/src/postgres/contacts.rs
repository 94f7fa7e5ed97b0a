//! The web app's contact reads (as in `sqlite/contacts.rs`): the contact list by search and
//! filters, a contact's records, and a record's webhook timeline.
//!
//! Search reads `contact_search`, a narrow table of each contact's searchable text (the contact's
//! name, email and phones, and the phones' digits alone: `prepare::search_text`, as SQLite's, in
//! lower case), which the write paths keep in the statement that writes the contact (see
//! `records.rs`). Each word becomes a `LIKE '%word%'`, checked newest first by walking the table's
//! key backwards, so a page stops reading after its rows; a word few contacts have reads the whole
//! table once (PERFORMANCE.md, part 8). A `pg_trgm` GIN index on the text made from the JSON
//! answered such a word at once but cost bulk creates most of their time (PERFORMANCE.md,
//! "Fifth pass"), and bulk creates are the engine's hot path.
//!
//! The text is lower-cased in Rust when it is written, as the words are when they are looked for,
//! so that both sides fold case the same way and a search needs no `lower()` per row.

use deadpool_postgres::ClientWrapper;
use estate_crm_domain::webhook::EventFilter;
use estate_crm_domain::{EventName, Record, RecordKind};
use serde_json::{Map, Value};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::fanout::delivery_key;
use super::records::{RECORD_COLUMNS, find_visible, record_from_row};
use super::webhooks::{DELIVERY_PREFIX, ENDPOINT_PREFIX};
use crate::prepare::{paginate, parse_cursor, search_text, timestamp};
use crate::{
    Actor, ContactQuery, DeliveryStatus, Page, PageRequest, Role, StoreError, TimelineDelivery, TimelineEvent, ids,
};

/// How many contacts [`rebuild_search`] reads and writes per round trip: bounds its memory.
const REBUILD_PAGE: i64 = 2000;

/// What `contact_search` holds for a contact whose searchable text (`prepare::search_text`) is
/// `text`.
pub(super) fn stored_text(text: &str) -> String {
    text.to_lowercase()
}

/// A contact's row of `contact_search` made from its stored fields (JSON text), as a new write
/// makes it from the record: the same function, so old and new contacts are found alike.
fn stored_text_of_fields(fields_json: &str) -> Result<String, StoreError> {
    let fields: Map<String, Value> = serde_json::from_str(fields_json)
        .map_err(|err| StoreError::internal("reading a contact's fields to index it for search", err))?;
    let contact = Record {
        kind: RecordKind::Contact,
        id: String::new(),
        created_by: String::new(),
        created_at: timestamp(0),
        updated_at: timestamp(0),
        fields,
    };
    Ok(search_text(&contact).as_deref().map(stored_text).unwrap_or_default())
}

/// Makes `contact_search` anew from every contact in `records`, a page at a time, inside the
/// caller's transaction (the migration that made the table, and an import).
pub(super) async fn rebuild_search(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    tx.execute("DELETE FROM contact_search", &[]).await?;
    let read =
        tx.prepare("SELECT seq, fields FROM records WHERE kind = 'contact' AND seq > $1 ORDER BY seq LIMIT $2").await?;
    let write =
        tx.prepare("INSERT INTO contact_search (seq, text) SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[])").await?;
    let (mut after, mut written) = (0_i64, 0_u64);
    loop {
        let rows = tx.query(&read, &[&after, &REBUILD_PAGE]).await?;
        let Some(last) = rows.last() else { return Ok(written) };
        after = last.try_get(0)?;
        let mut seqs = Vec::with_capacity(rows.len());
        let mut texts = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.try_get::<_, i64>(0)?);
            texts.push(stored_text_of_fields(row.try_get(1)?)?);
        }
        written += tx.execute(&write, &[&seqs, &texts]).await?;
    }
}

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

/// A word as a `LIKE` pattern on the stored (lower-cased) text: `\` is `LIKE`'s escape (`%` and
/// `_` never reach here: they split words).
fn like_word(term: &str) -> String {
    format!("%{}%", stored_text(term).replace('\\', "\\\\"))
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
    let (sql, conditions) = search_statement(actor, query, before, limit);
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &conditions.params()).await?;
    let records = rows
        .iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, record_from_row(row, tag)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    paginate(records, page.limit)
}

/// The search's SQL and its values: contacts older than `before`, one more than `limit`.
///
/// Without words it walks `records_by_kind` newest first. With words it walks `contact_search`'s
/// key backwards and looks each matching row's record up by key for the filters, so that a page
/// stops after its rows. Two things keep PostgreSQL's planner on that path whatever its statistics
/// (this server runs without autovacuum's, and a fresh table has none): the records are a `LATERAL`
/// subquery fenced by `OFFSET 0`, so the search table is always the outer loop (otherwise the
/// planner walks every contact's record and looks its text up); and the words are one `LIKE ALL`
/// inside `COALESCE`, which the planner guesses matches half the rows, so that it expects to stop
/// early, where it guesses a few rows for each `LIKE '%word%'` and then reads and sorts them all (a
/// word every contact has took 0.9 s at 200,000 contacts that way, 0.2 ms this way).
fn search_statement(actor: &Actor, query: &ContactQuery, before: i64, limit: i64) -> (String, Conditions) {
    let words = query.search_terms();
    let mut conditions = Conditions::default();
    let columns = prefixed(RECORD_COLUMNS);
    let sql = if words.is_empty() {
        conditions.add("r.seq < ?", before);
        record_conditions(actor, query, &mut conditions);
        conditions.values.push(Box::new(limit.saturating_add(1)));
        format!(
            "SELECT {columns} FROM records r WHERE r.kind = 'contact' AND {filters} ORDER BY r.seq DESC LIMIT ${n}",
            filters = conditions.terms.join(" AND "),
            n = conditions.values.len()
        )
    } else {
        let patterns: Vec<String> = words.iter().map(|word| like_word(word)).collect();
        conditions.add("COALESCE(s.text LIKE ALL (?::TEXT[]), FALSE)", patterns);
        conditions.add("s.seq < ?", before);
        let searched = conditions.terms.len();
        record_conditions(actor, query, &mut conditions);
        let record_filters: String = conditions.terms[searched..].iter().map(|term| format!(" AND {term}")).collect();
        conditions.values.push(Box::new(limit.saturating_add(1)));
        format!(
            "SELECT {columns} FROM contact_search s CROSS JOIN LATERAL (
                SELECT {columns} FROM records r WHERE r.seq = s.seq AND r.kind = 'contact'{record_filters} OFFSET 0
             ) r
             WHERE {search} ORDER BY s.seq DESC LIMIT ${n}",
            search = conditions.terms[..searched].join(" AND "),
            n = conditions.values.len()
        )
    };
    (sql, conditions)
}

/// The record filters of a query, on `records r`: who may see them, then each filter given.
fn record_conditions(actor: &Actor, query: &ContactQuery, conditions: &mut Conditions) {
    if actor.role != Role::Admin {
        conditions.values.push(Box::new(actor.user_id.clone()));
        let n = conditions.values.len();
        conditions.terms.push(format!("(r.created_by = ${n} OR r.assigned_agent_id = ${n})"));
    }
    if let Some(status) = &query.status {
        conditions.add("r.fields::jsonb ->> 'status' = ?", status.clone());
    }
    if let Some(stage) = &query.lifecycle_stage {
        conditions.add("lower(r.fields::jsonb ->> 'lifecycle_stage') = lower(?)", stage.clone());
    }
    if let Some(tag_name) = &query.tag {
        conditions.add(
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(r.fields::jsonb -> 'tags') = 'array' THEN r.fields::jsonb -> 'tags' ELSE '[]' END) t
               WHERE lower(t) = lower(?))",
            tag_name.clone(),
        );
    }
    if let Some(agent) = &query.agent {
        conditions.add("r.assigned_agent_id = ?", agent.clone());
    }
}

/// `seq, kind, ...` as `r.seq, r.kind, ...`.
fn prefixed(columns: &str) -> String {
    columns.split(", ").map(|column| format!("r.{column}")).collect::<Vec<_>>().join(", ")
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

#[cfg(test)]
mod tests {
    //! The search's plans on a real PostgreSQL (the server `ESTATE_CRM_TEST_POSTGRES` names, as the
    //! store's tests; `off` leaves this out), in a database of its own with 20,000 contacts and no
    //! statistics, as a fresh table has.

    use tokio_postgres::{Client, NoTls};

    use super::*;

    const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    async fn connect(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// A migrated database holding 20,000 contacts (`Ada Lovelace`, `ada-N@example.com`); answers
    /// the admin URL and its name, to drop it.
    async fn database_of_contacts() -> Option<(Client, String, String)> {
        let admin_url = match std::env::var("ESTATE_CRM_TEST_POSTGRES") {
            Ok(value) if value == "off" => return None,
            Ok(value) if !value.is_empty() => value,
            _ => DEFAULT_ADMIN_URL.to_owned(),
        };
        let name = format!("estate_crm_test_{}", uuid::Uuid::new_v4().simple());
        connect(&admin_url).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        let mut client = connect(&url).await;
        super::super::migrations::migrate(&mut client).await.unwrap();
        client
            .batch_execute(
                "INSERT INTO records (seq, kind, created_by, created_at, updated_at, fields)
                     SELECT n, 'contact', 'usr_a', 0, 0,
                            '{\"first_name\":\"Ada\",\"last_name\":\"Lovelace\",\"email\":\"ada-' || n || '@example.com\"}'
                     FROM generate_series(1, 20000) n;
                 INSERT INTO contact_search (seq, text)
                     SELECT n, 'ada lovelace ada-' || n || '@example.com' FROM generate_series(1, 20000) n;",
            )
            .await
            .unwrap();
        Some((client, admin_url, name))
    }

    async fn plan(client: &Client, actor: &Actor, search: &str) -> String {
        let query = ContactQuery { search: Some(search.into()), ..Default::default() };
        let (sql, conditions) = search_statement(actor, &query, i64::MAX, 50);
        let rows = client.query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}"), &conditions.params()).await.unwrap();
        rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn a_search_walks_the_search_table_newest_first_and_stops_after_its_page() {
        let Some((client, admin_url, name)) = database_of_contacts().await else { return };
        let admin = Actor { user_id: "usr_a".into(), role: Role::Admin };
        let agent = Actor { user_id: "usr_a".into(), role: Role::Agent };
        for (actor, words) in [(&admin, "ada lovelace"), (&agent, "LOVELACE"), (&admin, "example a d")] {
            let plan = plan(&client, actor, words).await;
            assert!(plan.contains("Index Scan Backward using contact_search_pkey"), "{words}: {plan}");
            assert!(!plan.contains("Sort"), "{words}: {plan}");
            assert!(plan.contains("rows=51 loops=1)"), "{words}: the page's rows and no more: {plan}");
        }
        let rare = plan(&client, &admin, "ada-10000@example").await;
        assert!(rare.contains("Index Scan Backward using contact_search_pkey"), "{rare}");
        assert!(rare.contains("Rows Removed by Filter: 19999"), "one pass over the table: {rare}");
        assert!(!rare.contains("Sort"), "{rare}");
        drop(client);
        connect(&admin_url).await.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    }
}
