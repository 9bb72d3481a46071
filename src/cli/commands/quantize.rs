//! `kvant quantize IN.gguf -o OUT.gguf --type TYPE`.

use std::process::ExitCode;

use kvant::convert::{ConvertRequest, OutputSpec};

use super::convert::{print_summary, run_with_bar, type_overrides};
use crate::cli::args::QuantizeArgs;

pub fn run(a: QuantizeArgs) -> anyhow::Result<ExitCode> {
    let req = ConvertRequest {
        source: a.input,
        outputs: vec![OutputSpec {
            file_type: a.file_type,
            path: a.output,
        }],
        imatrix: a.quant.imatrix.clone(),
        type_overrides: type_overrides(&a.quant)?,
        threads: a.threads,
        allow_requantize: a.allow_requantize,
        ..Default::default()
    };
    let report = run_with_bar(&req)?;
    print_summary(&report);
    Ok(ExitCode::SUCCESS)
}
