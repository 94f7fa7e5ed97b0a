//! `estate-crm-bench`: how close estate-crm's webhook delivery comes to what this machine's
//! network stack allows, measured in one run.
//!
//! Absolute rates drift from run to run on shared machines, so the headline is a ratio taken
//! within one run against one receiver: the real server's end-to-end deliveries per second
//! over what a bare hyper client gets from the same receiver. Around it the run measures the
//! API's create rates, delivery latency, isolation from a dead endpoint, draining a large
//! backlog, the server's memory, the web app's pages over a large delivery log, the disk's fsync,
//! the latency tail at a steady rate, fan-out from single creates, the ratio on one core and
//! several servers sharing one PostgreSQL database. `docs/PERFORMANCE.md` says how each figure
//! is taken.
//!
//! The servers run on the embedded SQLite store, or with `--database-url` on fresh PostgreSQL
//! databases the bench creates and drops ([`database`]); `--compare-sqlite` runs each part on
//! both, one right after the other, so that PostgreSQL is judged against SQLite of the same run.
//!
//! Central pieces: [`receiver::Receiver`] (the fast receiver every figure meets),
//! [`server::Server`] (the real `estate-crm` process, fresh data each time) and one module per
//! part under [`parts`]. Every wait has a deadline from [`plan::Plan`]: a part that cannot
//! finish reports what was missing instead of hanging, and the run goes on.

mod api;
mod database;
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

use crate::database::Store;
use crate::parts::Run;
use crate::plan::Plan;
use crate::report::Comparison;

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
    /// Runs only this part (1 to 13; repeat the flag for several), to measure one change quickly.
    /// Parts 3 to 5 start their server with the four endpoints as usual, without part 2's load.
    /// Figures of parts left out are null.
    #[arg(long = "part", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=13))]
    parts: Vec<u8>,
    /// Runs the servers on PostgreSQL: each on a fresh database (`estate_crm_bench_<pid>_<n>`)
    /// created through this admin URL and dropped when its part ends. Part 13 needs it.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// With --database-url: runs each part on SQLite too, right before PostgreSQL, and puts the
    /// two side by side with PostgreSQL's targets (ratios to SQLite's figures).
    #[arg(long, requires = "database_url")]
    compare_sqlite: bool,
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
    let stores = stores(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.spawn(drop_databases_on_ctrl_c());
    let run = runtime.block_on(parts::run(&plan, args.server_bin, parts::Selection::new(&args.parts), &stores))?;
    // Tasks still parked on a dead endpoint's connections are not worth waiting for.
    runtime.shutdown_background();

    print_run(&run, plan.quick);
    if let Some(path) = &args.json {
        report::write_json(path, &run_json(&run, plan.quick))?;
    }
    let failed = run.outcomes.iter().any(|outcome| !outcome.failures.is_empty());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The stores the run measures, in the order each part runs on them.
fn stores(args: &Args) -> Result<Vec<Store>> {
    let Some(url) = &args.database_url else {
        return Ok(vec![Store::Sqlite]);
    };
    let postgres = Store::postgres(url)?;
    Ok(if args.compare_sqlite { vec![Store::Sqlite, postgres] } else { vec![postgres] })
}

/// Ctrl-C would leave the databases of the parts running: drop them, then stop. The servers get
/// the terminal's SIGINT themselves, and the drop ends their sessions.
async fn drop_databases_on_ctrl_c() {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("interrupted: dropping the bench's databases");
        let _ = tokio::task::spawn_blocking(database::drop_all_left).await;
        std::process::exit(130);
    }
}

fn print_run(run: &Run, quick: bool) {
    match run.outcomes.as_slice() {
        [sqlite, postgres] => {
            print!("{}", Comparison { sqlite: &sqlite.figures, postgres: &postgres.figures }.table());
        }
        outcomes => {
            for outcome in outcomes {
                println!("store: {}", outcome.store.name());
                print!("{}", outcome.figures.table());
            }
        }
    }
    if quick {
        println!("(--quick: small counts prove the bench runs; judge targets on a full run)");
    }
    for note in &run.notes {
        println!("note: {note}");
    }
    for failure in run.outcomes.iter().flat_map(|outcome| &outcome.failures) {
        println!("FAILED {failure}");
    }
}

fn run_json(run: &Run, quick: bool) -> serde_json::Value {
    let rev = report::git_rev();
    match run.outcomes.as_slice() {
        [sqlite, postgres] => {
            Comparison { sqlite: &sqlite.figures, postgres: &postgres.figures }.json(quick, rev.as_deref())
        }
        [outcome, ..] => outcome.figures.json(quick, rev.as_deref(), outcome.store.name()),
        [] => serde_json::Value::Null,
    }
}
