//! Uploads waiting for their mapping and the imports running in the background, each with a bound
//! and an expiry, and the import itself: rows checked with the domain's own validation, then
//! written in batches of 10,000 through `Store::bulk`, all or nothing per batch as the bulk API is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use estate_crm_domain::{FieldErrors, RecordKind, change, normalize_email};
use estate_crm_store::{Actor, BulkOp, ErrorKind, Store, StoreError};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::ImportKind;
use super::csv_file::{CsvFile, CsvRow, Rows};
use super::mapping::Mapping;

/// Rows per `Store::bulk` call: the bulk API's own limit, so a batch is what one request could be.
pub const BATCH_ROWS: usize = 10_000;
/// Uploads kept waiting for their mapping at once (each holds its file, up to 32 MiB, in memory).
const MAX_WAITING: usize = 8;
/// How long an upload waits for its mapping.
const WAITING_FOR: Duration = Duration::from_secs(30 * 60);
/// Imports kept at once, queued, running or finished (a finished one for its summary).
const MAX_JOBS: usize = 32;
/// How long a finished import's summary is kept.
const SUMMARY_FOR: Duration = Duration::from_secs(24 * 3600);
/// Imports that write at once; others queue. The writer is one thread, so more would only wait there.
const RUNNING_AT_ONCE: usize = 2;
/// Refused rows listed in a summary; beyond it they are counted only.
pub const MAX_LISTED: usize = 1_000;

/// Uploads and imports, shared by every page. Cheap to clone.
#[derive(Clone)]
pub struct Imports {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    running: Arc<Semaphore>,
}

impl Default for Imports {
    fn default() -> Self {
        Imports { entries: Arc::default(), running: Arc::new(Semaphore::new(RUNNING_AT_ONCE)) }
    }
}

struct Entry {
    owner: String,
    kind: ImportKind,
    since: Instant,
    state: EntryState,
}

enum EntryState {
    Waiting(Arc<Upload>),
    Started(Arc<Job>),
}

/// A file that was read and waits for its mapping.
#[derive(Debug)]
pub struct Upload {
    /// The file's name as the browser gave it.
    pub file_name: String,
    /// The checked file.
    pub file: CsvFile,
}

/// What a page may show of an id.
pub enum Found {
    /// The file waits for its mapping.
    Waiting(Arc<Upload>),
    /// The import was started.
    Started(Arc<Job>),
}

/// Why an upload or an import cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// Too many files wait for their mapping.
    TooManyWaiting,
    /// Too many imports are queued or running.
    TooManyJobs,
    /// The upload is gone (expired, or already started).
    Gone,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Busy::TooManyWaiting => {
                "Too many uploaded files are waiting for their columns to be matched. Try again in a few minutes."
            }
            Busy::TooManyJobs => "Too many imports are running or queued. Try again when one has finished.",
            Busy::Gone => "This upload is no longer waiting (files wait 30 minutes). Upload the file again.",
        })
    }
}

