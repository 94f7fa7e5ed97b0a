//! The command line and environment, resolved once into a validated [`Config`].
//!
//! Raw flags ([`ServeArgs`]) stay apart from the resolved configuration, so every check happens in
//! one place and the rest of the server never sees an unparsed value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use estate_crm_domain::webhook::{RetrySchedule, parse_delay};
use estate_crm_store::LeaseTtl;

/// estate-crm: a self-hosted real-estate CRM whose outgoing webhooks are its core.
#[derive(Debug, Parser)]
#[command(name = "estate-crm", version, about, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Receives webhooks on this machine and prints each one, checking its signatures.
    Listen(crate::cli::ListenArgs),
    /// Checks a webhook's signatures: the body on stdin, the headers from flags or a request file.
    Verify(crate::cli::VerifyArgs),
    /// Makes a server send a sample of an event to its endpoints subscribed to it.
    Trigger(crate::cli::TriggerArgs),
    /// Applies the database migrations without serving (ahead of a rollout), then exits.
    Migrate(MigrateArgs),
    /// Writes everything in a database as JSON lines, to move it to another (see docs/POSTGRES.md).
    ///
    /// Records, events, endpoints with their secrets, the delivery log, users with their password
    /// hashes, API tokens (as hashes) and the HubSpot settings. The output holds secrets: keep it as
    /// safe as the database (a file it writes is readable by you alone).
    Export(ExportArgs),
    /// Reads what `export` wrote into an empty database of either kind, then exits.
    ///
    /// The database must be new (a new --data-dir, or a database made with createdb that no server
    /// has used); it is migrated first if it needs it. Everything is imported in one transaction,
    /// so a failed import leaves nothing behind. Ids, secrets and tokens stay the same.
    Import(ImportArgs),
}

/// `estate-crm export`'s flags: the database to read, as `serve` chooses it, and where to write.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory whose embedded database to export.
    #[arg(long, env = "ESTATE_CRM_DATA_DIR", default_value = "./estate-crm-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL to export instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The file to write (made readable by you alone; it holds endpoint secrets and password
    /// hashes). Default: standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl ExportArgs {
    /// Which database to read.
    pub fn database(&self) -> anyhow::Result<Database> {
        database(self.database_url.clone(), 1)
    }
}

/// `estate-crm import`'s flags: the database to fill, as `serve` chooses it, and what to read.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The data directory to import into (a new one; made if missing).
    #[arg(long, env = "ESTATE_CRM_DATA_DIR", default_value = "./estate-crm-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL to import into instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The file `estate-crm export` wrote. Default: standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

impl ImportArgs {
    /// Which database to fill.
    pub fn database(&self) -> anyhow::Result<Database> {
        database(self.database_url.clone(), 1)
    }
}

/// `estate-crm migrate`'s flags: the same database choice as `serve`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data directory whose embedded database to migrate.
    #[arg(long, env = "ESTATE_CRM_DATA_DIR", default_value = "./estate-crm-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL to migrate instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl MigrateArgs {
    /// Which database to migrate.
    pub fn database(&self) -> anyhow::Result<Database> {
        database(self.database_url.clone(), DEFAULT_POOL)
    }
}

/// The PostgreSQL pool's size when no flag says.
const DEFAULT_POOL: usize = 16;
/// The most connections one server may hold: each is a PostgreSQL backend process.
const MAX_POOL: usize = 1024;

fn database(url: Option<String>, pool: usize) -> anyhow::Result<Database> {
    match url.filter(|u| !u.is_empty()) {
        None => Ok(Database::Embedded),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Database::Postgres { url, pool })
        }
        Some(_) => bail!("--database-url must be a postgres:// URL; leave it out to use the embedded database"),
    }
}

