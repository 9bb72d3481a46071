//! A GGUF vocabulary read as llama.cpp's loader reads it
//! (`llama_vocab::impl::load` in `llama-vocab.cpp`): the token texts and
//! their attributes, the special ids with llama.cpp's defaults, the
//! add-BOS/EOS and space-prefix flags, and which tokenizer and splitter
//! the `tokenizer.ggml.model`/`pre` names stand for.

use rustc_hash::FxHashMap;

use super::pre_split::Splitter;
use super::EncodeError;
use crate::gguf::{GgufArray, GgufValue, Metadata};

/// llama.cpp's `llama_token_attr` bits this module uses.
pub mod attr {
    /// `LLAMA_TOKEN_ATTR_UNKNOWN`.
    pub const UNKNOWN: u32 = 1 << 0;
    /// `LLAMA_TOKEN_ATTR_UNUSED`.
    pub const UNUSED: u32 = 1 << 1;
    /// `LLAMA_TOKEN_ATTR_NORMAL`.
    pub const NORMAL: u32 = 1 << 2;
    /// `LLAMA_TOKEN_ATTR_CONTROL`.
    pub const CONTROL: u32 = 1 << 3;
    /// `LLAMA_TOKEN_ATTR_USER_DEFINED`.
    pub const USER_DEFINED: u32 = 1 << 4;
    /// `LLAMA_TOKEN_ATTR_BYTE`.
    pub const BYTE: u32 = 1 << 5;
    /// `LLAMA_TOKEN_ATTR_LSTRIP`.
    pub const LSTRIP: u32 = 1 << 7;
    /// `LLAMA_TOKEN_ATTR_RSTRIP`.
    pub const RSTRIP: u32 = 1 << 8;
}

/// The tokenizer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `gpt2`: byte-level BPE over words of a pre-tokenizer.
    Bpe {
        /// The pre-tokenizer.
        splitter: Splitter,
        /// A word that is itself a token is not merged (Llama-3).
        ignore_merges: bool,
    },
    /// `llama`: SentencePiece, merging by token score, byte fallback.
    Spm,
}

/// Everything about a vocabulary that decides its token ids.
pub struct Vocab {
    pub algorithm: Algorithm,
    /// Token texts by id (an empty one as llama.cpp renames it).
    pub texts: Vec<String>,
    /// `llama_token_attr` per id.
    pub attrs: Vec<u32>,
    /// SentencePiece scores (0 when absent).
    pub scores: Vec<f32>,
    /// Token text → id; a repeated text maps to its last id, as llama.cpp's.
    pub id_of: FxHashMap<String, u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

/// Reads typed keys, naming `origin` in errors.
struct Keys<'a> {
    md: &'a Metadata,
    origin: &'a str,
}

impl Keys<'_> {
    fn bad(&self, reason: String) -> EncodeError {
        EncodeError::Malformed {
            origin: self.origin.to_owned(),
            reason,
        }
    }

    fn str(&self, key: &str) -> Result<Option<&str>, EncodeError> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(format!("{key} is not a string"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, EncodeError> {
        match self.md.get(key) {
            None => Ok(None),
            Some(GgufValue::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(format!("{key} is not a bool"))),
        }
    }

    fn id(&self, key: &str) -> Result<Option<u64>, EncodeError> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(format!("{key} is not a token id"))),
        }
    }

    fn array(&self, key: &str) -> Option<&GgufArray> {
        self.md.get(key).and_then(GgufValue::as_array)
    }
}

/// The `tokenizer.ggml.pre` names of each splitter llama.cpp maps to the
/// same pre-tokenizer type (`LLAMA_VOCAB_PRE_TYPE_*`) with nothing else
/// changed that bears on token ids.
const GPT2_PRES: [&str; 2] = ["gpt-2", "phi-2"];
const LLAMA3_PRES: [&str; 9] = [
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
];
const QWEN2_PRES: [&str; 5] = ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"];

