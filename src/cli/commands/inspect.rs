//! `kvant inspect FILE`: metadata and tensor table of a GGUF file or a
//! checkpoint.

use std::process::ExitCode;

use std::io::Write;

use kvant::gguf::GgufFile;

use crate::cli::args::InspectArgs;

const SHOWN: usize = 40;

pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    let is_gguf = a
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        let f = GgufFile::open(&a.file)?;
        writeln!(
            o,
            "{}: GGUF v{}, {} metadata keys, {} tensors",
            a.file.display(),
            f.version,
            f.metadata.len(),
            f.tensors.len()
        )?;
        for (k, v) in f.metadata.iter() {
            writeln!(o, "  {k:<44} {}", v.display_short())?;
        }
        writeln!(o,)?;
        writeln!(
            o,
            "  {:<40} {:>6} {:>22} {:>12}",
            "tensor", "type", "shape (ne)", "bytes"
        )?;
        for (i, t) in f.tensors.iter().enumerate() {
            if i == SHOWN && !a.all {
                writeln!(o, "  … {} more (use --all)", f.tensors.len() - SHOWN)?;
                break;
            }
            writeln!(
                o,
                "  {:<40} {:>6} {:>22} {:>12}",
                t.info.name,
                t.info.ty.to_string(),
                format!("{:?}", t.info.ne),
                t.nbytes
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let paths = kvant::convert::locate(&a.file)?;
    let ck = kvant::source::open(&paths.checkpoint)?;
    writeln!(
        o,
        "{}: {:?}, {} tensors",
        paths.checkpoint.display(),
        ck.format,
        ck.tensors.len()
    )?;
    if let Some(cfg) = &ck.config {
        writeln!(o, "  config: {cfg}")?;
    }
    for (k, v) in &ck.extra {
        if !v.is_object() {
            writeln!(o, "  {k}: {v}")?;
        }
    }
    writeln!(o,)?;
    for (i, t) in ck.tensors.iter().enumerate() {
        if i == SHOWN && !a.all {
            writeln!(o, "  … {} more (use --all)", ck.tensors.len() - SHOWN)?;
            break;
        }
        writeln!(o, "  {:<48} {:>5?} {:?}", t.name, t.dtype, t.shape)?;
    }
    Ok(ExitCode::SUCCESS)
}
