//! CSV import: upload, the column mapping, the progress bar and the summary, in the browser, with
//! a real receiver counting the webhooks the imported rows fire.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use serde_json::{Value, json};

use crate::Web;
use crate::helpers::{Answer, Receiver};

/// Writes `bytes` to `NAME` in `dir` and answers its path.
pub(crate) fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
    path
}

/// Opens `/{plural}/import`, chooses `file` and presses Upload; waits for `expect`.
pub(crate) async fn upload(web: &Web, plural: &str, file: &Path, expect: &str) {
    web.browser.visit(&format!("/{plural}/import")).await;
    let input = web.browser.find("[id='f-file']").await;
    input.send_keys(&file.display().to_string()).await.expect("choosing the file");
    web.browser.press("file", "Upload and preview", expect).await;
}

/// Presses the mapping step's Import button and waits for the summary, which the page shows
/// without a reload; answers the summary's text.
pub(crate) async fn import_and_wait(web: &Web, button: &str) -> String {
    let browser = &web.browser;
    let import = browser.button(button).await;
    browser.submit(import, "#import-progress").await;
    browser.mark_document().await;
    browser.find("#import-summary").await;
    browser.assert_not_reloaded("the progress page").await;
    let bar = browser
        .script("const p = document.getElementById('import-progress'); return [p.value, p.max, p.getAttribute('max')]")
        .await;
    assert_eq!(bar[0], bar[1], "the bar is full once the import is over: {bar}");
    browser.check_page().await;
    browser.text("#import-status").await
}

/// The summary's refused rows: (line, field).
async fn refused_rows(web: &Web) -> Vec<(u64, String)> {
    let rows = web
        .browser
        .script(
            "return [...document.querySelectorAll('#refused-rows tbody tr')].map(r => \
             [Number(r.dataset.line), r.cells[1].innerText.trim(), r.cells[2].innerText.trim()])",
        )
        .await;
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|row| (row[0].as_u64().unwrap_or(0), row[1].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// The value chosen in the mapping select of column `index`.
pub(crate) async fn chosen(web: &Web, index: usize) -> String {
    let value = web.browser.script(&format!("return document.getElementById('column-{index}').value")).await;
    value.as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_file_of_2500_rows_with_three_bad_ones_imports_the_rest_and_names_the_three_by_line() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "contact.created" })).await;
    let mut csv = String::from("First Name,Surname,E-mail,Status,Town\r\n");
    // Line n holds row n - 1; the bad rows are on lines 101, 1201 and 2001.
    for line in 2..=2501 {
        let row = match line {
            101 => "Ada,Bad,not-an-email,Active,Leeds".to_owned(),
            1201 => "Bea,Gold,bea@example.com,Gold,York".to_owned(),
            2001 => ",,,VIP,Bath".to_owned(),
            _ => format!("Person{line},Imported,person{line}@example.com,Active,Bristol"),
        };
        csv.push_str(&row);
        csv.push_str("\r\n");
    }
    let dir = tempfile::tempdir().expect("a folder for the file");
    let file = write_file(&dir, "spring-open-house.csv", csv.as_bytes());

    web.browser.visit("/contacts/import").await;
    web.browser.screenshot("import").await;
    upload(&web, "contacts", &file, "#mapping").await;
    let guessed: Vec<String> = chosen_all(&web, 5).await;
    assert_eq!(guessed, ["first_name", "last_name", "email", "status", "city"], "the headers are guessed");
    let lead = web.browser.text("main .lead").await;
    assert!(lead.contains("spring-open-house.csv has 2,500 rows"), "{lead}");
    assert_eq!(web.browser.all("#preview tbody tr").await.len(), 5, "the first five rows are previewed");
    web.browser.screenshot("import-preview").await;

    let summary = import_and_wait(&web, "Import 2,500 contacts").await;
    assert!(summary.contains("2,500 of 2,500 rows done"), "{summary}");
    assert_eq!(web.browser.text("#imported-count").await, "2,497");
    assert_eq!(web.browser.text("#refused-count").await, "3");
    assert_eq!(web.browser.text("#batches-applied").await, "1 of 1");
    let refused = refused_rows(&web).await;
    assert_eq!(
        refused,
        [(101, "email".to_owned()), (1201, "status".to_owned()), (2001, "first_name".to_owned())],
        "each bad row is named by its line and field"
    );
    let why = web.browser.text("#refused-rows").await;
    assert!(why.contains("must be an email address") && why.contains("must be one of Active, Inactive, VIP, Blocked"));
    assert!(why.contains("not-an-email") && why.contains("Gold"), "each refused value is shown: {why}");
    web.browser.screenshot("import-summary").await;

    let received = receiver.take(2497).await;
    let bodies: Vec<Value> = received.iter().map(|r| r.json()).collect();
    assert!(bodies.iter().all(|body| body["event"] == "contact.created"), "one contact.created per row");
    let emails: std::collections::HashSet<&str> = bodies.iter().filter_map(|b| b["data"]["email"].as_str()).collect();
    assert_eq!(emails.len(), 2497, "every good row once");
    assert!(!emails.contains("bea@example.com"), "a refused row made no contact");
    assert!(emails.contains("person2501@example.com") && emails.contains("person2@example.com"));
    web.browser.close().await;
}

