//! One line a person can read for every event: what a Slack endpoint posts, and what
//! `estate-crm listen` prints beside each webhook.
//!
//! [`MESSAGES`] is the one table of these lines, one template per event; docs/INTEGRATIONS.md shows
//! it. A template's `{placeholders}` are filled from the event's `data` alone, never from a lookup,
//! so the text is a pure function of the recorded body: every attempt of a delivery posts the same
//! bytes, as every attempt of a JSON delivery does. That is also why a deal's line names its title
//! and amount but not its contact: a deal's payload carries the contact's id, not their name.

use serde_json::{Value, json};

use crate::EventName;
use crate::schema::PIPELINE;

/// The message of each event. Placeholders: `{contact}`, `{lead}`, `{enquiry}`, `{deal}`,
/// `{stage}`, `{previous_stage}`, `{task}` (see [`placeholder`]).
pub const MESSAGES: [(EventName, &str); 13] = [
    (EventName::ContactCreated, "New contact: {contact}"),
    (EventName::ContactUpdated, "Contact updated: {contact}"),
    (EventName::ContactDeleted, "Contact deleted: {contact}"),
    (EventName::LeadCreated, "New lead: {lead}"),
    (EventName::LeadUpdated, "Lead updated: {lead}"),
    (EventName::LeadDeleted, "Lead deleted: {lead}"),
    (EventName::EnquiryCreated, "New enquiry from {enquiry}"),
    (EventName::DealCreated, "New deal: {deal}"),
    (EventName::DealStageChanged, "Deal moved from {previous_stage} to {stage}: {deal}"),
    (EventName::DealWon, "Deal won: {deal}"),
    (EventName::DealLost, "Deal lost: {deal}"),
    (EventName::TaskCompleted, "Task completed: {task}"),
    (EventName::WebhookTest, "Test webhook from estate-crm: {contact}"),
];

/// The longest a single field may run in a message; longer values end with `…`.
const MAX_FIELD_CHARS: usize = 200;

/// The template of an event.
pub fn template(event: EventName) -> &'static str {
    MESSAGES.iter().find(|(name, _)| *name == event).map(|(_, template)| *template).unwrap_or("{event}")
}

/// The line for an event with this `data`, as plain text (for a terminal).
pub fn summary(event: EventName, data: &Value) -> String {
    let mut out = String::new();
    let mut rest = template(event);
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + len];
        out.push_str(&placeholder(name, event, data));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The body a Slack incoming webhook takes: `{"text": ...}`, the summary with Slack's three
/// control characters (`&`, `<`, `>`) escaped, so a name like "<!channel>" is shown, not obeyed.
pub fn slack_body(event: EventName, data: &Value) -> Vec<u8> {
    let text = escape_for_slack(&summary(event, data));
    serde_json::to_vec(&json!({ "text": text })).expect("a JSON object always serialises")
}

/// The summary of a recorded webhook body (`{"event", "data", ...}`); `None` when the body is not
/// one (another program's JSON, say).
pub fn summary_of_body(body: &[u8]) -> Option<(EventName, String)> {
    let envelope: Value = serde_json::from_slice(body).ok()?;
    let event = EventName::parse(envelope.get("event")?.as_str()?)?;
    let data = envelope.get("data").unwrap_or(&Value::Null);
    Some((event, summary(event, data)))
}

/// Slack reads `&`, `<` and `>` as markup; its documentation asks for these three escapes.
fn escape_for_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What a placeholder stands for; a record missing every field it would show is named by its id.
fn placeholder(name: &str, event: EventName, data: &Value) -> String {
    let shown = match name {
        "contact" => join(&[person(data), field(data, "email").map(|e| format!("<{e}>"))], " "),
        "lead" => join(
            &[
                field(data, "lead_type").map(|t| format!("{t} lead")),
                field(data, "lead_source").map(|s| format!("from {s}")),
                field(data, "status").map(|s| format!("({s})")),
                field(data, "message").map(|m| format!("\u{201c}{m}\u{201d}")),
            ],
            " ",
        ),
        "enquiry" => join(
            &[
                join(&[field(data, "name"), field(data, "email").map(|e| format!("<{e}>"))], " "),
                field(data, "message").map(|m| format!("\u{201c}{m}\u{201d}")),
            ],
            ": ",
        ),
        "deal" => join(&[field(data, "title"), money(data)], ", "),
        "stage" => field(data, "stage").map(|s| stage_name(&s)),
        "previous_stage" => field(data, "previous_stage").map(|s| stage_name(&s)),
        "task" => join(&[field(data, "title"), field(data, "due_date").map(|d| format!("(due {d})"))], " "),
        _ => Some(event.as_str().to_owned()),
    };
    shown.or_else(|| field(data, "id")).unwrap_or_else(|| "(no details)".to_owned())
}

/// A string or number field, trimmed and bounded; `None` when missing, null or empty.
fn field(data: &Value, name: &str) -> Option<String> {
    let text = match data.get(name)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    // Control characters (a newline in a name) would break the one-line form.
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > MAX_FIELD_CHARS {
        let cut: String = clean.chars().take(MAX_FIELD_CHARS - 1).collect();
        return Some(format!("{cut}…"));
    }
    Some(clean)
}

