//! The bytes of a webhook's body.
//!
//! They are encoded once, when the event is recorded, and never again: every attempt to every
//! endpoint sends exactly these bytes, so a signature computed over them stays valid forever.

use serde::Serialize;

use crate::{EventName, Timestamp, format_timestamp};

#[derive(Serialize)]
struct Envelope<'a, D> {
    event: &'a str,
    timestamp: &'a str,
    data: &'a D,
    site_url: &'a str,
}

/// `{"event":..,"timestamp":..,"data":..,"site_url":..}`: compact UTF-8 JSON with exactly these four
/// keys in this order (a struct, not a map, fixes the order).
///
/// `data` is a `Value`, or a [`crate::Record`] itself, which serialises to the same bytes as its
/// [`crate::Record::to_api_json`] without the map in between.
pub fn encode(event: EventName, committed_at: Timestamp, data: &impl Serialize, site_url: &str) -> Vec<u8> {
    let timestamp = format_timestamp(committed_at);
    let envelope = Envelope { event: event.as_str(), timestamp: &timestamp, data, site_url };
    // Serialising strings and a `Value` or a record (string keys only) into a Vec cannot fail.
    serde_json::to_vec(&envelope).expect("a webhook body always serialises")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    #[test]
    fn encodes_the_four_keys_in_order_and_compact() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 4, 17, 12, 34, 56).unwrap();
        let data = json!({"id": "con_1", "first_name": "Zoë", "b": 1, "a": 2});
        let body = encode(EventName::ContactCreated, at, &data, "https://crm.example.com");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"event":"contact.created","timestamp":"2026-04-17T12:34:56Z","data":{"id":"con_1","first_name":"Zoë","b":1,"a":2},"site_url":"https://crm.example.com"}"#
        );
    }
}
