//! Errors of the GGUF layer.

use std::path::PathBuf;

/// Something wrong with a GGUF file being written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file.
    #[error("{path}: not a valid GGUF file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The writer was used against its contract (a bug, not bad input).
    #[error("GGUF writer: {0}")]
    Usage(String),
}

impl GgufError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
