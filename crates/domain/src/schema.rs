//! The fields of each record kind and how each value is checked.
//!
//! A field's rules are data ([`Field`]), so one generic validator serves every kind and the OpenAPI
//! document and error messages cannot drift from what is enforced.

use serde_json::{Map, Value};

use crate::{FieldErrors, RecordKind};

/// Who may set a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Clients set it on create and PATCH.
    Writable,
    /// The server derives it; a client that sends it gets a 422.
    ReadOnly,
}

/// The shape and bounds of one field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// A string of at most this many characters.
    Text(usize),
    /// An email address.
    Email,
    /// One of these strings (matched case-insensitively, stored as written here).
    OneOf(&'static [&'static str]),
    /// A finite number within bounds.
    Number {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A whole number within bounds.
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A date `YYYY-MM-DD` or an RFC 3339 date and time.
    DateOrDateTime,
    /// A list of at most 100 strings of at most 100 characters.
    StringList,
    /// `true` or `false`.
    Bool,
    /// The id of a record of this kind, which must exist.
    Ref(RecordKind),
    /// An opaque id of something outside the CRM (a property listing, an agent).
    ExternalId,
    /// A contact's buying preferences, an object of [`PREFERENCES`] fields.
    Preferences,
    /// A server-maintained timestamp.
    Timestamp,
}

/// One field of a record kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    /// Its JSON name.
    pub name: &'static str,
    /// What its value may be.
    pub ty: FieldType,
    /// Who may set it.
    pub access: Access,
}

const fn w(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, access: Access::Writable }
}

const fn ro(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty, access: Access::ReadOnly }
}

const NAME: FieldType = FieldType::Text(200);
const SHORT: FieldType = FieldType::Text(100);
const LONG: FieldType = FieldType::Text(10_000);
const MONEY: FieldType = FieldType::Number { min: 0.0, max: 1e15 };

/// The statuses of a contact.
pub const CONTACT_STATUSES: &[&str] = &["Active", "Inactive", "VIP", "Blocked"];
/// The types of a lead.
pub const LEAD_TYPES: &[&str] = &["Buyer", "Seller", "Tenant", "Landlord", "Investor", "Other"];
/// The deal pipeline: each stage's key and label, in order.
pub const PIPELINE: &[(&str, &str)] = &[
    ("new", "New"),
    ("viewing_scheduled", "Viewing Scheduled"),
    ("offer_made", "Offer Made"),
    ("negotiation", "Negotiation"),
    ("closed_won", "Closed Won"),
    ("closed_lost", "Closed Lost"),
];
const STAGE_KEYS: &[&str] = &["new", "viewing_scheduled", "offer_made", "negotiation", "closed_won", "closed_lost"];

/// The fields of a contact's `preferences` object.
pub const PREFERENCES: &[Field] = &[
    w("min_price", MONEY),
    w("max_price", MONEY),
    w("beds", FieldType::Integer { min: 0, max: 1000 }),
    w("baths", FieldType::Integer { min: 0, max: 1000 }),
    w("locations", FieldType::StringList),
    w("property_type", SHORT),
];

const CONTACT: &[Field] = &[
    w("first_name", NAME),
    w("last_name", NAME),
    w("prefix", SHORT),
    w("email", FieldType::Email),
    w("phone", SHORT),
    w("mobile", SHORT),
    w("address", FieldType::Text(500)),
    w("city", NAME),
    w("state", NAME),
    w("zipcode", SHORT),
    w("country", NAME),
    w("lifecycle_stage", SHORT),
    w("lead_source", NAME),
    w("lead_type", SHORT),
    w("status", FieldType::OneOf(CONTACT_STATUSES)),
    w("assigned_agent_id", FieldType::ExternalId),
    w("tags", FieldType::StringList),
    w("notes", LONG),
    w("preferences", FieldType::Preferences),
];

