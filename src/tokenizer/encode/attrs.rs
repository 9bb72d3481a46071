//! The token attributes llama.cpp's loader changes by token text after
//! reading `tokenizer.ggml.token_type`. They decide which tokens are cut
//! out of the text before tokenizing: with `parse_special = false` a
//! user-defined token is, a control token is not. So a user-defined token
//! that llama.cpp turns into a control one (an end-of-generation or
//! fill-in-the-middle text) must be turned here too, and the few that it
//! turns into user-defined or normal ones likewise.

use rustc_hash::FxHashMap;

use super::vocab::attr;
use crate::gguf::Metadata;

/// Texts llama.cpp treats as end of generation, made control.
const EOG_TEXTS: [&str; 22] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle texts by the key that, when set, stops the search.
const FIM_TEXTS: [(&[&str], &[&str]); 6] = [
    (
        &[
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.prefix_token_id",
        ],
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        &[
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.suffix_token_id",
        ],
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        &[
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.middle_token_id",
        ],
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        &["tokenizer.ggml.fim_pad_token_id"],
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        &["tokenizer.ggml.fim_rep_token_id"],
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (&["tokenizer.ggml.fim_sep_token_id"], &["<|file_sep|>"]),
];

/// gpt-oss tokens llama.cpp always renders, made user-defined.
const ALWAYS_USER_DEFINED: [&str; 4] = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

fn key_id(md: &Metadata, key: &str, n: usize) -> Option<u32> {
    md.get(key)
        .and_then(|v| v.as_u64())
        .filter(|&i| (i as usize) < n)
        .map(|i| i as u32)
}

/// Applies llama.cpp's text-based attribute changes to `attrs`.
///
/// Where llama.cpp takes the first match in its hash map's order (one
/// fill-in-the-middle token per kind), the lowest id is taken: the same
/// whenever a vocabulary has one candidate per kind, as real ones do.
pub fn adjust(
    md: &Metadata,
    texts: &[String],
    id_of: &FxHashMap<String, u32>,
    attrs: &mut [u32],
    eos: Option<u32>,
) {
    let n = texts.len();
    let id = |t: &str| id_of.get(t).map(|&i| i as usize);
    for (keys, candidates) in FIM_TEXTS {
        if keys.iter().any(|k| key_id(md, k, n).is_some()) {
            continue;
        }
        if let Some(i) = candidates.iter().filter_map(|t| id(t)).min() {
            attrs[i] |= attr::CONTROL;
        }
    }
    for t in EOG_TEXTS {
        if let Some(i) = id(t) {
            attrs[i] |= attr::CONTROL;
        }
    }
    for t in ALWAYS_USER_DEFINED {
        if let Some(i) = id(t) {
            attrs[i] = attr::USER_DEFINED;
        }
    }
    // o200k_harmony and solar-open: <|end|> is not an end of generation.
    let has = |t: &str| id(t).is_some();
    if (has("<|return|>") && has("<|call|>") || has("<|calls|>") && has("<|flush|>"))
        && has("<|end|>")
    {
        if let Some(i) = id("<|end|>") {
            attrs[i] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo 2: </s> is a normal token.
    let eog_ids = [
        eos,
        key_id(md, "tokenizer.ggml.eot_token_id", n),
        key_id(md, "tokenizer.ggml.eom_token_id", n),
    ];
    let plamo = eog_ids
        .iter()
        .flatten()
        .any(|&i| texts[i as usize] == "<|plamo:eos|>");
    if (has("<|tool_response>") || plamo) && has("</s>") {
        if let Some(i) = id("</s>") {
            attrs[i] = attr::NORMAL;
        }
    }
    phi3_rstrip(md, id_of, attrs);
}

/// Phi-3 models (by `general.name`) strip spaces after their special
/// tokens, except `<unk>`, `<s>` and `<|endoftext|>`.
fn phi3_rstrip(md: &Metadata, id_of: &FxHashMap<String, u32>, attrs: &mut [u32]) {
    let name = md
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(name.contains("phi-3") || name.contains("phi3")) {
        return;
    }
    let special = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
    for a in attrs.iter_mut().filter(|a| **a & special != 0) {
        *a |= attr::RSTRIP;
    }
    if let Some(&i) = id_of.get("</s>") {
        attrs[i as usize] |= attr::RSTRIP;
    }
    for t in ["<unk>", "<s>", "<|endoftext|>"] {
        if let Some(&i) = id_of.get(t) {
            attrs[i as usize] &= !attr::RSTRIP;
        }
    }
}
