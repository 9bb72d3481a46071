//! Byte-level BPE `tokenizer.json` → llama.cpp's `gpt2` vocabulary: tokens
//! in id order, token types as llama.cpp's converter classifies them,
//! merges, special ids and the pre type chosen from the tokenizer's own
//! pre-tokenizer. Must not know about SentencePiece or GGUF files.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::{pretokenizer, specials, token_type, Built, TokenizerError};

/// Most tokens a vocabulary may have (the largest real ones are ~260k).
pub(crate) const MAX_TOKENS: usize = 4 << 20;
/// Longest token text accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 4096;

fn invalid(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether a token's text looks like a control token even when not flagged
/// special (llama.cpp's converter's `does_token_look_special`).
pub(crate) fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>") && t.len() > 4)
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
}

/// An added token from `tokenizer.json`'s `added_tokens`.
struct Added {
    id: u32,
    content: String,
    special: bool,
}

fn added_tokens(json: &Value, path: &Path) -> Result<Vec<Added>, TokenizerError> {
    let Some(list) = json.get("added_tokens").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    if list.len() > MAX_TOKENS {
        return Err(invalid(path, "too many added_tokens"));
    }
    list.iter()
        .map(|a| {
            let id = a
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| invalid(path, "an added token has no valid id"))?;
            let content = a
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(path, format!("added token {id} has no content")))?;
            Ok(Added {
                id,
                content: content.to_string(),
                special: a.get("special").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect()
}

/// Reads `model.vocab` and `added_tokens` into id order. Gaps become
/// `[PAD{i}]` UNUSED slots, as llama.cpp's converter writes them.
fn tokens_in_id_order(
    json: &Value,
    path: &Path,
) -> Result<(Vec<String>, Vec<i32>), TokenizerError> {
    let vocab = json
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(path, "model.vocab is missing or not an object"))?;
    if vocab.len() > MAX_TOKENS {
        return Err(invalid(
            path,
            format!("{} tokens is over the limit", vocab.len()),
        ));
    }
    let added = added_tokens(json, path)?;
    let mut slots: Vec<Option<(String, i32)>> = Vec::new();
    let mut place = |id: u32, text: &str, ty: i32| -> Result<(), TokenizerError> {
        let i = id as usize;
        if i >= MAX_TOKENS {
            return Err(invalid(path, format!("token id {id} is over the limit")));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(invalid(
                path,
                format!("token {id} is {} bytes long", text.len()),
            ));
        }
        if slots.len() <= i {
            slots.resize(i + 1, None);
        }
        slots[i] = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| invalid(path, format!("token {text:?} has no valid id")))?;
        place(id, text, token_type::NORMAL)?;
    }
    for a in &added {
        let ty = if a.special || looks_special(&a.content) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        place(a.id, &a.content, ty)?;
    }
    let mut tokens = Vec::with_capacity(slots.len());
    let mut types = Vec::with_capacity(slots.len());
    let mut seen = std::collections::HashSet::with_capacity(slots.len());
    for (i, slot) in slots.into_iter().enumerate() {
        let (text, ty) = slot.unwrap_or_else(|| (format!("[PAD{i}]"), token_type::UNUSED));
        if !seen.insert(text.clone()) {
            return Err(invalid(
                path,
                format!("token {text:?} appears under two ids"),
            ));
        }
        tokens.push(text);
        types.push(ty);
    }
    Ok((tokens, types))
}

/// `model.merges` as llama.cpp's `"left right"` strings, from either the
/// string form or the pair form.
fn merges(json: &Value, path: &Path) -> Result<Vec<String>, TokenizerError> {
    let list = json
        .get("model")
        .and_then(|m| m.get("merges"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "model.merges is missing"))?;
    if list.len() > MAX_TOKENS {
        return Err(invalid(path, "too many merges"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) if s.find(' ').is_some_and(|p| p > 0) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => {
                match (pair[0].as_str(), pair[1].as_str()) {
                    // llama.cpp splits at the first space after byte 0, so a
                    // space inside the left part would be misread.
                    (Some(a), Some(b)) if !a.is_empty() && !a.as_bytes()[1..].contains(&b' ') => {
                        Ok(format!("{a} {b}"))
                    }
                    _ => Err(invalid(
                        path,
                        format!("merge {i} cannot be written as \"left right\""),
                    )),
                }
            }
            _ => Err(invalid(
                path,
                format!("merge {i} is neither \"a b\" nor [\"a\", \"b\"]"),
            )),
        })
        .collect()
}

