//! What the web app's pipeline screens (leads, enquiries, tasks, the deals board, the dashboard)
//! ask of storage beyond the API's plain list: records filtered by their fields, open tasks by due
//! date, deals' totals per stage, records by ids, and which enquiries became leads.

use serde_json::Value;

/// Whose records a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What the actor may see (an admin: everything; an agent: what they created or are assigned).
    Visible,
    /// What the actor created or is assigned, even for an admin ("my tasks").
    Mine,
}

/// A filter of one kind's records, newest first.
#[derive(Debug, Clone)]
pub struct RecordQuery {
    /// Whose records.
    pub scope: Scope,
    /// Fields of the kind's schema that must hold exactly these values (a string, a number or a
    /// boolean); a name the schema does not have is refused.
    pub equals: Vec<(String, Value)>,
}

impl RecordQuery {
    /// Every record in `scope`.
    pub fn new(scope: Scope) -> RecordQuery {
        RecordQuery { scope, equals: Vec::new() }
    }

    /// Also requires `field` to equal `value`.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> RecordQuery {
        self.equals.push((field.to_owned(), value.into()));
        self
    }
}

/// The open tasks, soonest due first (so overdue ones lead), then the undated ones.
#[derive(Debug, Clone)]
pub struct DueTasks {
    /// A page of them.
    pub items: Vec<estate_crm_domain::Record>,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
}

/// The deals of one stage in one currency: how many and their summed amount.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTotal {
    /// The stage's key (`schema::PIPELINE`).
    pub stage: String,
    /// The deals' currency.
    pub currency: String,
    /// How many deals.
    pub count: u64,
    /// Their amounts added up (a deal without an amount counts 0).
    pub amount: f64,
}

/// The lead that came from an enquiry, found by the `lead_source` the web app's **Make lead** gives it.
pub fn lead_source_for_enquiry(enquiry_id: &str) -> String {
    format!("Enquiry {enquiry_id}")
}
