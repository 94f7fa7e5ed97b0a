use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::{RecordKind, Timestamp, format_timestamp, schema};

/// A validated CRM record.
///
/// `fields` holds only the kind's schema fields that are set, each already checked; the common
/// fields are typed. Built by [`crate::change`] and by the store when it reads a record back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// What kind of record this is.
    pub kind: RecordKind,
    /// Its opaque id.
    pub id: String,
    /// The id of the user whose token created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The schema fields that are set.
    pub fields: Map<String, Value>,
}

impl Record {
    /// A field's value, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// A string field's value, if set.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The agent this record is assigned to, if any.
    pub fn assigned_agent_id(&self) -> Option<&str> {
        self.get_str("assigned_agent_id")
    }

    /// For a contact: its email in the form that the uniqueness rule compares.
    pub fn email_key(&self) -> Option<String> {
        (self.kind == RecordKind::Contact).then(|| self.get_str("email").map(normalize_email)).flatten()
    }

    /// The record as the API returns it and as webhook `data` carries it, as a JSON value (see the
    /// `Serialize` impl for its shape). Where only bytes are needed, serialise the record itself.
    pub fn to_api_json(&self) -> Value {
        serde_json::to_value(self).expect("a record always serialises")
    }
}

/// A record serialises as the API returns it and as webhook `data` carries it: `id`, every schema
/// field in order (`null` when unset), then `created_by`, `created_at`, `updated_at`.
///
/// Written straight from the record, without building a map first: a bulk import encodes ten
/// thousand of these per request.
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let schema = schema::fields(self.kind);
        let mut out = serializer.serialize_map(Some(schema.len() + 4))?;
        out.serialize_entry("id", &self.id)?;
        for field in schema {
            out.serialize_entry(field.name, self.fields.get(field.name).unwrap_or(&Value::Null))?;
        }
        out.serialize_entry("created_by", &self.created_by)?;
        out.serialize_entry("created_at", &format_timestamp(self.created_at))?;
        out.serialize_entry("updated_at", &format_timestamp(self.updated_at))?;
        out.end()
    }
}

/// Emails are unique regardless of case and surrounding space.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::{EventName, payload};

    fn contact() -> Record {
        let at = chrono::Utc.with_ymd_and_hms(2026, 4, 17, 12, 34, 56).unwrap();
        let fields = json!({"email": "zoe@example.com", "first_name": "Zoë \"Z\"", "tags": ["buyer"]});
        let Value::Object(fields) = fields else { unreachable!() };
        Record {
            kind: RecordKind::Contact,
            id: "con_1".into(),
            created_by: "usr_1".into(),
            created_at: at,
            updated_at: at + chrono::Duration::seconds(1),
            fields,
        }
    }

    #[test]
    fn a_record_serialises_in_schema_order_with_every_field() {
        let json = serde_json::to_string(&contact()).unwrap();
        let mut expected = String::from(r#"{"id":"con_1""#);
        for field in schema::fields(RecordKind::Contact) {
            let value = match field.name {
                "email" => r#""zoe@example.com""#,
                "first_name" => r#""Zoë \"Z\"""#,
                "tags" => r#"["buyer"]"#,
                _ => "null",
            };
            expected.push_str(&format!(r#","{}":{value}"#, field.name));
        }
        expected.push_str(
            r#","created_by":"usr_1","created_at":"2026-04-17T12:34:56Z","updated_at":"2026-04-17T12:34:57Z"}"#,
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn a_body_encoded_from_the_record_is_the_body_encoded_from_its_json() {
        let record = contact();
        let at = record.created_at;
        let site = "https://crm.example.com";
        let from_record = payload::encode(EventName::ContactCreated, at, &record, site);
        let from_json = payload::encode(EventName::ContactCreated, at, &record.to_api_json(), site);
        assert_eq!(String::from_utf8(from_record).unwrap(), String::from_utf8(from_json).unwrap());
    }
}
