//! CSV import of contacts and leads: the file read and checked ([`csv_file`]), its columns matched
//! to fields ([`mapping`]), and the import run in the background in batches through the bulk path
//! ([`jobs`]). The pages are in `pages/import.rs`.

pub mod csv_file;
pub mod jobs;
pub mod mapping;

use estate_crm_domain::RecordKind;

/// What a file's rows become. Only these kinds are imported from a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// Contacts.
    Contacts,
    /// Leads, each naming its contact by `contact_id`.
    Leads,
}

impl ImportKind {
    /// The record kind made.
    pub fn record_kind(self) -> RecordKind {
        match self {
            ImportKind::Contacts => RecordKind::Contact,
            ImportKind::Leads => RecordKind::Lead,
        }
    }

    /// `contacts` or `leads`, as in the pages' paths.
    pub fn plural(self) -> &'static str {
        self.record_kind().plural()
    }

    /// The word for its records in a sentence.
    pub fn noun(self, count: usize) -> &'static str {
        match (self, count) {
            (ImportKind::Contacts, 1) => "contact",
            (ImportKind::Contacts, _) => "contacts",
            (ImportKind::Leads, 1) => "lead",
            (ImportKind::Leads, _) => "leads",
        }
    }
}
