//! Errors of the tokenizer layer.

use std::path::PathBuf;

/// Why a tokenizer cannot be put into a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// No tokenizer was found beside the checkpoint.
    #[error("no tokenizer found in {dir} (looked for tokenizer.json, a single *tokenizer*.json, tokenizer.model); pass --tokenizer FILE")]
    NotFound {
        /// Where it looked.
        dir: PathBuf,
    },
    /// The file cannot be read or parsed.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// llama.cpp cannot reproduce this tokenizer: converting it would
    /// tokenize differently from training.
    #[error("{path}: llama.cpp cannot reproduce this tokenizer: {reason}")]
    Unreproducible {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// The tokenizer does not fit the model.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}
