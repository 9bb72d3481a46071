//! Evaluation benchmark, kvant against llama.cpp's own tools in the same
//! run, same machine, same thread count, same text (issue 9):
//!
//! 1. generates the ~124M-parameter nanoGPT-shaped `ckpt.pt` of
//!    `support::bench_model` (4 layers with `--quick`) and converts it to
//!    F32, Q8_0 and Q4_K_M GGUF files with `kvant convert`;
//! 2. on each file, `kvant eval FILE --text T -c 512 --chunks 8` against
//!    `llama-perplexity -m FILE -f T -c 512 --chunks 8`: wall time, the
//!    time ratio kvant/llama.cpp, peak RSS of each, and both perplexities
//!    with their relative difference;
//! 3. on the F32 file, `kvant imatrix` against `llama-imatrix` (its
//!    default run, which also prints a perplexity) over the same chunks.
//!
//! The text is the fixture corpus (`corpus/train.txt`). llama.cpp's tools
//! come from `KVANT_LLAMA_TOOLS` (default `target/llama-tools/bin`, built
//! by `scripts/llama-tools.sh`). Each measured step runs in its own child
//! process, so its peak RSS is its own (`support::measure`).
//!
//! Run: `cargo bench --bench eval` (`-- --quick` for the 4-layer model,
//! `-- --threads N`, `-- --chunks N`).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::args::{has, value};
use support::bench_model;
use support::measure::{measure, run_measured, Measured, MEASURE_FLAG};

/// How often a llama.cpp run is repeated when its summary line is missing:
/// its log thread now and then drops a run's last output at exit.
const LLAMA_TRIES: usize = 4;

/// The directory of llama.cpp's tools.
fn llama_tools() -> PathBuf {
    let dir = std::env::var_os("KVANT_LLAMA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/llama-tools/bin")
        });
    for tool in ["llama-perplexity", "llama-imatrix"] {
        assert!(
            dir.join(tool).is_file(),
            "{} is missing: run scripts/llama-tools.sh (or set KVANT_LLAMA_TOOLS)",
            dir.join(tool).display()
        );
    }
    dir
}

/// X of `Final estimate: PPL = X +/- Y`.
fn llama_ppl(log: &str) -> Option<f64> {
    let rest = log
        .lines()
        .find_map(|l| l.split("Final estimate: PPL = ").nth(1))?;
    rest.split("+/-").next()?.trim().parse().ok()
}

/// `perplexity.value` of `kvant eval --json`.
fn kvant_ppl(log: &str) -> f64 {
    let start = log.find('{').expect("kvant eval printed no JSON");
    let v: serde_json::Value = serde_json::from_str(&log[start..]).expect("kvant eval's JSON");
    v["perplexity"]["value"].as_f64().expect("perplexity.value")
}

/// Runs a llama.cpp tool, measured, until its log holds `marker` (at most
/// [`LLAMA_TRIES`] times); returns the measurement of the run that did.
fn measure_llama(cmd: &Command, log: &Path, marker: &str) -> (Measured, String) {
    for _ in 0..LLAMA_TRIES {
        let m = measure(cmd, Some(log));
        let text = std::fs::read_to_string(log).expect("llama.cpp log");
        if text.contains(marker) {
            return (m, text);
        }
    }
    panic!(
        "{cmd:?} printed no {marker:?} in {LLAMA_TRIES} runs (log: {})",
        log.display()
    );
}

