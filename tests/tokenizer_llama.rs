//! Real llama.cpp judges kvant's vocabularies: each fixture tokenizer is
//! turned into `tokenizer.ggml.*` keys, written as a vocab-only GGUF,
//! loaded by llama.cpp, and llama.cpp's token ids must equal the ids the
//! original tokenizer library produced (stored in the fixtures).

mod support;

use std::path::{Path, PathBuf};

use kvant::gguf::{GgufArray, GgufValue, GgufWriter, Metadata};
use kvant::tokenizer::{discover, gguf_vocab, TokenizerError, TokenizerFiles, Vocab};
use support::llama::Model;

fn files_for(json: PathBuf) -> TokenizerFiles {
    TokenizerFiles {
        tokenizer_json: Some(json),
        ..Default::default()
    }
}

/// Writes `vocab` as a vocab-only GGUF for `arch` and loads it.
fn load(vocab: &Vocab, arch: &str, dir: &Path) -> Model {
    let mut md = Metadata::new();
    md.set("general.architecture", arch);
    md.set("general.name", "kvant tokenizer test");
    md.extend(vocab.metadata.clone());
    let path = dir.join("vocab.gguf");
    GgufWriter::create(&path, &md, Vec::new())
        .unwrap()
        .finish()
        .unwrap();
    Model::load(&path, true)
}

fn ids(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

fn string_key(v: &Vocab, key: &str) -> String {
    v.metadata.get(key).unwrap().as_str().unwrap().to_string()
}

fn bool_key(v: &Vocab, key: &str) -> bool {
    match v.metadata.get(key) {
        Some(GgufValue::Bool(b)) => *b,
        other => panic!("{key} is {other:?}"),
    }
}

/// Every `tokens` sample (no specials) and the `tokens_with_specials`
/// sample of a family fixture's expected.json, through llama.cpp.
fn check_family(dir: &str, arch: &str, want_pre: &str, want_add_bos: bool) -> Vocab {
    let files = discover(&support::fixtures::path(dir));
    let vocab = gguf_vocab(&files, 3000).unwrap();
    assert_eq!(string_key(&vocab, "tokenizer.ggml.pre"), want_pre, "{dir}");
    assert_eq!(vocab.add_bos, want_add_bos, "{dir}");
    assert_eq!(
        bool_key(&vocab, "tokenizer.ggml.add_bos_token"),
        want_add_bos
    );
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, arch, tmp.path());
    let expected = support::fixtures::json(&format!("{dir}/expected.json"));
    let samples = expected["tokens"].as_array().unwrap();
    assert!(samples.len() >= 4, "{dir}: too few samples");
    for s in samples {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            model.tokenize(text, false, false),
            ids(&s["ids"]),
            "{dir}: {text:?}"
        );
    }
    let ws = &expected["tokens_with_specials"];
    let text = ws["text"].as_str().unwrap();
    let add = ws["add_bos"].as_bool().unwrap();
    assert_eq!(
        model.tokenize(text, add, true),
        ids(&ws["ids"]),
        "{dir}: {text:?}"
    );
    vocab
}

#[test]
fn az_bpe_matches_hf_tokenizers_in_llama_cpp() {
    let vocab = gguf_vocab(
        &files_for(support::fixtures::path("tokenizers/az_bpe_tokenizer.json")),
        2048,
    )
    .unwrap();
    assert_eq!(string_key(&vocab, "tokenizer.ggml.model"), "gpt2");
    assert_eq!(string_key(&vocab, "tokenizer.ggml.pre"), "gpt-2");
    assert_eq!(vocab.eos_token.as_deref(), Some("<|endoftext|>"));
    assert_eq!(vocab.stop_tokens, vec!["<|endoftext|>".to_string()]);
    match vocab.metadata.get("tokenizer.ggml.token_type") {
        Some(GgufValue::Array(GgufArray::I32(t))) => {
            assert_eq!(t.len(), 2048);
            assert_eq!(t[0], 3, "<|endoftext|> must be CONTROL");
            assert!(t[1..].iter().all(|&x| x == 1));
        }
        other => panic!("token_type is {other:?}"),
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, "gpt2", tmp.path());
    assert_eq!(model.n_vocab(), 2048);
    let expected = support::fixtures::json("tokenizers/expected_tokens.json");
    let samples = expected["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for s in samples {
        let text = s["text"].as_str().unwrap();
        let want = ids(&s["ids"]);
        // HF's ByteLevel post-processor adds nothing, so add_special must not either.
        assert_eq!(model.tokenize(text, true, true), want, "{text:?}");
        assert_eq!(model.detokenize(&want), text);
    }
    // Without parse_special the mid-text <|endoftext|> is plain text: proves
    // the sample really exercises the special token.
    let s = &samples[3];
    assert_ne!(
        model.tokenize(s["text"].as_str().unwrap(), false, false),
        ids(&s["ids"])
    );
}

