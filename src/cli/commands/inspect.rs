//! `kvant inspect FILE`: metadata and tensor table of a GGUF file or a
//! checkpoint.

use std::process::ExitCode;

use anyhow::Context;

use kvant::gguf::GgufFile;

use crate::cli::args::InspectArgs;

const SHOWN: usize = 40;

pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let is_gguf = a
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        let f = GgufFile::open(&a.file)?;
        println!(
            "{}: GGUF v{}, {} metadata keys, {} tensors",
            a.file.display(),
            f.version,
            f.metadata.len(),
            f.tensors.len()
        );
        for (k, v) in f.metadata.iter() {
            println!("  {k:<44} {}", v.display_short());
        }
        println!();
        println!(
            "  {:<40} {:>6} {:>22} {:>12}",
            "tensor", "type", "shape (ne)", "bytes"
        );
        for (i, t) in f.tensors.iter().enumerate() {
            if i == SHOWN && !a.all {
                println!("  … {} more (use --all)", f.tensors.len() - SHOWN);
                break;
            }
            println!(
                "  {:<40} {:>6} {:>22} {:>12}",
                t.info.name,
                t.info.ty.to_string(),
                format!("{:?}", t.info.ne),
                t.nbytes
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let paths = kvant::convert::locate(&a.file)?;
    let ck = kvant::source::open(&paths.checkpoint)
        .with_context(|| format!("reading {}", paths.checkpoint.display()))?;
    println!(
        "{}: {:?}, {} tensors",
        paths.checkpoint.display(),
        ck.format,
        ck.tensors.len()
    );
    if let Some(cfg) = &ck.config {
        println!("  config: {cfg}");
    }
    for (k, v) in &ck.extra {
        if !v.is_object() {
            println!("  {k}: {v}");
        }
    }
    println!();
    for (i, t) in ck.tensors.iter().enumerate() {
        if i == SHOWN && !a.all {
            println!("  … {} more (use --all)", ck.tensors.len() - SHOWN);
            break;
        }
        println!("  {:<48} {:>5?} {:?}", t.name, t.dtype, t.shape);
    }
    Ok(ExitCode::SUCCESS)
}