/// Builds the vocabulary of a BPE `tokenizer.json`.
pub(crate) fn build(
    path: &Path,
    json: &Value,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
) -> Result<Built, TokenizerError> {
    let model = json
        .get("model")
        .ok_or_else(|| invalid(path, "no `model` section"))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if model_type != "BPE" {
        return Err(TokenizerError::Unreproducible {
            path: path.to_path_buf(),
            reason: format!(
                "its model is `{model_type}`; kvant converts byte-level BPE tokenizer.json files and SentencePiece tokenizer.model files; retrain with a ByteLevel BPE or supply tokenizer.model via --tokenizer PATH"
            ),
        });
    }
    let pre_type = json
        .get("pre_tokenizer")
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str);
    if pre_type == Some("Metaspace") {
        return metaspace(path, json, tokenizer_config, model_config);
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model.get(key).is_some_and(|v| !v.is_null() && v != "") {
            return Err(TokenizerError::Unreproducible {
                path: path.to_path_buf(),
                reason: format!("its BPE uses `{key}` and llama.cpp's BPE has no such affixes; retrain without it"),
            });
        }
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(TokenizerError::Unreproducible {
            path: path.to_path_buf(),
            reason: "its byte-level BPE also uses byte_fallback, which llama.cpp's gpt2 vocabulary does not; retrain without byte_fallback".into(),
        });
    }
    let pre = pretokenizer::byte_level_pre(json, path)?;
    let (tokens, types) = tokens_in_id_order(json, path)?;
    let merges = merges(json, path)?;
    let index: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let lookup = |t: &str| index.get(t).copied();
    let specials = specials::resolve(tokenizer_config, model_config, tokens.len(), &lookup);
    let (add_bos, add_eos) = specials::add_flags(Some(json), tokenizer_config, (false, false));
    drop(index);
    Ok(Built {
        source: path.to_path_buf(),
        model: "gpt2",
        pre,
        tokens,
        scores: None,
        types,
        merges: Some(merges),
        specials,
        add_bos,
        add_eos,
        add_space_prefix: None,
        remove_extra_whitespaces: None,
    })
}

/// A SentencePiece-style BPE saved as `tokenizer.json` (Metaspace
/// pre-tokenizer, byte fallback) → llama.cpp's `llama` vocabulary. llama.cpp
/// merges the adjacent pair whose result scores highest, so each token's
/// score is minus the rank of the first merge producing it: the merge
/// order of the BPE, as SentencePiece's own BPE scores encode it.
fn metaspace(
    path: &Path,
    json: &Value,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
) -> Result<Built, TokenizerError> {
    let refuse = |why: &str| {
        TokenizerError::Unreproducible {
        path: path.to_path_buf(),
        reason: format!("{why}; put the tokenizer.model it was derived from beside it, or pass --tokenizer PATH to it"),
    }
    };
    let model = json.get("model").unwrap_or(&Value::Null);
    if model.get("byte_fallback").and_then(Value::as_bool) != Some(true) {
        return Err(refuse(
            "its Metaspace BPE has no byte_fallback, so unknown characters become <unk> in HF but llama.cpp's SentencePiece vocabulary falls back differently",
        ));
    }
    if json.get("normalizer").is_some_and(|n| !n.is_null()) {
        return Err(refuse(
            "its normalizer rewrites text before the Metaspace step, which llama.cpp does not reproduce",
        ));
    }
    let pre = json.get("pre_tokenizer").unwrap_or(&Value::Null);
    if pre.get("replacement").and_then(Value::as_str) != Some("\u{2581}") {
        return Err(refuse("its Metaspace replacement is not U+2581"));
    }
    let add_space_prefix = match pre.get("prepend_scheme").and_then(Value::as_str) {
        Some("first") | Some("always") | None => true,
        Some("never") => false,
        Some(other) => {
            return Err(refuse(&format!(
                "unknown Metaspace prepend_scheme `{other}`"
            )))
        }
    };
    let (tokens, mut types) = tokens_in_id_order(json, path)?;
    let merges = merges(json, path)?;
    let index: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut scores = vec![0.0f32; tokens.len()];
    let mut scored = vec![false; tokens.len()];
    for (rank, m) in merges.iter().enumerate() {
        let merged: String = m.splitn(2, ' ').collect();
        if let Some(&id) = index.get(merged.as_str()) {
            if !scored[id as usize] {
                scored[id as usize] = true;
                scores[id as usize] = -(rank as f32);
            }
        }
    }
    let unk = model.get("unk_token").and_then(Value::as_str);
    for (i, t) in tokens.iter().enumerate() {
        if types[i] == token_type::NORMAL && is_byte_token(t) {
            types[i] = token_type::BYTE;
        }
        if Some(t.as_str()) == unk {
            types[i] = token_type::UNKNOWN;
        }
    }
    let lookup = |t: &str| index.get(t).copied();
    let mut specials = specials::resolve(tokenizer_config, model_config, tokens.len(), &lookup);
    if specials.unk.is_none() {
        specials.unk = unk.and_then(lookup);
    }
    let (add_bos, add_eos) = specials::add_flags(Some(json), tokenizer_config, (true, false));
    drop(index);
    Ok(Built {
        source: path.to_path_buf(),
        model: "llama",
        pre: "default",
        tokens,
        scores: Some(scores),
        types,
        merges: None,
        specials,
        add_bos,
        add_eos,
        add_space_prefix: Some(add_space_prefix),
        remove_extra_whitespaces: Some(false),
    })
}

/// `<0xXX>`: a SentencePiece byte-fallback token.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}
