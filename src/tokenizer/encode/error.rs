//! Errors of encoding text into token ids.

use std::path::PathBuf;

/// Why text (or a token file) cannot be turned into token ids.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The vocabulary's `tokenizer.ggml.*` keys are missing or mistyped.
    #[error("{origin}: {reason}")]
    Malformed {
        /// The GGUF file (or "tokenizer metadata" before a file exists).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A tokenizer kvant does not encode with (it could not be proven to
    /// match llama.cpp).
    #[error("{origin}: kvant cannot tokenize like llama.cpp here: {reason}")]
    Unsupported {
        /// The GGUF file (or "tokenizer metadata").
        origin: String,
        /// Which tokenizer, and what kvant encodes.
        reason: String,
    },
    /// `add_special` asked for a BOS/EOS the vocabulary does not have.
    #[error("the tokenizer adds a {which} token but the vocabulary has none")]
    NoSpecial {
        /// "BOS" or "EOS".
        which: &'static str,
    },
    /// SentencePiece byte fallback met a byte with no `<0xXX>` token.
    #[error("byte 0x{byte:02X} has no token (no <0x{byte:02X}> in the vocabulary)")]
    NoByteToken {
        /// The byte.
        byte: u8,
    },
    /// A pre-tokenized token file cannot be read.
    #[error("{path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A pre-tokenized token file holds something that is not a token id.
    #[error("{path}: at byte offset {offset}: {reason}")]
    TokenFileAt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}
