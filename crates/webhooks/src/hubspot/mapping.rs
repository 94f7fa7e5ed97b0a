//! How our contacts and deals become HubSpot properties. Pure functions; docs/HUBSPOT.md documents
//! the same table for people.
//!
//! Every upsert sends the whole mapped state of the record, with `""` for a field that is not set:
//! HubSpot clears a property given an empty string, so a field cleared here is cleared there, and
//! sending the same state twice changes nothing (which is what makes the sync safe to repeat).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The custom property (on contacts and deals) holding our id; unique on deals, where it is the
/// upsert key, since deals have no natural one.
pub const ID_PROPERTY: &str = "estate_crm_id";
/// The custom contact property holding the lead source (HubSpot's own source fields are read-only).
pub const LEAD_SOURCE_PROPERTY: &str = "estate_crm_lead_source";

/// Our contact field -> HubSpot's contact property, for the plain text fields.
const CONTACT_FIELDS: &[(&str, &str)] = &[
    ("first_name", "firstname"),
    ("last_name", "lastname"),
    ("email", "email"),
    ("phone", "phone"),
    ("mobile", "mobilephone"),
    ("address", "address"),
    ("city", "city"),
    ("state", "state"),
    ("zipcode", "zip"),
    ("country", "country"),
    ("lead_source", LEAD_SOURCE_PROPERTY),
];

/// HubSpot's default lifecycle stages, by internal value.
const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];

/// Our deal stage -> the stage ids of HubSpot's default sales pipeline.
pub const DEFAULT_STAGE_MAP: &[(&str, &str)] = &[
    ("new", "appointmentscheduled"),
    ("viewing_scheduled", "qualifiedtobuy"),
    ("offer_made", "presentationscheduled"),
    ("negotiation", "contractsent"),
    ("closed_won", "closedwon"),
    ("closed_lost", "closedlost"),
];

fn text(record: &Value, field: &str) -> String {
    match record.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Our free-text lifecycle stage onto HubSpot's: its label or internal value, any case, with or
/// without spaces, and the common abbreviations MQL and SQL. Anything else is not sent (HubSpot
/// refuses a value outside its list).
pub fn lifecycle_stage(ours: &str) -> Option<&'static str> {
    let key: String = ours.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
    let key = match key.as_str() {
        "mql" => "marketingqualifiedlead",
        "sql" => "salesqualifiedlead",
        other => other,
    };
    LIFECYCLE_STAGES.iter().copied().find(|stage| *stage == key)
}

/// A contact's HubSpot properties.
pub fn contact_properties(record: &Value) -> Map<String, Value> {
    let mut properties = Map::new();
    for (ours, theirs) in CONTACT_FIELDS {
        properties.insert((*theirs).to_owned(), json!(text(record, ours)));
    }
    // HubSpot keeps emails in lowercase; sending them so keeps the fingerprint of what was sent true.
    properties.insert("email".to_owned(), json!(contact_email(record).unwrap_or_default()));
    if let Some(stage) = lifecycle_stage(&text(record, "lifecycle_stage")) {
        properties.insert("lifecyclestage".to_owned(), json!(stage));
    }
    properties.insert(ID_PROPERTY.to_owned(), json!(text(record, "id")));
    properties
}

/// The contact's email as HubSpot keys it (lowercase), if it has one.
pub fn contact_email(record: &Value) -> Option<String> {
    record.get("email").and_then(Value::as_str).map(str::trim).filter(|e| !e.is_empty()).map(str::to_lowercase)
}

/// Our stage and the HubSpot stage id it is sent as: the stage map's, else the default pipeline's.
pub fn hub_stage<'a>(ours: &'a str, stage_map: &BTreeMap<String, String>) -> (&'a str, String) {
    let theirs = stage_map
        .get(ours)
        .cloned()
        .or_else(|| DEFAULT_STAGE_MAP.iter().find(|(key, _)| *key == ours).map(|(_, id)| (*id).to_owned()))
        .unwrap_or_default();
    (ours, theirs)
}

/// A deal's HubSpot properties, its stage mapped through the settings' stage map (falling back to
/// HubSpot's default pipeline ids for a stage the map leaves out).
pub fn deal_properties(record: &Value, pipeline: &str, stage_map: &BTreeMap<String, String>) -> Map<String, Value> {
    let (_, hub_stage) = hub_stage(&text(record, "stage"), stage_map);
    let close_date = match text(record, "expected_close_date") {
        date if date.is_empty() => String::new(),
        // A date property at midnight UTC, the form HubSpot documents for date values.
        date => format!("{date}T00:00:00.000Z"),
    };
    let mut properties = Map::new();
    properties.insert("dealname".to_owned(), json!(text(record, "title")));
    properties.insert("amount".to_owned(), json!(text(record, "amount")));
    properties.insert("closedate".to_owned(), json!(close_date));
    properties.insert("pipeline".to_owned(), json!(pipeline));
    properties.insert("dealstage".to_owned(), json!(hub_stage));
    properties.insert(ID_PROPERTY.to_owned(), json!(text(record, "id")));
    properties
}

/// What the sweep compares to know a deal changed since it was sent: its properties and its contact.
pub fn deal_fingerprint(properties: &Map<String, Value>, contact_id: Option<&str>) -> String {
    json!({"properties": properties, "contact": contact_id}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_stages_map_by_label_value_or_abbreviation() {
        #[track_caller]
        fn check(ours: &str, expected: Option<&str>) {
            assert_eq!(lifecycle_stage(ours), expected, "{ours}");
        }
        check("Lead", Some("lead"));
        check("Marketing Qualified Lead", Some("marketingqualifiedlead"));
        check("sql", Some("salesqualifiedlead"));
        check("customer", Some("customer"));
        check("prospect", None);
        check("", None);
    }

    #[test]
    fn a_contact_sends_every_mapped_field_and_clears_the_unset_ones() {
        let record = json!({"id": "con_x1", "first_name": "Ada", "email": "Ada@Example.com", "zipcode": "N1",
                            "lifecycle_stage": "Customer", "lead_source": "Zillow"});
        let properties = contact_properties(&record);
        assert_eq!(properties["firstname"], "Ada");
        assert_eq!(properties["lastname"], "");
        assert_eq!(properties["zip"], "N1");
        assert_eq!(properties["email"], "ada@example.com");
        assert_eq!(properties["lifecyclestage"], "customer");
        assert_eq!(properties[LEAD_SOURCE_PROPERTY], "Zillow");
        assert_eq!(properties[ID_PROPERTY], "con_x1");
        assert_eq!(contact_email(&record).as_deref(), Some("ada@example.com"));
    }

    #[test]
    fn deal_stages_follow_the_map_then_the_default_pipeline() {
        let map = BTreeMap::from([("closed_won".to_owned(), "123456".to_owned())]);
        let won = json!({"id": "dea_x1", "title": "Flat", "stage": "closed_won", "amount": 250000,
                         "expected_close_date": "2026-05-01"});
        let properties = deal_properties(&won, "pipe", &map);
        assert_eq!(properties["dealstage"], "123456");
        assert_eq!(properties["pipeline"], "pipe");
        assert_eq!(properties["amount"], "250000");
        assert_eq!(properties["closedate"], "2026-05-01T00:00:00.000Z");
        let lost = json!({"id": "dea_x2", "stage": "closed_lost"});
        assert_eq!(deal_properties(&lost, "pipe", &map)["dealstage"], "closedlost");
    }
}
