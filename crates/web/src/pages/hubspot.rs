//! Settings → Integrations → HubSpot: the integration's settings (through the API's own checks),
//! its state and figures, the check button, the backfill with its progress, and the sync log.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use estate_crm_domain::FieldErrors;
use estate_crm_domain::schema::PIPELINE;
use estate_crm_store::{HubspotCounts, HubspotSettings, PageRequest, StoreError, SyncLogEntry};
use estate_crm_webhooks::hubspot::CheckResult;
use estate_crm_webhooks::hubspot::mapping::hub_stage;
use estate_crm_webhooks::hubspot::settings::{NOT_CONNECTED, Phase, check_saved, parse_settings};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Flash, Input, JsonObject, Section, Tab, checkbox, csrf_field, error_page, field_error, flash, shell, when,
};
use crate::WebState;
use crate::form::FormFields;
use crate::session::{AdminForm, AdminVisitor, Visitor};

/// The page's address.
const BASE: &str = "/settings/integrations/hubspot";
/// How many sync log lines a page shows.
const LOG_LINES: usize = 50;
/// Where HubSpot's API is unless told otherwise.
const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// The pipeline deals go into unless told otherwise.
const DEFAULT_PIPELINE: &str = "default";
/// What the check says when it found nothing wrong.
const CONNECTED: &str = "Connected: token, scopes and stages are fine";

/// The form's values as shown: from the saved settings, or as posted.
#[derive(Debug, Clone)]
struct Values {
    base_url: String,
    deal_pipeline: String,
    /// Our stage -> what the field holds (empty: HubSpot's default stage).
    stages: Vec<(&'static str, String)>,
    requests: String,
    per_ms: String,
    enabled: bool,
}

impl Values {
    fn from_settings(settings: Option<&HubspotSettings>) -> Values {
        let Some(settings) = settings else {
            return Values {
                base_url: DEFAULT_BASE_URL.into(),
                deal_pipeline: DEFAULT_PIPELINE.into(),
                stages: PIPELINE.iter().map(|(key, _)| (*key, String::new())).collect(),
                requests: "100".into(),
                per_ms: "10000".into(),
                enabled: true,
            };
        };
        Values {
            base_url: settings.base_url.clone(),
            deal_pipeline: settings.deal_pipeline.clone(),
            stages: PIPELINE
                .iter()
                .map(|(key, _)| (*key, settings.stage_map.get(*key).cloned().unwrap_or_default()))
                .collect(),
            requests: settings.rate_limit.to_string(),
            per_ms: settings.rate_window_ms.to_string(),
            enabled: settings.enabled,
        }
    }

    fn from_form(form: &FormFields) -> Values {
        Values {
            base_url: form.get("base_url").to_owned(),
            deal_pipeline: form.get("deal_pipeline").to_owned(),
            stages: PIPELINE.iter().map(|(key, _)| (*key, form.get(&stage_field(key)).to_owned())).collect(),
            requests: form.get("rate_requests").to_owned(),
            per_ms: form.get("rate_per_ms").to_owned(),
            enabled: form.has("enabled"),
        }
    }

    /// The JSON object the API would be sent: an empty token field keeps the saved token, an empty
    /// stage row leaves the stage on HubSpot's default.
    fn settings_json(&self, token: &str) -> Value {
        let mut body = JsonObject::new();
        if !token.trim().is_empty() {
            body.insert("access_token".into(), json!(token));
        }
        body.insert("base_url".into(), json!(self.base_url));
        body.insert("deal_pipeline".into(), json!(self.deal_pipeline));
        let stages: JsonObject = self
            .stages
            .iter()
            .filter(|(_, theirs)| !theirs.trim().is_empty())
            .map(|(ours, theirs)| ((*ours).to_owned(), json!(theirs)))
            .collect();
        body.insert("stage_map".into(), Value::Object(stages));
        body.insert("enabled".into(), json!(self.enabled));
        body.insert("rate_limit".into(), json!({"requests": number(&self.requests), "per_ms": number(&self.per_ms)}));
        Value::Object(body)
    }
}

/// A number field as JSON: the number, or the text as given so that the shared check refuses it.
fn number(text: &str) -> Value {
    text.trim().parse::<u64>().map_or_else(|_| json!(text), |n| json!(n))
}

fn stage_field(stage: &str) -> String {
    format!("stage_{stage}")
}

/// What the page shows besides the saved settings.
#[derive(Default)]
struct View {
    values: Option<Values>,
    errors: FieldErrors,
    message: Option<Flash>,
    check: Option<CheckResult>,
}

/// The page's query: the log's page, or one part alone for the script.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
    partial: Option<String>,
}

