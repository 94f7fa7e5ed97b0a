//! `/deals`: the pipeline board, a column per stage of `schema::PIPELINE` with its count and total,
//! each card with a stage menu (a form that works without a script, for keyboard and touch) and
//! **Won** / **Lost**; the script adds drag and drop, posting the same form. Every move goes
//! through `update_record` with the new stage, so it fires what a PATCH fires:
//! `deal.stage_changed`, then `deal.won` or `deal.lost` for a closed stage.
//! The board is bounded: the newest deals of each column, with a link to the whole stage's list.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::schema::PIPELINE;
use estate_crm_domain::{Record, RecordKind};
use estate_crm_store::{PageRequest, RecordQuery, Scope, StageTotal, StoreError};
use maud::{Markup, html};
use serde_json::json;

use super::form::{Widget, field, hinted};
use super::screen::{SavedQuery, Screen};
use super::{PAGE, actor, contact_link, contact_names, deal_amount, escape, local_path, money};
use crate::WebState;
use crate::pages::webhooks::wants_fragment;
use crate::pages::{Flash, Section, csrf_field, error_page, flash, shell, when};
use crate::session::{ChangeForm, Visitor};

/// How many deals an open stage's column shows.
const OPEN_CARDS: usize = 25;
/// How many a closed stage's column shows: the latest wins and losses, not the archive.
const CLOSED_CARDS: usize = 5;

const STAGE_CHOICES: &[(&str, &str)] = PIPELINE;

/// The deal pages.
pub static SCREEN: Screen = Screen {
    kind: RecordKind::Deal,
    singular: "deal",
    fields: &[
        field("title", "Title", Widget::Text),
        field("stage", "Stage", Widget::Choice(STAGE_CHOICES)),
        hinted("amount", "Amount", Widget::Number, "The price, without separators: 450000 or 1250.50."),
        hinted("currency", "Currency", Widget::Text, "Three letters, such as USD or EUR."),
        hinted("probability", "Probability (%)", Widget::Number, "From 0 to 100."),
        field("expected_close_date", "Expected close", Widget::Date),
        field("next_action", "Next action", Widget::Text),
        field("description", "Description", Widget::Area),
        hinted("listing_id", "Listing", Widget::Text, "The listing's id in your property system, if any."),
        field("assigned_agent_id", "Agent", Widget::Agent),
    ],
    name: deal_name,
};

fn deal_name(deal: &Record, contact: Option<&str>) -> String {
    match (deal.get_str("title"), contact) {
        (Some(title), _) => title.to_owned(),
        (None, Some(contact)) => format!("Deal with {contact}"),
        (None, None) => format!("Deal {}", deal.id),
    }
}

/// A stage's label.
pub fn stage_label(stage: &str) -> &str {
    PIPELINE.iter().find(|(key, _)| *key == stage).map_or(stage, |(_, label)| label)
}

fn is_closed(stage: &str) -> bool {
    stage.starts_with("closed_")
}

/// A stage's count and totals, from the per-currency rows.
pub struct Column<'a> {
    /// The stage's key.
    pub stage: &'a str,
    /// How many deals.
    pub count: u64,
    /// "USD 1,250,000 · EUR 90,000", or "0".
    pub total: String,
}

/// Each stage of the pipeline with its count and totals.
pub fn columns(totals: &[StageTotal]) -> Vec<Column<'static>> {
    PIPELINE
        .iter()
        .map(|(stage, _)| {
            let rows: Vec<&StageTotal> = totals.iter().filter(|t| t.stage == *stage).collect();
            let count = rows.iter().map(|t| t.count).sum();
            let total = rows
                .iter()
                .map(|t| format!("{} {}", t.currency, money(t.amount)).trim().to_owned())
                .collect::<Vec<_>>()
                .join(" · ");
            Column { stage, count, total: if total.is_empty() { "0".to_owned() } else { total } }
        })
        .collect()
}

/// `?stage=` lists one stage's deals instead of the board.
#[derive(Debug, Default, serde::Deserialize)]
pub struct BoardQuery {
    stage: Option<String>,
    cursor: Option<String>,
    deleted: Option<String>,
    moved: Option<String>,
}

