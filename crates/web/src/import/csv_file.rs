//! Reading an uploaded CSV file into a header and rows, or a message saying what is wrong with it.
//!
//! The file is read whole and checked before anything is imported: a file that is not UTF-8, is
//! binary, has no header, has rows of another length than the header, or more rows than allowed is
//! refused as a whole with a message a person can act on, never half imported.

use std::fmt;
use std::sync::Arc;

/// The most data rows a file may have (the header not counted).
pub const MAX_ROWS: usize = 100_000;
/// The largest file accepted, in bytes.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// The most columns a file may have: the export has 27, and each column is a row of the mapping step.
pub const MAX_COLUMNS: usize = 200;
/// Rows kept for the preview.
pub const PREVIEW_ROWS: usize = 5;
/// Values kept per column to show beside it in the mapping step.
pub const SAMPLES: usize = 3;

/// A CSV file that passed the checks. Only its text is kept, with the header, the row count and
/// what the mapping step shows: the rows are read again, a batch at a time, when they are imported,
/// so a waiting upload holds no more memory than its file.
#[derive(Debug, Clone)]
pub struct CsvFile {
    text: Shared,
    /// The header's cells, trimmed.
    pub headers: Vec<String>,
    /// How many data rows it has.
    pub row_count: usize,
    /// The first [`PREVIEW_ROWS`] rows.
    pub preview: Vec<CsvRow>,
    /// Per column, its first [`SAMPLES`] values that are not empty.
    pub samples: Vec<Vec<String>>,
}

impl CsvFile {
    /// Its data rows, read again from the start.
    pub fn rows(&self) -> Rows {
        let mut rows = Rows::open(self.text.clone());
        // The header was read fine when the file was checked.
        let _header = rows.next_record();
        rows
    }
}

/// One data row and where it starts in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// The line the row starts on, counting the header as line 1 (a quoted value may span lines).
    pub line: u64,
    /// Its cells, as written (a spreadsheet's formula guard removed, see [`unguard`]).
    pub cells: Vec<String>,
}

/// The file's bytes, shared by the upload and the import reading it.
#[derive(Debug, Clone)]
struct Shared(Arc<[u8]>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads records one at a time, each with its line.
pub struct Rows {
    reader: csv::Reader<std::io::Cursor<Shared>>,
    lines: LineCounter,
}

impl Rows {
    fn open(text: Shared) -> Rows {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(false)
            .from_reader(std::io::Cursor::new(text.clone()));
        Rows { reader, lines: LineCounter::new(text) }
    }

    fn next_record(&mut self) -> Option<Result<(u64, csv::StringRecord), FileProblem>> {
        let mut record = csv::StringRecord::new();
        match self.reader.read_record(&mut record) {
            Ok(true) => Some(Ok((self.lines.line_at(record.position()), record))),
            Ok(false) => None,
            Err(err) => Some(Err(problem(&err, &mut self.lines))),
        }
    }
}

impl Iterator for Rows {
    type Item = Result<CsvRow, FileProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next_record()?;
        Some(next.map(|(line, record)| CsvRow { line, cells: record.iter().map(unguard).collect() }))
    }
}

/// Why a file cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProblem {
    /// No bytes, or only blank lines.
    Empty,
    /// NUL bytes or a known binary signature: a workbook or another kind of file.
    Binary {
        /// Whether it starts like an .xlsx / .ods (a ZIP archive).
        spreadsheet: bool,
    },
    /// Bytes that are not UTF-8 (a Latin-1 or Windows-1252 export).
    NotUtf8 {
        /// The line of the first such byte.
        line: u64,
    },
    /// The first row looks like data rather than column names.
    NoHeader {
        /// The first row's cells, to show what was found.
        first_row: Vec<String>,
    },
    /// A header and no data row.
    NoRows,
    /// A row whose number of cells differs from the header's.
    Ragged {
        /// The row's line.
        line: u64,
        /// How many cells the header has.
        expected: usize,
        /// How many the row has.
        found: usize,
    },
    /// More than [`MAX_ROWS`] data rows.
    TooManyRows,
    /// More than [`MAX_COLUMNS`] columns.
    TooManyColumns {
        /// How many the header has.
        found: usize,
    },
    /// A quoting error or another fault the CSV reader names.
    Unreadable {
        /// The line it was found on, if known.
        line: Option<u64>,
        /// What the reader said.
        detail: String,
    },
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Empty => {
                f.write_str("The file is empty. Choose a CSV file with a header row and at least one row.")
            }
            FileProblem::Binary { spreadsheet: true } => f.write_str(
                "This looks like a spreadsheet workbook (.xlsx or .ods), not a CSV file. In your spreadsheet, \
                 use Save As or Download and choose \"CSV UTF-8\", then upload that file.",
            ),
            FileProblem::Binary { spreadsheet: false } => f.write_str(
                "This file is not text (it contains NUL bytes), so it is not a CSV file. Export the data as \
                 \"CSV UTF-8\" and upload that file.",
            ),
            FileProblem::NotUtf8 { line } => write!(
                f,
                "The file is not UTF-8 text: line {line} has a byte that UTF-8 does not allow, as files saved \
                 as Latin-1 or Windows-1252 have. Save it again as \"CSV UTF-8\" and upload that file."
            ),
            FileProblem::NoHeader { first_row } => write!(
                f,
                "The first row should name the columns (first_name, email, ...), but it looks like data: {}. \
                 Add a header row and upload the file again.",
                first_row
                    .iter()
                    .take(6)
                    .map(|cell| format!("\"{}\"", cell.chars().take(40).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FileProblem::NoRows => f.write_str("The file has a header row but no rows to import."),
            FileProblem::Ragged { line, expected, found } => write!(
                f,
                "Line {line} has {found} cells where the header has {expected}. Every row needs as many cells as \
                 the header; a value with a comma in it must be in double quotes."
            ),
            FileProblem::TooManyRows => write!(
                f,
                "The file has more than {MAX_ROWS} rows. Split it into files of at most {MAX_ROWS} rows and \
                 import them one after the other."
            ),
            FileProblem::TooManyColumns { found } => write!(
                f,
                "The header has {found} columns; at most {MAX_COLUMNS} can be imported. Remove the columns you do \
                 not need and upload the file again."
            ),
            FileProblem::Unreadable { line: Some(line), detail } => {
                write!(f, "The file could not be read as CSV at line {line}: {detail}.")
            }
            FileProblem::Unreadable { line: None, detail } => write!(f, "The file could not be read as CSV: {detail}."),
        }
    }
}