const LEAD: &[Field] = &[
    w("contact_id", FieldType::Ref(RecordKind::Contact)),
    w("lead_type", FieldType::OneOf(LEAD_TYPES)),
    w("lead_source", NAME),
    w("status", SHORT),
    w("message", LONG),
    w("property_id", FieldType::ExternalId),
    w("assigned_agent_id", FieldType::ExternalId),
];

const ENQUIRY: &[Field] = &[
    w("name", NAME),
    w("email", FieldType::Email),
    w("phone", SHORT),
    w("message", LONG),
    w("property_id", FieldType::ExternalId),
    w("source", NAME),
    ro("contact_id", FieldType::Ref(RecordKind::Contact)),
];

const DEAL: &[Field] = &[
    w("title", NAME),
    w("contact_id", FieldType::Ref(RecordKind::Contact)),
    w("listing_id", FieldType::ExternalId),
    w("amount", MONEY),
    w("currency", FieldType::Text(3)),
    w("probability", FieldType::Number { min: 0.0, max: 100.0 }),
    w("stage", FieldType::OneOf(STAGE_KEYS)),
    w("expected_close_date", FieldType::Date),
    w("next_action", FieldType::Text(500)),
    w("description", LONG),
    w("assigned_agent_id", FieldType::ExternalId),
    ro("status", FieldType::OneOf(&["open", "won", "lost"])),
    ro("stage_changed_at", FieldType::Timestamp),
];

const TASK: &[Field] = &[
    w("title", NAME),
    w("due_date", FieldType::DateOrDateTime),
    w("contact_id", FieldType::Ref(RecordKind::Contact)),
    w("deal_id", FieldType::Ref(RecordKind::Deal)),
    w("assigned_agent_id", FieldType::ExternalId),
    w("notes", LONG),
    w("completed", FieldType::Bool),
    ro("completed_at", FieldType::Timestamp),
];

/// The fields every record carries besides its kind's own; all read-only.
pub const COMMON: &[&str] = &["id", "created_by", "created_at", "updated_at"];

/// The fields of a kind, in the order the API shows them.
pub fn fields(kind: RecordKind) -> &'static [Field] {
    match kind {
        RecordKind::Contact => CONTACT,
        RecordKind::Lead => LEAD,
        RecordKind::Enquiry => ENQUIRY,
        RecordKind::Deal => DEAL,
        RecordKind::Task => TASK,
    }
}

/// Finds one field of a kind.
pub fn field(kind: RecordKind, name: &str) -> Option<&'static Field> {
    fields(kind).iter().find(|f| f.name == name)
}

/// Checks the fields a client sent in an object against `schema`: every key must name a writable
/// field and every non-null value must fit it. Returns the normalised values; `null` values are kept
/// as `Value::Null`, meaning "clear this field" (on create, "leave it unset").
pub fn check_object(schema: &[Field], input: &Map<String, Value>) -> Result<Map<String, Value>, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut checked = Map::with_capacity(input.len());
    for (name, value) in input {
        match schema.iter().find(|f| f.name == name) {
            None if COMMON.contains(&name.as_str()) => errors.add(name, "is read-only"),
            None => errors.add(name, "is not a known field"),
            Some(field) if field.access == Access::ReadOnly => errors.add(name, "is read-only"),
            Some(_) if value.is_null() => {
                checked.insert(name.clone(), Value::Null);
            }
            Some(field) => match check_value(field.ty, value) {
                Ok(value) => {
                    checked.insert(name.clone(), value);
                }
                Err(CheckError::Message(message)) => errors.add(name, message),
                Err(CheckError::Nested(nested)) => errors.absorb(name, nested),
            },
        }
    }
    errors.into_result(checked)
}

enum CheckError {
    Message(String),
    Nested(FieldErrors),
}

impl From<&str> for CheckError {
    fn from(message: &str) -> Self {
        CheckError::Message(message.to_owned())
    }
}

