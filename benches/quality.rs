//! The measured conversion's cost (issues 9 and 10), in one run, same
//! machine, same threads:
//!
//! 1. `kvant convert ckpt.pt --type q4_k_m,q8_0` — the plain conversion;
//! 2. `kvant imatrix F32.gguf --text train.txt` — one importance-matrix
//!    pass, chunked as the calibration defaults say;
//! 3. the same conversion with `--calibration train.txt` — the imatrix
//!    from the checkpoint in the same run: target ≤ (2) + (2b), the
//!    conversion given that imatrix file (weighted quantization costs
//!    more than plain);
//! 4. with `--eval-text heldout.txt` too — the whole drop as the daemon's
//!    conversion child runs it (convert + imatrix + reference logits +
//!    every type measured and judged): target under 30 s for the 124M
//!    model at 2 threads;
//! 5. llama.cpp doing the measuring part with its own tools on the same
//!    files and text (`llama-imatrix`, `llama-perplexity
//!    --kl-divergence-base` on the F32 file, `--kl-divergence` on each
//!    type), against (4) − (1).
//!
//! Run: `cargo bench --bench quality` (`-- --quick` for the 4-layer
//! model, `-- --threads N`). llama.cpp's tools come from
//! `KVANT_LLAMA_TOOLS` (default `target/llama-tools/bin`).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kvant::measure::{DEFAULT_CALIBRATION_CHUNKS, DEFAULT_EVAL_CHUNKS, DEFAULT_EVAL_CTX};
use support::args::{has, value};
use support::bench_model;
use support::measure::{measure, run_measured, Measured, MEASURE_FLAG};

fn llama_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("KVANT_LLAMA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/llama-tools/bin")
        });
    let tool = dir.join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/llama-tools.sh (or set KVANT_LLAMA_TOOLS)",
        tool.display()
    );
    tool
}

fn kvant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvant"))
}

fn line(what: &str, m: &Measured) {
    println!(
        "{what:<58} {:>8.2} s {:>7.0} MiB",
        m.seconds, m.peak_rss_mib
    );
}

