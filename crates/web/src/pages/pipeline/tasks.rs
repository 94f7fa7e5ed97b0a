//! `/tasks`: my open tasks, soonest due first so that overdue ones lead, each with a box that
//! completes it (a form per task: without a script, tick and press **Save**; with it, ticking is
//! enough and the row changes in place). Completing goes through `update_record` with
//! `{"completed": true}`, the same call as `POST /api/v1/tasks/{id}/complete`, so it fires
//! `task.completed`. Completed tasks are behind a toggle; admins also have every task.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use estate_crm_domain::{Record, RecordKind};
use estate_crm_store::{PageRequest, RecordQuery, Scope};
use maud::{Markup, html};
use serde_json::json;

use super::form::{Widget, field, hinted};
use super::screen::{SavedQuery, Screen};
use super::{PAGE, actor, contact_link, contact_names, escape, local_path};
use crate::WebState;
use crate::pages::webhooks::wants_fragment;
use crate::pages::{Flash, Section, csrf_field, error_page, flash, shell};
use crate::session::{ChangeForm, Visitor};

/// The task pages.
pub static SCREEN: Screen = Screen {
    kind: RecordKind::Task,
    singular: "task",
    fields: &[
        field("title", "Title", Widget::Text),
        hinted("due_date", "Due", Widget::DateOrTime, "A date; a task due at a set time keeps its time."),
        field("assigned_agent_id", "Agent", Widget::Agent),
        field("notes", "Notes", Widget::Area),
        field("completed", "Done", Widget::Check),
    ],
    name: task_name,
};

fn task_name(task: &Record, _contact: Option<&str>) -> String {
    task.get_str("title").map_or_else(|| format!("Task {}", task.id), str::to_owned)
}

/// Which tasks `/tasks` shows.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TaskView {
    /// `all`: every task (admins); otherwise mine.
    #[serde(default)]
    whose: String,
    /// `1`: the completed ones.
    #[serde(default)]
    done: String,
    #[serde(default)]
    offset: usize,
    cursor: Option<String>,
    deleted: Option<String>,
}

impl TaskView {
    fn scope(&self, visitor: &Visitor) -> Scope {
        if self.whose == "all" && visitor.is_admin() { Scope::Visible } else { Scope::Mine }
    }

    fn link(whose: Scope, done: bool) -> String {
        let whose = if whose == Scope::Visible { "all" } else { "mine" };
        format!("/tasks?whose={whose}&done={}", if done { "1" } else { "" })
    }
}

/// The day, `YYYY-MM-DD`, and moment now, to tell overdue tasks.
pub struct Today {
    date: String,
    now: chrono::DateTime<chrono::Utc>,
}

impl Today {
    /// Now.
    pub fn now() -> Today {
        let now = chrono::Utc::now();
        Today { date: now.format("%Y-%m-%d").to_string(), now }
    }

    /// Whether an open task is past its due date (a date is due by the end of that day).
    pub fn is_overdue(&self, task: &Record) -> bool {
        let Some(due) = task.get_str("due_date") else { return false };
        if task.get("completed").and_then(serde_json::Value::as_bool) == Some(true) {
            return false;
        }
        match chrono::DateTime::parse_from_rfc3339(due) {
            Ok(at) => at < self.now,
            Err(_) => due < self.date.as_str(),
        }
    }
}

/// One task's row: the box that completes it, its title, due date, contact.
pub fn task_row(
    visitor: &Visitor,
    task: &Record,
    names: &HashMap<String, String>,
    today: &Today,
    back: &str,
) -> Markup {
    let done = task.get("completed").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let title = task_name(task, None);
    let box_id = format!("done-{}", task.id);
    html! {
        tr data-record-id=(task.id) data-done=(done) .done[done] {
            td {
                form.task-done method="post" action=(format!("/tasks/{}/complete", task.id)) {
                    (csrf_field(visitor))
                    input type="hidden" name="set" value="1";
                    input type="hidden" name="back" value=(back);
                    input type="checkbox" id=(box_id) name="done" value="on" checked[done];
                    label.visually-hidden for=(box_id) { "Done: " (title) }
                    button.secondary.small.task-save type="submit" { "Save" }
                }
            }
            td.task-title { a href=(format!("/tasks/{}", task.id)) { (title) } }
            td {
                @if let Some(due) = task.get_str("due_date") {
                    (due)
                    @if today.is_overdue(task) { " " span.badge.status-failed { "overdue" } }
                } @else { span.sub { "no date" } }
            }
            td { (contact_link(task, names)) }
        }
    }
}

/// The tasks table's head.
pub fn tasks_head() -> Markup {
    html! {
        thead { tr { th scope="col" { "Done" } th scope="col" { "Task" } th scope="col" { "Due" } th scope="col" { "Contact" } } }
    }
}

