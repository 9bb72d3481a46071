//! What the evaluator needs from a GGUF's vocabulary: whether each chunk
//! starts with BOS, and whether two models share one vocabulary.

use crate::convert::specials_from_gguf;
use crate::gguf::{GgufArray, GgufFile, GgufValue, Metadata};

use super::MeasureError;

/// The BOS id that replaces each chunk's first token, when the vocabulary
/// adds BOS (`tokenizer.ggml.add_bos_token`, else llama.cpp's default for
/// the tokenizer model).
pub fn chunk_bos(gguf: &GgufFile) -> Option<u32> {
    chunk_bos_of(&gguf.metadata)
}

/// [`chunk_bos`] of tokenizer metadata not yet in a file (a checkpoint's
/// vocabulary as conversion builds it).
pub fn chunk_bos_of(md: &Metadata) -> Option<u32> {
    if !specials_from_gguf(md).add_bos_token {
        return None;
    }
    md.get("tokenizer.ggml.bos_token_id")
        .and_then(GgufValue::as_u64)
        .and_then(|id| u32::try_from(id).ok())
}

fn tokens(gguf: &GgufFile) -> Option<&[String]> {
    match gguf.metadata.get("tokenizer.ggml.tokens")? {
        GgufValue::Array(GgufArray::String(t)) => Some(t),
        _ => None,
    }
}

/// Checks that `base` has the same vocabulary (the same token texts in
/// the same order) as `model`; llama.cpp would only warn.
pub fn check_same_vocabulary(model: &GgufFile, base: &GgufFile) -> Result<(), MeasureError> {
    let mismatch = |reason: String| MeasureError::Mismatch {
        path: base.path().to_owned(),
        reason,
    };
    match (tokens(model), tokens(base)) {
        (Some(a), Some(b)) if a.len() != b.len() => Err(mismatch(format!(
            "the base has a vocabulary of {} tokens, {} has {}",
            b.len(),
            model.path().display(),
            a.len()
        ))),
        (Some(a), Some(b)) => match a.iter().zip(b).position(|(x, y)| x != y) {
            Some(i) => Err(mismatch(format!(
                "the base's token {i} is {:?}, {}'s is {:?}: another vocabulary",
                b[i],
                model.path().display(),
                a[i]
            ))),
            None => Ok(()),
        },
        _ => Err(mismatch("no tokenizer.ggml.tokens to compare".into())),
    }
}
