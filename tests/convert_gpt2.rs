//! Issue 2's proof: checkpoints of the GPT-2 family converted by kvant
//! compute, in real llama.cpp, what PyTorch computed (the fixtures'
//! `expected.json`), and tokenize as the Hugging Face tokenizer does.

mod support;

use std::sync::atomic::AtomicBool;

use kvant::convert::{convert, ConvertRequest, NoProgress, OutputSpec};
use kvant::quant::FileType;
use serde_json::Value;

use support::fixtures;
use support::llama::Model;
use support::logits::{check_logits, convert_to};

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

/// Issue 11 item 3: the same weights written by
/// `torch.save(..., _use_new_zipfile_serialization=False)` — nanoGPT's
/// dict and a bare state_dict — convert to what the zip form gives, and
/// llama.cpp computes PyTorch's logits from them.
#[test]
fn legacy_format_checkpoints_match_pytorch_as_the_zip_form_does() {
    let expected = fixtures::json("nanogpt-az/expected.json");
    let zip_dir = tempfile::tempdir().unwrap();
    let (zip_gguf, _) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::F32,
        zip_dir.path(),
        None,
    );
    let zip_file = kvant::gguf::GgufFile::open(&zip_gguf).unwrap();
    for (rel, n_head) in [
        ("nanogpt-az-legacy-format/ckpt.pt", None),
        ("nanogpt-az-legacy-format/best_model.pt", Some(4)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (gguf, report) = convert_to(&fixtures::path(rel), FileType::F32, dir.path(), n_head);
        assert_eq!(report.arch, "gpt2", "{rel}");
        let worst = check_logits(&gguf, &expected, 0.01);
        eprintln!("{rel} F32: max abs logit diff {worst}");
        let file = kvant::gguf::GgufFile::open(&gguf).unwrap();
        assert_eq!(file.tensors.len(), zip_file.tensors.len(), "{rel}");
        for t in &zip_file.tensors {
            let mine = file
                .tensor(&t.info.name)
                .unwrap_or_else(|| panic!("{rel}: no {}", t.info.name));
            assert_eq!(mine.info, t.info, "{rel}");
            assert!(
                file.tensor_data(mine) == zip_file.tensor_data(t),
                "{rel}: {} differs from the zip form's",
                t.info.name
            );
        }
    }
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