/// Everything the page reads from the store.
struct Loaded {
    settings: Option<HubspotSettings>,
    counts: HubspotCounts,
}

async fn load(state: &WebState) -> Result<Loaded, StoreError> {
    let settings = state.store().hubspot_settings().await?;
    let counts = state.store().hubspot_counts().await?;
    Ok(Loaded { settings, counts })
}

async fn log_page(
    state: &WebState,
    cursor: Option<String>,
) -> Result<estate_crm_store::Page<SyncLogEntry>, StoreError> {
    state.store().hubspot_log(None, PageRequest { limit: LOG_LINES, cursor }).await
}

/// `GET /settings/integrations/hubspot`: the page, or with `partial=status` / `partial=rows` the
/// state or the newest log lines alone, for the script's live refresh.
pub async fn page(
    State(state): State<WebState>,
    AdminVisitor(visitor): AdminVisitor,
    Query(query): Query<PageQuery>,
) -> Response {
    match query.partial.as_deref() {
        Some("status") => match load(&state).await {
            Ok(loaded) => status_part(&state, &loaded).into_response(),
            Err(err) => error_page::store(&visitor, &err),
        },
        Some("rows") => match log_page(&state, None).await {
            Ok(page) => log_rows(&page.items).into_response(),
            Err(err) => error_page::store(&visitor, &err),
        },
        _ => render(&state, &visitor, query.cursor, View::default()).await,
    }
}

