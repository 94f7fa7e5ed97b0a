//! CSV import of contacts and leads: upload a file, match its columns to fields with the first rows
//! in view, then watch the import's progress and read its summary. The work is in `crate::import`.
//!
//! - `GET|POST /contacts/import` (and `/leads/import`): the upload form; a file that cannot be
//!   imported comes back to it with what is wrong.
//! - `GET /contacts/import/{id}`: the mapping step while the file waits, then the progress and the
//!   summary (`?partial=status` answers that part alone, for the script to refresh).
//! - `POST /contacts/import/{id}`: the mapping; starts the import in the background.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_store::Actor;
use maud::{Markup, html};

use super::{Flash, Section, csrf_field, error_page, flash, shell, shell_with_head};
use crate::WebState;
use crate::import::ImportKind;
use crate::import::csv_file::{self, MAX_COLUMNS, MAX_ROWS};
use crate::import::jobs::{
    BATCH_ROWS, Batch, BatchOutcome, Busy, Found, Job, MAX_LISTED, Phase, Problem, Progress, Upload,
};
use crate::import::mapping::{self, Mapping, Target};
use crate::session::{ChangeForm, UPLOAD_FIELD, UploadForm, Visitor};

/// Longer values are cut in the preview.
const CELL_CHARS: usize = 60;

fn actor(visitor: &Visitor) -> Actor {
    Actor { user_id: visitor.user.id.clone(), role: visitor.user.role }
}

fn base(kind: ImportKind) -> String {
    format!("/{}/import", kind.plural())
}

fn title(kind: ImportKind) -> &'static str {
    match kind {
        ImportKind::Contacts => "Import contacts",
        ImportKind::Leads => "Import leads",
    }
}

fn section(kind: ImportKind) -> Section {
    Section::Records(kind.record_kind())
}

/// `1,234`.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn cut(text: &str) -> String {
    if text.chars().count() > CELL_CHARS {
        format!("{}…", text.chars().take(CELL_CHARS).collect::<String>())
    } else {
        text.to_owned()
    }
}

// --- the upload step ---

/// The sample file the repository ships, 300 made-up contacts in Export CSV's format.
const SAMPLE_CONTACTS: &str = include_str!("../../../../docs/sample-contacts.csv");

/// `GET /contacts/import/sample.csv`: the sample file, to try the import with.
pub async fn sample_contacts(_visitor: Visitor) -> Response {
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"sample-contacts.csv\""),
    ];
    (headers, SAMPLE_CONTACTS).into_response()
}

/// `GET /contacts/import`.
pub async fn contacts_page(visitor: Visitor) -> Response {
    upload_page(ImportKind::Contacts, &visitor, None, StatusCode::OK)
}

/// `GET /leads/import`.
pub async fn leads_page(visitor: Visitor) -> Response {
    upload_page(ImportKind::Leads, &visitor, None, StatusCode::OK)
}

/// `POST /contacts/import`.
pub async fn upload_contacts(State(state): State<WebState>, form: UploadForm) -> Response {
    upload(ImportKind::Contacts, state, form).await
}

/// `POST /leads/import`.
pub async fn upload_leads(State(state): State<WebState>, form: UploadForm) -> Response {
    upload(ImportKind::Leads, state, form).await
}

