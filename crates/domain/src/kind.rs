use std::fmt;

/// The five kinds of CRM record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// A person the agency deals with; its email is unique.
    Contact,
    /// A contact's interest in buying, selling or renting.
    Lead,
    /// A raw form submission, linked to the contact with its email.
    Enquiry,
    /// A sale or rental moving through the pipeline.
    Deal,
    /// Something an agent has to do.
    Task,
}

impl RecordKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [RecordKind; 5] =
        [RecordKind::Contact, RecordKind::Lead, RecordKind::Enquiry, RecordKind::Deal, RecordKind::Task];

    /// The singular name, as in event names (`contact.created`) and error messages.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Contact => "contact",
            RecordKind::Lead => "lead",
            RecordKind::Enquiry => "enquiry",
            RecordKind::Deal => "deal",
            RecordKind::Task => "task",
        }
    }

    /// The collection's path segment under `/api/v1/`.
    pub fn plural(self) -> &'static str {
        match self {
            RecordKind::Contact => "contacts",
            RecordKind::Lead => "leads",
            RecordKind::Enquiry => "enquiries",
            RecordKind::Deal => "deals",
            RecordKind::Task => "tasks",
        }
    }

    /// The prefix of this kind's ids, so that an id says what it names (`con_...`).
    pub fn id_prefix(self) -> &'static str {
        match self {
            RecordKind::Contact => "con",
            RecordKind::Lead => "lea",
            RecordKind::Enquiry => "enq",
            RecordKind::Deal => "dea",
            RecordKind::Task => "tsk",
        }
    }

    /// Parses the stored name back.
    pub fn from_name(name: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether records of this kind can be changed and deleted after creation (enquiries cannot).
    pub fn is_mutable(self) -> bool {
        self != RecordKind::Enquiry
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
