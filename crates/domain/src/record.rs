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

    /// The record as the API returns it and as webhook `data` carries it: `id`, every schema field in
    /// order (`null` when unset), then `created_by`, `created_at`, `updated_at`.
    pub fn to_api_json(&self) -> Value {
        let schema = schema::fields(self.kind);
        let mut out = Map::with_capacity(schema.len() + 4);
        out.insert("id".into(), Value::String(self.id.clone()));
        for field in schema {
            let value = self.fields.get(field.name).cloned().unwrap_or(Value::Null);
            out.insert(field.name.into(), value);
        }
        out.insert("created_by".into(), Value::String(self.created_by.clone()));
        out.insert("created_at".into(), Value::String(format_timestamp(self.created_at)));
        out.insert("updated_at".into(), Value::String(format_timestamp(self.updated_at)));
        Value::Object(out)
    }
}

/// Emails are unique regardless of case and surrounding space.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}