impl Imports {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; the map stays usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps an uploaded file until it is mapped; answers its id.
    pub fn add_upload(&self, owner: &str, kind: ImportKind, upload: Upload) -> Result<String, Busy> {
        let mut entries = self.lock();
        forget_expired(&mut entries);
        let waiting = entries.values().filter(|e| matches!(e.state, EntryState::Waiting(_))).count();
        if waiting >= MAX_WAITING {
            return Err(Busy::TooManyWaiting);
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let state = EntryState::Waiting(Arc::new(upload));
        entries.insert(id.clone(), Entry { owner: owner.to_owned(), kind, since: Instant::now(), state });
        Ok(id)
    }

    /// The upload or import `id` of this kind, if `actor` started it or is an administrator.
    pub fn find(&self, actor: &Actor, kind: ImportKind, id: &str) -> Option<Found> {
        let mut entries = self.lock();
        forget_expired(&mut entries);
        let entry = entries.get(id).filter(|e| e.kind == kind && may_see(actor, &e.owner))?;
        Some(match &entry.state {
            EntryState::Waiting(upload) => Found::Waiting(Arc::clone(upload)),
            EntryState::Started(job) => Found::Started(Arc::clone(job)),
        })
    }

    /// Starts importing upload `id` with `mapping` in the background, as `actor`.
    pub fn start(
        &self,
        store: Arc<dyn Store>,
        actor: Actor,
        kind: ImportKind,
        id: &str,
        mapping: Mapping,
    ) -> Result<Arc<Job>, Busy> {
        let (upload, job) = {
            let mut entries = self.lock();
            forget_expired(&mut entries);
            let jobs = entries.values().filter(|e| matches!(e.state, EntryState::Started(_))).count();
            let entry =
                entries.get_mut(id).filter(|e| e.kind == kind && may_see(&actor, &e.owner)).ok_or(Busy::Gone)?;
            let EntryState::Waiting(upload) = &entry.state else {
                return Err(Busy::Gone);
            };
            if jobs >= MAX_JOBS {
                return Err(Busy::TooManyJobs);
            }
            let upload = Arc::clone(upload);
            let job = Arc::new(Job::new(upload.file_name.clone(), upload.file.row_count));
            entry.state = EntryState::Started(Arc::clone(&job));
            entry.since = Instant::now();
            (upload, job)
        };
        let running = Arc::clone(&self.running);
        let run = Run { store, actor, kind, mapping, job: Arc::clone(&job), contacts: HashMap::new() };
        tokio::spawn(async move {
            // The semaphore is never closed, so a permit always comes.
            let Ok(_permit) = running.acquire().await else { return };
            run.job.update(|progress| progress.phase = Phase::Running);
            run.rows(upload).await;
        });
        Ok(job)
    }
}

fn may_see(actor: &Actor, owner: &str) -> bool {
    actor.role == estate_crm_store::Role::Admin || actor.user_id == owner
}

/// Drops uploads past their wait and finished imports past their keep; a running one stays.
fn forget_expired(entries: &mut HashMap<String, Entry>) {
    entries.retain(|_, entry| match &entry.state {
        EntryState::Waiting(_) => entry.since.elapsed() < WAITING_FOR,
        EntryState::Started(job) => !job.is_over() || entry.since.elapsed() < SUMMARY_FOR,
    });
    // When too many finished summaries are kept, the oldest make room for new imports.
    let mut finished: Vec<(Instant, String)> = entries
        .iter()
        .filter(|(_, e)| matches!(&e.state, EntryState::Started(job) if job.is_over()))
        .map(|(id, e)| (e.since, id.clone()))
        .collect();
    let started = entries.values().filter(|e| matches!(e.state, EntryState::Started(_))).count();
    if started >= MAX_JOBS {
        finished.sort();
        for (_, id) in finished.into_iter().take(started + 1 - MAX_JOBS) {
            entries.remove(&id);
        }
    }
}

/// An import: how far it is and what became of each row.
#[derive(Debug)]
pub struct Job {
    /// The file's name as the browser gave it.
    pub file_name: String,
    /// Data rows in the file.
    pub total: usize,
    progress: Mutex<Progress>,
}

/// Where an import is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for another import to finish.
    Queued,
    /// Writing.
    Running,
    /// Every batch was tried, in this many milliseconds.
    Finished {
        /// From the first batch to the last.
        took_ms: u64,
    },
}

impl Phase {
    /// Whether nothing more will happen.
    pub fn is_over(&self) -> bool {
        matches!(self, Phase::Finished { .. })
    }
}

/// The state of an import, copied out for a page.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Where it is.
    pub phase: Phase,
    /// Rows checked and written or refused.
    pub rows_done: usize,
    /// Records made.
    pub imported: usize,
    /// Rows refused by the check, listed up to [`MAX_LISTED`] problems.
    pub refused: Vec<Problem>,
    /// Rows refused by the check, counted.
    pub refused_rows: usize,
    /// Each batch tried so far.
    pub batches: Vec<Batch>,
}

/// One thing wrong with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The row's line in the file.
    pub line: u64,
    /// The field (`email`, `preferences.beds`), or `row` for the row as a whole.
    pub field: String,
    /// What is wrong, in the API's words.
    pub message: String,
    /// What the file has in the field's column, when one column holds it.
    pub value: Option<String>,
}

/// A batch of up to [`BATCH_ROWS`] rows of the file.
#[derive(Debug, Clone)]
pub struct Batch {
    /// 1 for the first.
    pub number: usize,
    /// The line of its first row.
    pub first_line: u64,
    /// The line of its last row.
    pub last_line: u64,
    /// What became of it.
    pub outcome: BatchOutcome,
}

/// What became of a batch.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// Its valid rows were written together; this many records.
    Applied {
        /// Records made.
        imported: usize,
    },
    /// Every row in it was refused by the check: nothing to write.
    NothingToWrite,
    /// The store refused the batch, so none of its rows were written.
    NotApplied {
        /// The valid rows that were not written.
        rows: usize,
        /// Why: the store's message for each row it named, or one for the whole batch.
        problems: Vec<Problem>,
        /// The store's message when it named no row.
        reason: Option<String>,
    },
}

