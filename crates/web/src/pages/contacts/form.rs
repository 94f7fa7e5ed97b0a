//! The contact form: every writable field of a contact (the preferences flattened as
//! `preferences.min_price` ...), turned into the JSON object the API takes, so that the same
//! validation checks it and its messages land beside the same names.

use estate_crm_domain::schema::{self, FieldType, PREFERENCES};
use estate_crm_domain::{FieldErrors, Record, RecordKind};
use estate_crm_store::User;
use maud::{Markup, html};
use serde_json::{Map, Value};

use crate::form::FormFields;
use crate::pages::{JsonObject, field_error};

/// What an emptied field means: left out when creating, cleared (null) when editing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new contact.
    Create,
    /// A change to one.
    Edit,
}

/// The form's values as typed, by the form's field names.
#[derive(Debug, Clone, Default)]
pub struct Values(Vec<(String, String)>);

impl Values {
    /// The value of a field, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    fn set(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }

    /// The values a posted form carries, for every field of the form.
    pub fn from_form(form: &FormFields) -> Values {
        let mut values = Values::default();
        for name in form_names() {
            values.set(name.clone(), form.get(&name).to_owned());
        }
        values
    }

    /// A record's values, as the form shows them.
    pub fn from_record(record: &Record) -> Values {
        let mut values = Values::default();
        for field in writable() {
            if field.ty == FieldType::Preferences {
                let preferences = record.get("preferences").and_then(Value::as_object);
                for sub in PREFERENCES {
                    let value = preferences.and_then(|p| p.get(sub.name));
                    values.set(format!("preferences.{}", sub.name), text_of(value));
                }
            } else {
                values.set(field.name.to_owned(), text_of(record.get(field.name)));
            }
        }
        values
    }

    /// The JSON object of `POST /api/v1/contacts` (or of a PATCH, in [`Mode::Edit`]).
    pub fn to_json(&self, mode: Mode) -> Value {
        let mut object = JsonObject::new();
        for field in writable() {
            let value = if field.ty == FieldType::Preferences {
                self.preferences()
            } else {
                typed(field.ty, self.get(field.name))
            };
            match (value, mode) {
                (Some(value), _) => {
                    object.insert(field.name.to_owned(), value);
                }
                (None, Mode::Edit) => {
                    object.insert(field.name.to_owned(), Value::Null);
                }
                (None, Mode::Create) => {}
            }
        }
        Value::Object(object)
    }

    /// The preferences object, with the parts that were filled in; `None` when none was.
    fn preferences(&self) -> Option<Value> {
        let mut object = Map::new();
        for sub in PREFERENCES {
            if let Some(value) = typed(sub.ty, self.get(&format!("preferences.{}", sub.name))) {
                object.insert(sub.name.to_owned(), value);
            }
        }
        (!object.is_empty()).then_some(Value::Object(object))
    }
}

fn writable() -> impl Iterator<Item = &'static schema::Field> {
    schema::fields(RecordKind::Contact).iter().filter(|f| f.access == schema::Access::Writable)
}

/// Every name the form has, preferences flattened.
fn form_names() -> Vec<String> {
    let mut names = Vec::new();
    for field in writable() {
        if field.ty == FieldType::Preferences {
            names.extend(PREFERENCES.iter().map(|sub| format!("preferences.{}", sub.name)));
        } else {
            names.push(field.name.to_owned());
        }
    }
    names
}

/// A stored value as the form's text: lists joined with `, `.
fn text_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    }
}

/// A typed text as the JSON value the API would get; `None` when it is empty. A number that does
/// not parse is sent as the text, so that the API's own message ("must be a number") explains it.
fn typed(ty: FieldType, text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(match ty {
        FieldType::StringList => Value::Array(
            text.split([',', ';'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Value::String(t.to_owned()))
                .collect(),
        ),
        FieldType::Number { .. } | FieldType::Integer { .. } => number(text),
        _ => Value::String(text.to_owned()),
    })
}

fn number(text: &str) -> Value {
    let plain = without_thousands_commas(text);
    if let Ok(whole) = plain.parse::<i64>() {
        return Value::from(whole);
    }
    match plain.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(number) => Value::Number(number),
        None => Value::String(text.to_owned()),
    }
}