/// Reads an uploaded file: UTF-8 (a leading byte-order mark is skipped), RFC 4180 quoting, `\r\n`
/// or `\n` line ends, a header row first, every row as long as the header.
pub fn parse(bytes: &[u8]) -> Result<CsvFile, FileProblem> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(FileProblem::Binary { spreadsheet: true });
    }
    if bytes.contains(&0) {
        return Err(FileProblem::Binary { spreadsheet: false });
    }
    let text =
        std::str::from_utf8(bytes).map_err(|err| FileProblem::NotUtf8 { line: line_of(bytes, err.valid_up_to()) })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(FileProblem::Empty);
    }
    let shared = Shared(Arc::from(text.as_bytes()));
    let mut rows = Rows::open(shared.clone());
    let headers: Vec<String> = match rows.next_record() {
        Some(Ok((_, record))) => record.iter().map(|cell| cell.trim().to_owned()).collect(),
        Some(Err(problem)) => return Err(problem),
        None => return Err(FileProblem::Empty),
    };
    if !looks_like_a_header(&headers) {
        return Err(FileProblem::NoHeader { first_row: headers });
    }
    if headers.len() > MAX_COLUMNS {
        return Err(FileProblem::TooManyColumns { found: headers.len() });
    }
    let mut file =
        CsvFile { text: shared, row_count: 0, preview: Vec::new(), samples: vec![Vec::new(); headers.len()], headers };
    for row in rows {
        let row = row?;
        if file.row_count == MAX_ROWS {
            return Err(FileProblem::TooManyRows);
        }
        file.row_count += 1;
        for (samples, cell) in file.samples.iter_mut().zip(&row.cells) {
            if samples.len() < SAMPLES && !cell.trim().is_empty() {
                samples.push(cell.clone());
            }
        }
        if file.preview.len() < PREVIEW_ROWS {
            file.preview.push(row);
        }
    }
    if file.row_count == 0 {
        return Err(FileProblem::NoRows);
    }
    Ok(file)
}

/// The 1-based line of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64
}

fn problem(err: &csv::Error, lines: &mut LineCounter) -> FileProblem {
    match err.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => FileProblem::Ragged {
            line: lines.line_at(pos.as_ref()),
            expected: *expected_len as usize,
            found: *len as usize,
        },
        _ => FileProblem::Unreadable {
            line: err.position().map(|pos| lines.line_at(Some(pos))),
            detail: err.to_string(),
        },
    }
}

/// The line a record starts on, counted from its byte offset: the reader's own line count is one
/// short after `\r\n` line ends. Records come in order, so counting goes forward only.
struct LineCounter {
    text: Shared,
    byte: usize,
    line: u64,
}

impl LineCounter {
    fn new(text: Shared) -> Self {
        LineCounter { text, byte: 0, line: 1 }
    }

    fn line_at(&mut self, position: Option<&csv::Position>) -> u64 {
        let Some(target) = position.map(|pos| usize::try_from(pos.byte()).unwrap_or(usize::MAX)) else {
            return self.line;
        };
        let text = self.text.as_ref();
        // After a `\r`, the reader starts the next record at the `\n` that completes the line end.
        let target = if text.get(target) == Some(&b'\n') { target + 1 } else { target.min(text.len()) };
        if target < self.byte {
            self.byte = 0;
            self.line = 1;
        }
        self.line += text[self.byte..target].iter().filter(|&&b| b == b'\n').count() as u64;
        self.byte = target;
        self.line
    }
}

