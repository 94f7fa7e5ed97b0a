//! Logging. Levels come from `RUST_LOG` (default `info`); request bodies, tokens and secrets are
//! never logged.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls do nothing (tests start many servers).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