#[test]
fn whitespace_pre_tokenizer_is_refused_with_reason() {
    let path = support::fixtures::path("tokenizers/az_bpe_whitespace.json");
    let err = gguf_vocab(&files_for(path.clone()), 4096).unwrap_err();
    match &err {
        TokenizerError::Unreproducible { path: p, reason } => {
            assert_eq!(p, &path);
            assert!(reason.contains("Whitespace"), "{reason}");
            assert!(reason.contains("ByteLevel"), "{reason}");
        }
        other => panic!("expected Unreproducible, got {other:?}"),
    }
    assert!(err.to_string().contains("az_bpe_whitespace.json"));
}

#[test]
fn hf_gpt2_folder_and_nanogpt_checkpoint_dir() {
    let expected = support::fixtures::json("tokenizers/expected_tokens.json");
    for dir in ["hf-gpt2-az", "nanogpt-az"] {
        let files = discover(&support::fixtures::path(dir));
        assert!(files.tokenizer_json.is_some(), "{dir}");
        let vocab = gguf_vocab(&files, 2048).unwrap();
        assert_eq!(string_key(&vocab, "tokenizer.ggml.pre"), "gpt-2");
        assert!(!vocab.add_bos);
        let tmp = tempfile::tempdir().unwrap();
        let model = load(&vocab, "gpt2", tmp.path());
        for s in expected["samples"].as_array().unwrap() {
            let text = s["text"].as_str().unwrap();
            assert_eq!(
                model.tokenize(text, true, true),
                ids(&s["ids"]),
                "{dir}: {text:?}"
            );
        }
    }
}

#[test]
fn vocab_is_padded_to_embedding_rows_and_too_few_rows_is_an_error() {
    let files = files_for(support::fixtures::path("tokenizers/az_bpe_tokenizer.json"));
    let vocab = gguf_vocab(&files, 2112).unwrap();
    assert_eq!(vocab.n_tokens, 2112);
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, "gpt2", tmp.path());
    assert_eq!(model.n_vocab(), 2112);
    match (
        vocab.metadata.get("tokenizer.ggml.tokens"),
        vocab.metadata.get("tokenizer.ggml.token_type"),
    ) {
        (
            Some(GgufValue::Array(GgufArray::String(t))),
            Some(GgufValue::Array(GgufArray::I32(ty))),
        ) => {
            assert_eq!(t[2100], "[PAD2100]");
            assert_eq!(ty[2100], 5, "padding must be UNUSED");
        }
        other => panic!("tokens/token_type are {other:?}"),
    }
    // llama.cpp renders UNUSED padding as nothing: no text maps to it.
    assert_eq!(model.detokenize(&[2100]), "");
    let expected = support::fixtures::json("tokenizers/expected_tokens.json");
    let s = &expected["samples"][1];
    assert_eq!(
        model.tokenize(s["text"].as_str().unwrap(), false, false),
        ids(&s["ids"])
    );
    match gguf_vocab(&files, 2000) {
        Err(e @ TokenizerError::Mismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("2048") && msg.contains("2000"), "{msg}");
        }
        other => panic!("expected Mismatch, got {other:?}"),
    }
}

