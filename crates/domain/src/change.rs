//! Creating, patching and deleting records, as pure functions from the old record and the client's
//! input to the new record and the events it fires.
//!
//! The store runs these inside its transaction; the rules they encode are the ones webhooks.md
//! states: a no-op update fires nothing, `deal.stage_changed` comes before `deal.won`/`deal.lost`,
//! a deal created at a closed stage is won or lost at once, `task.completed` only on not-done to done.

use serde_json::{Map, Value, json};

use crate::schema::{self, FieldType};
use crate::{EventName, FieldErrors, PendingEvent, Record, RecordKind, Timestamp, format_timestamp};

/// Validates a create request and builds the record, with defaults and derived fields set.
pub fn create(
    kind: RecordKind,
    input: &Value,
    id: String,
    created_by: &str,
    now: Timestamp,
) -> Result<Record, FieldErrors> {
    let input = as_object(input)?;
    let mut fields = schema::check_object(schema::fields(kind), input)?;
    fields.retain(|_, value| !value.is_null());
    apply_defaults(kind, &mut fields);
    derive(kind, None, &mut fields, now);
    check_record_rules(kind, &fields)?;
    Ok(Record { kind, id, created_by: created_by.to_owned(), created_at: now, updated_at: now, fields })
}

/// Applies a PATCH: the fields it names change, a field set to `null` is cleared. `Ok(None)` when
/// nothing changes, so that the caller writes nothing and fires nothing.
pub fn patch(old: &Record, input: &Value, now: Timestamp) -> Result<Option<Record>, FieldErrors> {
    let input = as_object(input)?;
    let changes = schema::check_object(schema::fields(old.kind), input)?;
    let mut fields = old.fields.clone();
    for (name, value) in changes {
        if value.is_null() {
            fields.shift_remove(&name);
        } else {
            fields.insert(name, value);
        }
    }
    apply_defaults(old.kind, &mut fields);
    derive(old.kind, Some(&old.fields), &mut fields, now);
    check_record_rules(old.kind, &fields)?;
    if fields == old.fields {
        return Ok(None);
    }
    Ok(Some(Record { fields, updated_at: now, ..old.clone() }))
}

/// The events a new record fires.
pub fn events_on_create(record: &Record) -> Vec<PendingEvent> {
    let names = event_names_on_create(record);
    names.into_iter().map(|name| event(name, record.to_api_json())).collect()
}

/// The names of the events a new record fires, in order; each carries the record itself as `data`
/// (which lets the bulk path encode bodies straight from the record).
pub fn event_names_on_create(record: &Record) -> Vec<EventName> {
    match record.kind {
        RecordKind::Contact => vec![EventName::ContactCreated],
        RecordKind::Lead => vec![EventName::LeadCreated],
        RecordKind::Enquiry => vec![EventName::EnquiryCreated],
        RecordKind::Deal => std::iter::once(EventName::DealCreated).chain(closing_event(record)).collect(),
        // There is no task.created; a task created already done never went from not done to done.
        RecordKind::Task => vec![],
    }
}

/// The events an actual change (old != new) fires, in the order receivers get them.
pub fn events_on_update(old: &Record, new: &Record) -> Vec<PendingEvent> {
    match new.kind {
        RecordKind::Contact => vec![event(EventName::ContactUpdated, new.to_api_json())],
        RecordKind::Lead => vec![event(EventName::LeadUpdated, new.to_api_json())],
        RecordKind::Enquiry => vec![],
        RecordKind::Deal => {
            let previous_stage = old.get("stage");
            if previous_stage == new.get("stage") {
                return vec![];
            }
            let mut changed = new.to_api_json();
            changed["previous_stage"] = previous_stage.cloned().unwrap_or(Value::Null);
            let mut events = vec![event(EventName::DealStageChanged, changed)];
            events.extend(closing_event(new).map(|name| event(name, new.to_api_json())));
            events
        }
        RecordKind::Task => {
            let was_done = is_completed(&old.fields);
            let is_done = is_completed(&new.fields);
            if !was_done && is_done { vec![event(EventName::TaskCompleted, new.to_api_json())] } else { vec![] }
        }
    }
}

