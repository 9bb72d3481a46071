//! A SentencePiece-style BPE saved only as `tokenizer.json` (Metaspace
//! pre-tokenizer, byte fallback, no `tokenizer.model` beside it) as
//! llama.cpp's `llama` (SentencePiece) vocabulary.
//!
//! llama.cpp's SentencePiece tokenizer repeatedly merges the adjacent pair
//! whose concatenation is the highest-scoring token, so each token's score
//! is minus the rank of the first merge that produces it: the BPE's own
//! merge order, which is how SentencePiece's BPE scores its pieces.
//! Must not know about byte-level BPE or GGUF files.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::specials::{self, END_TOKENS};
use super::{TokenType, TokenizerError, Vocab};
use crate::gguf::{GgufArray, GgufValue, Metadata};

/// Most tokens a vocabulary may have.
const MAX_TOKENS: usize = 4_000_000;

/// `<0xXX>`: a byte-fallback token.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Builds the vocabulary keys from a parsed Metaspace `tokenizer.json`.
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
    let refuse = |why: String| TokenizerError::Unreproducible {
        path: path.to_owned(),
        reason: format!(
            "{why}; put the tokenizer.model it came from beside it, or pass --tokenizer FILE"
        ),
    };
    let model = tok
        .get("model")
        .ok_or_else(|| malformed("no 'model'".into()))?;
    if model.get("byte_fallback").and_then(Value::as_bool) != Some(true) {
        return Err(refuse(
            "its Metaspace BPE has no byte_fallback (unknown characters become <unk>), while llama.cpp's SentencePiece vocabulary falls back to bytes".into(),
        ));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model.get(key).is_some_and(|v| !v.is_null() && v != "") {
            return Err(refuse(format!(
                "its BPE uses '{key}', which SentencePiece has not"
            )));
        }
    }
    if tok.get("normalizer").is_some_and(|n| !n.is_null()) {
        return Err(refuse(
            "it normalizes text before the Metaspace step, which kvant does not map to llama.cpp yet".into(),
        ));
    }
    let pre = tok.get("pre_tokenizer").unwrap_or(&Value::Null);
    if pre.get("replacement").and_then(Value::as_str) != Some("\u{2581}") {
        return Err(refuse("its Metaspace replacement is not U+2581".into()));
    }
    let add_space_prefix = match pre.get("prepend_scheme").and_then(Value::as_str) {
        Some("first") | Some("always") | None => true,
        Some("never") => false,
        Some(other) => {
            return Err(refuse(format!(
                "unknown Metaspace prepend_scheme '{other}'"
            )))
        }
    };

    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("model.vocab is missing".into()))?;
    let unk = model.get("unk_token").and_then(Value::as_str);
    let mut by_id: HashMap<u32, (String, TokenType)> = HashMap::new();
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < MAX_TOKENS)
            .ok_or_else(|| malformed(format!("token {text:?} has a bad id")))?;
        let ty = if Some(text.as_str()) == unk {
            TokenType::Unknown
        } else if is_byte_token(text) {
            TokenType::Byte
        } else {
            TokenType::Normal
        };
        by_id.insert(id as u32, (text.clone(), ty));
    }
    for a in tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            return Err(malformed("an added token lacks id or content".into()));
        };
        if id as usize >= MAX_TOKENS {
            return Err(malformed(format!("added token id {id} is too large")));
        }
        let ty = if Some(content) == unk {
            TokenType::Unknown
        } else if a.get("special").and_then(Value::as_bool).unwrap_or(false) {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        by_id.insert(id as u32, (content.to_owned(), ty));
    }
    let n_tokens = by_id.keys().max().map(|&m| m as usize + 1).unwrap_or(0);
    if n_tokens > n_vocab_rows {
        return Err(TokenizerError::Mismatch {
            path: path.to_owned(),
            reason: format!("the tokenizer has {n_tokens} tokens but the model's embedding has only {n_vocab_rows} rows"),
        });
    }
    let mut tokens = Vec::with_capacity(n_vocab_rows);
    let mut types = Vec::with_capacity(n_vocab_rows);
    for i in 0..n_vocab_rows as u32 {
        match by_id.remove(&i) {
            Some((t, ty)) => {
                tokens.push(t);
                types.push(ty as i32);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(TokenType::Unused as i32);
            }
        }
    }
    let index: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();

    // Scores: minus the rank of the first merge producing each token;
    // tokens no merge produces (single characters, bytes, specials) score 0
    // or, for padding, -1000 as llama.cpp's converter writes it.
    let mut scores: Vec<f32> = types
        .iter()
        .map(|&t| {
            if t == TokenType::Unused as i32 {
                -1000.0
            } else {
                0.0
            }
        })
        .collect();
    let mut scored = vec![false; tokens.len()];
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("model.merges is missing".into()))?;
    for (rank, m) in merges.iter().enumerate() {
        let merged = match m {
            Value::String(s) => s.splitn(2, ' ').collect::<String>(),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => format!("{a}{b}"),
                _ => return Err(malformed("a merge is not a pair of strings".into())),
            },
            _ => return Err(malformed("a merge is neither a string nor a pair".into())),
        };
        if let Some(&id) = index.get(merged.as_str()) {
            let i = id as usize;
            if !scored[i] {
                scored[i] = true;
                scores[i] = -(rank as f32);
            }
        }
    }

    let id_of = |t: &str| index.get(t).copied();
    let sp = specials::resolve(tok, tokenizer_config, model_config, &id_of);
    let unk_id = sp.unk.or_else(|| unk.and_then(id_of));
    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", "llama");
    md.set("tokenizer.ggml.pre", "default");
    md.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens.clone())),
    );
    md.set(
        "tokenizer.ggml.scores",
        GgufValue::Array(GgufArray::F32(scores)),
    );
    md.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(types)),
    );
    specials::set_special_ids(&mut md, [sp.bos, sp.eos, unk_id, sp.pad], n_vocab_rows);
    let add_bos = sp.add_bos.unwrap_or(true);
    md.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos));
    md.set(
        "tokenizer.ggml.add_eos_token",
        GgufValue::Bool(sp.add_eos.unwrap_or(false)),
    );
    md.set(
        "tokenizer.ggml.add_space_prefix",
        GgufValue::Bool(add_space_prefix),
    );
    // HF's Metaspace keeps repeated spaces; so must llama.cpp.
    md.set(
        "tokenizer.ggml.remove_extra_whitespaces",
        GgufValue::Bool(false),
    );
    let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let eos_token = name(sp.eos);
    let mut stop_tokens: Vec<String> = eos_token.iter().cloned().collect();
    for t in END_TOKENS {
        if id_of(t).is_some() && !stop_tokens.iter().any(|s| s == t) {
            stop_tokens.push(t.to_owned());
        }
    }
    Ok(Vocab {
        metadata: md,
        n_tokens: n_vocab_rows,
        bos_token: name(sp.bos),
        eos_token,
        stop_tokens,
        add_bos,
    })
}
