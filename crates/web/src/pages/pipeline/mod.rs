//! The screens agents work in every day besides contacts: leads, the enquiry inbox, tasks and the
//! deals board. Every change goes through the same store call as the API (`create_record`,
//! `update_record`, `delete_record`) with the visitor as the actor, so it fires the same webhooks,
//! meets the same validation and sees only what the store's actor rules let the visitor see.

pub mod deals;
pub mod enquiries;
pub mod form;
pub mod leads;
pub mod screen;
pub mod tasks;

use std::collections::HashMap;

use estate_crm_domain::{Record, RecordKind};
use estate_crm_store::{Actor, StoreError, User};
use maud::{Markup, html};

use crate::WebState;
use crate::session::Visitor;

/// How many records a list page shows.
pub const PAGE: usize = 50;
/// Longer texts are cut in tables and cards.
const SNIPPET_CHARS: usize = 90;

/// The visitor as the store's actor: the same rules as their API token.
pub fn actor(visitor: &Visitor) -> Actor {
    Actor { user_id: visitor.user.id.clone(), role: visitor.user.role }
}

/// A contact's name as the pages write it: first and last name, else the email, else its id.
pub fn contact_name(contact: &Record) -> String {
    let name = [contact.get_str("first_name"), contact.get_str("last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if !name.trim().is_empty() {
        return name;
    }
    contact.get_str("email").map_or_else(|| contact.id.clone(), str::to_owned)
}

/// The names of the contacts these records point to (`contact_id`), for those the visitor may see.
pub async fn contact_names(
    state: &WebState,
    visitor: &Visitor,
    records: &[Record],
) -> Result<HashMap<String, String>, StoreError> {
    let mut ids: Vec<String> = records.iter().filter_map(|r| r.get_str("contact_id")).map(str::to_owned).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let contacts = state.store().records_by_ids(&actor(visitor), RecordKind::Contact, ids).await?;
    Ok(contacts.iter().map(|c| (c.id.clone(), contact_name(c))).collect())
}

/// Every user, for agent menus and names (the store keeps at most 1000).
pub async fn users(state: &WebState) -> Result<Vec<User>, StoreError> {
    state.store().list_users().await
}

/// A user's name by id, or the id itself when the user is unknown.
pub fn user_name(users: &[User], id: &str) -> String {
    users.iter().find(|u| u.id == id).map_or_else(|| id.to_owned(), |u| u.name.clone())
}

/// A link to a record's contact, by name when the visitor may see it.
pub fn contact_link(record: &Record, names: &HashMap<String, String>) -> Markup {
    html! {
        @match record.get_str("contact_id") {
            Some(id) => a href=(format!("/contacts/{id}")) { (names.get(id).map_or(id, String::as_str)) },
            None => span.sub { "—" },
        }
    }
}

/// A text cut to a line's length.
pub fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() > SNIPPET_CHARS {
        format!("{}…", text.chars().take(SNIPPET_CHARS).collect::<String>().trim_end())
    } else {
        text.to_owned()
    }
}

/// An amount with thousands separators and at most two decimals: `1,250,000`, `99.5`.
pub fn money(amount: f64) -> String {
    let cents = (amount * 100.0).round() as i128;
    let (whole, frac) = (cents / 100, (cents % 100).abs());
    let digits = whole.abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if cents < 0 { "-" } else { "" };
    match frac {
        0 => format!("{sign}{grouped}"),
        f if f % 10 == 0 => format!("{sign}{grouped}.{}", f / 10),
        f => format!("{sign}{grouped}.{f:02}"),
    }
}

/// A deal's amount with its currency, or a dash.
pub fn deal_amount(deal: &Record) -> String {
    match deal.get("amount").and_then(serde_json::Value::as_f64) {
        Some(amount) => format!("{} {}", deal.get_str("currency").unwrap_or(""), money(amount)).trim().to_owned(),
        None => "—".to_owned(),
    }
}

/// A path on this site to go back to after a form, or `fallback`: never another site's address.
pub fn local_path<'a>(path: &'a str, fallback: &'a str) -> &'a str {
    let is_local = path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') && !path.contains("://");
    if is_local { path } else { fallback }
}

/// A query string value, escaped.
pub fn escape(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands_and_keeps_cents() {
        assert_eq!(money(0.0), "0");
        assert_eq!(money(999.0), "999");
        assert_eq!(money(1_250_000.0), "1,250,000");
        assert_eq!(money(1234.5), "1,234.5");
        assert_eq!(money(1234.05), "1,234.05");
    }

    #[test]
    fn only_local_paths_are_gone_back_to() {
        assert_eq!(local_path("/tasks?whose=all", "/"), "/tasks?whose=all");
        for foreign in ["//evil.example/x", "https://evil.example/", "/\\evil.example", ""] {
            assert_eq!(local_path(foreign, "/tasks"), "/tasks", "{foreign}");
        }
    }

    #[test]
    fn snippets_are_cut_with_an_ellipsis() {
        assert_eq!(snippet("  short "), "short");
        let long = snippet(&"word ".repeat(40));
        assert!(long.ends_with('…') && long.chars().count() <= SNIPPET_CHARS + 1, "{long}");
    }
}
