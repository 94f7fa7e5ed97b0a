//! Which field each column of a file goes to: guessed from the header (csv-contract: an API field
//! name maps to itself, a few common spreadsheet names are recognised), changeable in the mapping
//! step; and a row's cells turned into the JSON object the API's create takes.

use estate_crm_domain::schema::{self, Access, FieldType};
use serde_json::{Map, Number, Value};

use super::ImportKind;

/// Where a column goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nowhere: the column is not imported.
    Ignore,
    /// A writable field of the kind.
    Field(&'static str),
    /// A field of a contact's `preferences`, written `preferences.NAME` in a file.
    Preference(&'static str),
}

impl Target {
    /// The name a file's header (and the mapping form) uses for it.
    pub fn name(self) -> String {
        match self {
            Target::Ignore => "ignore".to_owned(),
            Target::Field(name) => name.to_owned(),
            Target::Preference(name) => format!("preferences.{name}"),
        }
    }

    /// What the mapping form shows for it: "First name", "Preferences: min price".
    pub fn label(self) -> String {
        match self {
            Target::Ignore => "— ignore this column —".to_owned(),
            Target::Field(name) => field_label(name),
            Target::Preference(name) => format!("Preferences: {}", words(name)),
        }
    }

    /// The field's rules.
    fn ty(self, kind: ImportKind) -> Option<FieldType> {
        match self {
            Target::Ignore => None,
            Target::Field(name) => schema::field(kind.record_kind(), name).map(|field| field.ty),
            Target::Preference(name) => {
                schema::PREFERENCES.iter().find(|field| field.name == name).map(|field| field.ty)
            }
        }
    }
}

/// A field's label: its name in words, with the few whose name says too little spelled out.
fn field_label(name: &str) -> String {
    let label = match name {
        "prefix" => "Title (Mr, Ms, Dr...)",
        "zipcode" => "ZIP or postcode",
        "state" => "State or county",
        "assigned_agent_id" => "Assigned agent (id)",
        "contact_id" => "Contact (id)",
        "property_id" => "Property (id)",
        _ => return capitalised(&words(name)),
    };
    label.to_owned()
}

/// `min_price` as `min price`.
fn words(name: &str) -> String {
    name.replace('_', " ")
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every target a column of this kind may have, in the schema's order, "ignore" first.
pub fn targets(kind: ImportKind) -> Vec<Target> {
    let mut targets = vec![Target::Ignore];
    for field in schema::fields(kind.record_kind()).iter().filter(|field| field.access == Access::Writable) {
        match field.ty {
            FieldType::Preferences => {
                targets.extend(schema::PREFERENCES.iter().map(|pref| Target::Preference(pref.name)))
            }
            _ => targets.push(Target::Field(field.name)),
        }
    }
    targets
}

/// Finds a target by its [`Target::name`].
pub fn target_named(kind: ImportKind, name: &str) -> Option<Target> {
    targets(kind).into_iter().find(|target| target.name() == name)
}

/// Other names spreadsheets give the fields, compared with letters and digits only, in lower case.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("first_name", &["first", "firstname", "givenname", "forename", "fname"]),
    ("last_name", &["last", "lastname", "surname", "familyname", "lname"]),
    ("prefix", &["title", "salutation", "nameprefix"]),
    ("email", &["email", "emailaddress", "mail", "emailaddr"]),
    ("phone", &["phone", "phonenumber", "telephone", "tel", "homephone", "workphone", "landline"]),
    ("mobile", &["mobile", "mobilephone", "mobilenumber", "cell", "cellphone", "cellnumber"]),
    ("address", &["address", "street", "streetaddress", "address1", "addressline1"]),
    ("city", &["city", "town"]),
    ("state", &["state", "province", "region", "county"]),
    ("zipcode", &["zip", "zipcode", "postcode", "postalcode", "zippostalcode"]),
    ("country", &["country", "countryregion"]),
    ("lifecycle_stage", &["lifecyclestage", "stage", "lifecycle"]),
    ("lead_source", &["leadsource", "source", "origin"]),
    ("lead_type", &["leadtype", "type"]),
    ("status", &["status"]),
    ("assigned_agent_id", &["assignedagentid", "agentid", "agent", "assignedagent", "assignedto", "owner"]),
    ("tags", &["tags", "tag", "labels"]),
    ("notes", &["notes", "note", "comments", "comment"]),
    ("preferences.min_price", &["minprice", "pricemin", "budgetmin", "minbudget"]),
    ("preferences.max_price", &["maxprice", "pricemax", "budgetmax", "maxbudget", "budget"]),
    ("preferences.beds", &["beds", "bedrooms", "minbeds"]),
    ("preferences.baths", &["baths", "bathrooms", "minbaths"]),
    ("preferences.locations", &["locations", "location", "areas", "preferredlocations"]),
    ("preferences.property_type", &["propertytype"]),
    ("contact_id", &["contactid", "contact"]),
    ("message", &["message", "enquiry", "inquiry"]),
    ("property_id", &["propertyid", "property", "listingid", "listing"]),
];

/// The columns a file from our own export has that a new record does not take.
const NOT_IMPORTED: &[&str] = &["id", "created_at", "updated_at", "created_by"];

/// The target a header most likely means, or [`Target::Ignore`].
pub fn guess(kind: ImportKind, header: &str) -> Target {
    let header = header.trim();
    if NOT_IMPORTED.contains(&header) {
        return Target::Ignore;
    }
    if let Some(exact) = target_named(kind, header) {
        return exact;
    }
    let squeezed: String = header.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    SYNONYMS
        .iter()
        .filter(|(_, names)| names.contains(&squeezed.as_str()))
        .find_map(|(name, _)| target_named(kind, name))
        .or_else(|| {
            // "Preferences: Beds" and the like: the last part may name a preference.
            let plain = squeezed.strip_prefix("preferences").unwrap_or(&squeezed);
            targets(kind).into_iter().find(|target| target.name().replace(['_', '.'], "") == plain)
        })
        .unwrap_or(Target::Ignore)
}

/// The guessed target of each column; a field guessed for two columns goes to the first only.
pub fn guess_all(kind: ImportKind, headers: &[String]) -> Vec<Target> {
    let mut taken: Vec<Target> = Vec::new();
    headers
        .iter()
        .map(|header| {
            let target = guess(kind, header);
            if target == Target::Ignore || taken.contains(&target) {
                Target::Ignore
            } else {
                taken.push(target);
                target
            }
        })
        .collect()
}

/// A checked mapping: one target per column, no field twice, at least one column imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping(Vec<Target>);

impl Mapping {
    /// Checks the targets chosen for each column; the message names the first problem.
    pub fn new(targets: Vec<Target>, headers: &[String]) -> Result<Mapping, String> {
        for (index, target) in targets.iter().enumerate().filter(|(_, t)| **t != Target::Ignore) {
            if let Some(first) = targets[..index].iter().position(|earlier| earlier == target) {
                return Err(format!(
                    "The columns \"{}\" and \"{}\" both go to {}; choose one, and \"ignore\" for the other.",
                    short(headers.get(first)),
                    short(headers.get(index)),
                    target.name()
                ));
            }
        }
        if targets.iter().all(|target| *target == Target::Ignore) {
            return Err("Every column is set to \"ignore\": choose a field for at least one column.".to_owned());
        }
        Ok(Mapping(targets))
    }

    /// The column that goes to the field at `path` (`email`, `preferences.beds`), if any.
    pub fn column_of(&self, path: &str) -> Option<usize> {
        self.0.iter().position(|target| target.name() == path)
    }

    /// A row's cells as the object the API's create takes: an empty cell leaves its field out.
    /// Values are given the field's JSON type when they read as one; otherwise they go as written,
    /// so that the API's own check names what is wrong ("must be a number").
    pub fn to_object(&self, kind: ImportKind, cells: &[String]) -> Value {
        let mut object = Map::new();
        let mut preferences = Map::new();
        for (target, cell) in self.0.iter().zip(cells) {
            let Some(ty) = target.ty(kind) else { continue };
            if cell.trim().is_empty() {
                continue;
            }
            let value = typed(ty, cell);
            match target {
                Target::Field(name) => {
                    object.insert((*name).to_owned(), value);
                }
                Target::Preference(name) => {
                    preferences.insert((*name).to_owned(), value);
                }
                Target::Ignore => {}
            }
        }
        if !preferences.is_empty() {
            object.insert("preferences".to_owned(), Value::Object(preferences));
        }
        Value::Object(object)
    }
}

/// A header as a message quotes it: at most 60 characters.
fn short(header: Option<&String>) -> String {
    header.map_or(String::new(), |header| header.chars().take(60).collect())
}

/// A cell as the JSON value of a field of type `ty`.
fn typed(ty: FieldType, cell: &str) -> Value {
    let text = cell.trim();
    match ty {
        FieldType::Number { .. } | FieldType::Integer { .. } => number(text).unwrap_or_else(|| Value::from(text)),
        FieldType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::from(text),
        },
        FieldType::StringList => {
            Value::Array(text.split(';').map(str::trim).filter(|item| !item.is_empty()).map(Value::from).collect())
        }
        // Text keeps its inner spacing and line breaks; the API trims its ends.
        _ => Value::from(cell),
    }
}

