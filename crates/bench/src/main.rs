//! `estate-crm-bench`: how close estate-crm's webhook delivery comes to what this machine's
//! network stack allows, measured in one run.
//!
//! Absolute rates drift from run to run on shared machines, so the headline is a ratio taken
//! within one run against one receiver: the real server's end-to-end deliveries per second
//! over what a bare hyper client gets from the same receiver. Around it the run measures the
//! API's create rates, delivery latency, isolation from a dead endpoint, draining a large
//! backlog, the server's memory, the web app's pages over a large delivery log, the disk's fsync,
//! the latency tail at a steady rate, fan-out from single creates and the ratio on one core.
//! `docs/PERFORMANCE.md` says how each figure is taken.
//!
//! Central pieces: [`receiver::Receiver`] (the fast receiver every figure meets),
//! [`server::Server`] (the real `estate-crm` process, fresh data each time) and one module per
//! part under [`parts`]. Every wait has a deadline from [`plan::Plan`]: a part that cannot
//! finish reports what was missing instead of hanging, and the run goes on.

mod api;
mod parts;
mod payload;
mod plan;
mod receiver;
mod report;
mod server;
mod stats;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::plan::Plan;

/// Measures estate-crm's webhook throughput against the machine's own HTTP limit.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Small counts and 1 s windows: proves every part works, in under a minute. Its figures
    /// are not for judging targets.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as a JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The estate-crm binary to measure. By default the bench builds `estate-crm` with its own
    /// profile and uses the one beside its own executable.
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Runs only this part (1 to 12; repeat the flag for several), to measure one change quickly.
    /// Parts 3 to 5 start their server with the four endpoints as usual, without part 2's load.
    /// Figures of parts left out are null.
    #[arg(long = "part", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=12))]
    parts: Vec<u8>,
    /// How many times part 10 runs its 1,000/s phase (5 in a full run, 2 with --quick), to
    /// report how far its p99 moves from run to run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    repeat_paced: Option<u16>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("estate-crm-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Exit status 0 when every part ran, whether or not its target was met (targets are reported,
/// not asserted); 1 when a part could not run; 2 when the bench itself could not start.
fn run(args: Args) -> Result<ExitCode> {
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(runs) = args.repeat_paced {
        plan.paced_runs = usize::from(runs);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(parts::run_all(&plan, args.server_bin, parts::Selection::new(&args.parts)))?;
    // Tasks still parked on a dead endpoint's connections are not worth waiting for.
    runtime.shutdown_background();

    print!("{}", outcome.figures.table());
    if plan.quick {
        println!("(--quick: small counts prove the bench runs; judge targets on a full run)");
    }
    for note in &outcome.notes {
        println!("note: {note}");
    }
    for failure in &outcome.failures {
        println!("FAILED {failure}");
    }
    if let Some(path) = &args.json {
        let json = outcome.figures.json(plan.quick, report::git_rev().as_deref());
        report::write_json(path, &json)?;
    }
    Ok(if outcome.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
