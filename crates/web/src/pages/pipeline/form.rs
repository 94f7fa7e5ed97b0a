//! A record's form, described once per kind: which fields it shows and how each is typed. A posted
//! form becomes the JSON object the API takes (a new record) or the patch of what changed (an
//! edit), and the store checks it with the API's own validation, whose messages are shown beside
//! their fields.

use estate_crm_domain::{FieldErrors, Record};
use estate_crm_store::User;
use maud::{Markup, html};
use serde_json::Value;

use super::user_name;
use crate::form::FormFields;
use crate::pages::{Input, JsonObject, field_error};

/// How a field is entered.
#[derive(Debug, Clone, Copy)]
pub enum Widget {
    /// One line of text.
    Text,
    /// Several lines.
    Area,
    /// A number (sent as a number when it reads as one, else as typed, for the API's message).
    Number,
    /// A calendar date.
    Date,
    /// A date, or a date and time when the record already has one.
    DateOrTime,
    /// One of these (value, label); the first is chosen when nothing is.
    Choice(&'static [(&'static str, &'static str)]),
    /// A user, or nobody.
    Agent,
    /// A tick box.
    Check,
}

/// One field of a kind's form.
#[derive(Debug, Clone, Copy)]
pub struct FormField {
    /// The schema's name of the field.
    pub name: &'static str,
    /// Its label.
    pub label: &'static str,
    /// How it is entered.
    pub widget: Widget,
    /// A hint under the label.
    pub hint: Option<&'static str>,
}

/// A field with no hint.
pub const fn field(name: &'static str, label: &'static str, widget: Widget) -> FormField {
    FormField { name, label, widget, hint: None }
}

/// A field with a hint.
pub const fn hinted(name: &'static str, label: &'static str, widget: Widget, hint: &'static str) -> FormField {
    FormField { name, label, widget, hint: Some(hint) }
}

/// A stored value as a form shows it.
pub fn value_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "on" } else { "" }.to_owned(),
        Some(other) => other.to_string(),
    }
}

/// A posted field as the JSON value the API takes; `None` when it is blank.
fn posted_value(field: &FormField, form: &FormFields) -> Option<Value> {
    if let Widget::Check = field.widget {
        return Some(Value::Bool(form.has(field.name)));
    }
    let text = form.get(field.name).trim();
    if text.is_empty() {
        return None;
    }
    if matches!(field.widget, Widget::Number)
        && let Ok(parsed) = text.parse::<f64>()
    {
        // A whole number stays whole, so `5` is not stored as `5.0`.
        return Some(if parsed.fract() == 0.0 && parsed.abs() < 9e15 {
            Value::from(parsed as i64)
        } else {
            serde_json::Number::from_f64(parsed).map_or_else(|| Value::String(text.to_owned()), Value::Number)
        });
    }
    Some(Value::String(text.to_owned()))
}

/// A new record's object from its form: blank fields are left out.
pub fn new_object(fields: &[FormField], form: &FormFields) -> JsonObject {
    let mut object = JsonObject::new();
    for field in fields {
        if let Some(value) = posted_value(field, form) {
            object.insert(field.name.to_owned(), value);
        }
    }
    object
}

/// An edit's patch: each field whose posted text differs from the record's, blank ones as `null`
/// (which clears them). An unchanged form is an empty patch, which changes and fires nothing.
pub fn patch_object(fields: &[FormField], form: &FormFields, record: &Record) -> JsonObject {
    let mut patch = JsonObject::new();
    for field in fields {
        let posted = posted_value(field, form);
        let before = record.get(field.name);
        let changed = match (&posted, before) {
            (Some(Value::Bool(now)), old) => Some(*now) != old.and_then(Value::as_bool).or(Some(false)),
            (Some(now), Some(old)) => value_text(Some(now)) != value_text(Some(old)),
            (None, old) => !value_text(old).is_empty(),
            (Some(_), None) => true,
        };
        if changed {
            patch.insert(field.name.to_owned(), posted.unwrap_or(Value::Null));
        }
    }
    patch
}

/// What a form shows in each field: a record's values, or what was posted when it was refused.
pub struct Values<'a> {
    record: Option<&'a Record>,
    posted: Option<&'a FormFields>,
}