/// Runs a llama.cpp tool until its log holds `marker` (its log thread
/// now and then drops a run's last lines at exit).
fn llama(cmd: &Command, log: &Path, marker: &str) -> Measured {
    for _ in 0..4 {
        let m = measure(cmd, Some(log));
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(marker)) {
            return m;
        }
    }
    panic!("{cmd:?} printed no {marker:?} (log: {})", log.display());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE_FLAG) {
        run_measured(&args[2], &args[3], &args[4..]);
        return;
    }
    let quick = has(&args, "--quick");
    let threads = value(&args, "--threads").unwrap_or_else(|| "2".into());
    let fixtures = bench_model::fixtures();
    let (train, heldout) = (
        fixtures.join("corpus/train.txt"),
        fixtures.join("corpus/heldout.txt"),
    );
    assert!(train.is_file() && heldout.is_file(), "set KVANT_FIXTURES");
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-quality");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let ckpt = bench_model::write_checkpoint(&work, quick);
    let (n_layer, n_embd, vocab, block) = bench_model::shape(quick);
    // kvant's own defaults, so llama.cpp's tools are given the same work.
    let ctx = DEFAULT_EVAL_CTX.to_string();
    let eval_chunks = DEFAULT_EVAL_CHUNKS.to_string();
    let calibration_chunks = DEFAULT_CALIBRATION_CHUNKS.to_string();
    println!(
        "model: n_layer {n_layer}, n_embd {n_embd}, vocab {vocab}, ctx {block}; types q4_k_m,q8_0; \
         threads {threads}; evaluation -c {ctx} × {eval_chunks} chunks, calibration -c {ctx} × \
         {calibration_chunks} chunks"
    );
    let types = ["--type", "q4_k_m,q8_0", "--threads", &threads];
    let out = |name: &str| work.join(name);

    // One measured `kvant convert ckpt --type q4_k_m,q8_0 EXTRA
    // --output-dir work/NAME`, printed as one line.
    let convert = |name: &str, what: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = kvant();
        cmd.arg("convert").arg(&ckpt).args(types);
        for a in extra {
            cmd.arg(a);
        }
        cmd.arg("--output-dir").arg(out(name));
        let m = measure(&cmd, Some(&out(&format!("{name}.log"))));
        line(what, &m);
        m
    };
    let plain = convert("plain", "1 convert", &[]);

    let f32 = out("model-f32.gguf");
    let st = kvant()
        .arg("convert")
        .arg(&ckpt)
        .args(["--type", "f32", "-o"])
        .arg(&f32)
        .output()
        .expect("kvant convert f32");
    assert!(st.status.success(), "kvant convert --type f32 failed");
    let imatrix = measure(
        kvant()
            .arg("imatrix")
            .arg(&f32)
            .arg("--text")
            .arg(&train)
            .args(["-c", &ctx, "--chunks", &calibration_chunks])
            .args(["--threads", &threads, "-o"])
            .arg(out("imatrix.gguf")),
        Some(&out("imatrix.log")),
    );
    line("2 kvant imatrix (F32 GGUF)", &imatrix);
    let imatrix_file = out("imatrix.gguf");
    let given = convert(
        "given",
        "2b convert --imatrix (that file)",
        &[&"--imatrix", &imatrix_file],
    );
    let calibrated = convert(
        "calibrated",
        "3 convert --calibration",
        &[&"--calibration", &train],
    );
    let drop = convert(
        "drop",
        "4 convert --calibration --eval-text (the whole drop)",
        &[&"--calibration", &train, &"--eval-text", &heldout],
    );

    // llama.cpp's tools on the same measuring work.
    let base = out("base.kld");
    let l_im = llama(
        Command::new(llama_tool("llama-imatrix"))
            .arg("-m")
            .arg(&f32)
            .arg("-f")
            .arg(&train)
            .args([
                "-c",
                &ctx,
                "--chunks",
                &calibration_chunks,
                "-t",
                &threads,
                "-o",
            ])
            .arg(out("llama-imatrix.gguf")),
        &out("llama-imatrix.log"),
        "Final estimate",
    );
    line("5a llama-imatrix (F32 GGUF)", &l_im);
    let l_ref = llama(
        Command::new(llama_tool("llama-perplexity"))
            .arg("-m")
            .arg(&f32)
            .arg("-f")
            .arg(&heldout)
            .args(["-c", &ctx, "--chunks", &eval_chunks, "-t", &threads])
            .arg("--kl-divergence-base")
            .arg(&base),
        &out("llama-reference.log"),
        "Final estimate",
    );
    line("5b llama-perplexity --kl-divergence-base (F32)", &l_ref);
    let mut l_kld = 0.0;
    for ty in ["q4_k_m", "q8_0"] {
        let file = find_gguf(&out("drop"), ty);
        let m = llama(
            Command::new(llama_tool("llama-perplexity"))
                .arg("-m")
                .arg(&file)
                .args(["-t", &threads, "--kl-divergence", "--kl-divergence-base"])
                .arg(&base),
            &out(&format!("llama-kld-{ty}.log")),
            "Same top p",
        );
        line(&format!("5c llama-perplexity --kl-divergence ({ty})"), &m);
        l_kld += m.seconds;
    }

    println!();
    let imatrix_cost = calibrated.seconds / (given.seconds + imatrix.seconds);
    println!(
        "convert --calibration / (imatrix pass + conversion with that imatrix): {imatrix_cost:.2}x (target ≤ 1.0x)"
    );
    println!(
        "the whole drop: {:.1} s (target < 30 s at 2 threads on the 124M model)",
        drop.seconds
    );
    let kvant_measuring = drop.seconds - plain.seconds;
    let llama_measuring = l_im.seconds + l_ref.seconds + l_kld;
    println!(
        "measuring (drop − convert) kvant {kvant_measuring:.1} s vs llama.cpp's tools {llama_measuring:.1} s: {:.2}x",
        kvant_measuring / llama_measuring
    );
}

/// The drop's `ty` output (named after the model).
fn find_gguf(dir: &Path, ty: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("output dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{ty}.gguf")))
        })
        .unwrap_or_else(|| panic!("no {ty} file in {}", dir.display()))
}
