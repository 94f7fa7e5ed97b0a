//! `estate-crm migrate`: applies the migrations without serving, says how far the database went,
//! finds nothing to do the second time, and a server then starts on the migrated database.

use std::process::Command;

use crate::helpers::{TestApp, on_postgres};

/// Runs `estate-crm migrate` with these arguments; answers its stdout, or panics with its stderr.
fn migrate(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
        .arg("migrate")
        .args(args)
        .env_clear()
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "migrate {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test]
async fn migrate_applies_the_schema_once_and_a_server_starts_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = match on_postgres() {
        true => crate::pg::TestDatabase::create().await,
        false => None,
    };
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let args: Vec<&str> = match &database {
        Some(database) => vec!["--database-url", &database.url],
        None => vec!["--data-dir", &data_dir],
    };
    let first = migrate(&args);
    assert!(first.contains("migrated from schema version 0 to"), "{first}");
    let second = migrate(&args);
    assert!(second.contains("the newest this estate-crm knows"), "{second}");

    // A server on the migrated database has nothing left to apply and serves.
    let app = match database {
        Some(database) => TestApp::spawn_on(std::sync::Arc::new(database)).await,
        None => return, // The SQLite run's servers make their own directory; the file itself was checked above.
    };
    assert_eq!(app.get("/api/v1/contacts").await.status, 200);
}

#[test]
fn migrate_refuses_an_unreachable_database_in_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_estate-crm"))
        .args(["migrate", "--database-url", "postgres://postgres@127.0.0.1:1/crm"])
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--database-url") && stderr.contains("refused"), "{stderr}");
}