/// `250,000` as `250000`; a comma that does not group thousands (`1,5`) stays, and is refused.
fn without_thousands_commas(text: &str) -> String {
    let mut groups = text.split(',');
    let first = groups.next().unwrap_or("");
    let grouped = groups.clone().count() > 0
        && !first.is_empty()
        && groups.all(|group| group.len() == 3 && group.bytes().all(|b| b.is_ascii_digit()));
    if grouped { text.replace(',', "") } else { text.to_owned() }
}

/// A field's label.
fn label(name: &str) -> &'static str {
    match name {
        "first_name" => "First name",
        "last_name" => "Last name",
        "prefix" => "Title (Mr, Ms, Dr...)",
        "email" => "Email",
        "phone" => "Phone",
        "mobile" => "Mobile",
        "address" => "Street address",
        "city" => "City",
        "state" => "State or county",
        "zipcode" => "ZIP or postcode",
        "country" => "Country",
        "lifecycle_stage" => "Lifecycle stage",
        "lead_source" => "Lead source",
        "lead_type" => "Lead type",
        "status" => "Status",
        "assigned_agent_id" => "Assigned agent",
        "tags" => "Tags",
        "notes" => "Notes",
        "preferences.min_price" => "Lowest price",
        "preferences.max_price" => "Highest price",
        "preferences.beds" => "Bedrooms",
        "preferences.baths" => "Bathrooms",
        "preferences.locations" => "Locations",
        "preferences.property_type" => "Property type",
        _ => "Field",
    }
}

/// The `aria-describedby` of a field: its error when it has one, else its hint.
fn described(name: &str, errors: &FieldErrors, hint: bool) -> Option<String> {
    if errors.fields().contains_key(name) {
        Some(format!("f-{name}-error"))
    } else {
        hint.then(|| format!("f-{name}-hint"))
    }
}

fn invalid(name: &str, errors: &FieldErrors) -> Option<&'static str> {
    errors.fields().contains_key(name).then_some("true")
}

fn text_field(values: &Values, errors: &FieldErrors, name: &str, kind: &str, hint: Option<&str>) -> Markup {
    let autocomplete = match name {
        "first_name" | "last_name" | "email" => None,
        _ => Some("off"),
    };
    html! {
        div.field {
            label for=(format!("f-{name}")) { (label(name)) }
            @if let Some(hint) = hint { p.hint id=(format!("f-{name}-hint")) { (hint) } }
            input id=(format!("f-{name}")) name=(name) type=(kind) value=(values.get(name)) autocomplete=[autocomplete]
                aria-invalid=[invalid(name, errors)] aria-describedby=[described(name, errors, hint.is_some())];
            (field_error(name, errors))
        }
    }
}

fn status_field(values: &Values, errors: &FieldErrors) -> Markup {
    let current = values.get("status");
    let known = current.is_empty() || schema::CONTACT_STATUSES.contains(&current);
    html! {
        div.field {
            label for="f-status" { (label("status")) }
            select #f-status name="status" aria-invalid=[invalid("status", errors)] aria-describedby=[described("status", errors, false)] {
                option value="" selected[current.is_empty()] { "None" }
                @for status in schema::CONTACT_STATUSES {
                    option value=(status) selected[current == *status] { (status) }
                }
                @if !known { option value=(current) selected { (current) } }
            }
            (field_error("status", errors))
        }
    }
}

/// A select of the users, by id; keeps a value that names no user so that saving does not lose it.
pub fn agent_select(id: &str, name: &str, current: &str, users: &[User], none: &str, errors: &FieldErrors) -> Markup {
    let known = current.is_empty() || users.iter().any(|u| u.id == current);
    html! {
        select id=(id) name=(name) aria-invalid=[invalid(name, errors)] aria-describedby=[described(name, errors, false)] {
            option value="" selected[current.is_empty()] { (none) }
            @for user in users {
                option value=(user.id) selected[user.id == current] { (user.name) " (" (user.email) ")" }
            }
            @if !known { option value=(current) selected { (current) } }
        }
    }
}