async fn upload(kind: ImportKind, state: WebState, UploadForm { visitor, file }: UploadForm) -> Response {
    let refuse = |message: String, code| upload_page(kind, &visitor, Some(Flash::Error(message)), code);
    let (file_name, bytes) = match file {
        Ok(file) => file,
        Err((code, message)) => return refuse(message, code),
    };
    if bytes.len() > csv_file::MAX_BYTES {
        let message = "The file is larger than 32 MiB. Split it into smaller files and upload them one at a time.";
        return refuse(message.to_owned(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Reading 100,000 rows takes a moment of CPU: off the request threads.
    let file = match tokio::task::spawn_blocking(move || csv_file::parse(&bytes)).await {
        Ok(Ok(file)) => file,
        Ok(Err(problem)) => return refuse(problem.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        Err(err) => return error_page::internal(&err),
    };
    let upload = Upload { file_name, file };
    match state.imports().add_upload(&visitor.user.id, kind, upload) {
        Ok(id) => Redirect::to(&format!("{}/{id}", base(kind))).into_response(),
        Err(busy) => refuse(busy.to_string(), StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn upload_page(kind: ImportKind, visitor: &Visitor, message: Option<Flash>, code: StatusCode) -> Response {
    let invalid = matches!(message, Some(Flash::Error(_)));
    let body = html! {
        h1 { (title(kind)) }
        p.lead {
            "Add " (kind.noun(2)) " from a CSV file. You will see the first rows and choose which field each column "
            "goes to before anything is imported."
        }
        (flash(message.as_ref()))
        form.card method="post" action=(base(kind)) enctype="multipart/form-data" {
            (csrf_field(visitor))
            div.field {
                label for="f-file" { "CSV file" }
                p.hint #f-file-hint {
                    "UTF-8 text with a header row first; at most " (count(MAX_ROWS)) " rows, " (MAX_COLUMNS) " columns and 32 MiB."
                }
                input #f-file type="file" name=(UPLOAD_FIELD) accept=".csv,text/csv" required
                    aria-describedby="f-file-hint" aria-invalid=[invalid.then_some("true")];
            }
            div.actions { button.primary type="submit" { "Upload and preview" } }
        }
        h2 { "What the file should look like" }
        ul.notes {
            li { "A header row naming the columns. Our own field names (" code { "first_name" } ", " code { "email" } ", "
                 code { "preferences.beds" } ") and the columns of Export CSV are matched for you; so are common names "
                 "such as First Name, E-mail, Phone Number or Postcode. You can change every match." }
            @match kind {
                ImportKind::Contacts => li { "Each row needs a first name, last name, email or phone. Tags and "
                    "preferred locations are separated by semicolons: " code { "buyer; first-time" } "." }
                ImportKind::Leads => li { "Each lead belongs to a contact: a " code { "contact_id" } " column gives the id "
                    "of an existing contact (the " code { "id" } " column of Export CSV). Import the contacts first." }
            }
            li { "Rows go in batches of " (count(BATCH_ROWS)) ", each all or nothing, as with the bulk API. A row "
                 "that fails the checks is left out and named in the summary with its line; the other rows go in. "
                 "Each new record sends its webhook." }
        }
        @if kind == ImportKind::Contacts {
            p { "To try it, download " a href="/contacts/import/sample.csv" download { "a sample file of 300 made-up contacts" }
                " and upload it here." }
        }
        p {
            @match kind {
                ImportKind::Contacts => a href="/leads/import" { "Import leads instead" },
                ImportKind::Leads => a href="/contacts/import" { "Import contacts instead" },
            }
        }
    };
    (code, shell(title(kind), Some(visitor), section(kind), body)).into_response()
}

// --- the mapping step and the progress ---

/// `?partial=status`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct JobQuery {
    partial: Option<String>,
}

/// `GET /contacts/import/{id}`.
pub async fn contacts_job(
    State(state): State<WebState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Response {
    job_page(ImportKind::Contacts, state, visitor, id, query).await
}

/// `GET /leads/import/{id}`.
pub async fn leads_job(
    State(state): State<WebState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Response {
    job_page(ImportKind::Leads, state, visitor, id, query).await
}

/// `POST /contacts/import/{id}`.
pub async fn start_contacts(State(state): State<WebState>, Path(id): Path<String>, form: ChangeForm) -> Response {
    start(ImportKind::Contacts, state, id, form).await
}

/// `POST /leads/import/{id}`.
pub async fn start_leads(State(state): State<WebState>, Path(id): Path<String>, form: ChangeForm) -> Response {
    start(ImportKind::Leads, state, id, form).await
}

async fn job_page(kind: ImportKind, state: WebState, visitor: Visitor, id: String, query: JobQuery) -> Response {
    // Someone else's import is as absent as one that never was.
    let Some(found) = state.imports().find(&actor(&visitor), kind, &id) else {
        return gone_page(kind, &visitor);
    };
    match (found, query.partial.as_deref()) {
        (Found::Started(job), Some("status")) => status_part(kind, &id, &job, &job.progress()).into_response(),
        (Found::Started(job), _) => progress_page(kind, &visitor, &id, &job),
        (Found::Waiting(upload), _) => {
            let chosen = mapping::guess_all(kind, &upload.file.headers);
            mapping_page(kind, &visitor, &id, &upload, &chosen, None)
        }
    }
}

fn gone_page(kind: ImportKind, visitor: &Visitor) -> Response {
    let body = html! {
        h1 { "This import is not here" }
        p { "Uploaded files wait 30 minutes for their columns to be matched, and an import's summary is kept for "
            "a day (or until the server restarts). Only the person who started an import, and administrators, can see it." }
        p { a href=(base(kind)) { "Upload a file" } }
    };
    (StatusCode::NOT_FOUND, shell("Import not found", Some(visitor), section(kind), body)).into_response()
}

async fn start(kind: ImportKind, state: WebState, id: String, ChangeForm { visitor, form }: ChangeForm) -> Response {
    let actor = actor(&visitor);
    let upload = match state.imports().find(&actor, kind, &id) {
        Some(Found::Waiting(upload)) => upload,
        // Sent twice (a double click, the back button): the import already runs.
        Some(Found::Started(_)) => return Redirect::to(&format!("{}/{id}", base(kind))).into_response(),
        None => return gone_page(kind, &visitor),
    };
    let headers = &upload.file.headers;
    let chosen: Vec<Target> = (0..headers.len())
        .map(|column| mapping::target_named(kind, form.get(&column_field(column))).unwrap_or(Target::Ignore))
        .collect();
    let mapping = match Mapping::new(chosen.clone(), headers) {
        Ok(mapping) => mapping,
        Err(message) => return mapping_page(kind, &visitor, &id, &upload, &chosen, Some(message)),
    };
    match state.imports().start(Arc::clone(state.store()), actor, kind, &id, mapping) {
        // Gone: started by a second press a moment ago, or expired; its page says which.
        Ok(_) | Err(Busy::Gone) => Redirect::to(&format!("{}/{id}", base(kind))).into_response(),
        Err(busy) => mapping_page(kind, &visitor, &id, &upload, &chosen, Some(busy.to_string())),
    }
}

fn column_field(column: usize) -> String {
    format!("column-{column}")
}

fn mapping_page(
    kind: ImportKind,
    visitor: &Visitor,
    id: &str,
    upload: &Upload,
    chosen: &[Target],
    error: Option<String>,
) -> Response {
    let file = &upload.file;
    let rows = file.row_count;
    let page_title = format!("{}: match the columns", title(kind));
    let message = error.clone().map(Flash::Error);
    let body = html! {
        h1 { (page_title) }
        p.lead {
            @if !upload.file_name.is_empty() { strong { (upload.file_name) } " has " } @else { "The file has " }
            (count(rows)) " " @if rows == 1 { "row" } @else { "rows" } ". Choose the field each column goes to; "
            "nothing is imported until you press Import."
        }
        (flash(message.as_ref()))
        form method="post" action=(format!("{}/{id}", base(kind))) {
            (csrf_field(visitor))
            div.table-wrap {
                table #mapping {
                    caption.visually-hidden { "Columns of the file and the field each goes to" }
                    thead { tr {
                        th scope="col" { "Column in the file" }
                        th scope="col" { "First values" }
                        th scope="col" { "Imported as" }
                    } }
                    tbody {
                        @for (column, header) in file.headers.iter().enumerate() {
                            @let select_id = column_field(column);
                            tr {
                                th scope="row" {
                                    label for=(select_id) {
                                        @if header.is_empty() { "(column " (column + 1) ", no name)" } @else { (cut(header)) }
                                    }
                                }
                                td.samples { (samples(file.samples.get(column))) }
                                td {
                                    (target_select(kind, &select_id, chosen.get(column).copied().unwrap_or(Target::Ignore), error.is_some()))
                                }
                            }
                        }
                    }
                }
            }
            div.actions {
                button.primary type="submit" { "Import " (count(rows)) " " (kind.noun(rows)) }
                a.button-link href=(base(kind)) { "Choose another file" }
            }
        }
        h2 #preview-heading { "The first " (file.preview.len()) " rows" }
        // A wide file scrolls sideways: the region takes focus so a keyboard can scroll it too.
        div.table-wrap tabindex="0" role="region" aria-labelledby="preview-heading" {
            table #preview {
                thead { tr {
                    th scope="col" { "Line" }
                    @for header in &file.headers { th scope="col" { (cut(header)) } }
                } }
                tbody {
                    @for row in &file.preview {
                        tr {
                            td { (row.line) }
                            @for cell in &row.cells { td { (cut(cell)) } }
                        }
                    }
                }
            }
        }
    };
    let code = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    (code, shell(&page_title, Some(visitor), section(kind), body)).into_response()
}

/// The first few non-empty values of a column.
fn samples(values: Option<&Vec<String>>) -> String {
    match values {
        Some(values) if !values.is_empty() => values.iter().map(|value| cut(value)).collect::<Vec<_>>().join(" · "),
        _ => "(empty)".to_owned(),
    }
}

fn target_select(kind: ImportKind, id: &str, chosen: Target, invalid: bool) -> Markup {
    html! {
        select #(id) name=(id) aria-invalid=[(invalid && chosen != Target::Ignore).then_some("true")] {
            @for target in mapping::targets(kind) {
                option value=(target.name()) selected[target == chosen] {
                    (target.label())
                }
            }
        }
    }
}

fn progress_page(kind: ImportKind, visitor: &Visitor, id: &str, job: &Job) -> Response {
    let progress = job.progress();
    let over = progress.phase.is_over();
    // The heading stays as it is while the part below it follows the import.
    let page_title = match job.file_name.as_str() {
        "" => title(kind).to_owned(),
        name => format!("{} from {name}", title(kind)),
    };
    let live = (!over).then(|| format!("{}/{id}?partial=status", base(kind)));
    let body = html! {
        h1 { (page_title) }
        div #import-status data-live=[live] aria-live="polite" {
            (status_part(kind, id, job, &progress))
        }
    };
    // Without the script, the page reloads itself every 2 seconds until the import is over.
    let head = html! {
        @if !over { noscript { meta http-equiv="refresh" content="2"; } }
    };
    shell_with_head(&page_title, Some(visitor), section(kind), head, body).into_response()
}

/// The progress bar, then the summary once the import is over: the part the script refreshes.
fn status_part(kind: ImportKind, id: &str, job: &Job, progress: &Progress) -> Markup {
    let over = progress.phase.is_over();
    html! {
        p #import-progress-label {
            @match progress.phase {
                Phase::Queued => "Waiting for another import to finish. ",
                _ => "",
            }
            strong { (count(progress.rows_done)) } " of " (count(job.total)) " rows done"
        }
        progress #import-progress max=(job.total) value=(progress.rows_done) aria-labelledby="import-progress-label" {
            (count(progress.rows_done)) " of " (count(job.total))
        }
        @if over {
            div #import-summary data-live-end {
                (summary(kind, progress))
            }
        } @else {
            p.hint { "This page follows the import by itself. " a href=(format!("{}/{id}", base(kind))) { "Refresh" } }
        }
    }
}