/// The values of the first `n` mapping selects.
async fn chosen_all(web: &Web, n: usize) -> Vec<String> {
    let mut values = Vec::with_capacity(n);
    for index in 0..n {
        values.push(chosen(web, index).await);
    }
    values
}

#[tokio::test]
async fn a_malformed_file_comes_back_with_a_message_saying_what_is_wrong() {
    let web = Web::admin().await;
    let dir = tempfile::tempdir().expect("a folder for the files");
    let cases: [(&str, &[u8], &str); 5] = [
        ("latin1.csv", b"first_name,city\nJos\xe9,M\xe1laga\n", "line 2 has a byte that UTF-8 does not allow"),
        ("ragged.csv", b"first_name,email\nAda,ada@example.com\nGrace\n", "Line 3 has 1 cells where the header has 2"),
        ("no-header.csv", b"Ada,ada@example.com\nGrace,grace@example.com\n", "The first row should name the columns"),
        ("empty.csv", b"", "The file is empty"),
        ("workbook.csv", b"PK\x03\x04\x14\x00\x06\x00binary", "spreadsheet workbook"),
    ];
    for (name, bytes, message) in cases {
        let file = write_file(&dir, name, bytes);
        upload(&web, "contacts", &file, ".flash.error").await;
        let shown = web.browser.text(".flash.error").await;
        assert!(shown.contains(message), "{name}: {shown}");
        assert_eq!(web.browser.path().await, "/contacts/import", "{name}: back on the upload form");
        assert!(web.browser.has("[id='f-file']").await, "{name}: the form is there to try again");
    }
    let contacts = web.app.get("/api/v1/contacts").await;
    assert_eq!(contacts.body["items"], json!([]), "nothing was imported from a bad file");
    web.browser.close().await;
}

#[tokio::test]
async fn the_sample_file_imports_with_no_refused_row_and_an_agents_import_is_theirs_alone() {
    let web = Web::start().await;
    let agent = web.make_user("agent", "Alma Agent", "alma@example.com").await;
    web.make_user("agent", "Otto Other", "otto@example.com").await;
    web.sign_in("alma@example.com", crate::PASSWORD).await;
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sample-contacts.csv");
    let sample = sample.canonicalize().expect("the sample file is in docs/");
    let rows = std::fs::read_to_string(&sample).expect("the sample file").lines().count() - 1;
    assert!(rows >= 200, "the sample has a few hundred rows: {rows}");

    upload(&web, "contacts", &sample, "#mapping").await;
    for (index, field) in [(0, "ignore"), (1, "first_name"), (4, "email"), (19, "preferences.min_price")] {
        assert_eq!(chosen(&web, index).await, field, "column {index} of the export format maps without asking");
    }
    // On a phone's width the mapping step fits, and what scrolls sideways can be reached by keyboard.
    web.browser.client().set_window_size(390, 844).await.expect("a phone-sized window");
    web.browser.check_page().await;
    let png = web.browser.client().screenshot().await.expect("a screenshot at a phone's width");
    crate::screens::save("import-preview-phone", &png);
    web.browser.client().set_window_size(1280, 900).await.expect("the usual window");
    let job = web.browser.path().await;
    let summary = import_and_wait(&web, &format!("Import {rows} contacts")).await;
    assert_eq!(web.browser.text("#refused-count").await, "0", "{summary}");
    assert_eq!(web.browser.text("#imported-count").await, rows.to_string());
    assert!(!web.browser.has("#refused-rows").await);
    let offered = web.send_as(&web.session_cookie().await, Method::GET, "/contacts/import/sample.csv", None).await;
    assert_eq!(offered.status, 200);
    assert_eq!(offered.raw, std::fs::read(&sample).unwrap(), "the upload page offers the same sample file");

    let listed = web.app.get("/api/v1/contacts?limit=1000").await;
    let items = listed.body["items"].as_array().expect("contacts");
    assert_eq!(items.len(), rows);
    assert!(items.iter().all(|c| c["created_by"] == agent.as_str()), "an agent's imported contacts are theirs");

    web.sign_out().await;
    web.sign_in("otto@example.com", crate::PASSWORD).await;
    web.browser.visit(&job).await;
    assert_eq!(web.browser.text("main h1").await, "This import is not here", "another agent cannot see the import");
    web.browser.close().await;
}