#[test]
fn no_tokenizer_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = gguf_vocab(&discover(tmp.path()), 10).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("--tokenizer"),
        "{msg}"
    );
}

#[test]
fn qwen2_tokenizer_in_llama_cpp() {
    let v = check_family("hf-qwen2-az", "qwen2", "qwen2", false);
    assert_eq!(v.eos_token.as_deref(), Some("<|im_end|>"));
}

#[test]
fn qwen3_tokenizer_in_llama_cpp() {
    check_family("hf-qwen3-az", "qwen3", "qwen2", false);
}

#[test]
fn llama3_tokenizer_in_llama_cpp() {
    let v = check_family("hf-llama3-az", "llama", "llama-bpe", true);
    assert_eq!(v.bos_token.as_deref(), Some("<|begin_of_text|>"));
    assert!(v.stop_tokens.contains(&"<|eot_id|>".to_string()));
    // BOS really is added by llama.cpp for plain text.
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&v, "llama", tmp.path());
    assert_eq!(model.tokenize("Salam", true, false).first(), Some(&0));
}

#[test]
fn mistral_sentencepiece_in_llama_cpp() {
    let v = check_family("hf-mistral-sp-az", "llama", "default", true);
    assert_eq!(string_key(&v, "tokenizer.ggml.model"), "llama");
}

#[test]
fn hf_llama_bytelevel_tokenizer_in_llama_cpp() {
    // hf-llama-az has no tokens in expected.json: it shares the az BPE, so
    // the az samples judge it.
    let files = discover(&support::fixtures::path("hf-llama-az"));
    let vocab = gguf_vocab(&files, 2048).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, "llama", tmp.path());
    let expected = support::fixtures::json("tokenizers/expected_tokens.json");
    for s in expected["samples"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            model.tokenize(text, false, true),
            ids(&s["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn gpt2_pre_on_qwen_tokenizer_fails_a_sample() {
    let files = discover(&support::fixtures::path("hf-qwen2-az"));
    let mut vocab = gguf_vocab(&files, 3000).unwrap();
    vocab.metadata.set("tokenizer.ggml.pre", "gpt-2");
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, "qwen2", tmp.path());
    let expected = support::fixtures::json("hf-qwen2-az/expected.json");
    let mismatches = expected["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| model.tokenize(s["text"].as_str().unwrap(), false, false) != ids(&s["ids"]))
        .count();
    assert!(
        mismatches >= 1,
        "gpt-2 pre-tokenizer reproduced every Qwen2 sample"
    );
}

#[test]
fn mistral_tokenizer_json_without_spm_model_in_llama_cpp() {
    let dir = support::fixtures::path("hf-mistral-sp-az");
    let mut files = discover(&dir);
    files.spm_model = None;
    let vocab = gguf_vocab(&files, 2000).unwrap();
    assert_eq!(string_key(&vocab, "tokenizer.ggml.model"), "llama");
    assert!(vocab.add_bos);
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&vocab, "llama", tmp.path());
    let expected = support::fixtures::json("hf-mistral-sp-az/expected.json");
    for s in expected["tokens"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            model.tokenize(text, false, false),
            ids(&s["ids"]),
            "{text:?}"
        );
    }
    let ws = &expected["tokens_with_specials"];
    assert_eq!(
        model.tokenize(ws["text"].as_str().unwrap(), true, true),
        ids(&ws["ids"])
    );
}

#[test]
fn truncated_sentencepiece_model_is_refused_not_a_panic() {
    let src = support::fixtures::path("hf-mistral-sp-az/tokenizer.model");
    let bytes = std::fs::read(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for cut in [1usize, 7, bytes.len() / 3, bytes.len() - 3] {
        let p = tmp.path().join("tokenizer.model");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let files = TokenizerFiles {
            spm_model: Some(p.clone()),
            ..Default::default()
        };
        match gguf_vocab(&files, 2000) {
            Err(TokenizerError::Malformed { path, .. }) => assert_eq!(path, p),
            other => panic!("cut at {cut}: expected Malformed, got {other:?}"),
        }
    }
}
