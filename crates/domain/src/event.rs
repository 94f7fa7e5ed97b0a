use std::fmt;

use serde_json::{Value, json};

/// Every event estate-crm sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // The names say it; `description` says it in words.
pub enum EventName {
    ContactCreated,
    ContactUpdated,
    ContactDeleted,
    LeadCreated,
    LeadUpdated,
    LeadDeleted,
    EnquiryCreated,
    DealCreated,
    DealStageChanged,
    DealWon,
    DealLost,
    TaskCompleted,
    WebhookTest,
}

impl EventName {
    /// Every event, in catalogue order.
    pub const ALL: [EventName; 13] = [
        EventName::ContactCreated,
        EventName::ContactUpdated,
        EventName::ContactDeleted,
        EventName::LeadCreated,
        EventName::LeadUpdated,
        EventName::LeadDeleted,
        EventName::EnquiryCreated,
        EventName::DealCreated,
        EventName::DealStageChanged,
        EventName::DealWon,
        EventName::DealLost,
        EventName::TaskCompleted,
        EventName::WebhookTest,
    ];

    /// The wire name, as in `X-CRM-Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::ContactCreated => "contact.created",
            EventName::ContactUpdated => "contact.updated",
            EventName::ContactDeleted => "contact.deleted",
            EventName::LeadCreated => "lead.created",
            EventName::LeadUpdated => "lead.updated",
            EventName::LeadDeleted => "lead.deleted",
            EventName::EnquiryCreated => "enquiry.created",
            EventName::DealCreated => "deal.created",
            EventName::DealStageChanged => "deal.stage_changed",
            EventName::DealWon => "deal.won",
            EventName::DealLost => "deal.lost",
            EventName::TaskCompleted => "task.completed",
            EventName::WebhookTest => "webhook.test",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// Whether an endpoint may subscribe to it: every event but `webhook.test`, which only the test
    /// button sends.
    pub fn is_subscribable(self) -> bool {
        self != EventName::WebhookTest
    }

    /// One line saying when it fires.
    pub fn description(self) -> &'static str {
        match self {
            EventName::ContactCreated => {
                "A contact was created (by the API, a bulk import or an enquiry from a new email)."
            }
            EventName::ContactUpdated => "A contact's fields changed; an update that changes nothing fires nothing.",
            EventName::ContactDeleted => "A contact was deleted; data is the contact as it was.",
            EventName::LeadCreated => "A lead was created.",
            EventName::LeadUpdated => "A lead's fields changed.",
            EventName::LeadDeleted => "A lead was deleted; data is the lead as it was.",
            EventName::EnquiryCreated => "An enquiry arrived through the API or the public form.",
            EventName::DealCreated => "A deal was opened.",
            EventName::DealStageChanged => "A deal moved to another stage; data carries previous_stage.",
            EventName::DealWon => "A deal reached the stage closed_won (also when created there).",
            EventName::DealLost => "A deal reached the stage closed_lost (also when created there).",
            EventName::TaskCompleted => "A task went from not done to done.",
            EventName::WebhookTest => "Sent only by the test button, with a fake contact; never by a subscription.",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event a change fires, before it is stamped and encoded at commit.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Which event.
    pub name: EventName,
    /// The record as the API shows it (for `deal.stage_changed`, plus `previous_stage`).
    pub data: Value,
}

/// One entry of `GET /api/v1/event-types`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTypeInfo {
    /// The event.
    pub name: EventName,
    /// A sample of its payload, as a receiver gets it.
    pub sample: Value,
}

/// The event catalogue with a sample payload for each event.
pub fn event_catalogue(site_url: &str) -> Vec<EventTypeInfo> {
    EventName::ALL
        .into_iter()
        .map(|name| EventTypeInfo {
            name,
            sample: json!({
                "event": name.as_str(),
                "timestamp": "2026-04-17T12:34:56Z",
                "data": sample_data(name),
                "site_url": site_url,
            }),
        })
        .collect()
}

/// The fake contact that the test button sends, in the same shape as a real one.
pub fn sample_contact() -> Value {
    json!({
        "id": "con_sample",
        "first_name": "Jane", "last_name": "Doe", "prefix": "Ms", "email": "jane.doe@example.com",
        "phone": "+1 555 0100", "mobile": null, "address": "1 Main Street", "city": "Austin",
        "state": "TX", "zipcode": "73301", "country": "US", "lifecycle_stage": "new_lead",
        "lead_source": "Website", "lead_type": "Buyer", "status": "Active", "assigned_agent_id": null,
        "tags": ["sample"], "notes": null,
        "preferences": {"min_price": 250000, "max_price": 400000, "beds": 3, "baths": 2, "locations": ["Austin"], "property_type": "House"},
        "created_by": "usr_sample", "created_at": "2026-04-17T12:34:56Z", "updated_at": "2026-04-17T12:34:56Z"
    })
}

fn sample_deal(stage: &str, status: &str) -> Value {
    json!({
        "id": "dea_sample", "title": "1 Main Street purchase", "contact_id": "con_sample",
        "listing_id": "listing-42", "amount": 350000, "currency": "USD", "probability": 60,
        "stage": stage, "expected_close_date": "2026-06-30", "next_action": "Call back",
        "description": null, "assigned_agent_id": null, "status": status,
        "stage_changed_at": "2026-04-17T12:34:56Z",
        "created_by": "usr_sample", "created_at": "2026-04-17T12:00:00Z", "updated_at": "2026-04-17T12:34:56Z"
    })
}

/// Fake `data` for an event, in the shape a real one has: what the catalogue, the test button,
/// `estate-crm trigger` and the REST Hooks samples show before real events exist.
pub fn sample_data(name: EventName) -> Value {
    let lead = json!({
        "id": "lea_sample", "contact_id": "con_sample", "lead_type": "Buyer", "lead_source": "Website",
        "status": "New", "message": "Looking for a 3-bed house", "property_id": null, "assigned_agent_id": null,
        "created_by": "usr_sample", "created_at": "2026-04-17T12:34:56Z", "updated_at": "2026-04-17T12:34:56Z"
    });
    match name {
        EventName::ContactCreated | EventName::ContactUpdated | EventName::ContactDeleted | EventName::WebhookTest => {
            sample_contact()
        }
        EventName::LeadCreated | EventName::LeadUpdated | EventName::LeadDeleted => lead,
        EventName::EnquiryCreated => json!({
            "id": "enq_sample", "name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+1 555 0100",
            "message": "Is this still available?", "property_id": "listing-42", "source": "website form",
            "contact_id": "con_sample",
            "created_by": "usr_sample", "created_at": "2026-04-17T12:34:56Z", "updated_at": "2026-04-17T12:34:56Z"
        }),
        EventName::DealCreated => sample_deal("new", "open"),
        EventName::DealStageChanged => {
            let mut deal = sample_deal("offer_made", "open");
            deal["previous_stage"] = json!("viewing_scheduled");
            deal
        }
        EventName::DealWon => sample_deal("closed_won", "won"),
        EventName::DealLost => sample_deal("closed_lost", "lost"),
        EventName::TaskCompleted => json!({
            "id": "tsk_sample", "title": "Call Jane back", "due_date": "2026-04-18", "contact_id": "con_sample",
            "deal_id": null, "assigned_agent_id": null, "notes": null, "completed": true,
            "completed_at": "2026-04-17T12:34:56Z",
            "created_by": "usr_sample", "created_at": "2026-04-17T12:00:00Z", "updated_at": "2026-04-17T12:34:56Z"
        }),
    }
}
