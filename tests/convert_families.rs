//! Issue 5's proof for architectures: LLaMA, Mistral, Qwen2 and Qwen3
//! Hugging Face folders converted to F32 compute, in real llama.cpp, the
//! logits PyTorch computed (within 0.01, every argmax equal).

mod support;

use kvant::quant::FileType;

use support::fixtures;
use support::logits::{check_logits, convert_to};

fn family(name: &str, arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(&fixtures::path(name), FileType::F32, dir.path(), None);
    assert_eq!(report.arch, arch);
    let worst = check_logits(
        &gguf,
        &fixtures::json(&format!("{name}/expected.json")),
        0.01,
    );
    eprintln!("{name}: max abs logit diff {worst}");
}

#[test]
fn llama_gqa_untied() {
    family("hf-llama-az", "llama");
}

#[test]
fn llama3_single_kv_head() {
    family("hf-llama3-az", "llama");
}

#[test]
fn mistral_sentencepiece() {
    family("hf-mistral-sp-az", "llama");
}

#[test]
fn qwen2_biases_tied() {
    family("hf-qwen2-az", "qwen2");
}

#[test]
fn qwen3_qk_norms() {
    family("hf-qwen3-az", "qwen3");
}

#[test]
fn unknown_architecture_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m");
    std::fs::create_dir(&src).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures::path(&format!("hf-llama-az/{f}")), src.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fixtures::path("hf-llama-az/config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "FalconForCausalLM");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let req = kvant::convert::ConvertRequest {
        source: src,
        outputs: vec![kvant::convert::OutputSpec {
            file_type: FileType::F32,
            path: dir.path().join("x.gguf"),
        }],
        ..Default::default()
    };
    let err = kvant::convert::convert(&req, &kvant::convert::NoProgress, &Default::default())
        .expect_err("unsupported");
    let msg = err.to_string();
    assert!(
        msg.contains("FalconForCausalLM") && msg.contains("Qwen2ForCausalLM"),
        "{msg}"
    );
    assert!(!dir.path().join("x.gguf").exists());
}