/// The board's columns, as the page and the script's moves show them.
async fn board(state: &WebState, visitor: &Visitor) -> Result<Markup, StoreError> {
    let actor = actor(visitor);
    let totals = state.store().deal_stage_totals(&actor, Scope::Visible).await?;
    let mut cards: Vec<(Column<'static>, Vec<Record>)> = Vec::new();
    for column in columns(&totals) {
        let limit = if is_closed(column.stage) { CLOSED_CARDS } else { OPEN_CARDS };
        let query = RecordQuery::new(Scope::Visible).with("stage", column.stage);
        let deals =
            state.store().find_records(&actor, RecordKind::Deal, query, PageRequest { limit, cursor: None }).await?;
        cards.push((column, deals.items));
    }
    let all: Vec<Record> = cards.iter().flat_map(|(_, deals)| deals.iter().cloned()).collect();
    let names = contact_names(state, visitor, &all).await?;
    Ok(html! {
        @for (column, deals) in &cards {
            @let heading = format!("stage-{}", column.stage);
            section.column data-stage=(column.stage) aria-labelledby=(heading) {
                header.column-head {
                    h2 id=(heading) { (stage_label(column.stage)) }
                    p.column-figures {
                        span.count-badge { (column.count) }
                        span.visually-hidden { @if column.count == 1 { " deal" } @else { " deals" } }
                        @if column.count > 0 { " " span.sub { (column.total) } }
                    }
                }
                @if deals.is_empty() {
                    p.empty.drop-hint { "No deal" }
                } @else {
                    ol.cards {
                        @for deal in deals { (card(visitor, deal, &names)) }
                    }
                }
                @if column.count > deals.len() as u64 {
                    p.more { a href=(format!("/deals?stage={}", column.stage)) { (column.count - deals.len() as u64) " more in " (stage_label(column.stage)) } }
                }
            }
        }
    })
}

/// A deal's card: title, amount, contact, and the forms that move it.
fn card(visitor: &Visitor, deal: &Record, names: &HashMap<String, String>) -> Markup {
    let stage = deal.get_str("stage").unwrap_or("new");
    let title = deal_name(deal, None);
    let menu_id = format!("stage-of-{}", deal.id);
    html! {
        li.deal-card draggable="true" data-deal-id=(deal.id) data-stage=(stage) {
            a.deal-title href=(format!("/deals/{}", deal.id)) { (title) }
            div.deal-amount { (deal_amount(deal)) }
            div.sub {
                @if deal.get_str("contact_id").is_some() { (contact_link(deal, names)) } @else { "No contact" }
            }
            form.move method="post" action=(format!("/deals/{}/stage", deal.id)) {
                (csrf_field(visitor))
                input type="hidden" name="back" value="/deals";
                label.visually-hidden for=(menu_id) { "Stage of " (title) }
                select id=(menu_id) name="stage" {
                    @for (key, label) in PIPELINE { option value=(key) selected[*key == stage] { (label) } }
                }
                button.secondary.small type="submit" aria-label=(format!("Move {title}")) { "Move" }
                @if !is_closed(stage) {
                    button.small.won type="submit" name="close" value="closed_won" aria-label=(format!("{title}: won")) { "Won" }
                    button.small.lost type="submit" name="close" value="closed_lost" aria-label=(format!("{title}: lost")) { "Lost" }
                }
            }
        }
    }
}

/// `GET /deals`: the board, or with `?stage=` that stage's deals, newest first, page by page.
pub async fn list(State(state): State<WebState>, visitor: Visitor, Query(query): Query<BoardQuery>) -> Response {
    if let Some(stage) = query.stage.as_deref().filter(|s| !s.is_empty()) {
        return stage_list(&state, &visitor, stage, query.cursor.clone()).await;
    }
    let board = match board(&state, &visitor).await {
        Ok(board) => board,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let message = match (&query.deleted, &query.moved) {
        (Some(_), _) => Some(Flash::Ok("The deal was deleted.".to_owned())),
        (None, Some(stage)) => Some(Flash::Ok(format!("Moved to {}.", stage_label(stage)))),
        _ => None,
    };
    let body = html! {
        div.heading-row {
            h1 { "Deals" }
            a.button-link href="/deals/new" { "New deal" }
        }
        (flash(message.as_ref()))
        p.lead { "Drag a card to another stage, or choose its stage and press Move. Won and Lost close a deal." }
        div #board-status.visually-hidden role="status" aria-live="polite" {}
        div #board.board data-board { (board) }
    };
    shell("Deals", Some(&visitor), Section::Records(RecordKind::Deal), body).into_response()
}

async fn stage_list(state: &WebState, visitor: &Visitor, stage: &str, cursor: Option<String>) -> Response {
    if !PIPELINE.iter().any(|(key, _)| *key == stage) {
        return error_page::not_found(Some(visitor));
    }
    let query = RecordQuery::new(Scope::Visible).with("stage", stage);
    let deals = match state
        .store()
        .find_records(&actor(visitor), RecordKind::Deal, query, PageRequest { limit: PAGE, cursor })
        .await
    {
        Ok(deals) => deals,
        Err(err) => return error_page::store(visitor, &err),
    };
    let names = match contact_names(state, visitor, &deals.items).await {
        Ok(names) => names,
        Err(err) => return error_page::store(visitor, &err),
    };
    let title = format!("Deals: {}", stage_label(stage));
    let body = html! {
        p.crumbs { a href="/deals" { "The board" } }
        h1 { (title) }
        div.table-wrap {
            table #deals {
                caption.visually-hidden { (title) ", newest first" }
                thead { tr { th scope="col" { "Deal" } th.num scope="col" { "Amount" } th scope="col" { "Contact" } th scope="col" { "Created" } } }
                tbody {
                    @for deal in &deals.items {
                        tr data-record-id=(deal.id) {
                            td { a href=(format!("/deals/{}", deal.id)) { (deal_name(deal, None)) } }
                            td.num { (deal_amount(deal)) }
                            td { (contact_link(deal, &names)) }
                            td { (when(deal.created_at.timestamp_millis())) }
                        }
                    }
                    @if deals.items.is_empty() { tr.empty-row { td colspan="4" { "No deal at this stage." } } }
                }
            }
        }
        @if let Some(cursor) = &deals.next_cursor {
            p.pager { a href=(format!("/deals?stage={stage}&cursor={}", escape(cursor))) { "Older deals" } }
        }
    };
    shell(&title, Some(visitor), Section::Records(RecordKind::Deal), body).into_response()
}

/// `POST /deals/{id}/stage`: the stage menu, **Won** / **Lost**, and a drop on the board.
/// A script's request gets the board's columns back; a form's goes back to where it came from.
pub async fn move_stage(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    let wanted = if form.get("close").is_empty() { form.get("stage") } else { form.get("close") };
    let Some((stage, _)) = PIPELINE.iter().find(|(key, _)| *key == wanted) else {
        return error_page::status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not moved",
            "That is not a stage of the pipeline.",
        );
    };
    let moved = state.store().update_record(&actor(&visitor), RecordKind::Deal, &id, json!({ "stage": stage })).await;
    if let Err(err) = moved {
        return error_page::store(&visitor, &err);
    }
    if wants_fragment(&headers) {
        return match board(&state, &visitor).await {
            Ok(board) => board.into_response(),
            Err(err) => error_page::store(&visitor, &err),
        };
    }
    let back = local_path(form.get("back"), "/deals");
    let separator = if back.contains('?') { '&' } else { '?' };
    let back = if back == "/deals" { format!("/deals{separator}moved={stage}") } else { back.to_owned() };
    Redirect::to(&back).into_response()
}