fn check_value(ty: FieldType, value: &Value) -> Result<Value, CheckError> {
    match ty {
        // A blank string is no value: `{"first_name": " "}` names no one, and clears on PATCH.
        FieldType::Text(_) | FieldType::ExternalId | FieldType::Ref(_) | FieldType::Email if is_blank(value) => {
            Ok(Value::Null)
        }
        FieldType::Text(max) => check_text(value, max).map(Value::String),
        FieldType::ExternalId => check_text(value, 200).map(Value::String),
        FieldType::Ref(_) => check_text(value, 100).map(Value::String),
        FieldType::Email => check_email(value).map(Value::String),
        FieldType::OneOf(allowed) => check_one_of(value, allowed).map(|s| Value::String(s.to_owned())),
        FieldType::Number { min, max } => check_number(value, min, max),
        FieldType::Integer { min, max } => check_integer(value, min, max),
        FieldType::Date => check_date(value).map(Value::String),
        FieldType::DateOrDateTime => check_date_or_datetime(value).map(Value::String),
        FieldType::StringList => check_string_list(value),
        FieldType::Bool => value.as_bool().map(Value::Bool).ok_or_else(|| "must be true or false".into()),
        FieldType::Preferences => check_preferences(value),
        FieldType::Timestamp => Err("is read-only".into()),
    }
}

fn is_blank(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.trim().is_empty())
}

