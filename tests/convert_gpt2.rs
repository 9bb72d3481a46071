//! Issue 2's proof: checkpoints of the GPT-2 family converted by kvant
//! compute, in real llama.cpp, what PyTorch computed (the fixtures'
//! `expected.json`), and tokenize as the Hugging Face tokenizer does.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use kvant::convert::{convert, ConvertReport, ConvertRequest, NoProgress, OutputSpec};
use kvant::quant::FileType;
use serde_json::Value;

use support::fixtures;
use support::llama::Model;

fn convert_to(
    src: &Path,
    ft: FileType,
    dir: &Path,
    n_head: Option<usize>,
) -> (PathBuf, ConvertReport) {
    let out = dir.join(format!("out-{}.gguf", ft.name()));
    let req = ConvertRequest {
        source: src.to_owned(),
        outputs: vec![OutputSpec {
            file_type: ft,
            path: out.clone(),
        }],
        n_head,
        ..Default::default()
    };
    let report = convert(&req, &NoProgress, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("converting {}: {e}", src.display()));
    (out, report)
}

/// Runs every sample of `expected` through llama.cpp and returns the
/// largest absolute difference of the last position's logits; asserts
/// the argmax at every position.
fn check_logits(gguf: &Path, expected: &Value, tolerance: f32) -> f32 {
    let model = Model::load(gguf, false);
    let samples = expected["logits"].as_array().expect("logits array");
    assert!(!samples.is_empty());
    let mut worst = 0f32;
    for (s, sample) in samples.iter().enumerate() {
        let ids: Vec<i32> = sample["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id") as i32)
            .collect();
        let want_last: Vec<f32> = sample["last_logits"]
            .as_array()
            .expect("last_logits")
            .iter()
            .map(|v| v.as_f64().expect("logit") as f32)
            .collect();
        let want_argmax: Vec<usize> = sample["argmax"]
            .as_array()
            .expect("argmax")
            .iter()
            .map(|v| v.as_u64().expect("argmax") as usize)
            .collect();
        let got = model.eval_logits(&ids);
        assert_eq!(got.len(), ids.len());
        let last = got.last().expect("positions");
        assert_eq!(last.len(), want_last.len(), "vocabulary size");
        let diff = last
            .iter()
            .zip(&want_last)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        let argmax: Vec<usize> = got
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            })
            .collect();
        assert_eq!(
            argmax,
            want_argmax,
            "{}: argmax differs in sample {s}",
            gguf.display()
        );
    }
    assert!(
        worst <= tolerance,
        "{}: max |logit - pytorch| = {worst} > {tolerance}",
        gguf.display()
    );
    worst
}

#[test]
fn nanogpt_ckpt_f32_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::F32,
        dir.path(),
        None,
    );
    assert_eq!(report.arch, "gpt2");
    assert_eq!(
        report.version.as_deref().map(|v| v.starts_with("iter")),
        Some(true)
    );
    let worst = check_logits(&gguf, &fixtures::json("nanogpt-az/expected.json"), 0.01);
    eprintln!("nanogpt-az ckpt.pt F32: max abs logit diff {worst}");
}

#[test]
fn bare_state_dict_needs_and_takes_n_head() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures::path("nanogpt-az/best_model.pt");
    // Without n_head the error says how to supply it.
    let req = ConvertRequest {
        source: src.clone(),
        outputs: vec![OutputSpec {
            file_type: FileType::F32,
            path: dir.path().join("x.gguf"),
        }],
        ..Default::default()
    };
    let err = convert(&req, &NoProgress, &AtomicBool::new(false)).expect_err("n_head missing");
    assert!(err.to_string().contains("--n-head"), "{err}");
    assert!(!dir.path().join("x.gguf").exists());
    let (gguf, _) = convert_to(&src, FileType::F32, dir.path(), Some(4));
    check_logits(&gguf, &fixtures::json("nanogpt-az/expected.json"), 0.01);
}

#[test]
fn nobias_legacy_checkpoint_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("nanogpt-az-nobias-legacy/ckpt.pt"),
        FileType::F32,
        dir.path(),
        None,
    );
    assert_eq!(report.hparams["bias"], Value::Bool(false));
    check_logits(
        &gguf,
        &fixtures::json("nanogpt-az-nobias-legacy/expected.json"),
        0.01,
    );
}

#[test]
fn hf_gpt2_folder_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("hf-gpt2-az"),
        FileType::F32,
        dir.path(),
        None,
    );
    assert_eq!(report.hparams["layout"], "conv1d");
    check_logits(&gguf, &fixtures::json("nanogpt-az/expected.json"), 0.01);
}

#[test]
fn fp16_checkpoint_as_f16_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(
        &fixtures::path("nanogpt-az-fp16/ckpt.pt"),
        FileType::F16,
        dir.path(),
        None,
    );
    assert_eq!(report.outputs[0].type_counts.get("F16"), Some(&17));
    check_logits(&gguf, &fixtures::json("nanogpt-az/expected.json"), 0.05);
}

#[test]
fn llama_cpp_tokenizes_the_gguf_like_hugging_face() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::F32,
        dir.path(),
        None,
    );
    let model = Model::load(&gguf, true);
    let expected = fixtures::json("tokenizers/expected_tokens.json");
    for sample in expected["samples"].as_array().expect("samples") {
        let text = sample["text"].as_str().expect("text");
        let want: Vec<i32> = sample["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id") as i32)
            .collect();
        assert_eq!(model.tokenize(text, false, true), want, "{text}");
    }
}

#[test]
fn one_pass_writes_every_requested_type() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures::path("hf-gpt2-az");
    let outputs: Vec<OutputSpec> = [FileType::F32, FileType::F16, FileType::BF16]
        .into_iter()
        .map(|ft| OutputSpec {
            file_type: ft,
            path: dir.path().join(format!("m-{}.gguf", ft.name())),
        })
        .collect();
    let req = ConvertRequest {
        source: src,
        outputs: outputs.clone(),
        ..Default::default()
    };
    let report = convert(&req, &NoProgress, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.outputs.len(), 3);
    for (o, spec) in report.outputs.iter().zip(&outputs) {
        let bytes = std::fs::read(&spec.path).unwrap();
        assert_eq!(o.size, bytes.len() as u64);
        use sha2::Digest;
        assert_eq!(
            o.sha256,
            hex::encode(sha2::Sha256::digest(&bytes)),
            "digest computed while writing"
        );
        let f = kvant::gguf::GgufFile::open(&spec.path).unwrap();
        assert_eq!(
            f.metadata.get("general.file_type").and_then(|v| v.as_u64()),
            Some(u64::from(spec.file_type.llama_ftype()))
        );
    }
    // The single-type conversion gives the same bytes as the multi-output pass.
    let (single, _) = convert_to(
        &fixtures::path("hf-gpt2-az"),
        FileType::F16,
        dir.path(),
        None,
    );
    assert_eq!(
        std::fs::read(single).unwrap(),
        std::fs::read(&outputs[1].path).unwrap()
    );
}