fn row(what: &str, k: &Measured, l: &Measured, ppl: Option<(f64, f64)>) {
    let ppl = match ppl {
        Some((kp, lp)) => format!("{kp:>12.4} {lp:>12.4} {:>9.2e}", (kp - lp).abs() / lp.abs()),
        None => format!("{:>12} {:>12} {:>9}", "-", "-", "-"),
    };
    println!(
        "{what:<14} {:>8.2} {:>8.2} {:>6.2}x {:>7.0} MiB {:>7.0} MiB {:>5.2}x {ppl}",
        k.seconds,
        l.seconds,
        k.seconds / l.seconds,
        k.peak_rss_mib,
        l.peak_rss_mib,
        k.peak_rss_mib / l.peak_rss_mib,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE_FLAG) {
        run_measured(&args[2], &args[3], &args[4..]);
        return;
    }
    let quick = has(&args, "--quick");
    let flag = |name: &str| value(&args, name);
    let threads = flag("--threads").unwrap_or_else(|| "2".into());
    let chunks = flag("--chunks").unwrap_or_else(|| "8".into());
    let tools = llama_tools();
    let text = bench_model::fixtures().join("corpus/train.txt");
    assert!(
        text.is_file(),
        "{} is missing (set KVANT_FIXTURES)",
        text.display()
    );

    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-eval");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let ckpt = bench_model::write_checkpoint(&work, quick);
    let (n_layer, n_embd, vocab, block) = bench_model::shape(quick);
    let kvant = env!("CARGO_BIN_EXE_kvant");
    println!(
        "model: n_layer {n_layer}, n_embd {n_embd}, vocab {vocab}, ctx {block}; \
         -c 512 --chunks {chunks}, threads {threads}; text {}",
        text.display()
    );
    println!();
    println!(
        "{:<14} {:>8} {:>8} {:>7} {:>11} {:>11} {:>6} {:>12} {:>12} {:>9}",
        "step",
        "kvant s",
        "llama s",
        "time",
        "kvant RSS",
        "llama RSS",
        "RSS",
        "kvant PPL",
        "llama PPL",
        "rel diff"
    );
    let common = ["-c", "512", "--chunks", &chunks];
    let mut f32_file = PathBuf::new();
    for ty in ["f32", "q8_0", "q4_k_m"] {
        let file = work.join(format!("model-{ty}.gguf"));
        let status = Command::new(kvant)
            .arg("convert")
            .arg(&ckpt)
            .arg("-o")
            .arg(&file)
            .args(["--type", ty, "--threads", &threads])
            .output()
            .expect("kvant convert");
        assert!(status.status.success(), "kvant convert --type {ty} failed");
        if ty == "f32" {
            f32_file = file.clone();
        }
        let klog = work.join(format!("kvant-eval-{ty}.log"));
        let k = measure(
            Command::new(kvant)
                .arg("eval")
                .arg(&file)
                .arg("--text")
                .arg(&text)
                .args(common)
                .args(["--threads", &threads, "--json"]),
            Some(&klog),
        );
        let kp = kvant_ppl(&std::fs::read_to_string(&klog).expect("kvant log"));
        let (l, llog) = measure_llama(
            Command::new(tools.join("llama-perplexity"))
                .arg("-m")
                .arg(&file)
                .arg("-f")
                .arg(&text)
                .args(common)
                .args(["-t", &threads]),
            &work.join(format!("llama-perplexity-{ty}.log")),
            "Final estimate",
        );
        let lp = llama_ppl(&llog).expect("llama-perplexity's final estimate");
        row(&format!("eval {ty}"), &k, &l, Some((kp, lp)));
    }
    let k = measure(
        Command::new(kvant)
            .arg("imatrix")
            .arg(&f32_file)
            .arg("--text")
            .arg(&text)
            .arg("-o")
            .arg(work.join("kvant-imatrix.gguf"))
            .args(common)
            .args(["--threads", &threads]),
        Some(&work.join("kvant-imatrix.log")),
    );
    let (l, _) = measure_llama(
        Command::new(tools.join("llama-imatrix"))
            .arg("-m")
            .arg(&f32_file)
            .arg("-f")
            .arg(&text)
            .arg("-o")
            .arg(work.join("llama-imatrix.gguf"))
            .args(common)
            .args(["-t", &threads]),
        &work.join("llama-imatrix.log"),
        "Final estimate",
    );
    row("imatrix f32", &k, &l, None);
    println!();
    println!("time and RSS columns: kvant / llama.cpp (below 1.00x: kvant is faster / smaller)");
}