/// Every field of the form, grouped as a person reads a contact card.
pub fn fields(values: &Values, errors: &FieldErrors, users: &[User]) -> Markup {
    html! {
        fieldset {
            legend { "Name" }
            div.form-grid {
                (text_field(values, errors, "prefix", "text", None))
                (text_field(values, errors, "first_name", "text", None))
                (text_field(values, errors, "last_name", "text", None))
            }
        }
        fieldset {
            legend { "Reach" }
            div.form-grid {
                (text_field(values, errors, "email", "email", None))
                (text_field(values, errors, "phone", "tel", None))
                (text_field(values, errors, "mobile", "tel", None))
            }
        }
        fieldset {
            legend { "Address" }
            div.form-grid {
                (text_field(values, errors, "address", "text", None))
                (text_field(values, errors, "city", "text", None))
                (text_field(values, errors, "state", "text", None))
                (text_field(values, errors, "zipcode", "text", None))
                (text_field(values, errors, "country", "text", None))
            }
        }
        fieldset {
            legend { "In the CRM" }
            div.form-grid {
                (status_field(values, errors))
                (text_field(values, errors, "lifecycle_stage", "text", Some("Where they are with you: new contacts start at new_lead.")))
                (text_field(values, errors, "lead_source", "text", None))
                (text_field(values, errors, "lead_type", "text", None))
                div.field {
                    label for="f-assigned_agent_id" { (label("assigned_agent_id")) }
                    (agent_select("f-assigned_agent_id", "assigned_agent_id", values.get("assigned_agent_id"), users, "Nobody", errors))
                    (field_error("assigned_agent_id", errors))
                }
                (text_field(values, errors, "tags", "text", Some("Separate tags with commas.")))
            }
        }
        fieldset {
            legend { "Buying preferences" }
            div.form-grid {
                (text_field(values, errors, "preferences.min_price", "text", None))
                (text_field(values, errors, "preferences.max_price", "text", None))
                (text_field(values, errors, "preferences.beds", "text", None))
                (text_field(values, errors, "preferences.baths", "text", None))
                (text_field(values, errors, "preferences.locations", "text", Some("Separate places with commas.")))
                (text_field(values, errors, "preferences.property_type", "text", None))
            }
            (field_error("preferences", errors))
        }
        div.field {
            label for="f-notes" { (label("notes")) }
            textarea #f-notes name="notes" rows="5" aria-invalid=[invalid("notes", errors)] aria-describedby=[described("notes", errors, false)] {
                (values.get("notes"))
            }
            (field_error("notes", errors))
        }
    }
}

/// Errors the form has no field for (a rule across fields), as one line each.
pub fn unplaced_errors(errors: &FieldErrors) -> Vec<String> {
    let names = form_names();
    errors
        .fields()
        .iter()
        .filter(|(name, _)| !names.contains(name) && name.as_str() != "preferences")
        .map(|(name, message)| format!("{name} {message}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FormFields {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        FormFields::parse(body.as_bytes())
    }

    #[test]
    fn a_new_contact_sends_only_what_was_typed_with_numbers_and_lists_typed() {
        let values = Values::from_form(&form(&[
            ("first_name", "Ada"),
            ("email", ""),
            ("tags", "vip, buyer ;; "),
            ("preferences.min_price", "250,000"),
            ("preferences.baths", "1.5"),
            ("preferences.beds", "three"),
            ("preferences.locations", "Leeds, York"),
        ]));
        assert_eq!(
            values.to_json(Mode::Create),
            json!({
                "first_name": "Ada",
                "tags": ["vip", "buyer"],
                "preferences": {"min_price": 250000, "beds": "three", "baths": 1.5, "locations": ["Leeds", "York"]},
            })
        );
    }

    #[test]
    fn an_emptied_field_is_cleared_on_edit() {
        let values = Values::from_form(&form(&[("first_name", "Ada"), ("email", "  ")]));
        let patch = values.to_json(Mode::Edit);
        assert_eq!(patch["first_name"], "Ada");
        assert_eq!(patch["email"], Value::Null);
        assert_eq!(patch["preferences"], Value::Null);
        assert_eq!(patch.as_object().unwrap().len(), writable().count());
    }

    #[test]
    fn a_record_round_trips_through_the_form() {
        let fields = json!({
            "first_name": "Ada", "tags": ["a", "b"], "status": "VIP",
            "preferences": {"max_price": 500000, "locations": ["Bath"]},
        });
        let record = Record {
            kind: RecordKind::Contact,
            id: "con_x1".into(),
            created_by: "usr_x1".into(),
            created_at: chrono::DateTime::default(),
            updated_at: chrono::DateTime::default(),
            fields: fields.as_object().unwrap().clone(),
        };
        let values = Values::from_record(&record);
        assert_eq!(values.get("tags"), "a, b");
        assert_eq!(values.get("preferences.max_price"), "500000");
        let json = values.to_json(Mode::Create);
        assert_eq!(json, fields);
    }
}
