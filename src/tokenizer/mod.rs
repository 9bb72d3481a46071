//! Tokenizers: `tokenizer.json` (and SentencePiece models) into
//! `tokenizer.ggml.*` GGUF keys, and chat templates into Ollama templates.
//!
//! This module must not know about tensors or quantization. Its invariant:
//! a vocabulary is only emitted when llama.cpp, reading the keys, would
//! tokenize exactly as the source tokenizer does; anything llama.cpp cannot
//! reproduce is refused with [`TokenizerError::Unreproducible`], never
//! silently converted.

mod bpe;
pub mod chat_template;
mod error;
mod files;
mod pretokenizer;
mod specials;
mod spm;

use std::path::{Path, PathBuf};

use crate::gguf::{GgufArray, GgufValue, Metadata};

pub use error::TokenizerError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`), as its converter
/// writes them.
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special (control) token: only matched when specials are parsed.
    pub const CONTROL: i32 = 3;
    /// A non-special added token: always matched verbatim.
    pub const USER_DEFINED: i32 = 4;
    /// A padding slot that no text maps to.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// The tokenizer files that belong to one checkpoint. Any may be missing;
/// [`gguf_vocab`] decides which one is authoritative.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    /// A Hugging Face `tokenizers` file (`tokenizer.json`).
    pub tokenizer_json: Option<PathBuf>,
    /// `tokenizer_config.json`: special tokens and `add_bos_token` flags.
    pub tokenizer_config: Option<PathBuf>,
    /// A SentencePiece model (`tokenizer.model`).
    pub spm_model: Option<PathBuf>,
    /// The model's `config.json`, for `bos_token_id`/`eos_token_id`
    /// fallbacks when the tokenizer files do not name them.
    pub config_json: Option<serde_json::Value>,
}

/// A vocabulary ready for a GGUF file.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Every `tokenizer.ggml.*` key, typed as llama.cpp reads it.
    pub metadata: Metadata,
    /// Number of tokens written (including padding).
    pub n_tokens: usize,
    /// The end-of-sequence token's text.
    pub eos_token: Option<String>,
    /// Texts that end a turn (eos, eot), for Ollama's `stop` parameter.
    pub stop_tokens: Vec<String>,
    /// The beginning-of-sequence token's text.
    pub bos_token: Option<String>,
    /// Whether the tokenizer prepends BOS.
    pub add_bos: bool,
}

/// Builds the GGUF vocabulary from the tokenizer files.
///
/// `n_vocab_rows`: the model's embedding rows; tokens are padded with
/// `"[PAD{i}]"` UNUSED entries up to it (nanoGPT pads 50257→50304); more
/// tokens than rows is an error.
pub fn gguf_vocab(files: &TokenizerFiles, n_vocab_rows: usize) -> Result<Vocab, TokenizerError> {
    let config = match &files.tokenizer_config {
        Some(p) => Some(files::read_json(p)?),
        None => None,
    };
    let built = if let Some(model) = &files.spm_model {
        let json = match &files.tokenizer_json {
            Some(p) => Some(files::read_json(p)?),
            None => None,
        };
        spm::build(
            model,
            json.as_ref(),
            config.as_ref(),
            files.config_json.as_ref(),
        )?
    } else if let Some(path) = &files.tokenizer_json {
        let json = files::read_json(path)?;
        bpe::build(path, &json, config.as_ref(), files.config_json.as_ref())?
    } else {
        return Err(TokenizerError::NotFound {
            looked_for: "tokenizer.json, *tokenizer*.json or tokenizer.model beside the checkpoint"
                .into(),
        });
    };
    built.finish(n_vocab_rows)
}

/// Finds tokenizer files beside a checkpoint: `tokenizer.json`, or a single
/// `*tokenizer*.json`, `tokenizer_config.json`, `tokenizer.model`, and the
/// model's `config.json`.
pub fn discover(dir: &Path) -> TokenizerFiles {
    files::discover(dir)
}

/// A vocabulary in the making: what one tokenizer format produced, before
/// padding and key writing (shared by the BPE and SentencePiece paths).
#[derive(Debug, Default)]
struct Built {
    source: PathBuf,
    model: &'static str,
    pre: &'static str,
    tokens: Vec<String>,
    scores: Option<Vec<f32>>,
    types: Vec<i32>,
    merges: Option<Vec<String>>,
    specials: specials::SpecialIds,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: Option<bool>,
    remove_extra_whitespaces: Option<bool>,
}

impl Built {
    fn finish(mut self, n_vocab_rows: usize) -> Result<Vocab, TokenizerError> {
        if self.tokens.len() > n_vocab_rows {
            return Err(TokenizerError::TooManyTokens {
                path: self.source.clone(),
                n_tokens: self.tokens.len(),
                n_rows: n_vocab_rows,
            });
        }
        for i in self.tokens.len()..n_vocab_rows {
            self.tokens.push(format!("[PAD{i}]"));
            self.types.push(token_type::UNUSED);
            if let Some(s) = &mut self.scores {
                s.push(-1000.0);
            }
        }
        let n = self.tokens.len();
        let text = |id: Option<u32>| id.and_then(|i| self.tokens.get(i as usize).cloned());
        let eos_token = text(self.specials.eos);
        let bos_token = text(self.specials.bos);
        let mut stop_tokens: Vec<String> = Vec::new();
        for id in [self.specials.eos, self.specials.eot].into_iter().flatten() {
            if let Some(t) = self.tokens.get(id as usize) {
                if !stop_tokens.contains(t) {
                    stop_tokens.push(t.clone());
                }
            }
        }

        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", self.model);
        md.set("tokenizer.ggml.pre", self.pre);
        md.set(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(self.tokens)),
        );
        if let Some(scores) = self.scores {
            md.set(
                "tokenizer.ggml.scores",
                GgufValue::Array(GgufArray::F32(scores)),
            );
        }
        md.set(
            "tokenizer.ggml.token_type",
            GgufValue::Array(GgufArray::I32(self.types)),
        );
        if let Some(merges) = self.merges {
            md.set(
                "tokenizer.ggml.merges",
                GgufValue::Array(GgufArray::String(merges)),
            );
        }
        let ids = [
            ("tokenizer.ggml.bos_token_id", self.specials.bos),
            ("tokenizer.ggml.eos_token_id", self.specials.eos),
            ("tokenizer.ggml.unknown_token_id", self.specials.unk),
            ("tokenizer.ggml.seperator_token_id", self.specials.sep),
            ("tokenizer.ggml.padding_token_id", self.specials.pad),
            ("tokenizer.ggml.eot_token_id", self.specials.eot),
        ];
        for (key, id) in ids {
            if let Some(id) = id {
                md.set(key, GgufValue::U32(id));
            }
        }
        md.set(
            "tokenizer.ggml.add_bos_token",
            GgufValue::Bool(self.add_bos),
        );
        md.set(
            "tokenizer.ggml.add_eos_token",
            GgufValue::Bool(self.add_eos),
        );
        if let Some(b) = self.add_space_prefix {
            md.set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(b));
        }
        if let Some(b) = self.remove_extra_whitespaces {
            md.set(
                "tokenizer.ggml.remove_extra_whitespaces",
                GgufValue::Bool(b),
            );
        }
        Ok(Vocab {
            metadata: md,
            n_tokens: n,
            eos_token,
            stop_tokens,
            bos_token,
            add_bos: self.add_bos,
        })
    }
}