impl Job {
    pub(crate) fn new(file_name: String, total: usize) -> Job {
        let progress = Progress {
            phase: Phase::Queued,
            rows_done: 0,
            imported: 0,
            refused: Vec::new(),
            refused_rows: 0,
            batches: Vec::new(),
        };
        Job { file_name, total, progress: Mutex::new(progress) }
    }

    /// A copy of where it is now.
    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether nothing more will happen (without copying the progress).
    pub fn is_over(&self) -> bool {
        self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).phase.is_over()
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

/// One import's work.
struct Run {
    store: Arc<dyn Store>,
    actor: Actor,
    kind: ImportKind,
    mapping: Mapping,
    job: Arc<Job>,
    /// Whether each contact id a lead row named is a contact the user may see, looked up once.
    contacts: HashMap<String, bool>,
}

/// A batch after the check: the rows to write, with their lines, and the problems of the others.
struct Checked {
    /// Rows read for this batch.
    rows: usize,
    first_line: u64,
    last_line: u64,
    valid: Vec<Value>,
    lines: Vec<u64>,
    refused_rows: usize,
    problems: Vec<Problem>,
}

impl Run {
    async fn rows(mut self, upload: Arc<Upload>) {
        let started = Instant::now();
        let mut reader = Reader { rows: upload.file.rows(), emails: HashMap::new() };
        // Drop the upload here: the reader shares the file's text and is all the import needs.
        drop(upload);
        for number in 1.. {
            // Deliveries make way while a batch is read, checked and written, as for the bulk API.
            let _importing = self.store.imports().start();
            let (kind, mapping, user_id) = (self.kind, self.mapping.clone(), self.actor.user_id.clone());
            let read = tokio::task::spawn_blocking(move || {
                let checked = next_batch(&mut reader.rows)
                    .map(|batch| batch.map(|rows| check_rows(kind, &mapping, &user_id, &rows, &mut reader.emails)));
                (reader, checked)
            })
            .await;
            let checked = match read {
                Ok((back, Some(Ok(checked)))) => {
                    reader = back;
                    checked
                }
                Ok((_, None)) => break,
                Ok((_, Some(Err(reason)))) => {
                    self.give_up(number, reason);
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, "checking a batch of imported rows failed");
                    self.give_up(number, "the rows could not be checked".to_owned());
                    break;
                }
            };
            self.write(number, checked).await;
        }
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.job.update(|progress| progress.phase = Phase::Finished { took_ms });
    }

    async fn write(&mut self, number: usize, mut checked: Checked) {
        if self.kind == ImportKind::Leads {
            self.refuse_unknown_contacts(&mut checked).await;
        }
        let outcome = if checked.valid.is_empty() {
            BatchOutcome::NothingToWrite
        } else {
            let count = checked.valid.len();
            match self.store.bulk(&self.actor, self.kind.record_kind(), BulkOp::Create(checked.valid)).await {
                Ok(ids) => BatchOutcome::Applied { imported: ids.len() },
                Err(err) => not_applied(&err, &checked.lines, count),
            }
        };
        let batch = Batch { number, first_line: checked.first_line, last_line: checked.last_line, outcome };
        self.finish_batch(batch, checked.rows, checked.problems, checked.refused_rows);
    }

    /// Leads whose `contact_id` names no contact the user may see are refused here, with the store's
    /// own words: the store would refuse their whole batch for them.
    async fn refuse_unknown_contacts(&mut self, checked: &mut Checked) {
        let rows = std::mem::take(&mut checked.valid).into_iter().zip(std::mem::take(&mut checked.lines));
        for (object, line) in rows {
            let id = object.get("contact_id").and_then(Value::as_str).map(str::trim).unwrap_or("").to_owned();
            if self.contact_exists(&id).await {
                checked.valid.push(object);
                checked.lines.push(line);
            } else {
                checked.refused_rows += 1;
                let message = format!("no contact has the id {id:?}");
                checked.problems.push(Problem { line, field: "contact_id".into(), message, value: Some(id) });
            }
        }
        checked.problems.sort_by_key(|problem| problem.line);
    }

    async fn contact_exists(&mut self, id: &str) -> bool {
        if let Some(known) = self.contacts.get(id) {
            return *known;
        }
        let known = match self.store.get_record(&self.actor, RecordKind::Contact, id).await {
            Ok(_) => true,
            Err(err) if matches!(err.kind(), ErrorKind::NotFound) => false,
            // Not known either way: the store decides when the batch is written.
            Err(_) => return true,
        };
        self.contacts.insert(id.to_owned(), known);
        known
    }

