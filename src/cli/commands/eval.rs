//! `kvant eval MODEL.gguf --text FILE [--base BASE.gguf | --base-logits F]`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use kvant::eval::{run_eval, BaseInput, EvalReport, EvalRequest, KldSummary, TokenInput};

use crate::cli::args::{EvalArgs, TokenArgs};
use crate::cli::progress::ChunkBar;

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let base = match (&a.base, &a.base_logits) {
        (Some(b), _) => BaseInput::Model(b.clone()),
        (_, Some(f)) => BaseInput::Logits(f.clone()),
        _ => BaseInput::None,
    };
    let tokens = token_input(&a.input);
    if tokens.is_none() && a.base_logits.is_none() {
        anyhow::bail!("give the text to evaluate: --text FILE or --tokens FILE");
    }
    let req = EvalRequest {
        model: a.model,
        tokens,
        n_ctx: a.n_ctx,
        max_chunks: a.chunks,
        base,
        save_logits: a.save_logits,
    };
    let bar = ChunkBar::new("eval");
    let report = with_threads(a.threads, || run_eval(&req, &bar));
    bar.finish();
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The tokens `--text` or `--tokens` name.
pub fn token_input(input: &TokenArgs) -> Option<TokenInput> {
    match (&input.tokens, &input.text) {
        (Some(t), _) => Some(TokenInput::TokenFile(t.clone())),
        (_, Some(t)) => Some(TokenInput::Text(t.clone())),
        _ => None,
    }
}

/// Runs `f` on a pool of `threads` workers (all cores when `None`).
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T, kvant::eval::MeasureError> + Send,
) -> anyhow::Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    Ok(pool.install(f)?)
}

/// The table printed at the end: PPL, and llama-perplexity's summary of
/// the KL divergence when there was a base.
pub fn format_report(r: &EvalReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} chunks of {} tokens, {} tokens scored",
        r.plan.n_chunks, r.plan.n_ctx, r.n_scored
    );
    let _ = writeln!(
        o,
        "PPL                     {:>12.4} ± {:.5}",
        r.perplexity.value, r.perplexity.uncertainty
    );
    if let Some(k) = &r.kld {
        o.push_str(&format_kld(k));
    }
    o
}

fn format_kld(k: &KldSummary) -> String {
    let mut o = String::new();
    let row = |o: &mut String, label: &str, v: f64, u: Option<f64>, pct: bool| {
        let (s, unit) = if pct { (100.0, " %") } else { (1.0, "") };
        let _ = match u {
            Some(u) => writeln!(o, "{label:<24}{:>12.6} ± {:.6}{unit}", v * s, u * s),
            None => writeln!(o, "{label:<24}{:>12.6}{unit}", v * s),
        };
    };
    row(
        &mut o,
        "PPL(base)",
        k.ppl_base.value,
        Some(k.ppl_base.uncertainty),
        false,
    );
    row(
        &mut o,
        "Cor(ln PPL, ln PPL base)",
        k.ln_ppl_correlation,
        None,
        true,
    );
    row(
        &mut o,
        "ln(PPL/PPL(base))",
        k.ln_ppl_ratio.value,
        Some(k.ln_ppl_ratio.uncertainty),
        false,
    );
    row(
        &mut o,
        "PPL/PPL(base)",
        k.ppl_ratio.value,
        Some(k.ppl_ratio.uncertainty),
        false,
    );
    row(
        &mut o,
        "PPL-PPL(base)",
        k.ppl_diff.value,
        Some(k.ppl_diff.uncertainty),
        false,
    );
    o.push('\n');
    row(
        &mut o,
        "Mean KLD",
        k.kld.value,
        Some(k.kld.uncertainty),
        false,
    );
    row(&mut o, "Maximum KLD", k.kld_percentiles.max, None, false);
    for &(f, v) in &k.kld_percentiles.at {
        row(&mut o, &format!("{:>5.1}% KLD", f * 100.0), v, None, false);
        if (f - 0.9).abs() < 1e-6 {
            row(&mut o, "Median KLD", k.kld_percentiles.median, None, false);
        }
    }
    row(&mut o, "Minimum KLD", k.kld_percentiles.min, None, false);
    o.push('\n');
    row(
        &mut o,
        "Mean Δp",
        k.p_diff.value,
        Some(k.p_diff.uncertainty),
        true,
    );
    row(&mut o, "Maximum Δp", k.p_diff_percentiles.max, None, true);
    for &(f, v) in &k.p_diff_percentiles.at {
        row(&mut o, &format!("{:>5.1}% Δp", f * 100.0), v, None, true);
        if (f - 0.75).abs() < 1e-6 {
            row(&mut o, "Median Δp", k.p_diff_percentiles.median, None, true);
        }
    }
    row(&mut o, "Minimum Δp", k.p_diff_percentiles.min, None, true);
    row(
        &mut o,
        "RMS Δp",
        k.p_diff_rms.value,
        Some(k.p_diff_rms.uncertainty),
        true,
    );
    row(
        &mut o,
        "Same top p",
        k.same_top.value,
        Some(k.same_top.uncertainty),
        true,
    );
    o
}