/// A header names columns: no cell is an email address or a number, and at least one is not empty.
/// A file whose first row is data would otherwise lose that row and map columns by its values.
fn looks_like_a_header(cells: &[String]) -> bool {
    let looks_like_data = |cell: &String| cell.contains('@') || (!cell.is_empty() && cell.parse::<f64>().is_ok());
    cells.iter().any(|cell| !cell.is_empty()) && !cells.iter().any(looks_like_data)
}

/// Undoes the export's formula guard: one leading `'` before `=`, `+`, `-`, `@`, a tab or a CR
/// (after any further `'`s, which were the value's own) is removed, so that a value a spreadsheet
/// would have run comes back exactly as it was.
pub fn unguard(cell: &str) -> String {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.trim_start_matches('\'').starts_with(['=', '+', '-', '@', '\t', '\r']) => rest.to_owned(),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_header_and_rows_with_their_lines() {
        let table =
            parse("\u{feff}first_name,email\r\nAda,ada@example.com\r\n\"Grace\nB\",g@example.com\nAlan,\n".as_bytes())
                .expect("a good file");
        assert_eq!(table.headers, ["first_name", "email"]);
        let lines: Vec<u64> = table.preview.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 5], "a quoted value spanning lines moves the next row's line");
        assert_eq!(table.preview[1].cells, ["Grace\nB", "g@example.com"]);
        assert_eq!(table.preview[2].cells, ["Alan", ""]);
        assert_eq!(table.row_count, 3);
        assert_eq!(table.samples[1], ["ada@example.com", "g@example.com"], "empty cells are no samples");
        let again: Vec<CsvRow> = table.rows().map(|row| row.expect("read before")).collect();
        assert_eq!(again, table.preview, "the rows read again for the import are the ones checked");
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_file() {
        assert_eq!(parse(b"").unwrap_err(), FileProblem::Empty);
        assert_eq!(parse(b"\n\n").unwrap_err(), FileProblem::Empty);
        assert_eq!(parse(b"first_name,email\n").unwrap_err(), FileProblem::NoRows);
        assert_eq!(parse(b"first_name\nJos\xe9\n").unwrap_err(), FileProblem::NotUtf8 { line: 2 });
        assert_eq!(parse(b"PK\x03\x04rest").unwrap_err(), FileProblem::Binary { spreadsheet: true });
        assert_eq!(parse(b"a,b\n\x00\x01,2\n").unwrap_err(), FileProblem::Binary { spreadsheet: false });
        assert_eq!(
            parse(b"first_name,email\nAda,a@b.co\nGrace\n").unwrap_err(),
            FileProblem::Ragged { line: 3, expected: 2, found: 1 }
        );
        assert_eq!(
            parse(b"first_name,email\r\nAda,a@b.co\r\nGrace\r\n").unwrap_err(),
            FileProblem::Ragged { line: 3, expected: 2, found: 1 },
            "lines are counted as a person counts them with Windows line ends too"
        );
        assert!(matches!(parse(b"Ada,ada@example.com\nAlan,alan@example.com\n"), Err(FileProblem::NoHeader { .. })));
        assert!(matches!(parse(b",,\n1,2,3\n"), Err(FileProblem::NoHeader { .. })));
        let too_many = format!("first_name\n{}", "x\n".repeat(MAX_ROWS + 1));
        assert_eq!(parse(too_many.as_bytes()).unwrap_err(), FileProblem::TooManyRows);
        let wide = format!("{}\n{}\n", vec!["c"; MAX_COLUMNS + 1].join(","), vec!["x"; MAX_COLUMNS + 1].join(","));
        assert_eq!(parse(wide.as_bytes()).unwrap_err(), FileProblem::TooManyColumns { found: MAX_COLUMNS + 1 });
        let long_cell = format!("{},b\n", "a@".repeat(10_000));
        let message = parse(long_cell.as_bytes()).unwrap_err().to_string();
        assert!(message.len() < 400, "a message quotes a cell's start only: {} bytes", message.len());
        let just_enough = format!("first_name\n{}", "x\n".repeat(MAX_ROWS));
        let at_the_limit = parse(just_enough.as_bytes()).expect("the limit itself is fine");
        assert_eq!((at_the_limit.row_count, at_the_limit.preview.len()), (MAX_ROWS, PREVIEW_ROWS));
        assert_eq!(at_the_limit.rows().count(), MAX_ROWS);
    }

    #[test]
    fn every_problem_reads_as_a_sentence_naming_the_fix() {
        let message = FileProblem::Ragged { line: 7, expected: 5, found: 4 }.to_string();
        assert!(message.contains("Line 7 has 4 cells where the header has 5"), "{message}");
        assert!(FileProblem::NotUtf8 { line: 3 }.to_string().contains("CSV UTF-8"));
    }

    #[test]
    fn the_formula_guard_is_removed_once() {
        assert_eq!(unguard("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(unguard("'+44 20 7946 0000"), "+44 20 7946 0000");
        assert_eq!(unguard("''=x"), "'=x", "the guard of a value that starts with its own quote");
        assert_eq!(unguard("'x=y"), "'x=y", "only a guard before a formula character is removed");
        assert_eq!(unguard("'quoted'"), "'quoted'");
        assert_eq!(unguard("-"), "-");
    }
}
