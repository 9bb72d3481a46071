//! Tokenizers: `tokenizer.json` (and SentencePiece models) into
//! `tokenizer.ggml.*` GGUF keys, and chat templates into Ollama templates.
//!
//! The rule: a GGUF must tokenize exactly as the tokenizer the model was
//! trained with. What llama.cpp cannot reproduce is refused with the
//! reason, never approximated.
//!
//! This module must not know about tensors or quantization.

mod bpe;
pub mod chat_template;
pub mod encode;
mod error;
mod metaspace;
mod pretokenizer;
mod specials;
mod spm;

pub use error::TokenizerError;
pub use pretokenizer::llama_pre;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::gguf::Metadata;

/// llama.cpp's token types (`llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// The tokenizer files of one model.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    /// Where they were looked for (for messages).
    pub dir: PathBuf,
    /// `tokenizer.json` (Hugging Face `tokenizers`).
    pub tokenizer_json: Option<PathBuf>,
    /// `tokenizer_config.json` (special tokens, add flags, chat template).
    pub tokenizer_config: Option<PathBuf>,
    /// A SentencePiece `tokenizer.model`.
    pub spm_model: Option<PathBuf>,
    /// The model's config (for `*_token_id` fallbacks).
    pub config_json: Option<Value>,
}

/// A vocabulary ready for a GGUF file.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Every `tokenizer.ggml.*` key, typed as llama.cpp wants.
    pub metadata: Metadata,
    /// Tokens written (the model's embedding rows).
    pub n_tokens: usize,
    /// BOS token text.
    pub bos_token: Option<String>,
    /// EOS token text.
    pub eos_token: Option<String>,
    /// Token strings that end a generation (Ollama `stop`).
    pub stop_tokens: Vec<String>,
    /// The tokenizer prepends BOS.
    pub add_bos: bool,
}

/// Looks for tokenizer files in `dir`: `tokenizer.json` or a single
/// `*tokenizer*.json`, `tokenizer_config.json`, `tokenizer.model`.
pub fn discover(dir: &Path) -> TokenizerFiles {
    let file = |n: &str| Some(dir.join(n)).filter(|p| p.is_file());
    let tokenizer_json = file("tokenizer.json").or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.contains("tokenizer")
                    && n.ends_with(".json")
                    && n != "tokenizer_config.json"
                    && !n.starts_with('.')
            })
            .collect();
        (found.len() == 1).then(|| found.remove(0))
    });
    TokenizerFiles {
        dir: dir.to_owned(),
        tokenizer_json,
        tokenizer_config: file("tokenizer_config.json"),
        spm_model: file("tokenizer.model"),
        config_json: None,
    }
}

/// Largest tokenizer file read (real ones are a few MB).
const MAX_FILE: u64 = 512 << 20;

fn read_json(p: &Path) -> Result<Value, TokenizerError> {
    let bad = |reason: String| TokenizerError::Malformed {
        path: p.to_owned(),
        reason,
    };
    let len = std::fs::metadata(p).map_err(|e| bad(e.to_string()))?.len();
    if len > MAX_FILE {
        return Err(bad(format!("{len} bytes is too large for a tokenizer")));
    }
    let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))
}

/// Builds the GGUF vocabulary for a model with `n_vocab_rows` embedding
/// rows (tokens are padded with unused entries up to it).
pub fn gguf_vocab(files: &TokenizerFiles, n_vocab_rows: usize) -> Result<Vocab, TokenizerError> {
    let mut vocab = vocab_only(files, n_vocab_rows)?;
    // The chat template travels with the model, verbatim, as llama.cpp's
    // converter stores it.
    if let Some(t) = chat_template_text(files)? {
        vocab.metadata.set("tokenizer.chat_template", t);
    }
    Ok(vocab)
}

/// The `bos_token`/`eos_token`/`add_bos_token` the model's Jinja chat
/// template is rendered with, from `tokenizer_config.json` (and
/// `tokenizer.json`'s post-processor for the BOS policy).
pub fn chat_specials(files: &TokenizerFiles) -> Result<chat_template::Specials, TokenizerError> {
    let config = files
        .tokenizer_config
        .as_deref()
        .map(read_json)
        .transpose()?
        .unwrap_or(Value::Null);
    let tok = files.tokenizer_json.as_deref().map(read_json).transpose()?;
    Ok(chat_template::Specials::from_hf(&config, tok.as_ref()))
}

/// The model's Jinja chat template: `chat_template.jinja` beside the
/// tokenizer, else `tokenizer_config.json`'s `chat_template` (a string, or
/// the entry named `default` of a list).
pub fn chat_template_text(files: &TokenizerFiles) -> Result<Option<String>, TokenizerError> {
    let jinja = files.dir.join("chat_template.jinja");
    if jinja.is_file() {
        let len = std::fs::metadata(&jinja).map(|m| m.len()).unwrap_or(0);
        if len > 1 << 20 {
            return Err(TokenizerError::Malformed {
                path: jinja,
                reason: format!("{len} bytes is too large for a chat template"),
            });
        }
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| TokenizerError::Malformed {
                path: jinja,
                reason: e.to_string(),
            });
    }
    let Some(cfg) = files.tokenizer_config.as_deref() else {
        return Ok(None);
    };
    let v = read_json(cfg)?;
    Ok(match v.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|e| e.get("template").and_then(Value::as_str))
            .map(str::to_owned),
        _ => None,
    })
}

fn vocab_only(files: &TokenizerFiles, n_vocab_rows: usize) -> Result<Vocab, TokenizerError> {
    let tokenizer_config = files
        .tokenizer_config
        .as_deref()
        .map(read_json)
        .transpose()?;
    let tok = files.tokenizer_json.as_deref().map(read_json).transpose()?;
    if let (Some(p), Some(tok)) = (&files.tokenizer_json, &tok) {
        let is_metaspace = tok
            .get("pre_tokenizer")
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            == Some("Metaspace");
        // A Metaspace BPE is SentencePiece's: convert the SentencePiece
        // model itself when it is there, as llama.cpp's converter does.
        if !(is_metaspace && files.spm_model.is_some()) {
            return bpe::from_tokenizer_json(
                p,
                tok,
                tokenizer_config.as_ref(),
                files.config_json.as_ref(),
                n_vocab_rows,
            );
        }
    }
    if let Some(p) = &files.spm_model {
        return spm::from_model(
            p,
            tok.as_ref(),
            tokenizer_config.as_ref(),
            files.config_json.as_ref(),
            n_vocab_rows,
        );
    }
    Err(TokenizerError::NotFound {
        dir: files.dir.clone(),
    })
}