fn check_text(value: &Value, max_chars: usize) -> Result<String, CheckError> {
    let Value::String(text) = value else {
        return Err("must be a string".into());
    };
    let text = text.trim();
    if text.chars().count() > max_chars {
        return Err(CheckError::Message(format!("must be at most {max_chars} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}

fn check_email(value: &Value) -> Result<String, CheckError> {
    let email = check_text(value, 254)?;
    if is_plausible_email(&email) { Ok(email) } else { Err("must be an email address like name@example.com".into()) }
}

/// A deliberately loose check: one `@`, something before it, a dotted domain after it, no spaces.
/// Stricter rules refuse real addresses; the only proof of an address is a mail that arrives.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

fn check_one_of(value: &Value, allowed: &'static [&'static str]) -> Result<&'static str, CheckError> {
    let Value::String(text) = value else {
        return Err(CheckError::Message(format!("must be one of {}", allowed.join(", "))));
    };
    allowed
        .iter()
        .find(|candidate| candidate.eq_ignore_ascii_case(text.trim()))
        .copied()
        .ok_or_else(|| CheckError::Message(format!("must be one of {}", allowed.join(", "))))
}

fn check_number(value: &Value, min: f64, max: f64) -> Result<Value, CheckError> {
    let Some(number) = value.as_f64().filter(|n| n.is_finite()) else {
        return Err("must be a number".into());
    };
    if number < min || number > max {
        return Err(CheckError::Message(format!("must be between {min} and {max}")));
    }
    // Keep integers as integers so that `5` does not come back as `5.0`.
    Ok(value.clone())
}

fn check_integer(value: &Value, min: i64, max: i64) -> Result<Value, CheckError> {
    let Some(number) = value.as_i64() else {
        return Err("must be a whole number".into());
    };
    if number < min || number > max {
        return Err(CheckError::Message(format!("must be between {min} and {max}")));
    }
    Ok(Value::from(number))
}

/// Exactly `YYYY-MM-DD`, and a day that exists (chrono alone also takes `2026-6-3`).
fn is_date(text: &str) -> bool {
    let shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    shape && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn check_date(value: &Value) -> Result<String, CheckError> {
    let text = check_text(value, 10).map_err(|_| CheckError::from("must be a date written YYYY-MM-DD"))?;
    if is_date(&text) { Ok(text) } else { Err("must be a date written YYYY-MM-DD".into()) }
}

fn check_date_or_datetime(value: &Value) -> Result<String, CheckError> {
    const MESSAGE: &str = "must be a date (YYYY-MM-DD) or a date and time (RFC 3339)";
    let text = check_text(value, 40).map_err(|_| CheckError::from(MESSAGE))?;
    let is_datetime = text.get(..10).is_some_and(is_date) && chrono::DateTime::parse_from_rfc3339(&text).is_ok();
    if is_date(&text) || is_datetime { Ok(text) } else { Err(MESSAGE.into()) }
}

fn check_string_list(value: &Value) -> Result<Value, CheckError> {
    const MESSAGE: &str = "must be a list of at most 100 strings of at most 100 characters";
    let Value::Array(items) = value else {
        return Err(MESSAGE.into());
    };
    if items.len() > 100 {
        return Err(MESSAGE.into());
    }
    items
        .iter()
        .map(|item| check_text(item, 100).map(Value::String))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
        .map_err(|_| MESSAGE.into())
}

fn check_preferences(value: &Value) -> Result<Value, CheckError> {
    let Value::Object(input) = value else {
        return Err("must be an object".into());
    };
    let mut checked = check_object(PREFERENCES, input).map_err(CheckError::Nested)?;
    checked.retain(|_, v| !v.is_null());
    if let (Some(min), Some(max)) =
        (checked.get("min_price").and_then(Value::as_f64), checked.get("max_price").and_then(Value::as_f64))
        && min > max
    {
        return Err(CheckError::Nested(FieldErrors::single("max_price", "must not be below min_price")));
    }
    Ok(Value::Object(checked))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(kind: RecordKind, input: Value, expected: Result<Value, &[(&str, &str)]>) {
        let Value::Object(input) = input else { panic!("test input must be an object") };
        let got = check_object(fields(kind), &input);
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(Value::Object(got), expected),
            (Err(got), Err(expected)) => {
                let expected: Vec<(String, String)> =
                    expected.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
                let got: Vec<(String, String)> = got.fields().iter().map(|(f, m)| (f.clone(), m.clone())).collect();
                assert_eq!(got, expected);
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn accepts_and_normalises_valid_values() {
        check(
            RecordKind::Contact,
            json!({"first_name": "  Ada ", "status": "vip", "tags": ["a"], "email": null}),
            Ok(json!({"first_name": "Ada", "status": "VIP", "tags": ["a"], "email": null})),
        );
        check(
            RecordKind::Deal,
            json!({"amount": 5, "probability": 12.5}),
            Ok(json!({"amount": 5, "probability": 12.5})),
        );
        check(
            RecordKind::Task,
            json!({"due_date": "2026-05-01T10:00:00Z"}),
            Ok(json!({"due_date": "2026-05-01T10:00:00Z"})),
        );
    }

    #[test]
    fn names_each_bad_field() {
        check(
            RecordKind::Contact,
            json!({"email": "not-an-email", "status": "Gold", "tags": "x", "bogus": 1, "id": "x"}),
            Err(&[
                ("bogus", "is not a known field"),
                ("email", "must be an email address like name@example.com"),
                ("id", "is read-only"),
                ("status", "must be one of Active, Inactive, VIP, Blocked"),
                ("tags", "must be a list of at most 100 strings of at most 100 characters"),
            ]),
        );
        check(
            RecordKind::Deal,
            json!({"amount": -1, "probability": 101, "expected_close_date": "2026-02-30", "status": "won"}),
            Err(&[
                ("amount", "must be between 0 and 1000000000000000"),
                ("expected_close_date", "must be a date written YYYY-MM-DD"),
                ("probability", "must be between 0 and 100"),
                ("status", "is read-only"),
            ]),
        );
    }

    #[test]
    fn checks_nested_preferences_with_their_path() {
        check(
            RecordKind::Contact,
            json!({"preferences": {"beds": 2.5, "min_price": 10, "colour": "red"}}),
            Err(&[("preferences.beds", "must be a whole number"), ("preferences.colour", "is not a known field")]),
        );
        check(
            RecordKind::Contact,
            json!({"preferences": {"min_price": 10, "max_price": 5}}),
            Err(&[("preferences.max_price", "must not be below min_price")]),
        );
    }

    #[test]
    fn email_check_is_loose_but_not_empty() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(is_plausible_email(ok), "{ok}");
        }
        for bad in ["", "a", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.co", "a@co."] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }
}
