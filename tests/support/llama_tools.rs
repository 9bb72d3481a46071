//! llama.cpp's own `llama-perplexity` and `llama-imatrix`, built by
//! `scripts/llama-tools.sh`, run as the judges of kvant's statistics. The
//! binaries are found through `KVANT_LLAMA_TOOLS` (default
//! `target/llama-tools/bin`); a missing one fails the test loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of tool `name`, which must exist.
pub fn tool(name: &str) -> PathBuf {
    let dir = match std::env::var_os("KVANT_LLAMA_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/llama-tools/bin"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/llama-tools.sh (or set KVANT_LLAMA_TOOLS)",
        path.display()
    );
    path
}

/// Runs tool `name` with `args` (2 threads), asserts success, and returns
/// its stdout and stderr together. Both go to files: through a pipe,
/// llama.cpp's log thread loses the last lines (the KLD summary) at exit.
pub fn run(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |p: &Path| std::fs::File::create(p).expect("log file");
    let mut cmd = Command::new(tool(name));
    for a in args {
        cmd.arg(a);
    }
    cmd.args(["-t", "2"])
        .stdout(file(&out_path))
        .stderr(file(&err_path));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let read = |p: &Path| String::from_utf8_lossy(&bytes(p)).into_owned();
    let text = format!("{}\n{}", read(&out_path), read(&err_path));
    assert!(status.success(), "{name} failed ({status}):\n{text}");
    text
}

/// [`run`], repeated (at most eight times) until the output contains
/// `marker`: now and then llama.cpp's log thread drops all of a short
/// run's stdout at exit (seen with 2-chunk runs; under load three tries
/// in a row lost it once, so three was not enough).
pub fn run_until(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>], marker: &str) -> String {
    let mut out = String::new();
    for _ in 0..8 {
        out = run(name, args);
        if out.contains(marker) {
            return out;
        }
    }
    out
}

/// `Final estimate: PPL = X +/- Y`.
pub fn final_estimate(output: &str) -> (f64, f64) {
    let line = output
        .lines()
        .find_map(|l| l.split("Final estimate: PPL = ").nth(1))
        .unwrap_or_else(|| panic!("no final estimate in:\n{output}"));
    let mut parts = line.split("+/-").map(|s| s.trim().parse::<f64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(v)), Some(Ok(u))) => (v, u),
        _ => panic!("cannot parse {line:?}"),
    }
}

/// The cumulative `[i]ppl,` values, in chunk order.
pub fn running_ppl(output: &str) -> Vec<f64> {
    output
        .split(',')
        .filter_map(|s| {
            let rest = &s[s.rfind('[')? + 1..];
            let (_, value) = rest.split_once(']')?;
            value.parse().ok()
        })
        .collect()
}

/// One summary line of `--kl-divergence` (`label: value [± uncertainty]`),
/// the numbers as printed (percent signs dropped).
pub fn summary_value(output: &str, label: &str) -> (f64, Option<f64>) {
    let line = output
        .lines()
        .find(|l| l.starts_with(label) && l[label.len()..].trim_start().starts_with(':'))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{output}"));
    let rest = line[label.len()..].trim_start()[1..].replace('%', "");
    let mut parts = rest.split('±').map(|s| s.trim().parse::<f64>());
    let value = match parts.next() {
        Some(Ok(v)) => v,
        _ => panic!("cannot parse {line:?}"),
    };
    (value, parts.next().and_then(Result::ok))
}

/// A file's bytes.
pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `text` tokenized by llama.cpp with `model`'s vocabulary as its tools
/// tokenize a `-f` file (one trailing newline dropped, specials added),
/// written to `out` as nanoGPT's uint16 token file.
pub fn write_llama_token_file(model: &Path, text: &Path, out: &Path) {
    let raw = std::fs::read_to_string(text).expect("text");
    let prompt = raw.strip_suffix('\n').unwrap_or(&raw);
    let ids = super::llama::Model::load(model, true).tokenize(prompt, true, false);
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&t| u16::try_from(t).expect("u16 id").to_le_bytes())
        .collect();
    std::fs::write(out, bytes).expect("token file");
}

/// `llama-perplexity -m model -f text -c n_ctx --chunks chunks extra…`,
/// run until its summary (the KLD summary with `--kl-divergence`) is out.
pub fn perplexity(
    model: &Path,
    text: &Path,
    n_ctx: usize,
    chunks: usize,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> String {
    let (c, n) = (n_ctx.to_string(), chunks.to_string());
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"-m", &model, &"-f", &text, &"-c", &c, &"--chunks", &n];
    args.extend_from_slice(extra);
    let kld = extra.iter().any(|a| a.as_ref() == "--kl-divergence");
    run_until(
        "llama-perplexity",
        &args,
        if kld { "Same top p:" } else { "Final estimate" },
    )
}

/// Asserts that kvant's `what` is within `tol` of llama-perplexity's,
/// printing both (visible with --nocapture).
pub fn assert_close(what: &str, kvant: f64, llama: f64, tol: f64) {
    eprintln!(
        "{what:>28}: kvant {kvant:>14.8} llama {llama:>14.8} diff {:>10.2e} (tol {tol:.1e})",
        kvant - llama
    );
    assert!(
        (kvant - llama).abs() <= tol,
        "{what}: kvant {kvant} vs llama-perplexity {llama} (tolerance {tol})"
    );
}
