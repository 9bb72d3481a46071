//! Special tokens: which ids are BOS/EOS/UNK/PAD, whether the tokenizer
//! adds BOS/EOS itself, and which token strings end a generation.
//!
//! Sources, in the order llama.cpp's converter (`SpecialVocab`) uses them:
//! `tokenizer_config.json` names (strings or AddedToken objects), then the
//! model's `config.json` `*_token_id`; add flags from `tokenizer_config`
//! or the `TemplateProcessing` post-processor.

use serde_json::Value;

use crate::gguf::{GgufValue, Metadata};

/// Resolved special tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Specials {
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Padding id.
    pub pad: Option<u32>,
    /// The tokenizer prepends BOS.
    pub add_bos: Option<bool>,
    /// The tokenizer appends EOS.
    pub add_eos: Option<bool>,
}

/// A token named in tokenizer_config.json: a string or `{content: ...}`.
fn named(cfg: Option<&Value>, key: &str) -> Option<String> {
    let v = cfg?.get(key)?;
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v.get("content").and_then(Value::as_str).map(str::to_owned))
}

/// Resolves special tokens. `id_of` maps token text to id.
pub fn resolve(
    tokenizer: &Value,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
    id_of: &dyn Fn(&str) -> Option<u32>,
) -> Specials {
    let from = |key: &str, id_key: &str| {
        named(tokenizer_config, key)
            .and_then(|t| id_of(&t))
            .or_else(|| {
                model_config
                    .and_then(|c| c.get(id_key))
                    .and_then(Value::as_u64)
                    .map(|v| v as u32)
            })
    };
    let mut s = Specials {
        bos: from("bos_token", "bos_token_id"),
        eos: from("eos_token", "eos_token_id"),
        unk: from("unk_token", "unk_token_id"),
        pad: from("pad_token", "pad_token_id"),
        add_bos: tokenizer_config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(Value::as_bool),
        add_eos: tokenizer_config
            .and_then(|c| c.get("add_eos_token"))
            .and_then(Value::as_bool),
    };
    // GPT-2 style tokenizers name nothing: <|endoftext|> is both ends.
    if s.eos.is_none() {
        s.eos = id_of("<|endoftext|>");
    }
    if s.bos.is_none() && tokenizer_config.is_none() {
        s.bos = id_of("<|endoftext|>");
    }
    // The post-processor says what `encode` adds around a single text.
    if let Some(single) = tokenizer
        .get("post_processor")
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))
        .and_then(|p| p.get("single"))
        .and_then(Value::as_array)
    {
        let special_at = |i: usize| {
            single
                .get(i)
                .and_then(|x| x.get("SpecialToken"))
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str)
        };
        if s.add_bos.is_none() {
            s.add_bos = Some(special_at(0).is_some());
            if let Some(b) = special_at(0).and_then(id_of) {
                s.bos = s.bos.or(Some(b));
            }
        }
        if s.add_eos.is_none() && single.len() > 1 {
            s.add_eos = Some(special_at(single.len() - 1).is_some());
        }
    }
    s
}

/// Writes `tokenizer.ggml.{bos,eos,unknown,padding}_token_id` (u32) for
/// the ids that are set and inside the vocabulary; llama.cpp ignores an id
/// past the end anyway, so it is not written.
pub fn set_special_ids(md: &mut Metadata, [bos, eos, unk, pad]: [Option<u32>; 4], n_tokens: usize) {
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.unknown_token_id", unk),
        ("tokenizer.ggml.padding_token_id", pad),
    ] {
        if let Some(id) = id.filter(|&i| (i as usize) < n_tokens) {
            md.set(key, GgufValue::U32(id));
        }
    }
}

/// Token strings that end a turn or a text, for Ollama's `stop`.
pub const END_TOKENS: [&str; 8] = [
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
    "<|eom_id|>",
];