/// A contact with every writable field set, including values the export guards against formulas.
fn full_contact() -> Value {
    json!({
        "first_name": "Zoë", "last_name": "O'Brien, Jr", "prefix": "Dr", "email": "zoe.obrien@example.com",
        "phone": "+44 20 7946 0000", "mobile": "-0", "address": "12 \"The Old Mill\"\nMill Lane",
        "city": "Bath", "state": "Somerset", "zipcode": "BA1 1AA", "country": "United Kingdom",
        "lifecycle_stage": "qualified", "lead_source": "=HYPERLINK(\"x\")", "lead_type": "Buyer", "status": "VIP",
        "assigned_agent_id": "agent-7", "tags": ["cash buyer", "@home"], "notes": "Line one\r\nline two, with a comma",
        "preferences": {"min_price": 250000, "max_price": 412500.5, "beds": 3, "baths": 2,
                        "locations": ["Widcombe", "Larkhall"], "property_type": "Townhouse"}
    })
}

/// One value as the contract's export writes it.
fn export_cell(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
        Some(other) => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text }
}

/// A record as a CSV in the contract's export format, RFC 4180 quoted.
fn export_csv(record: &Value) -> String {
    let fields = [
        "first_name",
        "last_name",
        "prefix",
        "email",
        "phone",
        "mobile",
        "address",
        "city",
        "state",
        "zipcode",
        "country",
        "lifecycle_stage",
        "lead_source",
        "lead_type",
        "status",
        "assigned_agent_id",
        "tags",
        "notes",
    ];
    let prefs = ["min_price", "max_price", "beds", "baths", "locations", "property_type"];
    let mut header = vec!["id".to_owned()];
    let mut row = vec![export_cell(record.get("id"))];
    for field in fields {
        header.push(field.to_owned());
        row.push(export_cell(record.get(field)));
    }
    for pref in prefs {
        header.push(format!("preferences.{pref}"));
        row.push(export_cell(record["preferences"].get(pref)));
    }
    for stamp in ["created_at", "updated_at"] {
        header.push(stamp.to_owned());
        row.push(export_cell(record.get(stamp)));
    }
    let quote = |cell: &String| format!("\"{}\"", cell.replace('"', "\"\""));
    let line = |cells: &[String]| cells.iter().map(quote).collect::<Vec<_>>().join(",");
    format!("{}\r\n{}\r\n", line(&header), line(&row))
}

#[tokio::test]
async fn a_file_in_the_export_format_round_trips_with_every_field_equal() {
    let web = Web::admin().await;
    let original = web.app.create("contacts", full_contact()).await;
    let csv = export_csv(&original);
    let deleted = web.app.delete(&format!("/api/v1/contacts/{}", original["id"].as_str().unwrap())).await;
    assert_eq!(deleted.status, 204, "the original makes way for its copy (emails are unique)");
    let dir = tempfile::tempdir().expect("a folder for the file");
    let file = write_file(&dir, "export.csv", csv.as_bytes());

    upload(&web, "contacts", &file, "#mapping").await;
    import_and_wait(&web, "Import 1 contact").await;
    assert_eq!(web.browser.text("#imported-count").await, "1");
    let listed = web.app.get("/api/v1/contacts").await;
    let copy = &listed.body["items"][0];
    assert_ne!(copy["id"], original["id"], "a new record is made");
    for (field, value) in full_contact().as_object().unwrap() {
        assert_eq!(&copy[field], value, "{field} came back equal");
    }
    web.browser.close().await;
}

