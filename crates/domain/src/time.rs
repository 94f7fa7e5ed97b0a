use chrono::{DateTime, SecondsFormat, Utc};

/// A moment in UTC. Records and events carry it to the second, as the payload format asks.
pub type Timestamp = DateTime<Utc>;

/// RFC 3339, UTC, to the second, with `Z`: `2026-04-17T12:34:56Z`.
pub fn format_timestamp(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
