//! One file per subcommand.

mod convert;
mod daemon;
mod eval;
mod imatrix;
mod inspect;
mod quantize;
mod register;

use std::process::ExitCode;

use super::args::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(a) => convert::run(*a),
        Command::Quantize(a) => quantize::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Imatrix(a) => imatrix::run(a),
        Command::Watch(a) => daemon::watch(a),
        Command::Status(a) => daemon::status(a),
        Command::Retry(a) => daemon::retry(a),
        Command::Report(a) => daemon::report(a),
        Command::Forget(a) => daemon::forget(a),
        Command::Register(a) => register::run(a),
        Command::Service(c) => daemon::service(c),
        Command::ConvertJob => Ok(kvant::daemon::run_convert_job()),
    }
}
