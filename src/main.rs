//! The `kvant` command line. Thin on purpose: parsing lives in
//! `cli::args`, each subcommand in `cli::commands`, all logic in the
//! library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