/// `POST /settings/integrations/hubspot`: saves through the API's own checks.
pub async fn save(State(state): State<WebState>, AdminForm { visitor, form }: AdminForm) -> Response {
    let values = Values::from_form(&form);
    let existing = match state.store().hubspot_settings().await {
        Ok(existing) => existing,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let has_token = existing.as_ref().is_some_and(|s| s.access_token.is_some());
    let body = values.settings_json(form.get("access_token"));
    let patch = match parse_settings(&body, has_token, state.inner.config.policy).await {
        Ok(patch) => patch,
        Err(errors) => {
            let message = Some(Flash::Error("Not saved: correct the fields marked below.".into()));
            return render(&state, &visitor, None, View { values: Some(values), errors, message, check: None }).await;
        }
    };
    if let Err(err) = state.store().put_hubspot_settings(patch).await {
        return error_page::store(&visitor, &err);
    }
    state.inner.config.hubspot.wake();
    render(&state, &visitor, None, View { message: Some(Flash::Ok("Saved.".into())), ..View::default() }).await
}

/// `POST /settings/integrations/hubspot/check`: the API's check, its findings in words.
pub async fn check(State(state): State<WebState>, AdminForm { visitor, .. }: AdminForm) -> Response {
    let settings = match state.store().hubspot_settings().await {
        Ok(settings) => settings,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let view = match check_saved(state.inner.config.policy, settings.as_ref()).await {
        Some(result) => View { check: Some(result), ..View::default() },
        None => View { message: Some(Flash::Error(format!("{NOT_CONNECTED}."))), ..View::default() },
    };
    render(&state, &visitor, None, view).await
}

/// `POST /settings/integrations/hubspot/backfill`: starts sending every existing contact and deal.
pub async fn backfill(State(state): State<WebState>, AdminForm { visitor, .. }: AdminForm) -> Response {
    let message = match state.store().start_hubspot_backfill().await {
        Ok(_) => {
            state.inner.config.hubspot.wake();
            Flash::Ok("Sending every existing contact and deal to HubSpot; the progress is shown below.".into())
        }
        Err(err) if matches!(err.kind(), estate_crm_store::ErrorKind::NotFound) => {
            Flash::Error(format!("{NOT_CONNECTED}."))
        }
        Err(err) => return error_page::store(&visitor, &err),
    };
    render(&state, &visitor, None, View { message: Some(message), ..View::default() }).await
}

async fn render(state: &WebState, visitor: &Visitor, cursor: Option<String>, view: View) -> Response {
    let loaded = match load(state).await {
        Ok(loaded) => loaded,
        Err(err) => return error_page::store(visitor, &err),
    };
    let first_page = cursor.is_none();
    let log = match log_page(state, cursor).await {
        Ok(log) => log,
        Err(err) => return error_page::store(visitor, &err),
    };
    let values = view.values.clone().unwrap_or_else(|| Values::from_settings(loaded.settings.as_ref()));
    let has_token = loaded.settings.as_ref().is_some_and(|s| s.access_token.is_some());
    let status = if view.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = html! {
        h1 { "HubSpot" }
        p.lead { "Contacts and deals are mirrored into a HubSpot account from the same event log webhooks are sent from. "
            "docs/HUBSPOT.md says how to make the private app and its properties." }
        (flash(view.message.as_ref()))
        section #hubspot-status aria-label="State" data-live=(format!("{BASE}?partial=status")) { (status_part(state, &loaded)) }
        div.row-actions {
            form method="post" action=(format!("{BASE}/check")) {
                (csrf_field(visitor)) button.secondary type="submit" { "Check connection" }
            }
            form method="post" action=(format!("{BASE}/backfill")) {
                (csrf_field(visitor)) button.secondary type="submit" { "Sync all existing contacts and deals" }
            }
        }
        (check_result(view.check.as_ref()))
        h2 { "Settings" }
        form.card method="post" novalidate action=(BASE) {
            (settings_fields(visitor, &values, has_token, &view.errors))
            div.actions { button.primary type="submit" { "Save" } }
        }
        h2 { "Sync log" }
        (log_table(&log.items, first_page))
        @if let Some(next) = &log.next_cursor {
            p.pager { a href=(format!("{BASE}?{}", cursor_query(next))) { "Older lines" } }
        }
        @if !first_page { p { a href=(BASE) { "Newest lines" } } }
    };
    (status, shell("HubSpot", Some(visitor), Section::Settings(Tab::Integrations), body)).into_response()
}

fn cursor_query(cursor: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new()).append_pair("cursor", cursor).finish()
}

fn settings_fields(visitor: &Visitor, values: &Values, has_token: bool, errors: &FieldErrors) -> Markup {
    let token_hint = if has_token {
        "A token is saved. Leave this empty to keep it; a new token replaces it."
    } else {
        "The private app's access token (pat-…). It is never shown again once saved."
    };
    html! {
        (csrf_field(visitor))
        @if has_token { p.token-saved #token-saved { span.badge.state-active { "a token is saved" } } }
        (Input::new("access_token", "Access token", "").kind("password").autocomplete("new-password").hint(token_hint).render(errors))
        (Input::new("deal_pipeline", "Deal pipeline", &values.deal_pipeline)
            .hint("The id of the HubSpot pipeline deals go into; default is HubSpot's own first pipeline.").render(errors))
        (stage_fields(values, errors))
        (rate_fields(values, errors))
        details.advanced open[errors.fields().contains_key("base_url")] {
            summary { "Advanced" }
            (Input::new("base_url", "Base URL", &values.base_url).kind("url").autocomplete("off")
                .hint("Where HubSpot's API is: https://api.hubapi.com, or a sandbox.").render(errors))
        }
        (checkbox("enabled", "f-enabled", "on", "Enabled: send changes to HubSpot", values.enabled))
    }
}

/// One row per deal stage of ours, the HubSpot stage id beside it (empty: HubSpot's default).
fn stage_fields(values: &Values, errors: &FieldErrors) -> Markup {
    let error = errors.fields().get("stage_map");
    html! {
        fieldset.stage-map aria-describedby=[error.map(|_| "f-stage_map-error")] aria-invalid=[error.map(|_| "true")] {
            legend { "Stage map" }
            p.hint { "The HubSpot stage id each of our deal stages is sent as. Empty uses the id shown, the stage of HubSpot's default pipeline." }
            @for ((ours, label), (_, theirs)) in PIPELINE.iter().zip(&values.stages) {
                @let name = stage_field(ours);
                @let id = format!("f-{name}");
                div.field.inline {
                    label for=(id) { (label) " " span.mono { "(" (ours) ")" } }
                    input id=(id) name=(name) type="text" value=(theirs) placeholder=(hub_stage(ours, &Default::default()).1)
                        autocomplete="off";
                }
            }
            (field_error("stage_map", errors))
        }
    }
}

fn rate_fields(values: &Values, errors: &FieldErrors) -> Markup {
    let error = errors.fields().get("rate_limit");
    let described = error.map(|_| "f-rate_limit-error");
    let invalid = error.map(|_| "true");
    html! {
        fieldset.rate-limit aria-describedby=[described] aria-invalid=[invalid] {
            legend { "Rate limit" }
            p.hint { "At most this many requests to HubSpot in any window of this many milliseconds (HubSpot allows 100 per 10 s to private apps)." }
            div.field.inline {
                label for="f-rate_requests" { "Requests" }
                input #f-rate_requests name="rate_requests" type="number" value=(values.requests) aria-invalid=[invalid] aria-describedby=[described];
            }
            div.field.inline {
                label for="f-rate_per_ms" { "Per milliseconds" }
                input #f-rate_per_ms name="rate_per_ms" type="number" value=(values.per_ms) aria-invalid=[invalid] aria-describedby=[described];
            }
            (field_error("rate_limit", errors))
        }
    }
}

/// The state badge, the figures and the backfill's progress: the part the script refreshes.
fn status_part(state: &WebState, loaded: &Loaded) -> Markup {
    let phase = Phase::of(loaded.settings.as_ref());
    let last_error = state.inner.config.hubspot.status().last_error;
    let Some(settings) = &loaded.settings else {
        return html! { p { span.badge.state-inactive #hubspot-state { "not set up" } " Save an access token below to connect HubSpot." } };
    };
    let backlog = (loaded.counts.newest_event - settings.cursor).max(0);
    html! {
        p {
            @match &phase {
                Phase::Connected => span.badge.state-active #hubspot-state { "connected" },
                Phase::Paused(reason) => { span.badge.state-disabled #hubspot-state { "paused" } " " span.reason { (reason) } },
                Phase::Disabled => span.badge.state-inactive #hubspot-state { "disabled" },
                Phase::NotConnected => span.badge.state-inactive #hubspot-state { "not set up" },
            }
        }
        @if let Some(error) = last_error {
            p.error-text { "The last batch failed and will be sent again: " (error) }
        }
        div.counts {
            div.count { span.label { "Backlog (events)" } span.value #hubspot-backlog { (backlog) } }
            div.count { span.label { "Contacts in HubSpot" } span.value #hubspot-contacts { (loaded.counts.contacts) } }
            div.count { span.label { "Deals in HubSpot" } span.value #hubspot-deals { (loaded.counts.deals) } }
        }
        (backfill_progress(settings, loaded.counts.records))
    }
}

fn backfill_progress(settings: &HubspotSettings, total: u64) -> Markup {
    let done = settings.backfill_done;
    html! {
        @if let Some(backfill) = &settings.backfill {
            p #hubspot-backfill {
                "Sending existing records (" (backfill.kind.plural()) "): "
                span.done { (done) } " / " span.total { (total) } " "
                progress value=(done.min(total)) max=(total.max(1)) { (done) " of " (total) }
            }
        } @else if done > 0 {
            p #hubspot-backfill { "The last sync of existing records sent " (done) " of " (total) " records." }
        }
    }
}

fn check_result(result: Option<&CheckResult>) -> Markup {
    html! {
        div #check-result aria-live="polite" {
            @if let Some(result) = result {
                @if result.ok {
                    div.outcome.ok { p { (CONNECTED) } }
                } @else {
                    div.outcome.failed {
                        p { "The connection does not work yet:" }
                        ul { @for problem in &result.problems { li { (problem) } } }
                    }
                }
            }
        }
    }
}

fn log_table(lines: &[SyncLogEntry], live: bool) -> Markup {
    let live_url = live.then(|| format!("{BASE}?partial=rows"));
    html! {
        div.table-wrap {
            table #hubspot-log {
                caption.visually-hidden { "The HubSpot sync log, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Record" } th scope="col" { "Action" }
                    th.num scope="col" { "HubSpot status" } th scope="col" { "HubSpot id" } th scope="col" { "Error" }
                } }
                tbody data-live=[live_url] { (log_rows(lines)) }
            }
        }
    }
}

fn log_rows(lines: &[SyncLogEntry]) -> Markup {
    html! {
        @for line in lines {
            @let entry = &line.entry;
            tr data-record-id=(entry.record_id) {
                td { (when(line.at_ms)) }
                td { a href=(format!("/{}", entry.kind.plural())) { (entry.kind.name()) } " " span.mono { (entry.record_id) } }
                td { (entry.action) }
                td.num { @if let Some(code) = entry.status { (code) } @else { "—" } }
                td.mono { (entry.hubspot_id.as_deref().unwrap_or("—")) }
                td.error-text { (entry.error.as_deref().unwrap_or("")) }
            }
        }
        @if lines.is_empty() {
            tr.empty-row { td colspan="6" { "Nothing synced yet." } }
        }
    }
}
