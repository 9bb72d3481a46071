//! Errors of measuring a model: perplexity, KL divergence and importance
//! statistics over a token stream.

use std::path::PathBuf;

/// Why a measurement could not be made. Each message names the file and
/// the reason in one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text (or token file) is too short for two chunks, which
    /// llama.cpp's tools require as well.
    #[error(
        "the text has {have} tokens, but {needed} are needed \
         (two chunks of {n_ctx} tokens)"
    )]
    TooFewTokens {
        /// Tokens needed (2 × n_ctx).
        needed: usize,
        /// Tokens the text has.
        have: usize,
        /// The chunk size.
        n_ctx: usize,
    },
    /// The chunk size cannot be used.
    #[error("context size {n_ctx} {reason}")]
    BadContext {
        /// The chunk size asked for.
        n_ctx: usize,
        /// Why it cannot be used.
        reason: String,
    },
    /// The text could not be tokenized, or a token file is not valid.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::encode::EncodeError),
    /// A file is not in the format it should be in.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model and its base (or the base logits file) do not describe
    /// the same vocabulary or chunking, so comparing them means nothing.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The base model or base logits file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The model returned logits of the wrong shape.
    #[error(
        "the model returned {got} logits for {n_tokens} tokens of a {n_vocab}-token vocabulary"
    )]
    LogitShape {
        /// Values returned.
        got: usize,
        /// Tokens given.
        n_tokens: usize,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// The model's forward pass failed.
    #[error(transparent)]
    Model(#[from] super::EvalError),
    /// An importance-matrix sum became NaN or infinite (llama-imatrix
    /// stops in this case too).
    #[error("importance sums of {tensor} are not finite")]
    NonFinite {
        /// The weight whose input sums overflowed.
        tensor: String,
    },
    /// A GGUF file could not be read or written.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The measurement was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl MeasureError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> MeasureError {
        MeasureError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