/// `GET /deals/new?contact_id=`.
pub async fn new_page(State(state): State<WebState>, visitor: Visitor, Query(query): Query<SavedQuery>) -> Response {
    super::screen::new_page(&SCREEN, &state, &visitor, &query).await
}

/// `POST /deals`.
pub async fn create(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    super::screen::create(&SCREEN, &state, &visitor, &form).await
}

/// `GET /deals/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    visitor: Visitor,
    Query(query): Query<SavedQuery>,
) -> Response {
    super::screen::page(&SCREEN, &state, &visitor, &id, &query).await
}

/// `POST /deals/{id}`.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::save(&SCREEN, &state, &visitor, &id, &form).await
}

/// `POST /deals/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::delete(&SCREEN, &state, &visitor, &id, &form).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_adds_its_currencies_apart() {
        let totals = vec![
            StageTotal { stage: "new".into(), currency: "USD".into(), count: 2, amount: 1_500_000.0 },
            StageTotal { stage: "new".into(), currency: "EUR".into(), count: 1, amount: 90_000.0 },
        ];
        let columns = columns(&totals);
        assert_eq!(columns.len(), PIPELINE.len());
        assert_eq!((columns[0].count, columns[0].total.as_str()), (3, "USD 1,500,000 · EUR 90,000"));
        assert_eq!((columns[1].count, columns[1].total.as_str()), (0, "0"));
    }
}
