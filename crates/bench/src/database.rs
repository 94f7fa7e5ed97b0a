//! Where the servers a run starts keep their data: the embedded SQLite store in a fresh data
//! directory, or a fresh PostgreSQL database the bench creates on the server `--database-url`
//! names and drops when the part ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, anyhow};
use tokio_postgres::NoTls;
use url::Url;

/// The store the measured servers run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The embedded SQLite store, in the server's fresh data directory.
    Sqlite,
    /// A fresh database on this PostgreSQL server, reached through its admin URL.
    Postgres { admin_url: Url },
}

impl Store {
    /// Parses `--database-url`: a `postgres://` (or `postgresql://`) URL of a role that may
    /// create and drop databases.
    pub fn postgres(admin_url: &str) -> Result<Self> {
        let url = Url::parse(admin_url).with_context(|| format!("--database-url {admin_url:?} is not a URL"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            anyhow::bail!("--database-url must be a postgres:// URL");
        }
        Ok(Store::Postgres { admin_url: url })
    }

    /// How the table, the JSON and the progress lines name it.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres { .. } => "postgres",
        }
    }
}

/// Numbers the databases of one bench process: `estate_crm_bench_<pid>_<n>`.
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(1);

/// Databases created and not yet dropped, so that Ctrl-C can drop them (see [`drop_all_left`]).
static LIVE: Mutex<Vec<(Url, String)>> = Mutex::new(Vec::new());

/// A database of the bench's own, dropped (with whatever is still connected to it) when dropped.
#[derive(Debug)]
pub struct BenchDatabase {
    admin_url: Url,
    name: String,
    /// What a server is given as `--database-url`.
    url: String,
}

impl BenchDatabase {
    pub async fn create(admin_url: &Url) -> Result<Self> {
        let name = format!("estate_crm_bench_{}_{}", std::process::id(), NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        admin(admin_url, &format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating the database {name} on {}", shown(admin_url)))?;
        LIVE.lock().expect("database list lock poisoned").push((admin_url.clone(), name.clone()));
        let mut url = admin_url.clone();
        url.set_path(&name);
        Ok(Self { admin_url: admin_url.clone(), name, url: url.to_string() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for BenchDatabase {
    /// Drops the database from a thread of its own: drop cannot await, and this may run on the
    /// bench's runtime.
    fn drop(&mut self) {
        LIVE.lock().expect("database list lock poisoned").retain(|(_, name)| *name != self.name);
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || drop_database_now(&admin_url, &name)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("note: could not drop the database {}: {err:#}", self.name),
            Err(_) => eprintln!("note: dropping the database {} panicked", self.name),
        }
    }
}

/// Drops every database the bench made and has not dropped yet: on Ctrl-C, before exiting.
pub fn drop_all_left() {
    let left = std::mem::take(&mut *LIVE.lock().expect("database list lock poisoned"));
    for (admin_url, name) in left {
        if let Err(err) = drop_database_now(&admin_url, &name) {
            eprintln!("note: could not drop the database {name}: {err:#}");
        }
    }
}

/// Drops `name` on a runtime of its own; `WITH (FORCE)` ends the sessions of a server that is
/// still running (a part that failed, or Ctrl-C).
fn drop_database_now(admin_url: &Url, name: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(admin(admin_url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
}

/// Runs one statement on the admin database.
async fn admin(admin_url: &Url, sql: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url.as_str(), NoTls)
        .await
        .map_err(|err| anyhow!("connecting to {}: {err}", shown(admin_url)))?;
    let connection = tokio::spawn(connection);
    let done = client.batch_execute(sql).await.map_err(|err| anyhow!("{sql}: {err}"));
    drop(client);
    let _ = connection.await;
    done
}

/// The URL without its password, for messages.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_taken() {
        assert_eq!(Store::postgres("postgres://postgres@127.0.0.1:5432/postgres").unwrap().name(), "postgres");
        assert!(Store::postgres("postgresql://u@h/db").is_ok());
        assert!(Store::postgres("mysql://u@h/db").is_err());
        assert!(Store::postgres("not a url").is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        let url = Url::parse("postgres://crm:secret@db/estate").unwrap();
        assert_eq!(shown(&url), "postgres://crm:***@db/estate");
    }
}
