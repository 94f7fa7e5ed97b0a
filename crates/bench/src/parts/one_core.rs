//! Part 12: the margin on a slow day. Parts 1 and 2 again, with everything pinned to one core.
//!
//! The bench runs itself again as `taskset -c 0 estate-crm-bench --part 1 --part 2 ...`: the
//! affinity is inherited by every thread of the child bench (its receiver and bare client) and
//! by the server it starts, so the whole measurement shares CPU 0, as on a machine half as fast
//! as this one. Running the whole child under `taskset` rather than pinning the server alone
//! keeps the ratio's two sides comparable: the bare client of part 1 gets one core too. Tokio
//! and the server size their thread pools from the affinity they start with, so both see one core.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::process::Command;

use crate::database::Store;
use crate::plan::Plan;
use crate::server::Subject;

/// The CPU everything is pinned to.
const CPU: &str = "0";

/// Runs parts 1 and 2 under `taskset -c 0` against the subject (its binary, on its store) and
/// answers their ratio.
pub async fn measure(plan: &Plan, subject: &Subject) -> Result<f64> {
    let json = ScratchJson::new();
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", CPU])
        .arg(&exe)
        .args(["--part", "1", "--part", "2", "--server-bin"])
        .arg(&subject.binary)
        .arg("--json")
        .arg(&json.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if plan.quick {
        command.arg("--quick");
    }
    if let Store::Postgres { admin_url } = &subject.store {
        // The database server is not pinned: only what the bench starts inherits the affinity.
        command.args(["--database-url", admin_url.as_str()]);
    }
    // Its own raw window and deliveries, slower on one core, plus starting a server.
    let deadline = plan.raw_window + plan.delivery_deadline + Duration::from_secs(90);
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .with_context(|| format!("the pinned run took longer than {} s", deadline.as_secs()))?
        .context("running `taskset` (util-linux)")?;
    let printed = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let failures: Vec<&str> = printed.lines().filter(|line| line.starts_with("FAILED")).collect();
        bail!("the pinned run ended with {}: {}", output.status, failures.join("; "));
    }
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json.path).context("reading the pinned run's figures")?)
            .context("the pinned run's figures are not JSON")?;
    let ratio = figures["ratio_to_limit"].as_f64().ok_or_else(|| anyhow!("the pinned run measured no ratio"))?;
    eprintln!(
        "  on one core: raw limit {}/s, deliveries {}/s",
        figures["raw_limit_per_s"], figures["deliveries_per_s"]
    );
    Ok(ratio)
}

/// Where the child writes its figures, removed when dropped.
struct ScratchJson {
    path: PathBuf,
}

impl ScratchJson {
    fn new() -> Self {
        Self { path: std::env::temp_dir().join(format!("estate-crm-bench-one-core-{}.json", std::process::id())) }
    }
}

impl Drop for ScratchJson {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