#[tokio::test]
async fn leads_import_with_their_contact_and_a_row_naming_an_unknown_contact_is_refused_alone() {
    let web = Web::admin().await;
    let mut receiver = Receiver::start().await;
    web.app.add_endpoint(json!({ "url": receiver.url("/hook"), "events": "lead.created" })).await;
    let contact = web.app.create("contacts", json!({ "first_name": "Lena", "email": "lena@example.com" })).await;
    let contact_id = contact["id"].as_str().unwrap();
    let dir = tempfile::tempdir().expect("a folder for the files");
    let good = format!(
        "Contact ID,Type,Source,Message\n{contact_id},Buyer,Zillow,Wants a garden\n{contact_id},Alien,Zillow,?\n"
    );
    let file = write_file(&dir, "leads.csv", good.as_bytes());

    upload(&web, "leads", &file, "#mapping").await;
    assert_eq!(chosen(&web, 0).await, "contact_id");
    assert_eq!(chosen(&web, 1).await, "lead_type");
    import_and_wait(&web, "Import 2 leads").await;
    assert_eq!(web.browser.text("#imported-count").await, "1");
    assert_eq!(refused_rows(&web).await, [(3, "lead_type".to_owned())]);
    let lead = receiver.next().await.json();
    assert_eq!(lead["event"], "lead.created");
    assert_eq!(lead["data"]["contact_id"], contact_id);
    assert_eq!(lead["data"]["message"], "Wants a garden");

    let unknown = format!("contact_id,lead_type\n{contact_id},Seller\ncon_nobody,Buyer\n");
    let file = write_file(&dir, "unknown.csv", unknown.as_bytes());
    upload(&web, "leads", &file, "#mapping").await;
    import_and_wait(&web, "Import 2 leads").await;
    assert_eq!(web.browser.text("#imported-count").await, "1", "the lead of a known contact goes in");
    assert_eq!(refused_rows(&web).await, [(3, "contact_id".to_owned())], "the unknown contact is named by line");
    let why = web.browser.text("#refused-rows").await;
    assert!(why.contains("no contact has the id \"con_nobody\""), "{why}");
    let seller = receiver.next().await.json();
    assert_eq!((&seller["event"], &seller["data"]["lead_type"]), (&json!("lead.created"), &json!("Seller")));
    let leads = web.app.get("/api/v1/leads").await;
    assert_eq!(leads.body["items"].as_array().map(Vec::len), Some(2), "one lead from each file");
    web.browser.close().await;
}

#[tokio::test]
async fn a_file_over_10000_rows_goes_in_batches_and_a_batch_the_store_refuses_is_not_applied() {
    let web = Web::admin().await;
    web.app.create("contacts", json!({ "first_name": "Taken", "email": "taken@example.com" })).await;
    let mut csv = String::from("first_name,email\n");
    for line in 2..=10_051 {
        let email = if line == 10_020 { "taken@example.com".to_owned() } else { format!("row{line}@example.com") };
        csv.push_str(&format!("Row{line},{email}\n"));
    }
    let dir = tempfile::tempdir().expect("a folder for the file");
    let file = write_file(&dir, "big.csv", csv.as_bytes());

    upload(&web, "contacts", &file, "#mapping").await;
    import_and_wait(&web, "Import 10,050 contacts").await;
    assert_eq!(web.browser.text("#imported-count").await, "10,000");
    assert_eq!(web.browser.text("#batches-applied").await, "1 of 2");
    let batches = web
        .browser
        .script(
            "return [...document.querySelectorAll('#import-batches > tbody > tr')].map(r => \
             [r.cells[1].innerText.trim(), r.dataset.applied])",
        )
        .await;
    assert_eq!(batches, json!([["2–10001", "true"], ["10002–10051", "false"]]), "which batches were applied");
    let problems = web.browser.text("#batch-2-problems").await;
    assert!(
        problems.contains("10020") && problems.contains("a contact with this email already exists"),
        "the store's message is put back on its line: {problems}"
    );
    let second_batch_row = web.app.get("/api/v1/contacts?limit=1").await;
    assert_eq!(second_batch_row.body["items"][0]["email"], "row10001@example.com", "the last row written is batch 1's");
    web.browser.close().await;
}