/// The events a deletion fires; `data` is the record as it was.
pub fn events_on_delete(old: &Record) -> Vec<PendingEvent> {
    let name = match old.kind {
        RecordKind::Contact => EventName::ContactDeleted,
        RecordKind::Lead => EventName::LeadDeleted,
        RecordKind::Enquiry | RecordKind::Deal | RecordKind::Task => return vec![],
    };
    vec![event(name, old.to_api_json())]
}

/// The ids this record refers to that must name existing records: (field, kind, id).
pub fn references(record: &Record) -> Vec<(&'static str, RecordKind, &str)> {
    schema::fields(record.kind)
        .iter()
        .filter_map(|field| match field.ty {
            FieldType::Ref(kind) => record.get_str(field.name).map(|id| (field.name, kind, id)),
            _ => None,
        })
        .collect()
}

/// The references a change sets anew: a reference left as it was is not checked again, so a lead
/// whose contact was deleted can still be edited.
pub fn changed_references<'a>(old: &Record, new: &'a Record) -> Vec<(&'static str, RecordKind, &'a str)> {
    references(new).into_iter().filter(|(field, _, id)| old.get_str(field) != Some(*id)).collect()
}

/// Links an enquiry to its contact (a read-only field that clients cannot set).
pub fn link_enquiry(enquiry: &mut Record, contact_id: &str) {
    enquiry.fields.insert("contact_id".into(), Value::String(contact_id.to_owned()));
}

/// The contact an enquiry from an unknown email creates: its name split into first and last name.
pub fn contact_for_enquiry(enquiry: &Record) -> Value {
    let mut contact = Map::new();
    if let Some(name) = enquiry.get_str("name") {
        let mut parts = name.splitn(2, char::is_whitespace);
        if let Some(first) = parts.next().filter(|s| !s.is_empty()) {
            contact.insert("first_name".into(), json!(first));
        }
        if let Some(last) = parts.next().map(str::trim).filter(|s| !s.is_empty()) {
            contact.insert("last_name".into(), json!(last));
        }
    }
    for (from, to) in [("email", "email"), ("phone", "phone")] {
        if let Some(value) = enquiry.get(from) {
            contact.insert(to.into(), value.clone());
        }
    }
    let source = enquiry.get_str("source").unwrap_or("enquiry");
    contact.insert("lead_source".into(), json!(source));
    Value::Object(contact)
}

fn event(name: EventName, data: Value) -> PendingEvent {
    PendingEvent { name, data }
}

fn as_object(input: &Value) -> Result<&Map<String, Value>, FieldErrors> {
    input.as_object().ok_or_else(|| FieldErrors::single("body", "must be a JSON object"))
}

fn closing_event(deal: &Record) -> Option<EventName> {
    match deal.get_str("stage") {
        Some("closed_won") => Some(EventName::DealWon),
        Some("closed_lost") => Some(EventName::DealLost),
        _ => None,
    }
}

fn is_completed(fields: &Map<String, Value>) -> bool {
    fields.get("completed").and_then(Value::as_bool).unwrap_or(false)
}

fn apply_defaults(kind: RecordKind, fields: &mut Map<String, Value>) {
    let defaults: &[(&str, Value)] = match kind {
        RecordKind::Contact => &[("lifecycle_stage", json!("new_lead")), ("status", json!("Active"))],
        RecordKind::Lead => &[("status", json!("New"))],
        RecordKind::Deal => &[("currency", json!("USD")), ("stage", json!("new"))],
        RecordKind::Task => &[("completed", json!(false))],
        RecordKind::Enquiry => &[],
    };
    for (name, value) in defaults {
        if !fields.contains_key(*name) {
            fields.insert((*name).to_owned(), value.clone());
        }
    }
}

