//! Issue 12, adapter mode: kvant's GGUF LoRA adapter, loaded by real
//! llama.cpp (`llama_adapter_lora_init`, scale 1) onto the base's GGUF
//! that kvant converts, computes the PEFT model's logits (within 0.01,
//! every argmax equal). What llama.cpp cannot apply at run time is
//! refused with a message that suggests the merged mode.

mod support;

use kvant::convert::convert_as_adapter;
use kvant::gguf::GgufFile;
use kvant::quant::FileType;

use support::fixtures;
use support::llama::Model;
use support::logits::{assert_agreement, compare_logits, compare_logits_by, convert_to};

fn as_adapter(name: &str, base: &str, arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let expected = fixtures::json(&format!("{name}/expected.json"));
    let (base_gguf, _) = convert_to(&fixtures::path(base), FileType::F32, dir.path(), None);
    let lora = dir.path().join(format!("{name}-lora.gguf"));
    let done = convert_as_adapter(&fixtures::path(name), &lora, None, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(done.arch, arch);
    assert_eq!(done.base.file_name().unwrap(), base);

    let f = GgufFile::open(&lora).unwrap();
    let s = |k: &str| {
        f.metadata
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    assert_eq!(s("general.type").as_deref(), Some("adapter"));
    assert_eq!(s("adapter.type").as_deref(), Some("lora"));
    assert_eq!(s("general.architecture").as_deref(), Some(arch));
    assert!(f
        .metadata
        .get("adapter.lora.alpha")
        .and_then(|v| v.as_f64())
        .is_some());
    assert!(f
        .tensors
        .iter()
        .all(|t| t.info.name.ends_with(".lora_a") || t.info.name.ends_with(".lora_b")));
    drop(f);

    let model = Model::load(&base_gguf, false);
    let adapter = model.load_lora(&lora);
    let with = compare_logits_by(
        &|ids| model.eval_logits_with_lora(ids, &adapter, 1.0),
        &expected,
    );
    let worst = assert_agreement(&lora, with, 0.01);
    eprintln!("{name}: base + adapter max abs logit diff {worst}");
    // The adapter is what makes the difference: the base alone is far off.
    let without = compare_logits(&base_gguf, &expected);
    assert!(
        without.max_abs_diff > 0.5,
        "{name}: the base alone already matches: {without:?}"
    );
}

#[test]
fn llama_adapter_applies_in_llama_cpp() {
    as_adapter("lora-llama-az", "hf-llama-az", "llama");
}

#[test]
fn qwen2_rslora_adapter_applies_in_llama_cpp() {
    as_adapter("lora-qwen2-rslora", "hf-qwen2-az", "qwen2");
}

#[test]
fn gpt2_adapter_applies_untransposed_in_llama_cpp() {
    as_adapter("lora-gpt2-az", "hf-gpt2-az", "gpt2");
}

fn refused(name: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let err = convert_as_adapter(&fixtures::path(name), &out, None, None)
        .expect_err("llama.cpp cannot apply it at run time")
        .to_string();
    assert!(err.contains(what), "{err}");
    assert!(err.contains("merged"), "suggests the merged mode: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!out.exists());
}

#[test]
fn dora_is_refused_as_an_adapter() {
    refused("dora-llama-az", "DoRA");
}

#[test]
fn saved_modules_and_embedding_adapters_are_refused_as_an_adapter() {
    refused("lora-llama-head", "whole modules");
}