fn summary(kind: ImportKind, progress: &Progress) -> Markup {
    let applied = progress.batches.iter().filter(|b| matches!(b.outcome, BatchOutcome::Applied { .. })).count();
    let not_applied: Vec<&Batch> =
        progress.batches.iter().filter(|b| matches!(b.outcome, BatchOutcome::NotApplied { .. })).collect();
    let tone = match (progress.imported, progress.refused_rows == 0 && not_applied.is_empty()) {
        (_, true) => "flash ok",
        (0, false) => "flash error",
        (_, false) => "flash warn",
    };
    let took = match progress.phase {
        Phase::Finished { took_ms } => super::duration_text(took_ms),
        _ => String::new(),
    };
    html! {
        div class=(tone) role="status" {
            (count(progress.imported)) " " (kind.noun(progress.imported)) " imported"
            @if progress.refused_rows > 0 {
                "; " (count(progress.refused_rows)) " " @if progress.refused_rows == 1 { "row" } @else { "rows" } " refused"
            }
            @if !not_applied.is_empty() {
                "; " (not_applied.len()) " " @if not_applied.len() == 1 { "batch" } @else { "batches" } " not applied"
            }
            "."
        }
        dl.facts #import-counts {
            dt { (title_case(kind.noun(2))) " imported" } dd #imported-count { (count(progress.imported)) }
            dt { "Rows refused" } dd #refused-count { (count(progress.refused_rows)) }
            dt { "Batches applied" } dd #batches-applied { (applied) " of " (progress.batches.len()) }
            dt { "Time taken" } dd { (took) }
        }
        h2 { "Batches" }
        div.table-wrap {
            table #import-batches {
                thead { tr { th scope="col" { "Batch" } th scope="col" { "Lines" } th scope="col" { "Result" } } }
                tbody {
                    @for batch in &progress.batches {
                        tr data-applied=(matches!(batch.outcome, BatchOutcome::Applied { .. })) {
                            td { (batch.number) }
                            td { (batch.first_line) "–" (batch.last_line) }
                            td { (batch_result(kind, batch)) }
                        }
                    }
                }
            }
        }
        @if !progress.refused.is_empty() {
            h2 { "Refused rows" }
            p.hint { "These rows were left out; the other rows of their batch went in. Fix them in the file and "
                     "import those rows again." }
            (problem_table("refused-rows", &progress.refused))
            @if progress.refused.len() >= MAX_LISTED {
                p { "Only the first " (count(MAX_LISTED)) " problems are listed." }
            }
        }
        p.row-actions {
            a href=(format!("/{}", kind.plural())) { "Go to " (kind.noun(2)) }
            a href=(base(kind)) { "Import another file" }
        }
    }
}

