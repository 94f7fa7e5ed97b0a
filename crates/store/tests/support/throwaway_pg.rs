//! A PostgreSQL cluster of a test's own, for tests that stop or break the database: made with
//! `initdb` in a temporary directory, run with `pg_ctl` on a free port, removed when dropped. The
//! machine's PostgreSQL is never touched.
//!
//! The binaries are found on `PATH`, else in `/usr/lib/postgresql/<newest>/bin`. PostgreSQL refuses
//! to run as root, so as root they run as the `postgres` user (else `nobody`) through `runuser`.
//! With no `initdb` installed, or `ESTATE_CRM_TEST_POSTGRES=off`, [`ThrowawayPostgres::init`]
//! answers `None` and says on stderr that the test is left out.

#![allow(dead_code)] // Each test binary uses a part.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A cluster of one test's own. Stopped (immediately) and deleted when dropped.
pub struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the binaries run as, when this process is root.
    run_as: Option<String>,
}

impl ThrowawayPostgres {
    /// Makes and starts a cluster; `None` (said on stderr) when the test must be left out.
    pub fn init() -> Option<ThrowawayPostgres> {
        if std::env::var("ESTATE_CRM_TEST_POSTGRES").is_ok_and(|v| v == "off") {
            eprintln!("ESTATE_CRM_TEST_POSTGRES=off: this test of a PostgreSQL outage is left out");
            return None;
        }
        let Some(bin) = postgres_bin() else {
            eprintln!("initdb is not installed (not on PATH nor in /usr/lib/postgresql/*/bin): this test is left out");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("estate-crm-pg-").tempdir().expect("a temporary directory");
        let run_as = running_as_root().then(unprivileged_user);
        if let Some(user) = &run_as {
            let owned = Command::new("chown").arg(user).arg(dir.path()).status().expect("chown runs");
            assert!(owned.success(), "could not give {} to {user}", dir.path().display());
        }
        let cluster = ThrowawayPostgres { port: free_port(), dir, bin, run_as };
        cluster.run(
            "initdb",
            &["-D", &cluster.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        );
        cluster.start();
        Some(cluster)
    }

    /// The admin URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn start(&self) {
        // fsync off: the tests stop the server, never the machine, so nothing depends on it.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log.display().to_string(), "-o", &options, "-w", "start"]);
    }

    /// Stops the cluster as an administrator's fast shutdown does: sessions are ended at once
    /// (SQLSTATE 57P01), transactions in progress rolled back; waits until it is down.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self.command(program).args(args).current_dir(self.dir.path()).output().expect("runs");
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed: {}\n{}\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // Immediate: nothing of it is kept. Already stopped is fine.
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
    }
}

/// The directory of `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    if let Some(dir) = on_path {
        // A symlink farm (/usr/local/bin) points at the real directory, which holds `postgres` too.
        return Some(std::fs::canonicalize(dir.join("initdb")).ok()?.parent()?.to_owned());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A user PostgreSQL will run as: `postgres` where it exists, else `nobody`.
fn unprivileged_user() -> String {
    let exists = |user: &str| Command::new("id").arg(user).output().is_ok_and(|out| out.status.success());
    if exists("postgres") { "postgres" } else { "nobody" }.to_owned()
}

/// A port nobody listens on now (the cluster takes it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
