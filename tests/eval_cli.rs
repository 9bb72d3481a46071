//! `kvant eval` end to end — kvant's own forward pass — against llama.cpp's
//! `llama-perplexity` on nanogpt-k256 (F32, converted by kvant), the
//! held-out corpus (as text, and as token ids — llama.cpp's tokenization
//! written as nanoGPT's val.bin), `-c 128`, 2 chunks: PPL within 0.1 %, KLD from
//! llama-perplexity's base file within 1e-5, the saved logits read back by
//! llama-perplexity; and the bad inputs get one clear line.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use kvant::convert::{convert, ConvertRequest, NoProgress, OutputSpec};
use kvant::quant::FileType;
use serde_json::Value;

use support::llama_tools::{
    self, assert_close as within, final_estimate, summary_value, write_llama_token_file,
};

const N_CTX: &str = "128";
/// Two chunks (126 scored tokens, enough for llama-perplexity's summary):
/// kvant's forward pass runs unoptimized in the test profile.
const CHUNKS: &str = "2";

struct Files {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    f32: PathBuf,
    qwen: PathBuf,
    text: PathBuf,
    val_bin: PathBuf,
    llama_base: PathBuf,
}

fn convert_one(src: &str, out: &Path) {
    let req = ConvertRequest {
        source: support::fixtures::path(src),
        outputs: vec![OutputSpec {
            file_type: FileType::F32,
            path: out.to_owned(),
        }],
        ..Default::default()
    };
    convert(&req, &NoProgress, &AtomicBool::new(false)).expect("converting a fixture");
}

fn files() -> &'static Files {
    static F: OnceLock<Files> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (f32, qwen) = (d.join("k256-f32.gguf"), d.join("qwen2-f32.gguf"));
        convert_one("nanogpt-k256", &f32);
        convert_one("hf-qwen2-az", &qwen);
        let text = support::fixtures::path("corpus/heldout.txt");
        let val_bin = d.join("val.bin");
        write_llama_token_file(&f32, &text, &val_bin);
        let llama_base = d.join("llama-f32.kld");
        llama_perplexity(&f32, &text, &[&"--kl-divergence-base", &llama_base]);
        Files {
            dir: d.to_owned(),
            f32,
            qwen,
            text,
            val_bin,
            llama_base,
            _dir: dir,
        }
    })
}

fn llama_perplexity(model: &Path, text: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let (c, n) = (
        N_CTX.parse().expect("N_CTX"),
        CHUNKS.parse().expect("CHUNKS"),
    );
    llama_tools::perplexity(model, text, c, n, extra)
}

fn kvant(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvant"));
    cmd.arg("eval");
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("running kvant")
}

fn kvant_json(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Value {
    let out = kvant(args);
    assert!(
        out.status.success(),
        "kvant eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output")
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or_else(|| panic!("{path:?} in {v}"))
}

#[test]
fn perplexity_of_kvant_s_forward_pass_equals_llama_perplexity() {
    let f = files();
    let (ppl, _) = final_estimate(&llama_perplexity(&f.f32, &f.text, &[]));
    let report = kvant_json(&[
        &f.f32,
        &"--tokens",
        &f.val_bin,
        &"-c",
        &N_CTX,
        &"--chunks",
        &CHUNKS,
        &"--json",
    ]);
    assert_eq!(num(&report, &["n_scored"]), 126.0);
    within(
        "PPL",
        num(&report, &["perplexity", "value"]),
        ppl,
        1e-3 * ppl,
    );
}

#[test]
fn kl_divergence_from_llama_s_base_file_and_saved_logits_round_trip() {
    let f = files();
    let saved = f.dir.join("kvant-f32.kld");
    let report = kvant_json(&[
        &f.f32,
        &"--tokens",
        &f.val_bin,
        &"--base-logits",
        &f.llama_base,
        &"--save-logits",
        &saved,
        &"--json",
    ]);
    let theirs = llama_perplexity(
        &f.f32,
        &f.text,
        &[&"--kl-divergence", &"--kl-divergence-base", &f.llama_base],
    );
    let kld = |label: &str| summary_value(&theirs, label).0;
    within(
        "PPL(Q)",
        num(&report, &["kld", "ppl", "value"]),
        kld("Mean PPL(Q)"),
        1e-3 * kld("Mean PPL(Q)"),
    );
    within(
        "PPL(base)",
        num(&report, &["kld", "ppl_base", "value"]),
        kld("Mean PPL(base)"),
        2e-6,
    );
    within(
        "mean KLD",
        num(&report, &["kld", "kld", "value"]),
        kld("Mean    KLD"),
        1e-5,
    );
    within(
        "same top p",
        100.0 * num(&report, &["kld", "same_top", "value"]),
        kld("Same top p"),
        0.2,
    );
    // llama-perplexity reads the logits kvant saved in the same run.
    let back = llama_perplexity(
        &f.f32,
        &f.text,
        &[&"--kl-divergence", &"--kl-divergence-base", &saved],
    );
    let ppl_saved = summary_value(&back, "Mean PPL(base)").0;
    within(
        "PPL(base) of kvant's file",
        ppl_saved,
        num(&report, &["perplexity", "value"]),
        1e-3 * ppl_saved,
    );
    assert!(summary_value(&back, "Mean    KLD").0 < 1e-5);
}

fn error_line(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = kvant(args);
    assert_eq!(out.status.code(), Some(1), "kvant eval should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn bad_inputs_get_one_clear_line() {
    let f = files();
    let short = f.dir.join("short.bin");
    std::fs::write(&short, vec![1u8; 2 * 200]).expect("short.bin");
    let e = error_line(&[&f.f32, &"--tokens", &short, &"-c", &N_CTX]);
    assert!(
        e.contains("the text has 200 tokens, but 256 are needed"),
        "{e}"
    );

    let bad = f.dir.join("bad.bin");
    std::fs::write(&bad, [1u8, 0, 0xff, 0xff]).expect("bad.bin");
    let e = error_line(&[&f.f32, &"--tokens", &bad]);
    assert!(e.contains("at byte offset 2") && e.contains("65535"), "{e}");

    let e = error_line(&[&f.f32, &"--base-logits", &f.llama_base, &"-c", &"64"]);
    assert!(
        e.contains("chunks of 128 tokens (-c 128), not -c 64"),
        "{e}"
    );

    let e = error_line(&[
        &f.f32,
        &"--tokens",
        &f.val_bin,
        &"-c",
        &N_CTX,
        &"--base",
        &f.qwen,
    ]);
    assert!(
        e.contains("another vocabulary") || e.contains("vocabulary of"),
        "{e}"
    );

    let qwen_base = f.dir.join("qwen.kld");
    llama_perplexity(&f.qwen, &f.text, &[&"--kl-divergence-base", &qwen_base]);
    let e = error_line(&[&f.f32, &"--base-logits", &qwen_base]);
    assert!(e.contains("computed with a vocabulary of"), "{e}");
}