/// Sets the read-only fields the server maintains, from the new values and the old ones.
fn derive(kind: RecordKind, old: Option<&Map<String, Value>>, fields: &mut Map<String, Value>, now: Timestamp) {
    let now = json!(format_timestamp(now));
    match kind {
        RecordKind::Deal => {
            let status = match fields.get("stage").and_then(Value::as_str) {
                Some("closed_won") => "won",
                Some("closed_lost") => "lost",
                _ => "open",
            };
            fields.insert("status".into(), json!(status));
            let stage_changed_at = match old {
                Some(old) if old.get("stage") == fields.get("stage") => old.get("stage_changed_at").cloned(),
                _ => Some(now),
            };
            if let Some(at) = stage_changed_at {
                fields.insert("stage_changed_at".into(), at);
            }
        }
        RecordKind::Task => {
            if !is_completed(fields) {
                fields.shift_remove("completed_at");
            } else if let Some(at) = old.filter(|old| is_completed(old)).and_then(|old| old.get("completed_at")) {
                fields.insert("completed_at".into(), at.clone());
            } else {
                fields.insert("completed_at".into(), now);
            }
        }
        RecordKind::Contact | RecordKind::Lead | RecordKind::Enquiry => {}
    }
}

/// Rules about the record as a whole, checked after a create or a patch.
fn check_record_rules(kind: RecordKind, fields: &Map<String, Value>) -> Result<(), FieldErrors> {
    let has = |name: &str| fields.contains_key(name);
    let mut errors = FieldErrors::new();
    match kind {
        RecordKind::Contact => {
            if !["first_name", "last_name", "email", "phone"].iter().any(|f| has(f)) {
                errors.add("first_name", "a contact needs at least one of first_name, last_name, email, phone");
            }
        }
        RecordKind::Lead => {
            if !has("contact_id") {
                errors.add("contact_id", "is required");
            }
        }
        RecordKind::Enquiry => {
            if !["name", "email", "phone"].iter().any(|f| has(f)) {
                errors.add("email", "an enquiry needs at least one of name, email, phone");
            }
        }
        RecordKind::Deal | RecordKind::Task => {
            if fields.get("title").and_then(Value::as_str).is_none_or(str::is_empty) {
                errors.add("title", "is required");
            }
        }
    }
    errors.into_result(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 4, 17, 12, 0, second).unwrap()
    }

    fn new(kind: RecordKind, input: Value) -> Record {
        create(kind, &input, "id_1".into(), "usr_1", at(0)).expect("valid input")
    }

    fn names(events: &[PendingEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn contact_gets_defaults_and_fires_created() {
        let contact = new(RecordKind::Contact, json!({"email": "A@B.co"}));
        assert_eq!(contact.get_str("status"), Some("Active"));
        assert_eq!(contact.get_str("lifecycle_stage"), Some("new_lead"));
        assert_eq!(contact.email_key().as_deref(), Some("a@b.co"));
        assert_eq!(names(&events_on_create(&contact)), ["contact.created"]);
    }

    #[test]
    fn contact_needs_a_name_email_or_phone() {
        let err = create(RecordKind::Contact, &json!({"city": "Austin"}), "id".into(), "u", at(0)).unwrap_err();
        assert!(err.fields().contains_key("first_name"), "{err}");
        let err = create(RecordKind::Contact, &json!([1]), "id".into(), "u", at(0)).unwrap_err();
        assert_eq!(err.fields().get("body").map(String::as_str), Some("must be a JSON object"));
    }

    #[test]
    fn an_update_that_changes_nothing_is_none() {
        let contact = new(RecordKind::Contact, json!({"first_name": "Ada", "status": "VIP"}));
        assert_eq!(patch(&contact, &json!({"first_name": " Ada ", "status": "vip"}), at(5)), Ok(None));
        assert_eq!(patch(&contact, &json!({}), at(5)), Ok(None));
        assert_eq!(patch(&contact, &json!({"city": null}), at(5)), Ok(None));
    }

    #[test]
    fn patch_changes_named_fields_and_null_clears() {
        let contact = new(RecordKind::Contact, json!({"first_name": "Ada", "city": "Austin"}));
        let changed = patch(&contact, &json!({"city": null, "last_name": "L"}), at(5)).unwrap().unwrap();
        assert_eq!(changed.get("city"), None);
        assert_eq!(changed.get_str("last_name"), Some("L"));
        assert_eq!(changed.get_str("first_name"), Some("Ada"));
        assert_eq!(changed.updated_at, at(5));
        assert_eq!(names(&events_on_update(&contact, &changed)), ["contact.updated"]);
        let err = patch(&contact, &json!({"first_name": null, "last_name": null}), at(5)).unwrap_err();
        assert!(err.fields().contains_key("first_name"));
    }

    #[test]
    fn deal_stage_rules() {
        let deal = new(RecordKind::Deal, json!({"title": "Sale"}));
        assert_eq!(deal.get_str("status"), Some("open"));
        assert_eq!(deal.get_str("stage"), Some("new"));
        assert_eq!(names(&events_on_create(&deal)), ["deal.created"]);

        let amount_only = patch(&deal, &json!({"amount": 10}), at(3)).unwrap().unwrap();
        assert!(events_on_update(&deal, &amount_only).is_empty(), "no deal.updated event exists");
        assert_eq!(amount_only.get("stage_changed_at"), deal.get("stage_changed_at"));

        let won = patch(&deal, &json!({"stage": "closed_won"}), at(9)).unwrap().unwrap();
        assert_eq!(won.get_str("status"), Some("won"));
        assert_eq!(won.get_str("stage_changed_at"), Some("2026-04-17T12:00:09Z"));
        let events = events_on_update(&deal, &won);
        assert_eq!(names(&events), ["deal.stage_changed", "deal.won"]);
        assert_eq!(events[0].data["previous_stage"], json!("new"));
        assert_eq!(events[1].data.get("previous_stage"), None);

        let lost = new(RecordKind::Deal, json!({"title": "Sale", "stage": "closed_lost"}));
        assert_eq!(names(&events_on_create(&lost)), ["deal.created", "deal.lost"]);
        assert!(create(RecordKind::Deal, &json!({"amount": 1}), "id".into(), "u", at(0)).is_err());
    }

    #[test]
    fn task_completion_fires_once_and_keeps_its_time() {
        let task = new(RecordKind::Task, json!({"title": "Call"}));
        assert!(events_on_create(&task).is_empty());
        let done = patch(&task, &json!({"completed": true}), at(7)).unwrap().unwrap();
        assert_eq!(done.get_str("completed_at"), Some("2026-04-17T12:00:07Z"));
        assert_eq!(names(&events_on_update(&task, &done)), ["task.completed"]);
        assert_eq!(patch(&done, &json!({"completed": true}), at(9)), Ok(None));
        let renamed = patch(&done, &json!({"title": "Call back"}), at(9)).unwrap().unwrap();
        assert!(events_on_update(&done, &renamed).is_empty());
        let undone = patch(&done, &json!({"completed": false}), at(9)).unwrap().unwrap();
        assert_eq!(undone.get("completed_at"), None);
    }

    #[test]
    fn deletes_fire_for_contacts_and_leads_only() {
        let contact = new(RecordKind::Contact, json!({"phone": "1"}));
        assert_eq!(names(&events_on_delete(&contact)), ["contact.deleted"]);
        let deal = new(RecordKind::Deal, json!({"title": "x"}));
        assert!(events_on_delete(&deal).is_empty());
    }

    #[test]
    fn enquiry_makes_a_contact_from_its_name() {
        let enquiry = new(RecordKind::Enquiry, json!({"name": "Jane  van Doe", "email": "j@d.co", "source": "web"}));
        assert_eq!(
            contact_for_enquiry(&enquiry),
            json!({"first_name": "Jane", "last_name": "van Doe", "email": "j@d.co", "lead_source": "web"})
        );
    }

    #[test]
    fn references_name_the_kind_they_point_to() {
        let task = new(RecordKind::Task, json!({"title": "t", "contact_id": "con_1", "deal_id": "dea_1"}));
        assert_eq!(
            references(&task),
            [("contact_id", RecordKind::Contact, "con_1"), ("deal_id", RecordKind::Deal, "dea_1")]
        );
    }
}
