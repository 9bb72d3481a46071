//! Logging for terminals and for journald: human-readable with colour on a
//! terminal, plain (no ANSI) when stderr is a pipe or a journal, or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the level.
pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "kvant=info",
        1 => "kvant=debug",
        _ => "kvant=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
}