    /// The file could not be read on (it was read whole when uploaded, so this is not expected):
    /// the rest of it is not imported, and the summary says so.
    fn give_up(&self, number: usize, reason: String) {
        let progress = self.job.progress();
        let line = progress.batches.last().map_or(2, |batch| batch.last_line + 1);
        let reason = Some(format!("{reason}; this batch and the rest of the file were not imported"));
        let outcome = BatchOutcome::NotApplied { rows: 0, problems: Vec::new(), reason };
        self.finish_batch(Batch { number, first_line: line, last_line: line, outcome }, 0, Vec::new(), 0);
    }

    fn finish_batch(&self, batch: Batch, rows: usize, problems: Vec<Problem>, refused_rows: usize) {
        self.job.update(|progress| {
            progress.rows_done += rows;
            if let BatchOutcome::Applied { imported } = batch.outcome {
                progress.imported += imported;
            }
            progress.refused_rows += refused_rows;
            let room = MAX_LISTED.saturating_sub(progress.refused.len());
            progress.refused.extend(problems.into_iter().take(room));
            progress.batches.push(batch);
        });
    }
}

/// Where an import is in its file.
struct Reader {
    rows: Rows,
    /// Each contact email met so far (as the store compares them) and its line.
    emails: HashMap<String, u64>,
}

/// The next [`BATCH_ROWS`] rows; `None` at the end of the file.
fn next_batch(rows: &mut Rows) -> Option<Result<Vec<CsvRow>, String>> {
    let batch: Result<Vec<CsvRow>, _> = rows.by_ref().take(BATCH_ROWS).collect();
    match batch {
        Ok(batch) if batch.is_empty() => None,
        Ok(batch) => Some(Ok(batch)),
        Err(problem) => Some(Err(problem.to_string())),
    }
}

/// Each row made into the API's object and checked as the bulk path checks it (the domain's
/// `change::create`), so that a refused row is named here with its line rather than failing the
/// batch it is in.
///
/// A contact whose email an earlier row of the file has is refused here too: the store would refuse
/// the whole batch for it, and spreadsheets often hold the same person twice.
fn check_rows(
    kind: ImportKind,
    mapping: &Mapping,
    user_id: &str,
    rows: &[CsvRow],
    emails: &mut HashMap<String, u64>,
) -> Checked {
    let now = chrono::Utc::now();
    let mut checked = Checked {
        rows: rows.len(),
        first_line: rows.first().map_or(0, |row| row.line),
        last_line: rows.last().map_or(0, |row| row.line),
        valid: Vec::new(),
        lines: Vec::new(),
        refused_rows: 0,
        problems: Vec::new(),
    };
    for row in rows {
        let object = mapping.to_object(kind, &row.cells);
        match change::create(kind.record_kind(), &object, String::new(), user_id, now) {
            Ok(record) => match record.get_str("email").filter(|_| kind == ImportKind::Contacts) {
                Some(email) if emails.contains_key(&normalize_email(email)) => {
                    let first = emails[&normalize_email(email)];
                    let message = format!("is also on line {first}; each contact's email must be unique");
                    let errors = FieldErrors::single("email", message);
                    checked.refused_rows += 1;
                    checked.problems.extend(problems_of(row, &errors, mapping));
                }
                email => {
                    if let Some(email) = email {
                        emails.insert(normalize_email(email), row.line);
                    }
                    checked.valid.push(object);
                    checked.lines.push(row.line);
                }
            },
            Err(errors) => {
                checked.refused_rows += 1;
                checked.problems.extend(problems_of(row, &errors, mapping));
            }
        }
    }
    checked
}

fn problems_of<'a>(
    row: &'a CsvRow,
    errors: &'a FieldErrors,
    mapping: &'a Mapping,
) -> impl Iterator<Item = Problem> + 'a {
    errors.fields().iter().map(move |(field, message)| Problem {
        line: row.line,
        field: field.clone(),
        message: message.clone(),
        // Enough of the value to recognise it; the page cuts it shorter still.
        value: mapping.column_of(field).and_then(|column| row.cells.get(column)).map(|v| v.chars().take(200).collect()),
    })
}

