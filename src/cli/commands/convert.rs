//! `kvant convert SRC -o OUT.gguf --type TYPE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use kvant::convert::{self, ChatTemplate, ConvertReport, ConvertRequest, OutputSpec};
use kvant::durable::write_atomic;
use kvant::measure::{self, MeasureOptions, MeasuredConversion, TypeChoice};
use kvant::quality::{render_candidates, render_table, Budget, TextSource};
use kvant::quant::{FileType, GgmlType, TypeOverrides};

use crate::cli::args::{ConvertArgs, QuantOptions};
use crate::cli::progress::{ChunkBar, TensorBar};

pub fn run(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    if a.as_adapter {
        return run_as_adapter(&a);
    }
    let (types, auto) = TypeChoice::split(&a.types);
    let name = a.name.clone().unwrap_or_else(|| {
        convert::locate(&a.src)
            .map(|p| convert::default_name(&p.checkpoint))
            .unwrap_or_else(|_| "model".into())
    });
    let n_outputs = types.len() + usize::from(auto);
    let dir = a.output_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let output_path = |t: FileType| -> PathBuf {
        match &a.output {
            Some(out) => out.clone(),
            None => dir.join(format!("{name}-{}.gguf", t.name())),
        }
    };
    if a.output.is_some() && n_outputs != 1 {
        bail!("-o names one file; with several --type values use --output-dir");
    }
    if a.output.is_some() && auto {
        bail!("--type auto writes <model>-<chosen type>.gguf: use --output-dir instead of -o");
    }
    let req = ConvertRequest {
        source: a.src.clone(),
        outputs: vec![],
        tokenizer: a.tokenizer.clone(),
        name: Some(name.clone()),
        n_head: a.n_head,
        imatrix: a.quant.imatrix.clone(),
        threads: a.threads,
        type_overrides: type_overrides(&a.quant)?,
        allow_requantize: false,
    };
    let opts = measure_options(&a)?;
    if opts.eval_text.path().is_none() && opts.calibration.path().is_none() && !auto {
        let mut req = req;
        req.outputs = types
            .iter()
            .map(|&t| OutputSpec {
                file_type: t,
                path: output_path(t),
            })
            .collect();
        let report = run_with_bar(&req)?;
        print_summary(&report);
        return Ok(ExitCode::SUCCESS);
    }
    let bar = TensorBar::new("converting");
    let chunks = ChunkBar::new("measuring");
    let result = measure::convert_measured(
        &req,
        &a.types,
        &output_path,
        &opts,
        &bar,
        &chunks,
        &AtomicBool::new(false),
    );
    bar.finish();
    chunks.finish();
    let done = result?;
    print_summary(&done.conversion);
    print_quality(&done, &dir, &name)
}

/// The measuring flags as the library's options.
fn measure_options(a: &ConvertArgs) -> anyhow::Result<MeasureOptions> {
    let m = &a.measure;
    let given = |p: &Option<PathBuf>| match p {
        None => TextSource::Missing { looked_for: vec![] },
        Some(p) => TextSource::from_path(p.clone()),
    };
    let calibration = match &m.calibration_tokens {
        Some(p) => TextSource::Tokens(p.clone()),
        None => given(&m.calibration),
    };
    let defaults = MeasureOptions::default();
    let budget = Budget {
        max_kld: m.max_kld.unwrap_or(defaults.budget.max_kld),
        max_ppl_increase: m
            .max_ppl_increase
            .unwrap_or(defaults.budget.max_ppl_increase),
    };
    if m.save_imatrix.is_some() && calibration.path().is_none() {
        bail!("--save-imatrix needs --calibration or --calibration-tokens");
    }
    Ok(MeasureOptions {
        eval_text: given(&m.eval_text),
        calibration,
        save_imatrix: m.save_imatrix.clone(),
        eval_ctx: m.eval_ctx.unwrap_or(defaults.eval_ctx),
        eval_chunks: m.eval_chunks.unwrap_or(defaults.eval_chunks),
        calibration_chunks: m.calibration_chunks.unwrap_or(defaults.calibration_chunks),
        budget,
        ..defaults
    })
}

/// The quality table and page; exit 1 when no type is within budget.
fn print_quality(done: &MeasuredConversion, dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let report = match &done.quality {
        Err(not) => {
            println!("{}", not.reason);
            return Ok(ExitCode::SUCCESS);
        }
        Ok(r) => r,
    };
    print!("{}", render_table(report));
    print!("{}", render_candidates(report));
    let page = dir.join(format!("{name}.report.html"));
    write_atomic(&page, report.render_html().as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", page.display()))?;
    println!("report: {}", page.display());
    if report.types.iter().any(|t| t.verdict.passes()) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("kvant: quality gate: no type is within the budget (files kept, see the table)");
        Ok(ExitCode::from(1))
    }
}

/// `--as-adapter`: the adapter folder as a GGUF LoRA adapter file.
fn run_as_adapter(a: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| convert::default_name(&a.src));
    let out = match (&a.output, &a.output_dir) {
        (Some(o), _) => o.clone(),
        (None, dir) => dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(format!("{name}-lora.gguf")),
    };
    let done = convert::convert_as_adapter(&a.src, &out, Some(&name), None)?;
    println!(
        "{}: GGUF LoRA adapter for {} ({}), {:.1} MiB; its base: {}",
        done.adapter.path.display(),
        done.arch,
        name,
        done.adapter.size as f64 / (1 << 20) as f64,
        done.base.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a conversion with a terminal progress bar.
pub fn run_with_bar(req: &ConvertRequest) -> anyhow::Result<ConvertReport> {
    let bar = TensorBar::new("converting");
    let result = convert::convert(req, &bar, &AtomicBool::new(false));
    bar.finish();
    // Errors already name the file and the reason.
    Ok(result?)
}

/// One line per written file: params, types, size, time.
pub fn print_summary(report: &ConvertReport) {
    for out in &report.outputs {
        let types: Vec<String> = out
            .type_counts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        println!(
            "{}: {} params, {} ({}), {:.1} MiB, {:.2} bits/weight, {:.1} s",
            out.path.display(),
            human_count(report.n_params),
            out.file_type,
            types.join(", "),
            out.size as f64 / (1024.0 * 1024.0),
            out.bits_per_weight,
            report.seconds
        );
    }
    match &report.chat_template {
        c @ ChatTemplate::Fallback { .. } => eprintln!("kvant: warning: {}", c.summary()),
        c => println!("{}", c.summary()),
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Turns the command-line overrides into the policy's typed form.
pub fn type_overrides(q: &QuantOptions) -> anyhow::Result<TypeOverrides> {
    let ty = |s: &str| -> anyhow::Result<GgmlType> { s.parse().map_err(anyhow::Error::msg) };
    let mut tensor_types = Vec::new();
    for spec in &q.tensor_type {
        let (pattern, t) = spec
            .rsplit_once('=')
            .ok_or_else(|| anyhow::anyhow!("--tensor-type wants PATTERN=TYPE, got '{spec}'"))?;
        let re = regex::Regex::new(pattern)
            .map_err(|e| anyhow::anyhow!("--tensor-type '{pattern}': {e}"))?;
        tensor_types.push((re, ty(t)?));
    }
    Ok(TypeOverrides {
        tensor_types,
        output_type: q.output_tensor_type.as_deref().map(ty).transpose()?,
        token_embedding_type: q.token_embedding_type.as_deref().map(ty).transpose()?,
        pure: q.pure,
        leave_output_tensor: q.leave_output_tensor,
    })
}
