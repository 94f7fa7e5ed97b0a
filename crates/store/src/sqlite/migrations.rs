//! Versioned migrations, applied in order at start; `PRAGMA user_version` records how far a database is.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry moves the schema one version up. Append only: a released migration never changes.
const MIGRATIONS: &[&str] = &[
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
];

/// Brings the database up to the newest schema, each migration in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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
    Ok(())
}
