//! Part 9: how long this disk takes to make a small write durable, measured in the same run.
//!
//! A 201 from the server means its change is fsynced, so no create can be answered faster than
//! the disk syncs, and a stall of the disk shows in every latency figure. The probe appends
//! small writes to a file in the filesystem the servers' data directories are made in (the
//! system's temp directory) and times each write with its `fdatasync`, which is how SQLite syncs
//! its write-ahead log on Linux. The latency targets are judged against these figures.
//!
//! Appending is what a write-ahead log does while it grows; once it has started again from its
//! beginning, commits write over synced blocks, and a sync then need not record the file's new
//! size. Writing over a synced file measured lower here (median 0.16 ms against 0.24 ms), so this
//! probe gives the looser of the two floors.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::stats::{millis, percentile};

/// The size of one write: about what a single create appends to the log (a few pages are
/// written, but the sync is what costs).
const WRITE_BYTES: usize = 4096;

pub struct Fsync {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Times `probes` write+fdatasync pairs on a fresh file, removed afterwards.
pub async fn measure(probes: usize) -> Result<Fsync> {
    let samples =
        tokio::task::spawn_blocking(move || time_syncs(probes)).await.context("the fsync probe panicked")??;
    summarise(&samples).context("the fsync probe took no sample")
}

fn time_syncs(probes: usize) -> Result<Vec<f64>> {
    let probe = ProbeFile::create()?;
    let mut file = &probe.file;
    let block = vec![0x5a; WRITE_BYTES];
    let mut samples = Vec::with_capacity(probes);
    for _ in 0..probes {
        let started = Instant::now();
        file.write_all(&block).context("writing the fsync probe's file")?;
        file.sync_data().context("syncing the fsync probe's file")?;
        samples.push(millis(started.elapsed()));
    }
    Ok(samples)
}

fn summarise(samples: &[f64]) -> Option<Fsync> {
    Some(Fsync {
        p50_ms: percentile(samples, 0.50)?,
        p99_ms: percentile(samples, 0.99)?,
        max_ms: samples.iter().copied().reduce(f64::max)?,
    })
}

/// The probe's file in the temp directory, removed when dropped.
struct ProbeFile {
    path: PathBuf,
    file: File,
}

impl ProbeFile {
    fn create() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("estate-crm-bench-fsync-{}", std::process::id()));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, file })
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_takes_percentiles_and_the_slowest() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let fsync = summarise(&samples).unwrap();
        assert_eq!((fsync.p50_ms, fsync.p99_ms, fsync.max_ms), (50.0, 99.0, 100.0));
        assert!(summarise(&[]).is_none());
    }

    #[tokio::test]
    async fn the_probe_syncs_and_leaves_no_file() {
        let fsync = measure(3).await.unwrap();
        assert!(fsync.p50_ms > 0.0 && fsync.p50_ms <= fsync.max_ms);
        let leftover = std::env::temp_dir().join(format!("estate-crm-bench-fsync-{}", std::process::id()));
        assert!(!leftover.exists());
    }
}