/// `250000` stays an integer, `1.5` a float; anything else is not a number.
fn number(text: &str) -> Option<Value> {
    if let Ok(whole) = text.parse::<i64>() {
        return Some(Value::from(whole));
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite()).and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_are_shown_by_label_and_sent_by_name() {
        let first = Target::Field("first_name");
        assert_eq!((first.label().as_str(), first.name().as_str()), ("First name", "first_name"));
        let min_price = Target::Preference("min_price");
        assert_eq!(min_price.label(), "Preferences: min price");
        assert_eq!(min_price.name(), "preferences.min_price");
        assert_eq!(Target::Field("assigned_agent_id").label(), "Assigned agent (id)");
    }

    fn headers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_exports_own_header_maps_to_itself_and_its_ids_are_ignored() {
        let names =
            ["id", "first_name", "email", "preferences.beds", "preferences.locations", "created_at", "updated_at"];
        let guessed = guess_all(ImportKind::Contacts, &headers(&names));
        assert_eq!(
            guessed,
            [
                Target::Ignore,
                Target::Field("first_name"),
                Target::Field("email"),
                Target::Preference("beds"),
                Target::Preference("locations"),
                Target::Ignore,
                Target::Ignore
            ]
        );
    }

    #[test]
    fn common_spreadsheet_headers_are_guessed() {
        let names = ["First Name", "Surname", "E-mail", "Phone Number", "Postcode", "Zip", "Bedrooms", "Colour"];
        let guessed: Vec<String> = guess_all(ImportKind::Contacts, &headers(&names)).iter().map(|t| t.name()).collect();
        assert_eq!(
            guessed,
            ["first_name", "last_name", "email", "phone", "zipcode", "ignore", "preferences.beds", "ignore"],
            "the second column that means zipcode is left to the person"
        );
        assert_eq!(guess(ImportKind::Leads, "Contact ID"), Target::Field("contact_id"));
        assert_eq!(guess(ImportKind::Leads, "First Name"), Target::Ignore, "a lead has no name of its own");
    }

    #[test]
    fn a_mapping_refuses_a_field_twice_or_nothing_at_all() {
        let names = headers(&["Email", "Work email"]);
        let twice = Mapping::new(vec![Target::Field("email"), Target::Field("email")], &names).unwrap_err();
        assert!(twice.contains("\"Email\" and \"Work email\" both go to email"), "{twice}");
        assert!(Mapping::new(vec![Target::Ignore, Target::Ignore], &names).is_err());
        assert!(Mapping::new(vec![Target::Field("email"), Target::Ignore], &names).is_ok());
    }

    #[test]
    fn cells_become_the_apis_json() {
        let mapping = Mapping(vec![
            Target::Field("first_name"),
            Target::Field("tags"),
            Target::Preference("min_price"),
            Target::Preference("baths"),
            Target::Field("email"),
            Target::Ignore,
        ]);
        let cells = headers(&["Ada", "buyer; vip ;", "250000.5", "2", "", "x"]);
        assert_eq!(
            mapping.to_object(ImportKind::Contacts, &cells),
            json!({"first_name": "Ada", "tags": ["buyer", "vip"], "preferences": {"min_price": 250000.5, "baths": 2}})
        );
        let bad = headers(&["Ada", "", "cheap", "", "", ""]);
        assert_eq!(
            mapping.to_object(ImportKind::Contacts, &bad),
            json!({"first_name": "Ada", "preferences": {"min_price": "cheap"}}),
            "a value that is not a number goes as written, for the API's check to name"
        );
    }
}
