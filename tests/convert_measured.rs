//! `kvant convert --eval-text` on a LoRA adapter folder: the fine-tune is
//! measured against its own merged full-precision weights, and the table
//! equals `kvant eval` of the same file against a merged F32 GGUF; and the
//! measuring flags' misuses are refused in one line.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::fixtures;

fn kvant(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(args)
        .output()
        .expect("running kvant")
}

fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = kvant(args);
    assert!(
        out.status.success(),
        "kvant failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kvant eval MODEL [--base BASE] --text TEXT -c 64 --chunks 4 --json`.
fn eval_json(model: &Path, base: Option<&Path>, text: &Path) -> serde_json::Value {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"eval", &model];
    if let Some(b) = &base {
        args.extend([&"--base" as &dyn AsRef<std::ffi::OsStr>, b]);
    }
    args.extend([
        &"--text" as &dyn AsRef<std::ffi::OsStr>,
        &text,
        &"-c",
        &"64",
        &"--chunks",
        &"4",
        &"--json",
    ]);
    serde_json::from_str(&ok(&args)).expect("kvant eval --json")
}

/// The table row of `ty` (`Q8_0`), split on whitespace.
fn row<'a>(table: &'a str, ty: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{ty} ")))
        .unwrap_or_else(|| panic!("no {ty} row in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
fn a_merged_adapter_is_measured_against_its_own_full_precision_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = fixtures::path("lora-llama-az");
    let text = fixtures::path("corpus/heldout.txt");
    let table = ok(&[
        &"convert",
        &adapter,
        &"--type",
        &"q4_k_m",
        &"--eval-text",
        &text,
        &"--eval-ctx",
        &"64",
        &"--eval-chunks",
        &"4",
        &"--output-dir",
        &dir.path(),
    ]);
    let f32 = dir.path().join("merged-f32.gguf");
    ok(&[&"convert", &adapter, &"--type", &"f32", &"-o", &f32]);
    let q = dir.path().join("lora-llama-az-q4_k_m.gguf");
    let e = eval_json(&q, Some(&f32), &text);
    let cells = row(&table, "Q4_K_M");
    // type, size, unit, bits/w, PPL, ΔPPL, %, mean KLD, …
    let ppl: f64 = cells[4].parse().expect("PPL cell");
    let kld: f64 = cells[7].parse().expect("KLD cell");
    let want_ppl = e["kld"]["ppl"]["value"].as_f64().expect("ppl");
    let want_kld = e["kld"]["kld"]["value"].as_f64().expect("kld");
    assert!(
        (ppl - want_ppl).abs() <= 1e-4 * want_ppl,
        "PPL {ppl} vs kvant eval {want_ppl}\n{table}"
    );
    assert!(
        (kld - want_kld).abs() <= 1e-6 + 1e-3 * want_kld,
        "KLD {kld} vs kvant eval {want_kld}\n{table}"
    );
    // The base's perplexity is the merged model's, not the base's: the
    // fine-tune changed the weights it is compared with.
    let base = fixtures::path("hf-llama-az");
    let base_f32 = dir.path().join("base-f32.gguf");
    ok(&[&"convert", &base, &"--type", &"f32", &"-o", &base_f32]);
    let b = eval_json(&base_f32, None, &text);
    let merged_ppl = e["kld"]["ppl_base"]["value"].as_f64().expect("ppl_base");
    let base_ppl = b["perplexity"]["value"].as_f64().expect("ppl");
    assert!(
        (merged_ppl - base_ppl).abs() > 1e-3 * base_ppl,
        "reference {merged_ppl} vs base {base_ppl}"
    );
    assert!(Path::new(&dir.path().join("lora-llama-az.report.html")).is_file());
}

#[test]
fn calibrating_into_a_new_folder_leaves_only_the_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("new/models");
    ok(&[
        &"convert",
        &fixtures::path("nanogpt-k256"),
        &"--type",
        &"q2_k",
        &"--calibration",
        &fixtures::path("corpus/train.txt"),
        &"--eval-ctx",
        &"64",
        &"--output-dir",
        &out,
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("output folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["nanogpt-k256-q2_k.gguf"], "no work file is left");
}

#[test]
fn a_held_out_text_too_short_or_missing_is_named_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "Salam, dünya.\n").expect("writes");
    let missing = dir.path().join("missing.txt");
    for (text, says) in [(&tiny, "tokens"), (&missing, "No such file")] {
        let out = dir.path().join("out");
        let o = kvant(&[
            &"convert",
            &fixtures::path("nanogpt-k256"),
            &"--type",
            &"q8_0",
            &"--eval-text",
            text,
            &"--output-dir",
            &out,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: succeeded", text.display());
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&*text.to_string_lossy()) && err.contains(says),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "nothing is left behind: {left:?}");
    }
}

#[test]
fn measuring_flags_used_wrong_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixtures::path("nanogpt-k256");
    let out = dir.path().join("x.gguf");
    for (args, says) in [
        (
            vec!["--type", "auto", "-o", out.to_str().expect("utf-8")],
            "use --output-dir",
        ),
        (
            vec![
                "--type",
                "q8_0",
                "--save-imatrix",
                out.to_str().expect("utf-8"),
            ],
            "--save-imatrix needs --calibration",
        ),
        (vec!["--type", "q9_k"], "or auto"),
    ] {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert", &src];
        all.extend(args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        let o = kvant(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