/// A batch the store refused: its per-row messages (`create[3].email`) put back on their lines.
fn not_applied(err: &StoreError, lines: &[u64], rows: usize) -> BatchOutcome {
    let errors = match err.kind() {
        ErrorKind::Invalid(errors) | ErrorKind::Conflict(errors) => Some(errors),
        _ => None,
    };
    let mut problems = Vec::new();
    let mut unplaced = Vec::new();
    for (path, message) in errors.map(FieldErrors::fields).into_iter().flatten() {
        match row_of(path).and_then(|(index, field)| Some((*lines.get(index)?, field))) {
            Some((line, field)) => {
                problems.push(Problem { line, field: field.to_owned(), message: message.clone(), value: None })
            }
            None => unplaced.push(format!("{path}: {message}")),
        }
    }
    if errors.is_none() {
        tracing::error!(error = %err, "the store refused an import batch");
        unplaced.push("the server could not write it (its log says why); import these rows again".to_owned());
    }
    problems.truncate(MAX_LISTED);
    let reason = (!unplaced.is_empty()).then(|| unplaced.join("; "));
    BatchOutcome::NotApplied { rows, problems, reason }
}

/// `create[3].email` → (3, `email`).
fn row_of(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("create[")?;
    let (index, field) = rest.split_once("]")?;
    Some((index.parse().ok()?, field.strip_prefix('.').unwrap_or("row")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::mapping::guess_all;

    fn upload() -> Upload {
        let file = crate::import::csv_file::parse(b"first_name\nAda\n").expect("a good file");
        Upload { file_name: "a.csv".into(), file }
    }

    fn actor(user_id: &str, role: estate_crm_store::Role) -> Actor {
        Actor { user_id: user_id.into(), role }
    }

    #[test]
    fn an_upload_is_seen_by_its_owner_and_admins_only_and_waiting_ones_are_bounded() {
        use estate_crm_store::Role;
        let imports = Imports::default();
        let id = imports.add_upload("usr_a", ImportKind::Contacts, upload()).expect("room for one");
        assert!(matches!(
            imports.find(&actor("usr_a", Role::Agent), ImportKind::Contacts, &id),
            Some(Found::Waiting(_))
        ));
        assert!(imports.find(&actor("usr_admin", Role::Admin), ImportKind::Contacts, &id).is_some());
        assert!(imports.find(&actor("usr_b", Role::Agent), ImportKind::Contacts, &id).is_none(), "another agent");
        assert!(imports.find(&actor("usr_a", Role::Agent), ImportKind::Leads, &id).is_none(), "another kind's page");
        for _ in 1..MAX_WAITING {
            imports.add_upload("usr_a", ImportKind::Contacts, upload()).expect("room");
        }
        assert_eq!(imports.add_upload("usr_c", ImportKind::Contacts, upload()), Err(Busy::TooManyWaiting));
    }

    #[test]
    fn store_paths_go_back_to_their_rows() {
        assert_eq!(row_of("create[3].email"), Some((3, "email")));
        assert_eq!(row_of("create[12].preferences.beds"), Some((12, "preferences.beds")));
        assert_eq!(row_of("body"), None);
    }

    #[test]
    fn refused_rows_are_named_by_line_and_field_and_the_rest_go_on() {
        let headers: Vec<String> = ["first_name", "email", "status"].map(String::from).to_vec();
        let mapping = Mapping::new(guess_all(ImportKind::Contacts, &headers), &headers).expect("a mapping");
        let row = |line, cells: [&str; 3]| CsvRow { line, cells: cells.map(String::from).to_vec() };
        let rows = [
            row(2, ["Ada", "ada@example.com", "VIP"]),
            row(3, ["Bob", "not-an-email", ""]),
            row(4, ["Cy", "", "Gold"]),
            row(5, ["", "", ""]),
            row(6, ["Ada again", " ADA@example.com", ""]),
        ];
        let mut emails = HashMap::new();
        let checked = check_rows(ImportKind::Contacts, &mapping, "usr_1", &rows, &mut emails);
        assert_eq!(checked.lines, [2]);
        assert_eq!(checked.refused_rows, 4);
        let named: Vec<(u64, &str)> = checked.problems.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(named, [(3, "email"), (4, "status"), (5, "first_name"), (6, "email")]);
        assert_eq!(checked.problems[3].message, "is also on line 2; each contact's email must be unique");
        let next =
            check_rows(ImportKind::Contacts, &mapping, "usr_1", &[row(9, ["A", "ada@example.com", ""])], &mut emails);
        assert_eq!(next.refused_rows, 1, "an email from an earlier batch is remembered");
        assert!(checked.problems[1].message.contains("Active, Inactive, VIP, Blocked"));
    }
}
