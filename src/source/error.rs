//! Errors of the source layer. Each names the file and the reason, in one
//! line a user can act on.

use std::path::PathBuf;

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or not what its name says.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is valid but uses something kvant does not read.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported, and what to do instead.
        reason: String,
    },
    /// A pickle asked for a global outside the allowlist. Nothing was run.
    #[error("{path}: refused to load: the pickle calls '{global}', which is not on the allowlist of safe PyTorch globals (nothing was executed)")]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// `module.name` of the refused global.
        global: String,
    },
    /// One tensor's description is inconsistent.
    #[error("tensor '{tensor}': {reason}")]
    BadTensor {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
}
