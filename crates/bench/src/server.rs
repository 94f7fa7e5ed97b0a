//! The real `estate-crm` server, run as a child process with a fresh data directory, and the
//! sampling of its memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::database::{BenchDatabase, Store};

/// How long the server may take to print its start line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SIGTERM may take before the server is killed. The server gives attempts in flight
/// a few seconds, so this leaves room for that.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the memory sampler reads /proc.
const RSS_PERIOD: Duration = Duration::from_millis(100);

/// Finds the server binary: `explicit` if given, else `estate-crm` beside this executable,
/// built first with the same profile so that it is never stale.
pub fn binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--server-bin {} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let dir = exe.parent().context("the bench's executable has no directory")?;
    let path = dir.join("estate-crm");
    if let Err(err) = build_beside(dir) {
        eprintln!("note: could not build the server ({err:#}); using what is there");
    }
    if !path.is_file() {
        bail!("no server at {}: run `cargo build --release -p estate-crm` first", path.display());
    }
    Ok(path)
}

/// Runs `cargo build -p estate-crm` into the target directory `dir` belongs to, with the
/// profile `dir` is named after. A no-op build takes a moment; a stale server would mislead.
fn build_beside(dir: &Path) -> Result<()> {
    let profile = dir.file_name().and_then(|name| name.to_str());
    let release = match profile {
        Some("release") => true,
        Some("debug") => false,
        _ => bail!("{} is not a cargo profile directory", dir.display()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    if !manifest.is_file() {
        bail!("the workspace manifest {} is gone", manifest.display());
    }
    let target_dir = dir.parent().context("the profile directory has no parent")?;
    // `cargo run` sets CARGO to the cargo that runs us; use the same one.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "estate-crm", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo build -p estate-crm` failed with {status}");
    }
    Ok(())
}

/// What a run measures: this `estate-crm` binary on this store.
#[derive(Debug, Clone)]
pub struct Subject {
    pub binary: PathBuf,
    pub store: Store,
}

impl Subject {
    /// Starts a server of the subject's binary with a fresh store of its kind.
    pub async fn start(&self, retry_schedule: &str) -> Result<Server> {
        Server::start(&self.binary, &self.store, retry_schedule).await
    }
}

/// A running server. Stop it with [`Server::stop`]; dropping it kills it.
pub struct Server {
    child: Child,
    pid: u32,
    url: String,
    token: String,
    scratch: ScratchDir,
    rss: RssSampler,
    /// The PostgreSQL database it runs on, if any; declared last so that it is dropped after the
    /// process is gone. Shared by the servers of one database (part 13).
    _database: Option<Arc<BenchDatabase>>,
}

impl Server {
    /// Starts `binary` on a free loopback port with a fresh store of the kind `store` names: a
    /// fresh data directory, and on PostgreSQL a fresh database too.
    pub async fn start(binary: &Path, store: &Store, retry_schedule: &str) -> Result<Self> {
        let database = match store {
            Store::Sqlite => None,
            Store::Postgres { admin_url } => Some(Arc::new(BenchDatabase::create(admin_url).await?)),
        };
        Self::start_on(binary, database, retry_schedule).await
    }

    /// Starts `binary` on `database` (the embedded store when `None`). Servers started on the
    /// same database share its admin token.
    pub async fn start_on(binary: &Path, database: Option<Arc<BenchDatabase>>, retry_schedule: &str) -> Result<Self> {
        let scratch = ScratchDir::create()?;
        let token = match &database {
            Some(database) => format!("bench-{}", database.name()),
            None => format!("bench-{}", scratch.unique),
        };
        let log = std::fs::File::create(scratch.log())?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.data())
            .args(["--admin-token", &token, "--allow-private-targets"])
            .args(["--retry-schedule", retry_schedule])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        without_server_environment(&mut command);
        if let Some(database) = &database {
            command.args(["--database-url", database.url()]);
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let url = match read_listen_url(stdout).await {
            Ok(url) => url,
            Err(err) => {
                let _ = child.kill().await;
                bail!("{err:#}\n{}", scratch.log_tail());
            }
        };
        Ok(Self { child, pid, url, token, rss: RssSampler::start(pid), scratch, _database: database })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The highest resident memory seen so far, in MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.rss.sample_now();
        self.rss.peak_mb()
    }

    /// The end of the server's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        self.scratch.log_tail()
    }

    /// Stops the server with SIGTERM (a kill if it does not stop in time), removes its data,
    /// and answers its peak resident memory in MiB.
    pub async fn stop(mut self) -> Result<f64> {
        let peak = self.peak_rss_mb();
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let stopped = terminated && tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_ok();
        if !stopped {
            self.child.kill().await.context("killing the server")?;
            eprintln!("note: the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it");
        }
        Ok(peak)
    }
}