/// "Ms Jane Doe": prefix, first and last name, whichever there are.
fn person(data: &Value) -> Option<String> {
    join(&[field(data, "prefix"), field(data, "first_name"), field(data, "last_name")], " ")
}

/// The parts that are there, joined; `None` when none is.
fn join(parts: &[Option<String>], separator: &str) -> Option<String> {
    let present: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!present.is_empty()).then(|| present.join(separator))
}

fn stage_name(stage: &str) -> String {
    PIPELINE.iter().find(|(key, _)| *key == stage).map(|(_, name)| (*name).to_owned()).unwrap_or(stage.to_owned())
}

/// "$450,000", "€1,250.50", "450,000 CHF": the deal's amount in its currency.
fn money(data: &Value) -> Option<String> {
    let amount = data.get("amount")?.as_f64().filter(|a| a.is_finite() && *a >= 0.0)?;
    let currency = field(data, "currency").unwrap_or_else(|| "USD".to_owned());
    let cents = (amount * 100.0).round() as u128;
    let mut number = group_thousands(cents / 100);
    if !cents.is_multiple_of(100) {
        number.push_str(&format!(".{:02}", cents % 100));
    }
    Some(match currency.as_str() {
        "USD" | "AUD" | "CAD" | "NZD" => format!("${number}"),
        "EUR" => format!("€{number}"),
        "GBP" => format!("£{number}"),
        other => format!("{number} {other}"),
    })
}

fn group_thousands(whole: u128) -> String {
    let digits = whole.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample_data;

    #[track_caller]
    fn check(event: EventName, data: Value, expected: &str) {
        assert_eq!(summary(event, &data), expected);
    }

    #[test]
    fn every_event_has_a_message_in_the_table() {
        for event in EventName::ALL {
            assert!(MESSAGES.iter().any(|(name, _)| *name == event), "{event} has no message");
            let line = summary(event, &sample_data(event));
            assert!(!line.contains('{') && !line.contains("(no details)"), "{event}: {line}");
        }
    }

    #[test]
    fn messages() {
        check(
            EventName::DealWon,
            json!({"id": "dea_1", "title": "12 Elm St", "amount": 450000, "currency": "USD"}),
            "Deal won: 12 Elm St, $450,000",
        );
        check(
            EventName::DealStageChanged,
            json!({"title": "Flat 3", "amount": 1250.5, "currency": "EUR", "stage": "offer_made", "previous_stage": "new"}),
            "Deal moved from New to Offer Made: Flat 3, €1,250.50",
        );
        check(
            EventName::DealLost,
            json!({"title": "Barn", "amount": 999, "currency": "CHF"}),
            "Deal lost: Barn, 999 CHF",
        );
        check(EventName::DealCreated, json!({"id": "dea_9"}), "New deal: dea_9");
        check(
            EventName::ContactCreated,
            json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}),
            "New contact: Ada Lovelace <ada@example.com>",
        );
        check(
            EventName::EnquiryCreated,
            json!({"name": "Bob", "email": null, "message": "Still for sale?"}),
            "New enquiry from Bob: \u{201c}Still for sale?\u{201d}",
        );
        check(
            EventName::TaskCompleted,
            json!({"title": "Call back", "due_date": "2026-05-01"}),
            "Task completed: Call back (due 2026-05-01)",
        );
        check(EventName::LeadCreated, json!({"lead_type": "Buyer", "status": "New"}), "New lead: Buyer lead (New)");
        check(EventName::ContactUpdated, json!({"first_name": "A\nB"}), "Contact updated: A B");
    }

    #[test]
    fn slack_bodies_escape_markup_and_stay_bounded() {
        let data = json!({"first_name": "<!channel> & co", "last_name": "x".repeat(5000)});
        let body: Value = serde_json::from_slice(&slack_body(EventName::ContactCreated, &data)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("New contact: &lt;!channel&gt; &amp; co x"), "{text}");
        assert!(text.chars().count() < 500, "{}", text.len());
        assert_eq!(body.as_object().unwrap().len(), 1);
    }

    #[test]
    fn the_docs_show_this_table() {
        let docs = include_str!("../../../docs/INTEGRATIONS.md");
        for (event, template) in MESSAGES {
            let row = format!("| {event} | `{template}` |");
            assert!(docs.contains(&row), "docs/INTEGRATIONS.md lacks {row}");
        }
    }

    #[test]
    fn summary_of_a_recorded_body() {
        let body = br#"{"event":"deal.won","timestamp":"2026-04-17T12:34:56Z","data":{"title":"12 Elm St","amount":450000},"site_url":"x"}"#;
        assert_eq!(summary_of_body(body), Some((EventName::DealWon, "Deal won: 12 Elm St, $450,000".into())));
        assert_eq!(summary_of_body(b"{\"hello\":1}"), None);
        assert_eq!(summary_of_body(b"not json"), None);
    }
}
