//! `kvant convert SRC -o OUT.gguf --type TYPE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};

use kvant::convert::{self, ConvertRequest, OutputSpec};
use kvant::quant::FileType;

use crate::cli::args::ConvertArgs;
use crate::cli::progress::TensorBar;

pub fn run(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    let mut types = Vec::new();
    for t in &a.types {
        for one in t.split(',').filter(|s| !s.trim().is_empty()) {
            let ft: FileType = one.parse().map_err(anyhow::Error::msg)?;
            if !types.contains(&ft) {
                types.push(ft);
            }
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
        imatrix: None,
        threads: a.threads,
        allow_requantize: false,
    };
    let bar = TensorBar::new("converting");
    let result = convert::convert(&req, &bar, &AtomicBool::new(false));
    bar.finish();
    let report = result.with_context(|| format!("converting {}", a.src.display()))?;
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
    Ok(ExitCode::SUCCESS)
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
