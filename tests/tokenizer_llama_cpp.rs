//! Tokenization proven by llama.cpp itself: the vocabulary kvant writes
//! makes llama.cpp produce exactly the ids the Hugging Face tokenizer (or
//! SentencePiece) produced for the fixtures' sample texts.

mod support;

use std::path::{Path, PathBuf};

use kvant::gguf::GgufValue;
use kvant::quant::FileType;
use kvant::tokenizer::{discover, gguf_vocab, TokenizerError};
use serde_json::Value;

use support::fixtures;
use support::llama::Model;
use support::logits::convert_to;

fn ids(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// Every `tokens` sample (no specials added) and the `tokens_with_specials`
/// sample (specials parsed, BOS as the tokenizer adds it). Returns the
/// number of samples that differ (0 is asserted by callers that expect it).
fn mismatches(model: &Model, expected: &Value) -> usize {
    let mut bad = 0;
    for s in expected["tokens"].as_array().unwrap() {
        let got = model.tokenize(s["text"].as_str().unwrap(), false, false);
        if got != ids(&s["ids"]) {
            bad += 1;
        }
    }
    let sp = &expected["tokens_with_specials"];
    let add = sp["add_bos"].as_bool().unwrap_or(false);
    if model.tokenize(sp["text"].as_str().unwrap(), add, true) != ids(&sp["ids"]) {
        bad += 1;
    }
    bad
}

fn family_tokens(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(&fixtures::path(name), FileType::F32, dir.path(), None);
    let model = Model::load(&gguf, true);
    let expected = fixtures::json(&format!("{name}/expected.json"));
    assert_eq!(
        mismatches(&model, &expected),
        0,
        "{name}: llama.cpp tokenizes differently"
    );
}

#[test]
fn qwen2_tokens() {
    family_tokens("hf-qwen2-az");
}

#[test]
fn qwen3_tokens() {
    family_tokens("hf-qwen3-az");
}

#[test]
fn llama3_tokens() {
    family_tokens("hf-llama3-az");
}

#[test]
fn mistral_sentencepiece_tokens() {
    family_tokens("hf-mistral-sp-az");
}

#[test]
fn pre_tokenizers_are_chosen_from_the_regex() {
    let pre = |name: &str| {
        let files = discover(&fixtures::path(name));
        let v = gguf_vocab(&files, 4096).unwrap();
        v.metadata
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .map(str::to_owned)
    };
    assert_eq!(pre("hf-qwen2-az").as_deref(), Some("qwen2"));
    assert_eq!(pre("hf-llama3-az").as_deref(), Some("llama-bpe"));
    assert_eq!(pre("hf-gpt2-az").as_deref(), Some("gpt-2"));
}

/// The same GGUF with another `tokenizer.ggml.pre`.
fn with_pre(src: &Path, pre: &str, out: PathBuf) -> PathBuf {
    support::edit::with_metadata(src, out, |md| md.set("tokenizer.ggml.pre", pre))
}

#[test]
fn the_gpt2_pre_tokenizer_would_get_qwen_wrong() {
    // Why the regex must decide: told "gpt-2", llama.cpp splits the Qwen
    // tokenizer's digits and punctuation differently.
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(
        &fixtures::path("hf-qwen2-az"),
        FileType::F32,
        dir.path(),
        None,
    );
    let wrong = with_pre(&gguf, "gpt-2", dir.path().join("wrong.gguf"));
    let expected = fixtures::json("hf-qwen2-az/expected.json");
    assert_eq!(mismatches(&Model::load(&gguf, true), &expected), 0);
    assert!(mismatches(&Model::load(&wrong, true), &expected) >= 1);
}

#[test]
fn whitespace_pre_tokenizer_is_refused_with_the_reason() {
    let files = kvant::tokenizer::TokenizerFiles {
        tokenizer_json: Some(fixtures::path("tokenizers/az_bpe_whitespace.json")),
        ..Default::default()
    };
    match gguf_vocab(&files, 1500) {
        Err(e @ TokenizerError::Unreproducible { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("az_bpe_whitespace.json")
                    && msg.contains("Whitespace")
                    && msg.contains("ByteLevel"),
                "{msg}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn vocabulary_is_padded_to_the_embedding_rows() {
    let files = kvant::tokenizer::TokenizerFiles {
        tokenizer_json: Some(fixtures::path("tokenizers/az_bpe_tokenizer.json")),
        ..Default::default()
    };
    let v = gguf_vocab(&files, 2112).unwrap();
    let Some(GgufValue::Array(kvant::gguf::GgufArray::String(tokens))) =
        v.metadata.get("tokenizer.ggml.tokens")
    else {
        panic!("tokens")
    };
    assert_eq!(tokens.len(), 2112);
    assert_eq!(tokens[2111], "[PAD2111]");
    assert!(
        gguf_vocab(&files, 1000).is_err(),
        "more tokens than rows must be refused"
    );
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures::path("nanogpt-az/ckpt.pt"),
        dir.path().join("ckpt.pt"),
    )
    .unwrap();
    let req = kvant::convert::ConvertRequest {
        source: dir.path().join("ckpt.pt"),
        outputs: vec![kvant::convert::OutputSpec {
            file_type: FileType::F32,
            path: dir.path().join("out.gguf"),
        }],
        ..Default::default()
    };
    let err = kvant::convert::convert(&req, &kvant::convert::NoProgress, &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("--tokenizer"), "{err}");
    assert!(!dir.path().join("out.gguf").exists());
}
