//! The tokenizer layer's error type. Every variant names the file involved
//! and says, in one line, why it was refused and what to do.

use std::path::PathBuf;

/// Why a tokenizer could not be turned into `tokenizer.ggml.*` keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// Reading a tokenizer file failed.
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not what it claims to be (bad JSON, bad protobuf, a
    /// missing field, a count over our caps).
    #[error("invalid tokenizer file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid tokenizer that llama.cpp cannot reproduce: converting it
    /// would silently tokenize differently, so kvant refuses.
    #[error("tokenizer {path} cannot be reproduced by llama.cpp: {reason}")]
    Unreproducible {
        /// The file.
        path: PathBuf,
        /// Why llama.cpp would tokenize differently, and what to do.
        reason: String,
    },
    /// The tokenizer has more tokens than the model has embedding rows.
    #[error("tokenizer {path} has {n_tokens} tokens but the model has only {n_rows} embedding rows; the tokenizer does not belong to this checkpoint")]
    TooManyTokens {
        /// The file.
        path: PathBuf,
        /// Tokens in the tokenizer.
        n_tokens: usize,
        /// Rows in the model's token embedding.
        n_rows: usize,
    },
    /// No tokenizer file was found.
    #[error("no tokenizer found: looked for {looked_for}; pass --tokenizer PATH to name one")]
    NotFound {
        /// What was looked for, and where.
        looked_for: String,
    },
}
