//! Errors of the evaluation layer.

use crate::convert::ConvertError;
use crate::gguf::GgufError;
use crate::quant::QuantError;

/// Why a model could not be evaluated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The checkpoint could not be read or mapped to a family.
    #[error(transparent)]
    Checkpoint(#[from] ConvertError),
    /// `general.architecture` names a graph kvant cannot evaluate.
    #[error("architecture '{0}' cannot be evaluated (supported: gpt2, llama, qwen2, qwen3)")]
    UnsupportedArchitecture(String),
    /// A hyper-parameter key the graph needs is missing or mistyped.
    #[error("metadata key '{key}' {reason}")]
    BadKey {
        /// The GGUF key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the graph needs is missing.
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape or a type kvant cannot compute with.
    #[error("tensor '{tensor}': {reason}")]
    BadTensor {
        /// The GGUF tensor name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Computing with a tensor's blocks failed.
    #[error("tensor '{tensor}': {source}")]
    Quant {
        /// The GGUF tensor name.
        tensor: String,
        /// Why.
        #[source]
        source: QuantError,
    },
    /// An empty token sequence was given.
    #[error("the token sequence is empty")]
    EmptySequence,
    /// The positions asked for start past the sequence's end.
    #[error("logits from position {first} were asked of a sequence of {n_tokens} tokens")]
    NoOutputs {
        /// The first position asked for.
        first: usize,
        /// The sequence's length.
        n_tokens: usize,
    },
    /// A token id is not in the vocabulary.
    #[error("token id {token} at position {position} is out of range (vocabulary of {n_vocab})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Its position in the sequence.
        position: usize,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// The sequence is longer than the model has positions for.
    #[error("{n_tokens} tokens exceed the model's {n_positions} positions")]
    TooLong {
        /// Tokens given.
        n_tokens: usize,
        /// Positions the model has (GPT-2's position embedding rows).
        n_positions: usize,
    },
    /// The output of an operation is NaN or infinite: the weights or the
    /// arithmetic overflowed. Names the first tensor whose output is not
    /// finite.
    #[error("the output of '{tensor}' is not finite")]
    NonFinite {
        /// The weight (or operation) whose output is not finite.
        tensor: String,
    },
}
