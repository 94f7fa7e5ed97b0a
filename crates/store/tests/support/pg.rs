//! A fresh PostgreSQL database per test, so that tests run in parallel, dropped when the test ends.
//!
//! The server is the one `ESTATE_CRM_TEST_POSTGRES` names (an admin URL, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`). With none there, a test fails and says how to
//! point it at one, or how to leave the PostgreSQL variants out on purpose
//! (`ESTATE_CRM_TEST_POSTGRES=off`, which each such test then says it did).

#![allow(dead_code)] // Each test binary uses a part.

use std::time::Duration;

/// The variable that names the test server.
pub const VARIABLE: &str = "ESTATE_CRM_TEST_POSTGRES";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one test; dropped (with its connections) when this is.
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    name: String,
    admin_url: String,
}

/// The admin URL, or `None` when the PostgreSQL variants are turned off (said on stderr).
pub fn admin_url() -> Option<String> {
    match std::env::var(VARIABLE) {
        Ok(value) if value == "off" => {
            eprintln!("{VARIABLE}=off: the PostgreSQL variant of this test is left out");
            None
        }
        Ok(value) if !value.is_empty() => Some(value),
        _ => Some(DEFAULT_URL.to_owned()),
    }
}

impl TestDatabase {
    /// Makes a fresh database; `None` only when the PostgreSQL variants are turned off.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = admin_url()?;
        let name = format!("estate_crm_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("creating a test database on {admin_url}: {err}"));
        Some(TestDatabase { url: with_database(&admin_url, &name), name, admin_url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let client = connect(&admin_url).await;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test database {}: {err}", self.name);
        }
    }
}

async fn connect(admin_url: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config =
        admin_url.parse().unwrap_or_else(|err| panic!("{VARIABLE} is not a PostgreSQL URL ({admin_url}): {err}"));
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap_or_else(|err| {
        panic!(
            "no PostgreSQL for the tests at {admin_url} ({err}). Start one, point {VARIABLE} at a server \
             where this user may create databases (postgres://user@host:port/db), or set {VARIABLE}=off \
             to leave the PostgreSQL variants out"
        )
    });
    tokio::spawn(connection);
    client
}

/// The same URL naming another database.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
