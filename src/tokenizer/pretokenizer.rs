//! Choosing `tokenizer.ggml.pre`: the tokenizer's own pre-tokenization,
//! compared structurally with the splitters llama.cpp implements.
//!
//! llama.cpp picks its pre-tokenizer by name; each name stands for fixed
//! regexes (`llm_tokenizer_bpe` in `llama-vocab.cpp`). kvant reads the
//! tokenizer's `pre_tokenizer` and accepts only shapes it can name exactly:
//! a ByteLevel with GPT-2's built-in regex, or a `Split` on one regex that
//! equals one of llama.cpp's (after spelling case-insensitive groups out,
//! as llama.cpp's adapted regexes do). Hashing a sample text (llama.cpp's
//! converter) cannot tell a new tokenizer from a known one; the regex can.

use serde_json::Value;

/// The regex of the `tokenizers` ByteLevel pre-tokenizer (GPT-2's).
const BYTE_LEVEL_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Single-regex `Split` patterns llama.cpp implements, by pre name. The
/// patterns are the ones in the tokenizers' own `tokenizer.json`, which
/// llama-vocab.cpp quotes beside its adapted forms.
const SPLIT_REGEXES: [(&str, &str); 3] = [
    (
        "qwen2",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "llama-bpe",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    ("gpt-2", BYTE_LEVEL_REGEX),
];

/// Spells `(?i:'s|'t|…)` out as `(?:'[sS]|'[tT]|…)` so both spellings
/// compare equal.
fn normalize(re: &str) -> String {
    let Some(start) = re.find("(?i:") else {
        return re.to_owned();
    };
    let Some(len) = re[start..].find(')') else {
        return re.to_owned();
    };
    let inner = &re[start + 4..start + len];
    let spelled: Vec<String> = inner
        .split('|')
        .map(|alt| {
            alt.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    format!(
        "{}(?:{}){}",
        &re[..start],
        spelled.join("|"),
        &re[start + len + 1..]
    )
}

/// The llama.cpp pre name for a tokenizer's `pre_tokenizer`, or why none
/// fits.
pub fn llama_pre(pre: &Value) -> Result<&'static str, String> {
    let kind = pre.get("type").and_then(Value::as_str).unwrap_or("null");
    match kind {
        "ByteLevel" => {
            if pre.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
                return Err("its ByteLevel pre-tokenizer adds a prefix space, which llama.cpp's BPE does not; retrain or save it with add_prefix_space=false".into());
            }
            if pre.get("use_regex").and_then(Value::as_bool) == Some(false) {
                return Err("its ByteLevel pre-tokenizer splits on no regex at all, which llama.cpp cannot do".into());
            }
            Ok("gpt-2")
        }
        "Sequence" => {
            let parts = pre
                .get("pretokenizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let [split, byte_level] = parts.as_slice() else {
                return Err(format!(
                    "its pre-tokenizer is a sequence of {} steps; llama.cpp reproduces a regex Split followed by ByteLevel",
                    parts.len()
                ));
            };
            if byte_level.get("type").and_then(Value::as_str) != Some("ByteLevel")
                || byte_level.get("use_regex").and_then(Value::as_bool) != Some(false)
                || byte_level.get("add_prefix_space").and_then(Value::as_bool) == Some(true)
            {
                return Err("the second step of its pre-tokenizer is not a plain ByteLevel (use_regex false, no prefix space)".into());
            }
            if split.get("type").and_then(Value::as_str) != Some("Split")
                || split.get("invert").and_then(Value::as_bool) == Some(true)
                || split.get("behavior").and_then(Value::as_str) != Some("Isolated")
            {
                return Err("the first step of its pre-tokenizer is not an isolating regex Split".into());
            }
            let regex = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str)
                .ok_or("its Split has no regex pattern")?;
            let want = normalize(regex);
            SPLIT_REGEXES
                .iter()
                .find(|(_, r)| normalize(r) == want)
                .map(|(name, _)| *name)
                .ok_or_else(|| format!("its Split regex {regex:?} matches none of llama.cpp's pre-tokenizers (gpt-2, qwen2, llama-bpe)"))
        }
        "Whitespace" | "WhitespaceSplit" | "BertPreTokenizer" => Err(format!(
            "its pre-tokenizer is '{kind}' (splits words on whitespace and drops the spaces); llama.cpp has no such pre-tokenizer, so the GGUF would tokenize differently from training. Retrain the tokenizer with a ByteLevel pre-tokenizer (tokenizers: pre_tokenizers.ByteLevel(add_prefix_space=False))"
        )),
        other => Err(format!(
            "its pre-tokenizer '{other}' has no llama.cpp equivalent; retrain the tokenizer with a ByteLevel pre-tokenizer"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn case_insensitive_group_matches_llama_cpps_spelling() {
        assert_eq!(normalize("(?i:'s|'ll)|x"), "(?:'[sS]|'[lL][lL])|x");
    }

    #[test]
    fn qwen_and_llama3_splits_are_told_apart_by_their_digits() {
        let split = |re: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})
        };
        assert_eq!(llama_pre(&split(SPLIT_REGEXES[0].1)), Ok("qwen2"));
        assert_eq!(llama_pre(&split(SPLIT_REGEXES[1].1)), Ok("llama-bpe"));
        assert!(llama_pre(&split(r"\w+")).is_err());
    }
}
