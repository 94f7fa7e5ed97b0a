//! What the web app's contact screens read: the filtered, searchable contact list, and a record's
//! webhook timeline.

use estate_crm_domain::{EventName, Timestamp};

use crate::DeliveryStatus;

/// The most search words looked for at once; more are ignored.
pub const MAX_SEARCH_TERMS: usize = 8;

/// What the contacts table shows: contacts matching every part given (each is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactQuery {
    /// Words that must each appear in the name, email or a phone (any case; a phone's digits match
    /// however it was written).
    pub search: Option<String>,
    /// Only this status (exactly, as the schema spells it).
    pub status: Option<String>,
    /// Only this lifecycle stage (any case).
    pub lifecycle_stage: Option<String>,
    /// Only contacts with this tag (any case).
    pub tag: Option<String>,
    /// Only contacts assigned to this agent (a user id).
    pub agent: Option<String>,
}

impl ContactQuery {
    /// The search's words: split on spaces (and on `%` and `_`, which the index cannot look for),
    /// at most [`MAX_SEARCH_TERMS`].
    pub fn search_terms(&self) -> Vec<String> {
        self.search
            .as_deref()
            .unwrap_or("")
            .split(|c: char| c.is_whitespace() || c == '%' || c == '_')
            .filter(|term| !term.is_empty())
            .take(MAX_SEARCH_TERMS)
            .map(|term| term.chars().take(100).collect())
            .collect()
    }
}

/// One event a record fired, and where each of its webhooks stands.
#[derive(Debug, Clone)]
pub struct TimelineEvent {
    /// The event's id.
    pub id: String,
    /// Which event.
    pub name: EventName,
    /// When its change committed.
    pub at: Timestamp,
    /// One entry per endpoint the event is owed to (or was delivered to), in endpoint order.
    pub deliveries: Vec<TimelineDelivery>,
}

/// One event's webhook to one endpoint.
#[derive(Debug, Clone)]
pub struct TimelineDelivery {
    /// The delivery's id (its `webhook-id`), which exists before its first attempt.
    pub id: String,
    /// The endpoint's id.
    pub endpoint_id: String,
    /// The endpoint's URL.
    pub endpoint_url: String,
    /// The endpoint's description, if it has one.
    pub endpoint_description: Option<String>,
    /// Where it stands: pending covers a delivery not attempted yet (owed, with no row).
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last attempt's status code.
    pub last_status_code: Option<u16>,
    /// The last attempt's error, in words.
    pub last_error: Option<String>,
    /// When the last attempt started, Unix ms.
    pub last_attempt_at: Option<i64>,
    /// When the next attempt is due (pending only), Unix ms.
    pub next_attempt_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_split_and_bounded() {
        let query = ContactQuery { search: Some("  Ada  lovelace%x_y ".into()), ..Default::default() };
        assert_eq!(query.search_terms(), ["Ada", "lovelace", "x", "y"]);
        let many = ContactQuery { search: Some("a ".repeat(20)), ..Default::default() };
        assert_eq!(many.search_terms().len(), MAX_SEARCH_TERMS);
        assert!(ContactQuery::default().search_terms().is_empty());
    }
}
