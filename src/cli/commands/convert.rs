//! `kvant convert SRC -o OUT.gguf --type TYPE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use kvant::convert::{self, ChatTemplate, ConvertReport, ConvertRequest, OutputSpec};
use kvant::quant::{FileType, GgmlType, TypeOverrides};

use crate::cli::args::{ConvertArgs, QuantOptions};
use crate::cli::progress::TensorBar;

pub fn run(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    if a.as_adapter {
        return run_as_adapter(&a);
    }
    let mut types: Vec<FileType> = Vec::new();
    for t in &a.types {
        if !types.contains(t) {
            types.push(*t);
        }
    }
    let name = a.name.clone().unwrap_or_else(|| {
        convert::locate(&a.src)
            .map(|p| convert::default_name(&p.checkpoint))
            .unwrap_or_else(|_| "model".into())
    });
    let outputs: Vec<OutputSpec> = match (&a.output, types.as_slice()) {
        (Some(out), [one]) => vec![OutputSpec {
            file_type: *one,
            path: out.clone(),
        }],
        (Some(_), _) => bail!("-o names one file; with several --type values use --output-dir"),
        (None, _) => {
            let dir = a.output_dir.clone().unwrap_or_else(|| PathBuf::from("."));
            types
                .iter()
                .map(|t| OutputSpec {
                    file_type: *t,
                    path: dir.join(format!("{name}-{}.gguf", t.name())),
                })
                .collect()
        }
    };
    let req = ConvertRequest {
        source: a.src.clone(),
        outputs,
        tokenizer: a.tokenizer.clone(),
        name: Some(name),
        n_head: a.n_head,
        imatrix: a.quant.imatrix.clone(),
        threads: a.threads,
        type_overrides: type_overrides(&a.quant)?,
        allow_requantize: false,
    };
    let report = run_with_bar(&req)?;
    print_summary(&report);
    Ok(ExitCode::SUCCESS)
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