fn batch_result(kind: ImportKind, batch: &Batch) -> Markup {
    html! {
        @match &batch.outcome {
            BatchOutcome::Applied { imported } => {
                span.badge.status-succeeded { "applied" } " " (count(*imported)) " " (kind.noun(*imported))
            }
            BatchOutcome::NothingToWrite => {
                span.badge { "nothing to write" } " every row was refused"
            }
            BatchOutcome::NotApplied { rows, problems, reason } => {
                span.badge.status-failed { "not applied" }
                " " (count(*rows)) " valid " @if *rows == 1 { "row was" } @else { "rows were" } " not written, because:"
                @if let Some(reason) = reason { p { (reason) } }
                @if !problems.is_empty() { (problem_table(&format!("batch-{}-problems", batch.number), problems)) }
                p.hint { "Fix them, then import lines " (batch.first_line) "–" (batch.last_line) " again." }
            }
        }
    }
}

fn problem_table(id: &str, problems: &[Problem]) -> Markup {
    // The store's messages name a row and a field, not the cell: no column of values for them.
    let values = problems.iter().any(|problem| problem.value.is_some());
    html! {
        div.table-wrap {
            table id=(id) {
                thead { tr {
                    th scope="col" { "Line" } th scope="col" { "Field" } th scope="col" { "Why" }
                    @if values { th scope="col" { "In the file" } }
                } }
                tbody {
                    @for problem in problems {
                        tr data-line=(problem.line) {
                            td { (problem.line) }
                            td { code { (problem.field) } }
                            td { (problem.message) }
                            @if values {
                                td.value {
                                    @match problem.value.as_deref() {
                                        Some("") => span.empty { "(empty)" },
                                        Some(value) => (cut(value)),
                                        None => "",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor() -> Visitor {
        let user = estate_crm_store::User {
            id: "usr_1".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            role: estate_crm_store::Role::Agent,
        };
        Visitor { user, csrf: "token".into(), session_hash: "hash".into() }
    }

    async fn html_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("a page");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn a_running_import_refreshes_itself_without_the_script_and_offers_a_refresh_link() {
        let job = Job::new("new.csv".into(), 2_500);
        let html = html_of(progress_page(ImportKind::Contacts, &visitor(), "abc", &job)).await;
        assert!(html.contains(r#"<noscript><meta http-equiv="refresh" content="2"></noscript>"#), "{html}");
        assert!(html.contains(r#"data-live="/contacts/import/abc?partial=status""#), "{html}");
        assert!(html.contains(r#"<a href="/contacts/import/abc">Refresh</a>"#), "{html}");
        assert!(html.contains("Waiting for another import to finish."), "{html}");
        assert!(html.contains(r#"<progress id="import-progress" max="2500" value="0""#), "{html}");
        assert!(!html.contains("data-live-end"), "a running import has no end yet");
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(2_500), "2,500");
        assert_eq!(count(100_000), "100,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
