//! Versioned migrations, applied in order at start; `PRAGMA user_version` records how far a database is.

use rusqlite::Connection;

use crate::{SchemaVersions, StoreError};

/// Each entry moves the schema one version up. Append only: a released migration never changes.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: records, events, webhooks, users.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

    -- One table for the five record kinds: their fields are validated JSON, and the columns that
    -- queries filter on (kind, visibility, the unique email) are pulled out beside it.
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        created_by TEXT NOT NULL,
        assigned_agent_id TEXT,
        email_key TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        fields TEXT NOT NULL
    );
    CREATE INDEX records_by_kind ON records (kind, seq);
    CREATE UNIQUE INDEX contacts_by_email ON records (email_key) WHERE kind = 'contact' AND email_key IS NOT NULL;

    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX events_by_time ON events (created_at);

    CREATE TABLE endpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until INTEGER,
        active INTEGER NOT NULL,
        disabled_reason TEXT,
        description TEXT,
        retry_schedule TEXT,
        max_in_flight INTEGER NOT NULL,
        is_primary INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX one_primary_endpoint ON endpoints (is_primary) WHERE is_primary = 1;

    -- status: 0 pending, 1 succeeded, 2 failed. Times in Unix ms.
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_seq INTEGER NOT NULL,
        endpoint_seq INTEGER,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        -- The latest attempt lives on the delivery itself, so that the common case (one attempt,
        -- a 2xx) settles with a single UPDATE; earlier attempts move to `attempts`.
        last_attempt_at INTEGER,
        last_duration_ms INTEGER,
        last_status_code INTEGER,
        last_error TEXT,
        last_response BLOB,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    -- The dispatcher's queue: an endpoint's pending deliveries in order.
    CREATE INDEX pending_by_endpoint ON deliveries (endpoint_seq, seq) WHERE status = 0;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_seq, seq);
    -- Every delivery is written twice (made, then settled); each index costs on both. Failed ones
    -- are what people look for, so only they get an index of their own.
    CREATE INDEX failed_deliveries ON deliveries (seq) WHERE status = 2;

    -- Every attempt but a delivery's latest one.
    CREATE TABLE attempts (
        delivery_seq INTEGER NOT NULL,
        number INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error TEXT,
        response BLOB NOT NULL,
        PRIMARY KEY (delivery_seq, number)
    ) WITHOUT ROWID;

    CREATE TABLE users (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    "#,
    // 2: fan-out by cursor (see fanout.rs). A delivery's seq becomes its key, event seq << 20 |
    // endpoint seq, and its row is written when its first attempt ends; each endpoint's cursor says
    // up to which event its deliveries have rows. Every event so far has its rows, so cursors start
    // at the newest event. Events get an index by name (the dispatcher reads an endpoint's events
    // through it) in place of the one by time, which nothing needed.
    r#"
    ALTER TABLE endpoints ADD COLUMN cursor INTEGER NOT NULL DEFAULT 0;
    UPDATE endpoints SET cursor = (SELECT COALESCE(MAX(seq), 0) FROM events);

    CREATE TABLE deliveries_v2 (
        seq INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL,
        endpoint_seq INTEGER,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_attempt_at INTEGER,
        last_duration_ms INTEGER,
        last_status_code INTEGER,
        last_error TEXT,
        last_response BLOB,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    INSERT INTO deliveries_v2
        SELECT (event_seq << 20) | COALESCE(endpoint_seq, 0), event_seq, endpoint_seq, status, attempts,
               next_attempt_at, last_attempt_at, last_duration_ms, last_status_code, last_error, last_response,
               created_at, updated_at
        FROM deliveries;
    CREATE TABLE attempts_v2 (
        delivery_seq INTEGER NOT NULL,
        number INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error TEXT,
        response BLOB NOT NULL,
        PRIMARY KEY (delivery_seq, number)
    ) WITHOUT ROWID;
    INSERT INTO attempts_v2
        SELECT (d.event_seq << 20) | COALESCE(d.endpoint_seq, 0), a.number, a.started_at, a.duration_ms,
               a.status_code, a.error, a.response
        FROM attempts a JOIN deliveries d ON d.seq = a.delivery_seq;
    DROP TABLE attempts;
    ALTER TABLE attempts_v2 RENAME TO attempts;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v2 RENAME TO deliveries;
    -- Retries and deliveries written as pending: the dispatcher's queue besides the owed ones.
    CREATE INDEX pending_by_endpoint ON deliveries (endpoint_seq, seq) WHERE status = 0;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_seq, seq);
    CREATE INDEX failed_deliveries ON deliveries (seq) WHERE status = 2;

    DROP INDEX events_by_time;
    CREATE INDEX events_by_name ON events (name, seq);
    "#,
    // 3: records and events without AUTOINCREMENT, which cost every insert a read and a write of
    // `sqlite_sequence` (about a third of an event's insert, measured). Seqs still never come back:
    // a new event takes the newest seq + 1, and the purge never removes the newest event; a record's
    // seq is handed out by the store from the highest of the newest record and `records_seq` in
    // `meta`, which a delete raises to the deleted seq.
    r#"
    CREATE TABLE records_v3 (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        created_by TEXT NOT NULL,
        assigned_agent_id TEXT,
        email_key TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        fields TEXT NOT NULL
    );
    INSERT INTO records_v3
        SELECT seq, kind, created_by, assigned_agent_id, email_key, created_at, updated_at, fields FROM records;
    INSERT OR REPLACE INTO meta (key, value)
        SELECT 'records_seq', CAST(seq AS TEXT) FROM sqlite_sequence WHERE name = 'records';
    DROP TABLE records;
    ALTER TABLE records_v3 RENAME TO records;
    CREATE INDEX records_by_kind ON records (kind, seq);
    CREATE UNIQUE INDEX contacts_by_email ON records (email_key) WHERE kind = 'contact' AND email_key IS NOT NULL;

    CREATE TABLE events_v3 (
        seq INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    INSERT INTO events_v3 SELECT seq, name, created_at, body FROM events;
    DROP TABLE events;
    ALTER TABLE events_v3 RENAME TO events;
    CREATE INDEX events_by_name ON events (name, seq);
    "#,
    // The web app's sign-in sessions: only the hash of a session's cookie is kept.
    r#"
    CREATE TABLE sessions (
        hash TEXT PRIMARY KEY,
        user_seq INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (user_seq);
    "#,
    // integrations: which API made an endpoint (a REST hook is deleted by a 410, not paused) and the
    // body its deliveries carry (the signed JSON, or a Slack message derived from it).
    r#"
    ALTER TABLE endpoints ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
    ALTER TABLE endpoints ADD COLUMN format TEXT NOT NULL DEFAULT 'json';
    UPDATE endpoints SET source = 'settings' WHERE is_primary = 1;
    "#,
    // The HubSpot integration (see sqlite/hubspot.rs): one settings row with its durable positions,
    // the map from our records to HubSpot's objects, and the sync log.
    r#"
    CREATE TABLE hubspot_settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        access_token TEXT,
        base_url TEXT NOT NULL,
        deal_pipeline TEXT NOT NULL,
        stage_map TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        rate_limit INTEGER NOT NULL,
        rate_window_ms INTEGER NOT NULL,
        paused_reason TEXT,
        version INTEGER NOT NULL,
        cursor INTEGER NOT NULL,
        backfill_kind TEXT,
        backfill_page TEXT,
        backfill_done INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE hubspot_map (
        kind TEXT NOT NULL,
        record_seq INTEGER NOT NULL,
        record_id TEXT NOT NULL,
        hubspot_id TEXT NOT NULL,
        sent TEXT NOT NULL,
        PRIMARY KEY (kind, record_seq)
    ) WITHOUT ROWID;
    CREATE TABLE hubspot_log (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        record_id TEXT NOT NULL,
        action TEXT NOT NULL,
        sent TEXT NOT NULL,
        status INTEGER,
        hubspot_id TEXT,
        error TEXT
    );
    CREATE INDEX hubspot_log_by_record ON hubspot_log (record_id, seq);
    "#,
    // pipeline: indexes for the web app's pipeline screens (sqlite/pipeline.rs), each partial to
    // its kind so that a table of 100,000 contacts costs them nothing: the deals board reads a
    // stage's newest deals, the tasks page open tasks by due date, the leads list filters by status,
    // and the enquiry inbox finds the lead each enquiry became. The board's totals read every deal;
    // `deals_totals` holds what they need, so they read its entries instead of each deal's JSON.
    // An agent's board reads each stage's deals by owner (`deals_by_creator`, `deals_by_agent`).
    r#"
    CREATE INDEX IF NOT EXISTS deals_by_stage ON records (json_extract(fields, '$.stage'), seq) WHERE kind = 'deal';
    CREATE INDEX IF NOT EXISTS deals_by_creator ON records (created_by, json_extract(fields, '$.stage'), seq)
        WHERE kind = 'deal';
    CREATE INDEX IF NOT EXISTS deals_by_agent ON records (assigned_agent_id, json_extract(fields, '$.stage'), seq)
        WHERE kind = 'deal';
    CREATE INDEX IF NOT EXISTS deals_totals ON records (
        json_extract(fields, '$.stage'), json_extract(fields, '$.currency'), json_extract(fields, '$.amount'),
        created_by, assigned_agent_id
    ) WHERE kind = 'deal';
    CREATE INDEX IF NOT EXISTS tasks_by_due ON records
        (json_extract(fields, '$.completed'), COALESCE(json_extract(fields, '$.due_date'), '9999-12-31'), seq)
        WHERE kind = 'task';
    CREATE INDEX IF NOT EXISTS leads_by_status ON records (json_extract(fields, '$.status'), seq) WHERE kind = 'lead';
    CREATE INDEX IF NOT EXISTS leads_by_source ON records (json_extract(fields, '$.lead_source')) WHERE kind = 'lead';
    "#,
    // The web app's contacts: each contact's searchable text (name, email, phones, and the phones'
    // digits alone) in a narrow table of its own, written by the store beside each contact (see
    // sqlite/contacts.rs; filled here for the contacts there are); a search reads it whole, which
    // is far cheaper than the JSON it comes from. Measured: an FTS5 trigram index kept by triggers
    // halved bulk creates, and triggers making this text from the JSON cost a third of them. Then the records of a contact by their `contact_id`, and each event's record,
    // for a record's webhook timeline (events written before this have none).
    r#"
    CREATE TABLE contact_search (seq INTEGER PRIMARY KEY, text TEXT NOT NULL);
    INSERT INTO contact_search (seq, text)
        SELECT seq, concat_ws(' ',
            fields ->> '$.first_name', fields ->> '$.last_name', fields ->> '$.email',
            fields ->> '$.phone', fields ->> '$.mobile',
            replace(replace(replace(replace(replace(replace(fields ->> '$.phone', ' ', ''), '-', ''), '(', ''), ')', ''), '+', ''), '.', ''),
            replace(replace(replace(replace(replace(replace(fields ->> '$.mobile', ' ', ''), '-', ''), '(', ''), ')', ''), '+', ''), '.', ''))
        FROM records WHERE kind = 'contact';

    CREATE INDEX records_by_contact ON records (fields ->> '$.contact_id', seq) WHERE kind != 'contact';

    ALTER TABLE events ADD COLUMN record_seq INTEGER;
    CREATE INDEX events_by_record ON events (record_seq, seq) WHERE record_seq IS NOT NULL;
    "#,
];
/// Brings the database up to the newest schema, each migration in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<SchemaVersions, StoreError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::internal(
            "opening the database",
            format!(
                "it was written by a newer estate-crm (schema version {current}, this one knows {}); \
                 upgrade estate-crm or restore a backup",
                MIGRATIONS.len()
            ),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(SchemaVersions { found: current, now: current.max(MIGRATIONS.len()) })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// A database at schema 1 with two events, two endpoints, deliveries (one test of unsaved
    /// settings among them) and an earlier attempt.
    fn version_one() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO events (name, created_at, body) VALUES ('contact.created', 1, x'7b7d'), ('webhook.test', 2, x'7b7d');
             INSERT INTO endpoints (url, events, active, max_in_flight, created_at, updated_at)
                 VALUES ('http://a', '*', 1, 16, 0, 0), ('http://b', '*', 0, 16, 0, 0);
             INSERT INTO deliveries (event_seq, endpoint_seq, status, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (1, 1, 1, 2, 0, 0, 0), (1, 2, 0, 0, 0, 0, 0), (2, NULL, 2, 1, 0, 0, 0);
             INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error, response)
                 VALUES (1, 1, 0, 5, 500, NULL, x'');",
        )
        .unwrap();
        conn
    }

    #[test]
    fn the_contacts_migration_makes_search_rows_for_the_contacts_there_are() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS.len() - 1;
        for sql in &MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before).unwrap();
        conn.execute_batch(
            r#"INSERT INTO records (seq, kind, created_by, created_at, updated_at, fields) VALUES
                 (7, 'contact', 'u', 0, 0, '{"first_name":"Ada","email":"ada@example.com","phone":"+44 (20) 7946-0001"}'),
                 (8, 'deal', 'u', 0, 0, '{"title":"Flat"}');"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT seq, text FROM contact_search")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(7, "Ada ada@example.com +44 (20) 7946-0001 442079460001".to_owned())]);
    }

    #[test]
    fn version_two_keys_deliveries_by_event_and_endpoint_and_starts_cursors_at_the_newest_event() {
        let mut conn = version_one();
        migrate(&mut conn).unwrap();

        let keys: Vec<(i64, Option<i64>, i64)> = conn
            .prepare("SELECT seq, endpoint_seq, status FROM deliveries ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, vec![((1 << 20) | 1, Some(1), 1), ((1 << 20) | 2, Some(2), 0), (2 << 20, None, 2)]);
        let attempt: (i64, i64) = conn
            .query_row("SELECT delivery_seq, number FROM attempts", [], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        assert_eq!(attempt, ((1 << 20) | 1, 1), "the attempt follows its delivery's new key");
        let cursors: Vec<i64> = conn
            .prepare("SELECT cursor FROM endpoints")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(cursors, vec![2, 2], "every event so far already has its rows");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
