//! Errors of the family mapping.

/// Why a checkpoint cannot be mapped to a GGUF architecture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// A hyper-parameter is missing and cannot be derived from shapes.
    #[error(
        "{what} is not stored in the checkpoint and cannot be derived from tensor shapes; {how}"
    )]
    Missing {
        /// Which value.
        what: String,
        /// How the user can supply it.
        how: String,
    },
    /// The stored hyper-parameters contradict the tensor shapes.
    #[error("{0}")]
    Inconsistent(String),
    /// A tensor the family needs is absent.
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    /// The checkpoint is not a model family kvant knows.
    #[error("{0}")]
    UnknownFamily(String),
}
