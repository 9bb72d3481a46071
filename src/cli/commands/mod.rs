//! One file per subcommand.

mod convert;
mod inspect;
mod quantize;

use std::process::ExitCode;

use super::args::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Inspect(a) => inspect::run(a),
    }
}
