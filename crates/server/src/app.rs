//! Start-up and shutdown: bind, open the store, make sure an admin token exists, then run the API and
//! the dispatcher until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt as _;
use estate_crm_store::{PgConfig, PgStore, SchemaVersions, SqliteConfig, SqliteStore, Store};
use estate_crm_web::{WebConfig, WebState};
use estate_crm_webhooks::hubspot::{HubspotHandle, HubspotSync};
use estate_crm_webhooks::{AddressPolicy, DeliveryMetrics, Dispatcher, DispatcherConfig, Sender, SenderConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator};
use crate::config::{Config, Database};
use crate::rate_limit::RateLimiter;
use crate::routes;
use crate::state::{AppState, Metrics, Settings};

/// How long attempts in flight get to finish when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping server waits to hand its leases back (the others take them when they expire
/// otherwise).
const LET_GO_LIMIT: Duration = Duration::from_secs(5);
/// How often old deliveries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    dispatcher: Dispatcher,
    hubspot: HubspotSync,
    retention: Duration,
    /// Where the data lives, as the start line says it.
    data: String,
    /// The web app's pages.
    web: WebState,
}

impl Application {
    /// Binds the listener, opens the store and prepares the dispatcher. Prints the start line.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listener = bind(config.listen).await?;
        let address = listener.local_addr().context("reading the bound address")?;
        let site_url = config.site_url.clone().unwrap_or_else(|| format!("http://{address}"));
        let store = open_store(&config, &site_url).await?;
        ensure_admin_token(&store, &config).await?;

        let policy = if config.allow_private_targets { AddressPolicy::AllowPrivate } else { AddressPolicy::PublicOnly };
        let sender = Sender::new(SenderConfig {
            policy,
            timeout: config.delivery_timeout,
            user_agent: format!("estate-crm/{}", env!("CARGO_PKG_VERSION")),
        });
        let mut registry = Registry::default();
        let delivery_metrics = DeliveryMetrics::register(&mut registry);
        let dispatcher = Dispatcher::new(
            store.clone(),
            sender.clone(),
            DispatcherConfig { default_schedule: config.retry_schedule.clone(), shutdown_grace: SHUTDOWN_GRACE },
            delivery_metrics,
        );
        let auth = Authenticator::new(store.clone());
        let forget_tokens = auth.clone();
        let hubspot_handle = HubspotHandle::default();
        let web = WebState::new(WebConfig {
            store: store.clone(),
            sender: sender.clone(),
            site_url: site_url.clone(),
            policy,
            on_token_revoked: Arc::new(move || forget_tokens.forget_all()),
            hubspot: hubspot_handle.clone(),
        })
        .await
        .context("preparing the web app")?;
        let hubspot = HubspotSync::new(store.clone(), policy, hubspot_handle.clone());
        let state = AppState {
            auth,
            store,
            sender,
            settings: Arc::new(Settings { site_url, policy }),
            metrics: Arc::new(Metrics::new(registry)),
            form_limiter: Arc::new(RateLimiter::new(config.form_rate_per_minute)),
            hubspot: hubspot_handle,
        };
        let data = match &config.database {
            Database::Embedded => SqliteStore::database_path(&config.data_dir).display().to_string(),
            Database::Postgres { url, .. } => format!("PostgreSQL at {}", without_password(url)),
        };
        Ok(Application { listener, address, data, state, dispatcher, hubspot, retention: config.retention, web })
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT or SIGTERM: no new requests, attempts in flight get a few seconds, and
    /// what did not finish is attempted again after the next start.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = CancellationToken::new();
        // Handlers are in place before the start line: whoever waits for that line to send SIGTERM
        // gets a graceful stop, never the default action.
        let signals = Signals::install()?;
        tokio::spawn(signals.cancel_on_first(shutdown.clone()));
        println!("estate-crm listening on http://{}, data in {}", self.address, self.data);
        // After the start line, which scripts and tests read first.
        if let Some(link) = self.web.setup_link() {
            println!("first-run setup (works once, until the first administrator is made): {link}");
        }
        let _ = std::io::stdout().flush();
        self.web.warm_up();
        let dispatcher = tokio::spawn(self.dispatcher.run(shutdown.child_token()));
        let hubspot = tokio::spawn(self.hubspot.run(shutdown.child_token()));
        tokio::spawn(purge_old_deliveries(self.state.store.clone(), self.retention, shutdown.child_token()));

