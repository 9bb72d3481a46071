//! Hugging Face `tokenizer.json` BPE models as llama.cpp's `gpt2` (byte
//! level BPE) vocabulary: tokens in id order, token types, merges, the
//! pre-tokenizer name and the special ids.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::pretokenizer::llama_pre;
use super::specials::{self, END_TOKENS};
use super::{TokenType, TokenizerError, Vocab};
use crate::gguf::{GgufArray, GgufValue, Metadata};

/// Most tokens a vocabulary may have (the largest public ones have ~260k).
const MAX_TOKENS: usize = 4_000_000;

/// Added tokens that llama.cpp's converter treats as control even when not
/// flagged special (`<|…|>`, `<pad>`, …).
fn looks_special(s: &str) -> bool {
    (s.starts_with("<|") && s.ends_with("|>"))
        || (s.starts_with("<｜") && s.ends_with("｜>"))
        || matches!(s, "<pad>" | "<mask>" | "<s>" | "</s>" | "<unk>")
        || s.starts_with("<unused")
}

/// Builds the vocabulary keys from a parsed `tokenizer.json`.
pub fn from_tokenizer_json(
    path: &Path,
    tok: &Value,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
    n_vocab_rows: usize,
) -> Result<Vocab, TokenizerError> {
    let malformed = |reason: String| TokenizerError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let model = tok
        .get("model")
        .ok_or_else(|| malformed("no 'model'".into()))?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "BPE" {
        return Err(TokenizerError::Unreproducible {
            path: path.to_owned(),
            reason: format!("its model is '{kind}'; kvant converts byte-level BPE tokenizers (and SentencePiece tokenizer.model files)"),
        });
    }
    let pre = tok.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
    if pre.get("type").and_then(Value::as_str) == Some("Metaspace") {
        return super::metaspace::from_tokenizer_json(
            path,
            tok,
            tokenizer_config,
            model_config,
            n_vocab_rows,
        );
    }
    let pre_name = llama_pre(&pre).map_err(|reason| TokenizerError::Unreproducible {
        path: path.to_owned(),
        reason,
    })?;
    if let Some(n) = tok.get("normalizer").filter(|n| !n.is_null()) {
        let t = n.get("type").and_then(Value::as_str).unwrap_or("?");
        // NFC is what Qwen ships; llama.cpp does not normalize, and on
        // already-NFC text (nearly all text) the result is the same.
        if t != "NFC" {
            return Err(TokenizerError::Unreproducible {
                path: path.to_owned(),
                reason: format!(
                    "it normalizes text ('{t}') before tokenizing, which llama.cpp does not do"
                ),
            });
        }
    }

    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("model.vocab is missing".into()))?;
    let added: Vec<&Value> = tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut by_id: HashMap<u32, String> = HashMap::new();
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < MAX_TOKENS)
            .ok_or_else(|| malformed(format!("token {text:?} has a bad id")))?;
        by_id.insert(id as u32, text.clone());
    }
    let mut types: HashMap<u32, TokenType> = HashMap::new();
    for a in &added {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            return Err(malformed("an added token lacks id or content".into()));
        };
        if id as usize >= MAX_TOKENS {
            return Err(malformed(format!("added token id {id} is too large")));
        }
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        by_id.insert(id as u32, content.to_owned());
        let ty = if special || looks_special(content) {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        types.insert(id as u32, ty);
    }
    let n_tokens = by_id.keys().max().map(|&m| m as usize + 1).unwrap_or(0);
    if n_tokens > n_vocab_rows {
        return Err(TokenizerError::Mismatch {
            path: path.to_owned(),
            reason: format!("the tokenizer has {n_tokens} tokens but the model's embedding has only {n_vocab_rows} rows"),
        });
    }
    // Rows beyond the tokenizer (nanoGPT pads 50257 to 50304) and holes
    // become unused padding tokens, as llama.cpp's converter writes them.
    let mut tokens = Vec::with_capacity(n_vocab_rows);
    let mut token_types = Vec::with_capacity(n_vocab_rows);
    for i in 0..n_vocab_rows as u32 {
        match by_id.get(&i) {
            Some(t) => {
                tokens.push(t.clone());
                token_types.push(types.get(&i).copied().unwrap_or(TokenType::Normal) as i32);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                token_types.push(TokenType::Unused as i32);
            }
        }
    }

    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("model.merges is missing".into()))?;
    let mut merge_strings = Vec::with_capacity(merges.len());
    for m in merges {
        let s = match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => {
                    // A space inside a part would split wrongly in GGUF's
                    // "a b" form; llama.cpp's converter shifts it to U+0120.
                    let enc = |s: &str| s.replace(' ', "\u{0120}");
                    format!("{} {}", enc(a), enc(b))
                }
                _ => return Err(malformed("a merge is not a pair of strings".into())),
            },
            _ => return Err(malformed("a merge is neither a string nor a pair".into())),
        };
        merge_strings.push(s);
    }

    let id_of = |t: &str| -> Option<u32> {
        vocab
            .get(t)
            .and_then(Value::as_u64)
            .map(|v| v as u32)
            .or_else(|| {
                added
                    .iter()
                    .find(|a| a.get("content").and_then(Value::as_str) == Some(t))
                    .and_then(|a| a.get("id").and_then(Value::as_u64))
                    .map(|v| v as u32)
            })
    };
    let sp = specials::resolve(tok, tokenizer_config, model_config, &id_of);

    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", "gpt2");
    md.set("tokenizer.ggml.pre", pre_name);
    md.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens.clone())),
    );
    md.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(token_types)),
    );
    md.set(
        "tokenizer.ggml.merges",
        GgufValue::Array(GgufArray::String(merge_strings)),
    );
    specials::set_special_ids(&mut md, [sp.bos, sp.eos, sp.unk, sp.pad], n_vocab_rows);
    md.set(
        "tokenizer.ggml.add_bos_token",
        GgufValue::Bool(sp.add_bos.unwrap_or(false)),
    );
    if let Some(e) = sp.add_eos {
        md.set("tokenizer.ggml.add_eos_token", GgufValue::Bool(e));
    }
    let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let eos_token = name(sp.eos);
    let mut stop_tokens: Vec<String> = eos_token.iter().cloned().collect();
    for t in END_TOKENS {
        if id_of(t).is_some_and(|i| types.get(&i) == Some(&TokenType::Control))
            && !stop_tokens.iter().any(|s| s == t)
        {
            stop_tokens.push(t.to_owned());
        }
    }
    Ok(Vocab {
        metadata: md,
        n_tokens: n_vocab_rows,
        bos_token: name(sp.bos),
        eos_token,
        stop_tokens,
        add_bos: sp.add_bos.unwrap_or(false),
    })
}
