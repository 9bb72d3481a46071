//! `kvant imatrix MODEL.gguf --text FILE -o imatrix.gguf`.

use std::process::ExitCode;

use kvant::eval::{run_imatrix, ImatrixFormat, ImatrixRequest};

use super::eval::{token_input, with_threads};
use crate::cli::args::{ImatrixArgs, ImatrixFileFormat};
use crate::cli::progress::ChunkBar;

pub fn run(a: ImatrixArgs) -> anyhow::Result<ExitCode> {
    let Some(tokens) = token_input(&a.input) else {
        anyhow::bail!("give the calibration text: --text FILE or --tokens FILE");
    };
    // llama-imatrix stores the text file's path as given.
    let dataset = a
        .input
        .text
        .as_ref()
        .or(a.input.tokens.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let req = ImatrixRequest {
        model: a.model,
        tokens,
        dataset,
        n_ctx: Some(a.n_ctx),
        max_chunks: a.chunks,
        process_output: a.process_output,
        output: a.output,
        format: match a.output_format {
            ImatrixFileFormat::Gguf => ImatrixFormat::Gguf,
            ImatrixFileFormat::Dat => ImatrixFormat::Dat,
        },
    };
    let bar = ChunkBar::new("imatrix");
    let summary = with_threads(a.threads, || run_imatrix(&req, &bar));
    bar.finish();
    let s = summary?;
    println!(
        "{}: {} entries from {} chunks of {} tokens (PPL {:.4} ± {:.5})",
        s.output.display(),
        s.entries,
        s.plan.n_chunks,
        s.plan.n_ctx,
        s.perplexity.value,
        s.perplexity.uncertainty
    );
    Ok(ExitCode::SUCCESS)
}