/// `GET /tasks`.
pub async fn list(State(state): State<WebState>, visitor: Visitor, Query(view): Query<TaskView>) -> Response {
    let actor = actor(&visitor);
    let scope = view.scope(&visitor);
    let showing_done = view.done == "1";
    let (tasks, next) = if showing_done {
        let query = RecordQuery::new(scope).with("completed", true);
        match state
            .store()
            .find_records(&actor, RecordKind::Task, query, PageRequest { limit: PAGE, cursor: view.cursor.clone() })
            .await
        {
            Ok(page) => {
                let next = page.next_cursor.map(|c| format!("{}&cursor={}", TaskView::link(scope, true), escape(&c)));
                (page.items, next)
            }
            Err(err) => return error_page::store(&visitor, &err),
        }
    } else {
        match state.store().due_tasks(&actor, scope, view.offset.min(100_000), PAGE).await {
            Ok(page) => {
                let next = page.next_offset.map(|o| format!("{}&offset={o}", TaskView::link(scope, false)));
                (page.items, next)
            }
            Err(err) => return error_page::store(&visitor, &err),
        }
    };
    let names = match contact_names(&state, &visitor, &tasks).await {
        Ok(names) => names,
        Err(err) => return error_page::store(&visitor, &err),
    };
    let today = Today::now();
    let back = TaskView::link(scope, showing_done);
    let heading = match (scope, showing_done) {
        (Scope::Visible, false) => "All open tasks",
        (Scope::Visible, true) => "All completed tasks",
        (Scope::Mine, false) => "My tasks",
        (Scope::Mine, true) => "My completed tasks",
    };
    let current = |tab: Scope, done: bool| (scope == tab && showing_done == done).then_some("page");
    let message = view.deleted.as_ref().map(|_| Flash::Ok("The task was deleted.".to_owned()));
    let body = html! {
        div.heading-row {
            h1 { (heading) }
            a.button-link href="/tasks/new" { "New task" }
        }
        (flash(message.as_ref()))
        nav.tabs aria-label="Which tasks" {
            ul {
                li { a href=(TaskView::link(Scope::Mine, false)) aria-current=[current(Scope::Mine, false)] { "Open" } }
                li { a href=(TaskView::link(Scope::Mine, true)) aria-current=[current(Scope::Mine, true)] { "Completed" } }
                @if visitor.is_admin() {
                    li { a href=(TaskView::link(Scope::Visible, false)) aria-current=[current(Scope::Visible, false)] { "All open" } }
                    li { a href=(TaskView::link(Scope::Visible, true)) aria-current=[current(Scope::Visible, true)] { "All completed" } }
                }
            }
        }
        @if tasks.is_empty() {
            p.empty { @if showing_done { "No completed task yet." } @else { "Nothing to do: no open task." } }
        } @else {
            @if !showing_done { p.lead { "Soonest due first, so overdue tasks lead. Tick a task to complete it." } }
            div.table-wrap {
                table #tasks {
                    caption.visually-hidden { (heading) }
                    (tasks_head())
                    tbody { @for task in &tasks { (task_row(&visitor, task, &names, &today, &back)) } }
                }
            }
        }
        @if let Some(next) = next { p.pager { a href=(next) { "More tasks" } } }
    };
    shell(heading, Some(&visitor), Section::Records(RecordKind::Task), body).into_response()
}

/// `POST /tasks/{id}/complete`: ticked completes it (`task.completed`), unticked opens it again.
/// A script's request gets the task's new row; a form's, the page it came from.
pub async fn complete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    // A form without `set` (an older page) means "complete it".
    let done = !form.has("set") || form.has("done");
    let task = match state
        .store()
        .update_record(&actor(&visitor), RecordKind::Task, &id, json!({ "completed": done }))
        .await
    {
        Ok(task) => task,
        Err(err) => return error_page::store(&visitor, &err),
    };
    if wants_fragment(&headers) {
        let names = contact_names(&state, &visitor, std::slice::from_ref(&task)).await.unwrap_or_default();
        return task_row(&visitor, &task, &names, &Today::now(), form.get("back")).into_response();
    }
    Redirect::to(local_path(form.get("back"), "/tasks")).into_response()
}

/// `GET /tasks/new?contact_id=`.
pub async fn new_page(State(state): State<WebState>, visitor: Visitor, Query(query): Query<SavedQuery>) -> Response {
    super::screen::new_page(&SCREEN, &state, &visitor, &query).await
}

/// `POST /tasks`.
pub async fn create(State(state): State<WebState>, ChangeForm { visitor, form }: ChangeForm) -> Response {
    super::screen::create(&SCREEN, &state, &visitor, &form).await
}

/// `GET /tasks/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    visitor: Visitor,
    Query(query): Query<SavedQuery>,
) -> Response {
    super::screen::page(&SCREEN, &state, &visitor, &id, &query).await
}

/// `POST /tasks/{id}`.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::save(&SCREEN, &state, &visitor, &id, &form).await
}

/// `POST /tasks/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    ChangeForm { visitor, form }: ChangeForm,
) -> Response {
    super::screen::delete(&SCREEN, &state, &visitor, &id, &form).await
}
