//! The daemon layer's errors: one line each, naming the file or directory
//! and the reason.

use std::path::PathBuf;

/// Why the daemon (or one of its library calls) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration file or an override is wrong.
    #[error("{path}: {reason}")]
    Config {
        /// The config file (or `<flags>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another kvant daemon holds the state directory.
    #[error(
        "{dir}: another kvant daemon is using this state directory (lock held on {dir}/kvant.lock)"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
    },
    /// The journal cannot be read back.
    #[error("{path}: damaged state journal: {reason} (move it aside to start fresh)")]
    StateCorrupt {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A per-model `kvant.toml` is wrong.
    #[error("{path}: {reason}")]
    ModelSettings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The inbox cannot be watched.
    #[error("{path}: cannot watch: {reason}")]
    Watch {
        /// The inbox.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// `retry` named a drop the journal does not know.
    #[error("{0}: no such drop in the journal")]
    UnknownDrop(String),
    /// A service file cannot be written or is not supported here.
    #[error("{path}: {reason}")]
    Service {
        /// The service file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DaemonError {
    /// An [`DaemonError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DaemonError {
        let path = path.into();
        move |source| DaemonError::Io { path, source }
    }
}