        let store = self.state.store.clone();
        let router = routes::router(self.state, estate_crm_web::router(self.web));
        // Answers are small and go out in one write; without this, one written in two could wait for
        // the client's delayed acknowledgement (40 ms) before its second part is sent.
        let listener = self.listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
            }
        });
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        let _ = dispatcher.await;
        let _ = hubspot.await;
        // Every lane has stopped with its outcomes committed: the other servers may take over now
        // rather than when the leases expire.
        store.leases().let_go(LET_GO_LIMIT).await;
        tracing::info!("estate-crm stopped");
        served.context("serving HTTP")
    }
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|err| match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!("{address} is already in use; stop what uses it or choose another --listen")
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("not allowed to listen on {address}; choose a port above 1023 with --listen")
        }
        _ => anyhow::anyhow!("could not listen on {address}: {err}"),
    })
}

async fn open_store(config: &Config, site_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    match &config.database {
        Database::Embedded => {
            let store =
                SqliteStore::open(&SqliteConfig { data_dir: config.data_dir.clone(), site_url: site_url.to_owned() })
                    .map_err(|err| {
                    anyhow::anyhow!("could not use the data directory {}: {err}", config.data_dir.display())
                })?;
            Ok(Arc::new(store))
        }
        Database::Postgres { url, pool } => {
            let pg = PgConfig { url: url.clone(), pool_size: *pool, site_url: site_url.to_owned() };
            let store = PgStore::open_in_cluster(&pg, config.lease_ttl).await.map_err(|err| {
                anyhow::anyhow!("could not use the database of --database-url {}: {err}", without_password(url))
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// `estate-crm migrate`: applies the migrations and says how far the database went.
pub async fn migrate(database: &Database, data_dir: &Path) -> anyhow::Result<()> {
    let (versions, place): (SchemaVersions, String) = match database {
        Database::Embedded => {
            let versions = estate_crm_store::migrate_sqlite(data_dir)
                .map_err(|err| anyhow::anyhow!("could not migrate the data directory {}: {err}", data_dir.display()))?;
            (versions, SqliteStore::database_path(data_dir).display().to_string())
        }
        Database::Postgres { url, .. } => {
            let versions = estate_crm_store::migrate_postgres(url).await.map_err(|err| {
                anyhow::anyhow!("could not migrate the database of --database-url {}: {err}", without_password(url))
            })?;
            (versions, format!("PostgreSQL at {}", without_password(url)))
        }
    };
    if versions.found == versions.now {
        println!("{place} is at schema version {}, the newest this estate-crm knows", versions.now);
    } else {
        println!("{place} migrated from schema version {} to {}", versions.found, versions.now);
    }
    Ok(())
}

/// A database URL as it may be shown: without its password.
pub(crate) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(the URL given)".to_owned(),
    }
}

/// A token given with `--admin-token` replaces the administrator's start-up token. Without one, the
/// first start makes a token, writes it to `<data-dir>/admin-token` (owner-only) and prints it once.
async fn ensure_admin_token(store: &Arc<dyn Store>, config: &Config) -> anyhow::Result<()> {
    if let Some(token) = &config.admin_token {
        store.set_admin_token(&auth::hash_token(token), false).await.context("saving the admin token")?;
        return Ok(());
    }
    let token = auth::new_token();
    if store.set_admin_token(&auth::hash_token(&token), true).await.context("saving the admin token")? {
        match &config.database {
            Database::Embedded => {
                let path = config.data_dir.join("admin-token");
                write_owner_only(&path, &token)?;
                println!("admin token (shown once; also saved in {}): {token}", path.display());
            }
            // Servers sharing a database share no directory: the database keeps the token's hash
            // only, and the one server that made it prints it once.
            Database::Postgres { .. } => println!("admin token (shown once, kept only as a hash): {token}"),
        }
    }
    Ok(())
}

fn write_owner_only(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{contents}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn cancel_on_first(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        tracing::info!("stopping: no new requests; attempts in flight get a few seconds");
        shutdown.cancel();
    }
}

async fn purge_old_deliveries(store: Arc<dyn Store>, retention: Duration, stop: CancellationToken) {
    loop {
        let before = chrono::Utc::now().timestamp_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        // Purge in bounded chunks so the writer is never held for long.
        for _ in 0..100 {
            match store.purge(before).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "purging old deliveries failed; trying again later");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}