/// A flag beats the environment, but a DATABASE_URL or a delivery timeout set in the caller's
/// environment would still change what is measured, so the server gets none of them (the store
/// is chosen by the bench's own `--database-url`).
fn without_server_environment(command: &mut Command) {
    command.env_remove("DATABASE_URL");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ESTATE_CRM_") {
            command.env_remove(name);
        }
    }
}

/// Reads stdout until the start line, then keeps draining it so that the server never blocks
/// on a full pipe.
async fn read_listen_url(stdout: ChildStdout) -> Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .context("the server printed no start line within a minute")?
            .context("reading the server's stdout")?;
        let Some(line) = line else {
            bail!("the server exited without printing where it listens");
        };
        if let Some(url) = listen_url(&line) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url);
        }
    }
}

/// The URL in a start line such as `estate-crm listening on http://127.0.0.1:4321, data in ...`.
fn listen_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split(|c: char| c.is_whitespace() || c == ',').next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_owned())
}

/// A directory of the run's own under the system's temporary directory, removed when dropped.
struct ScratchDir {
    path: PathBuf,
    unique: String,
}

impl ScratchDir {
    fn create() -> Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let unique = format!("{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(format!("estate-crm-bench-{unique}"));
        std::fs::create_dir_all(path.join("data")).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, unique })
    }

    fn data(&self) -> PathBuf {
        self.path.join("data")
    }

    fn log(&self) -> PathBuf {
        self.path.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("server log ({}), last lines:\n{tail}", self.log().display())
    }
}

impl Drop for ScratchDir {
    /// Removes the directory, unless `ESTATE_CRM_BENCH_KEEP` is set: then it is kept, and named,
    /// so that the server's log (with `RUST_LOG` passed through) can be read after the run.
    fn drop(&mut self) {
        if std::env::var_os("ESTATE_CRM_BENCH_KEEP").is_some() {
            eprintln!("note: kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Samples a process's resident memory every [`RSS_PERIOD`] until dropped.
///
/// It reads VmHWM (the kernel's own high-water mark) as well as VmRSS, so that a peak between
/// two samples is not missed.
struct RssSampler {
    pid: u32,
    peak_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let shared = Arc::clone(&peak_kb);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RSS_PERIOD);
            // Ends when the process is gone and /proc no longer has it.
            while let Some(kb) = read_peak_kb(pid) {
                shared.fetch_max(kb, Ordering::Relaxed);
                ticks.tick().await;
            }
        });
        Self { pid, peak_kb, task }
    }

    fn sample_now(&self) {
        if let Some(kb) = read_peak_kb(self.pid) {
            self.peak_kb.fetch_max(kb, Ordering::Relaxed);
        }
    }

    fn peak_mb(&self) -> f64 {
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn read_peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    peak_kb_in(&status)
}

/// The larger of VmRSS and VmHWM in a /proc/PID/status text, in kB.
fn peak_kb_in(status: &str) -> Option<u64> {
    status
        .lines()
        .filter_map(|line| {
            let value = line.strip_prefix("VmRSS:").or_else(|| line.strip_prefix("VmHWM:"))?;
            value.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_listen(line: &str, expected: Option<&str>) {
        assert_eq!(listen_url(line).as_deref(), expected, "{line}");
    }

    #[test]
    fn start_lines_give_the_url() {
        check_listen("estate-crm listening on http://127.0.0.1:4321, data in ./d", Some("http://127.0.0.1:4321"));
        check_listen("listening on http://127.0.0.1:80/ (data: x)", Some("http://127.0.0.1:80"));
        check_listen("listening on http://127.0.0.1:9", Some("http://127.0.0.1:9"));
        check_listen("admin token: abc", None);
        check_listen("listening on 127.0.0.1:9", None);
    }

    #[test]
    fn peak_memory_is_the_larger_of_rss_and_high_water_mark() {
        let status = "Name:\testate-crm\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(peak_kb_in(status), Some(204_800));
        assert_eq!(peak_kb_in("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_memory_can_be_read() {
        assert!(read_peak_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
