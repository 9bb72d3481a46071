//! The command line: clap structs, logging set-up, exit codes, and one
//! file per subcommand. No pipeline logic lives here.
//!
//! Exit codes (scripts rely on them):
//! * 0 — success;
//! * 1 — the job failed (bad input, conversion or registration error); the
//!   one-line reason is on stderr;
//! * 2 — the command line itself was wrong (clap's usage errors).

mod args;
mod commands;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Parses the command line, runs the subcommand, and maps the outcome to
/// an exit code, printing any error chain on one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        // A closed pipe (`kvant inspect f | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvant: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
