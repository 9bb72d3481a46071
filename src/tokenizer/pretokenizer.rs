//! Chooses `tokenizer.ggml.pre` for a byte-level BPE from the tokenizer's
//! own pre-tokenizer, compared structurally with the regexes llama.cpp
//! implements for each pre type (pinned `src/llama-vocab.cpp`). Never
//! guesses from sample text: a pre-tokenizer that matches none of them is
//! refused, because llama.cpp would split text differently.
//!
//! Must not know about vocabularies or GGUF keys.

use std::path::Path;

use serde_json::Value;

use super::TokenizerError;

/// llama.cpp's split regex for each pre type we can emit, written exactly
/// as in llama-vocab.cpp (case-insensitive contractions spelled `'[sS]`).
const PRE_TYPES: &[(&str, &str)] = &[
    (
        "llama-bpe",
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "qwen2",
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "qwen35",
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    // llama.cpp splits gpt-2 with a hand-written matcher for the full
    // GPT-2/tiktoken pattern; its table omits the final `|\s+`, which the
    // `\s+(?!\S)` branch plus the matcher's fallback already cover.
    (
        "gpt-2",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    ),
    (
        "gpt-2",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    ),
];

/// What to do instead, appended to every refusal.
const ADVICE: &str = "retrain the tokenizer with a ByteLevel pre-tokenizer \
    (tokenizers: pre_tokenizers.ByteLevel(add_prefix_space=False)) or a Split on \
    the GPT-2, Llama-3 or Qwen2 regex followed by ByteLevel(use_regex=False), or \
    pass --tokenizer PATH to a tokenizer llama.cpp supports";

fn refuse(path: &Path, why: String) -> TokenizerError {
    TokenizerError::Unreproducible {
        path: path.to_path_buf(),
        reason: format!("{why}; {ADVICE}"),
    }
}

fn kind(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

fn flag(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The llama.cpp pre type reproducing this tokenizer's normalizer and
/// pre-tokenizer, for a byte-level BPE.
pub(crate) fn byte_level_pre(
    tokenizer: &Value,
    path: &Path,
) -> Result<&'static str, TokenizerError> {
    match tokenizer.get("normalizer") {
        None | Some(Value::Null) => {}
        // NFC leaves already-composed text unchanged; llama.cpp's converter
        // accepts it (Qwen2 ships it).
        Some(n) if kind(n) == "NFC" => {}
        Some(n) => {
            return Err(refuse(
                path,
                format!(
                    "its normalizer `{}` changes text before splitting and llama.cpp applies no normalizer to BPE vocabularies",
                    kind(n)
                ),
            ))
        }
    }
    let pre = tokenizer
        .get("pre_tokenizer")
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            refuse(
                path,
                "it has no pre-tokenizer, so merges may cross word boundaries, which llama.cpp's BPE never does".into(),
            )
        })?;
    let steps: Vec<&Value> = match kind(pre) {
        "Sequence" => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().take(16).collect())
            .unwrap_or_default(),
        _ => vec![pre],
    };
    match steps.as_slice() {
        [bl] if kind(bl) == "ByteLevel" => {
            if flag(bl, "add_prefix_space", true) {
                return Err(refuse(
                    path,
                    "its ByteLevel pre-tokenizer has add_prefix_space=true (a space is prepended to the text) and llama.cpp's gpt-2 pre-tokenizer never prepends one".into(),
                ));
            }
            if !flag(bl, "use_regex", true) {
                return Err(refuse(
                    path,
                    "its ByteLevel pre-tokenizer has use_regex=false (no word splitting) and every llama.cpp BPE pre type splits words".into(),
                ));
            }
            Ok("gpt-2")
        }
        [split, bl] if kind(split) == "Split" && kind(bl) == "ByteLevel" => {
            if flag(bl, "add_prefix_space", true) || flag(bl, "use_regex", true) {
                return Err(refuse(
                    path,
                    "the ByteLevel step after its Split prepends a space or splits again (add_prefix_space/use_regex true), which no llama.cpp pre type does".into(),
                ));
            }
            let regex = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    refuse(
                        path,
                        "its Split pre-tokenizer splits on a plain string, not a regex".into(),
                    )
                })?;
            let behavior = split.get("behavior").and_then(Value::as_str).unwrap_or("");
            if behavior != "Isolated" || flag(split, "invert", false) {
                return Err(refuse(
                    path,
                    format!("its Split uses behavior `{behavior}` (or invert), but llama.cpp keeps every regex match as an isolated piece"),
                ));
            }
            pre_for_regex(regex).ok_or_else(|| {
                refuse(
                    path,
                    format!("its Split regex `{regex}` is not one llama.cpp implements (known: GPT-2, Llama-3, Qwen2)"),
                )
            })
        }
        _ => {
            let names: Vec<&str> = steps.iter().map(|s| kind(s)).collect();
            Err(refuse(
                path,
                format!(
                    "its pre-tokenizer `{}` ({}) has no llama.cpp equivalent, so llama.cpp would split text into different words and produce different token ids",
                    kind(pre),
                    names.join(" + ")
                ),
            ))
        }
    }
}

/// The pre type whose llama.cpp regex equals `regex` after normalisation.
pub(crate) fn pre_for_regex(regex: &str) -> Option<&'static str> {
    let ours = normalize(regex);
    PRE_TYPES
        .iter()
        .find(|(_, known)| normalize(known) == ours)
        .map(|(name, _)| *name)
}

/// Rewrites spellings that mean the same regex into one form: a
/// case-insensitive group of literal alternatives, `(?i:'s|'t)`, becomes
/// `(?:'[sS]|'[tT])`, as llama.cpp writes it (its regex engine has no
/// inline flags).
fn normalize(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len() + 32);
    let mut rest = regex;
    while let Some(start) = rest.find("(?i:") {
        out.push_str(&rest[..start]);
        let body_start = start + 4;
        let Some(len) = rest[body_start..].find(')') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let body = &rest[body_start..body_start + len];
        if body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '\'' || c == '|')
        {
            out.push_str("(?:");
            for c in body.chars() {
                if c.is_ascii_alphabetic() {
                    out.push('[');
                    out.push(c.to_ascii_lowercase());
                    out.push(c.to_ascii_uppercase());
                    out.push(']');
                } else {
                    out.push(c);
                }
            }
            out.push(')');
        } else {
            out.push_str(&rest[start..body_start + len + 1]);
        }
        rest = &rest[body_start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_case_insensitive_contractions_match_llama_cpp_spelling() {
        let qwen = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        assert_eq!(pre_for_regex(qwen), Some("qwen2"));
        let llama3 = qwen.replace(r"\p{N}|", r"\p{N}{1,3}|");
        assert_eq!(pre_for_regex(&llama3), Some("llama-bpe"));
        assert_eq!(pre_for_regex(r"\w+|[^\w\s]+"), None);
    }
}