impl<'a> Values<'a> {
    /// An empty form.
    pub fn empty() -> Values<'a> {
        Values { record: None, posted: None }
    }

    /// A record's values.
    pub fn of(record: &'a Record) -> Values<'a> {
        Values { record: Some(record), posted: None }
    }

    /// What was posted.
    pub fn posted(form: &'a FormFields) -> Values<'a> {
        Values { record: None, posted: Some(form) }
    }

    fn text(&self, name: &str) -> String {
        match (self.posted, self.record) {
            (Some(form), _) => form.get(name).to_owned(),
            (None, Some(record)) => value_text(record.get(name)),
            (None, None) => String::new(),
        }
    }

    fn checked(&self, name: &str) -> bool {
        match (self.posted, self.record) {
            (Some(form), _) => form.has(name),
            (None, Some(record)) => record.get(name).and_then(Value::as_bool).unwrap_or(false),
            (None, None) => false,
        }
    }
}

/// The inputs of a kind's form, each with its error beside it.
pub fn inputs(fields: &[FormField], values: &Values<'_>, errors: &FieldErrors, users: &[User]) -> Markup {
    html! {
        @for field in fields {
            @let value = values.text(field.name);
            @match field.widget {
                Widget::Text => (with_hint(Input::new(field.name, field.label, &value), field.hint).render(errors)),
                Widget::Number => (with_hint(Input::new(field.name, field.label, &value), field.hint).render(errors)),
                Widget::Date => (with_hint(Input::new(field.name, field.label, &value), field.hint).kind("date").render(errors)),
                Widget::DateOrTime => {
                    @let is_date = value.is_empty() || value.len() == 10;
                    (with_hint(Input::new(field.name, field.label, &value), field.hint)
                        .kind(if is_date { "date" } else { "text" }).render(errors))
                }
                Widget::Area => (textarea(field, &value, errors)),
                Widget::Choice(options) => (choice(field, options, &value, errors)),
                Widget::Agent => (agent_choice(field, &value, errors, users)),
                Widget::Check => {
                    div.check {
                        input type="checkbox" id=(format!("f-{}", field.name)) name=(field.name) value="on" checked[values.checked(field.name)];
                        label for=(format!("f-{}", field.name)) { (field.label) }
                    }
                    (field_error(field.name, errors))
                }
            }
        }
    }
}

fn with_hint<'a>(input: Input<'a>, hint: Option<&'a str>) -> Input<'a> {
    match hint {
        Some(hint) => input.hint(hint),
        None => input,
    }
}

fn described_by(field: &FormField, errors: &FieldErrors) -> Option<String> {
    if errors.fields().contains_key(field.name) {
        Some(format!("f-{}-error", field.name))
    } else {
        field.hint.map(|_| format!("f-{}-hint", field.name))
    }
}

fn hint(field: &FormField) -> Markup {
    html! { @if let Some(hint) = field.hint { p.hint id=(format!("f-{}-hint", field.name)) { (hint) } } }
}

fn textarea(field: &FormField, value: &str, errors: &FieldErrors) -> Markup {
    let invalid = errors.fields().contains_key(field.name);
    html! {
        div.field {
            label for=(format!("f-{}", field.name)) { (field.label) }
            (hint(field))
            textarea id=(format!("f-{}", field.name)) name=(field.name) rows="4"
                aria-invalid=[invalid.then_some("true")] aria-describedby=[described_by(field, errors)] { (value) }
            (field_error(field.name, errors))
        }
    }
}

/// A `<select>` of `options`; a stored value that is not among them stays chosen, as itself.
pub fn choice(field: &FormField, options: &[(&str, &str)], value: &str, errors: &FieldErrors) -> Markup {
    let invalid = errors.fields().contains_key(field.name);
    let known = options.iter().any(|(v, _)| *v == value);
    html! {
        div.field {
            label for=(format!("f-{}", field.name)) { (field.label) }
            (hint(field))
            select id=(format!("f-{}", field.name)) name=(field.name)
                aria-invalid=[invalid.then_some("true")] aria-describedby=[described_by(field, errors)] {
                @if !known && !value.is_empty() { option value=(value) selected { (value) } }
                @for (option, label) in options {
                    option value=(option) selected[*option == value] { (label) }
                }
            }
            (field_error(field.name, errors))
        }
    }
}

fn agent_choice(field: &FormField, value: &str, errors: &FieldErrors, users: &[User]) -> Markup {
    let mut options: Vec<(String, String)> = vec![(String::new(), "Nobody".to_owned())];
    options.extend(users.iter().map(|u| (u.id.clone(), u.name.clone())));
    if !value.is_empty() && !users.iter().any(|u| u.id == value) {
        options.push((value.to_owned(), user_name(users, value)));
    }
    let borrowed: Vec<(&str, &str)> = options.iter().map(|(v, l)| (v.as_str(), l.as_str())).collect();
    choice(field, &borrowed, value, errors)
}

#[cfg(test)]
mod tests {
    use estate_crm_domain::RecordKind;
    use serde_json::json;

    use super::*;

    const FIELDS: &[FormField] = &[
        field("title", "Title", Widget::Text),
        field("amount", "Amount", Widget::Number),
        field("completed", "Done", Widget::Check),
    ];

    fn record(fields: Value) -> Record {
        let Value::Object(fields) = fields else { panic!("an object") };
        Record {
            kind: RecordKind::Deal,
            id: "deal_x1".into(),
            created_by: "usr_1".into(),
            created_at: Default::default(),
            updated_at: Default::default(),
            fields,
        }
    }

    #[test]
    fn a_new_record_leaves_blanks_out_and_reads_numbers() {
        let form = FormFields::parse(b"title=+Flat+&amount=1250.50&completed=on");
        assert_eq!(
            Value::Object(new_object(FIELDS, &form)),
            json!({"title": "Flat", "amount": 1250.5, "completed": true})
        );
        let form = FormFields::parse(b"title=&amount=lots");
        assert_eq!(Value::Object(new_object(FIELDS, &form)), json!({"amount": "lots", "completed": false}));
    }

    #[test]
    fn an_edit_sends_only_what_changed() {
        let deal = record(json!({"title": "Flat", "amount": 5, "completed": false}));
        let same = FormFields::parse(b"title=Flat&amount=5");
        assert!(patch_object(FIELDS, &same, &deal).is_empty());
        let changed = FormFields::parse(b"title=&amount=6&completed=on");
        assert_eq!(
            Value::Object(patch_object(FIELDS, &changed, &deal)),
            json!({"title": null, "amount": 6, "completed": true})
        );
    }
}