/// `estate-crm serve`'s flags, as given. A flag beats the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, env = "ESTATE_CRM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the embedded database and the admin token file live.
    #[arg(long, env = "ESTATE_CRM_DATA_DIR", default_value = "./estate-crm-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL, instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// How many connections to PostgreSQL the server's reads may hold at once (the writer has one
    /// more of its own).
    #[arg(long, env = "ESTATE_CRM_DATABASE_POOL", default_value_t = DEFAULT_POOL)]
    pub database_pool: usize,
    /// With PostgreSQL: how long a server's hold on an endpoint's deliveries lasts without renewal;
    /// a server that dies loses its endpoints to the others within this time.
    #[arg(long, env = "ESTATE_CRM_LEASE_TTL", default_value = "10s")]
    pub lease_ttl: String,
    /// The URL this server is reached at, as payloads' `site_url` says (default: http:// + the listen address).
    #[arg(long, env = "ESTATE_CRM_SITE_URL")]
    pub site_url: Option<String>,
    /// The administrator's API token (default: made on first start and written to <data-dir>/admin-token).
    #[arg(long, env = "ESTATE_CRM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The delays between attempts of a delivery, like 30s,5m,2h.
    #[arg(long, env = "ESTATE_CRM_RETRY_SCHEDULE", default_value = "5m,5m")]
    pub retry_schedule: String,
    /// How long one delivery attempt may take.
    #[arg(long, env = "ESTATE_CRM_DELIVERY_TIMEOUT", default_value = "15s")]
    pub delivery_timeout: String,
    /// Lets webhooks go to loopback and private addresses (for development and tests).
    #[arg(long, env = "ESTATE_CRM_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// How many days finished deliveries and their events stay in the log.
    #[arg(long, env = "ESTATE_CRM_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// Public enquiry form submissions allowed per client address per minute.
    #[arg(long, env = "ESTATE_CRM_FORM_RATE_PER_MINUTE", default_value_t = 10)]
    pub form_rate_per_minute: u32,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ESTATE_CRM_LOG_JSON")]
    pub log_json: bool,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite database in the data directory.
    Embedded,
    /// A PostgreSQL database.
    Postgres {
        /// Its `postgres://` URL.
        url: String,
        /// How many connections reads may hold at once.
        pool: usize,
    },
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to bind.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the data lives.
    pub database: Database,
    /// The site URL; `None` means "http:// + the bound address", known only once bound.
    pub site_url: Option<String>,
    /// The admin token given on the command line, if any.
    pub admin_token: Option<String>,
    /// The default retry schedule.
    pub retry_schedule: RetrySchedule,
    /// The timeout of one attempt.
    pub delivery_timeout: Duration,
    /// Whether private destinations are allowed.
    pub allow_private_targets: bool,
    /// How long finished deliveries are kept.
    pub retention: Duration,
    /// Form submissions per address per minute.
    pub form_rate_per_minute: u32,
    /// Log as JSON.
    pub log_format_json: bool,
    /// How long a lease on an endpoint lasts without renewal (PostgreSQL only).
    pub lease_ttl: LeaseTtl,
}

impl ServeArgs {
    /// Checks every value and resolves the defaults that depend on others.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .with_context(|| format!("--listen {:?} is not an address like 127.0.0.1:8080", self.listen))?;
        let retry_schedule =
            RetrySchedule::parse_str(&self.retry_schedule).map_err(|e| anyhow::anyhow!("--retry-schedule: {e}"))?;
        let delivery_timeout =
            parse_delay(&self.delivery_timeout).map_err(|e| anyhow::anyhow!("--delivery-timeout: {e}"))?;
        if delivery_timeout.is_zero() || delivery_timeout > Duration::from_secs(300) {
            bail!("--delivery-timeout must be between 1ms and 5m");
        }
        if self.database_pool == 0 || self.database_pool > MAX_POOL {
            bail!("--database-pool must be between 1 and {MAX_POOL}");
        }
        let database = database(self.database_url, self.database_pool)?;
        let lease_ttl = parse_delay(&self.lease_ttl)
            .map_err(|e| e.to_string())
            .and_then(LeaseTtl::new)
            .map_err(|e| anyhow::anyhow!("--lease-ttl: {e}"))?;
        if let Some(site_url) = &self.site_url {
            let parsed = url::Url::parse(site_url)
                .with_context(|| format!("--site-url {site_url:?} is not a URL like https://crm.example.com"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--site-url must start with http:// or https://");
            }
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            bail!("--admin-token must be at least 16 characters long");
        }
        if self.retention_days == 0 {
            bail!("--retention-days must be at least 1");
        }
        Ok(Config {
            listen,
            data_dir: self.data_dir,
            database,
            site_url: self.site_url.map(|s| s.trim_end_matches('/').to_owned()),
            admin_token: self.admin_token,
            retry_schedule,
            delivery_timeout,
            allow_private_targets: self.allow_private_targets,
            retention: Duration::from_secs(u64::from(self.retention_days) * 86_400),
            form_rate_per_minute: self.form_rate_per_minute.max(1),
            log_format_json: self.log_json,
            lease_ttl,
        })
    }
}