/// The algorithm, and llama.cpp's default add-BOS for it.
fn algorithm(keys: &Keys) -> Result<(Algorithm, bool), EncodeError> {
    let unsupported = |reason: String| EncodeError::Unsupported {
        origin: keys.origin.to_owned(),
        reason,
    };
    let model = keys
        .str("tokenizer.ggml.model")?
        .ok_or_else(|| keys.bad("it has no tokenizer (tokenizer.ggml.model)".into()))?;
    match model {
        "llama" => Ok((Algorithm::Spm, true)),
        "gpt2" => {
            let pre = keys.str("tokenizer.ggml.pre")?.unwrap_or("");
            let bpe = |splitter, ignore_merges| Algorithm::Bpe {
                splitter,
                ignore_merges,
            };
            if GPT2_PRES.contains(&pre) {
                Ok((bpe(Splitter::Gpt2, false), false))
            } else if LLAMA3_PRES.contains(&pre) {
                Ok((bpe(Splitter::Llama3, true), true))
            } else if QWEN2_PRES.contains(&pre) {
                Ok((bpe(Splitter::Qwen2, false), false))
            } else {
                Err(unsupported(format!(
                    "its BPE pre-tokenizer is {pre:?}; kvant encodes gpt-2, llama-bpe and qwen2 (the ones it writes)"
                )))
            }
        }
        other => Err(unsupported(format!(
            "its tokenizer model is {other:?}; kvant encodes gpt2 (BPE) and llama (SentencePiece)"
        ))),
    }
}

fn base_attr(token_type: i32) -> u32 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

fn texts(keys: &Keys) -> Result<Vec<String>, EncodeError> {
    let Some(GgufArray::String(tokens)) = keys.array("tokenizer.ggml.tokens") else {
        return Err(keys.bad("tokenizer.ggml.tokens is missing or not a string array".into()));
    };
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect())
}

fn scores(keys: &Keys, n: usize) -> Result<Vec<f32>, EncodeError> {
    let scores = match keys.array("tokenizer.ggml.scores") {
        None => return Ok(vec![0.0; n]),
        Some(GgufArray::F32(s)) => s.clone(),
        Some(GgufArray::I32(s)) => s.iter().map(|&x| x as f32).collect(),
        Some(_) => return Err(keys.bad("tokenizer.ggml.scores is not f32 or i32".into())),
    };
    if scores.len() < n {
        return Err(keys.bad(format!("{} scores for {n} tokens", scores.len())));
    }
    Ok(scores)
}

fn attrs(keys: &Keys, n: usize) -> Result<Vec<u32>, EncodeError> {
    match keys.array("tokenizer.ggml.token_type") {
        None => Ok(vec![attr::NORMAL; n]),
        Some(GgufArray::I32(t)) if t.len() >= n => {
            Ok(t[..n].iter().map(|&t| base_attr(t)).collect())
        }
        Some(GgufArray::I32(t)) => Err(keys.bad(format!("{} token types for {n} tokens", t.len()))),
        Some(_) => Err(keys.bad("tokenizer.ggml.token_type is not i32".into())),
    }
}

/// A special id: llama.cpp's default unless the key names one inside the
/// vocabulary (an id past the end keeps the default, as llama.cpp warns).
fn special(
    keys: &Keys,
    key: &str,
    default: Option<u32>,
    n: usize,
) -> Result<Option<u32>, EncodeError> {
    let default = default.filter(|&d| (d as usize) < n);
    Ok(match keys.id(key)? {
        Some(id) if (id as usize) < n => Some(id as u32),
        _ => default,
    })
}

/// Reads a vocabulary from `tokenizer.ggml.*` keys.
pub fn read(md: &Metadata, origin: &str) -> Result<Vocab, EncodeError> {
    let keys = Keys { md, origin };
    let (algorithm, default_add_bos) = algorithm(&keys)?;
    let texts = texts(&keys)?;
    let n = texts.len();
    let scores = scores(&keys, n)?;
    let mut attrs = attrs(&keys, n)?;
    let mut id_of = FxHashMap::default();
    id_of.reserve(n);
    for (i, t) in texts.iter().enumerate() {
        id_of.insert(t.clone(), i as u32);
    }
    let (bos_default, eos_default) = match algorithm {
        Algorithm::Spm => (Some(1), Some(2)),
        Algorithm::Bpe { .. } => (Some(11), Some(11)),
    };
    let bos = special(&keys, "tokenizer.ggml.bos_token_id", bos_default, n)?;
    let eos = special(&keys, "tokenizer.ggml.eos_token_id", eos_default, n)?;
    let is_spm = algorithm == Algorithm::Spm;
    super::attrs::adjust(md, &texts, &id_of, &mut attrs, eos);
    Ok(Vocab {
        algorithm,
        texts,
        attrs,
        scores,
        id_of,
        bos,
        eos,
        add_bos: keys
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos),
        add_eos: keys.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        add_space_prefix: keys
            .bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(is_spm),
    })
}