/// A `multipart/form-data` body with a CSRF token and a file: (content type, body).
fn multipart(csrf: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----estate-crm-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Sends an upload as a browser would, with the session `cookie` and an optional `Origin`.
async fn send_upload(web: &Web, cookie: &str, origin: Option<&str>, content_type: &str, body: Vec<u8>) -> Answer {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(web.app.url("/contacts/import"))
        .header("cookie", cookie)
        .header("content-type", content_type);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    web.app.send(request.body(Full::new(Bytes::from(body))).unwrap()).await
}

#[tokio::test]
async fn an_upload_needs_the_session_token_and_this_site_and_a_body_it_can_read() {
    let web = Web::admin().await;
    web.browser.visit("/contacts/import").await;
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let good = b"first_name\nAda\n";

    let (content_type, body) = multipart("not-the-token", "a.csv", good);
    assert_eq!(send_upload(&web, &cookie, None, &content_type, body).await.status, 403, "a wrong token");
    let (content_type, body) = multipart(&csrf, "a.csv", good);
    let elsewhere = send_upload(&web, &cookie, Some("http://evil.example"), &content_type, body).await;
    assert_eq!(elsewhere.status, 403, "another site");
    let (content_type, body) = multipart(&csrf, "a.csv", good);
    assert_eq!(send_upload(&web, "", None, &content_type, body).await.status, 303, "no session: to the sign-in page");

    let not_multipart = send_upload(&web, &cookie, None, "application/x-www-form-urlencoded", b"file=x".to_vec()).await;
    assert_eq!(not_multipart.status, 400);
    assert!(String::from_utf8_lossy(&not_multipart.raw).contains("Choose a CSV file"), "a message, not a 500");
    let (content_type, mut body) = multipart(&csrf, "a.csv", good);
    body.truncate(body.len() - 20);
    let cut_short = send_upload(&web, &cookie, None, &content_type, body).await;
    assert_eq!(cut_short.status, 400, "a body cut short: {}", String::from_utf8_lossy(&cut_short.raw));

    let huge = vec![b'a'; 33 * 1024 * 1024];
    let (content_type, body) = multipart(&csrf, "huge.csv", &huge);
    let too_large = send_upload(&web, &cookie, None, &content_type, body).await;
    assert_eq!(too_large.status, 413, "the upload stops at the limit");
    assert!(String::from_utf8_lossy(&too_large.raw).contains("larger than the server takes"));

    let (content_type, body) = multipart(&csrf, "a.csv", good);
    let accepted = send_upload(&web, &cookie, None, &content_type, body).await;
    assert_eq!(accepted.status, 303, "the good upload goes on to its mapping step");
    let mapping = accepted.headers["location"].to_str().unwrap().to_owned();
    assert!(mapping.starts_with("/contacts/import/"), "{mapping}");
    let form = [("csrf_token", csrf.as_str()), ("column-0", "first_name")];
    let on_leads = web.send_as(&cookie, Method::POST, &mapping.replace("contacts", "leads"), Some(&form)).await;
    assert_eq!(on_leads.status, 404, "an upload of contacts is not a leads import");
    let started = web.send_as(&cookie, Method::POST, &mapping, Some(&form)).await;
    assert_eq!(started.status, 303);
    web.browser.close().await;
}

#[tokio::test]
async fn without_javascript_the_progress_page_refreshes_itself_until_the_summary() {
    let web = Web::admin().await;
    web.browser.visit("/contacts/import").await;
    let cookie = web.session_cookie().await;
    let csrf = web.csrf_token().await;
    let mut csv = String::from("first_name,email\n");
    for row in 0..3000 {
        csv.push_str(&format!("Row{row},row{row}@example.com\n"));
    }
    let (content_type, body) = multipart(&csrf, "plain.csv", csv.as_bytes());
    let uploaded = send_upload(&web, &cookie, None, &content_type, body).await;
    let page = uploaded.headers["location"].to_str().unwrap().to_owned();
    let form = [("csrf_token", csrf.as_str()), ("column-0", "first_name"), ("column-1", "email")];
    assert_eq!(web.send_as(&cookie, Method::POST, &page, Some(&form)).await.status, 303);

    // Every look at the page, as a browser without the script makes it, either follows the import
    // (and asks to be loaded again) or shows the summary (and asks for nothing more).
    let summary = web
        .browser
        .eventually("the summary without the script", || async {
            let answer = web.send_as(&cookie, Method::GET, &page, None).await;
            let html = String::from_utf8_lossy(&answer.raw).into_owned();
            let refreshes = html.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>");
            let finished = html.contains("id=\"import-summary\"");
            assert_ne!(refreshes, finished, "a page refreshes itself exactly while the import runs");
            assert!(finished || html.contains(">Refresh</a>"), "a running import offers a Refresh link");
            finished.then_some(html)
        })
        .await;
    assert!(summary.contains("<dd id=\"imported-count\">3,000</dd>"), "{summary}");
    let part = web.send_as(&cookie, Method::GET, &format!("{page}?partial=status"), None).await;
    let part = String::from_utf8_lossy(&part.raw);
    assert!(part.contains("data-live-end") && !part.contains("<html"), "the part alone, marked as the end: {part}");
    web.browser.close().await;
}
