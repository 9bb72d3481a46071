//! Errors of the daemon: those that stop it (bad configuration, a state
//! directory in use) and those that fail one drop.

/// A daemon error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is invalid; the daemon does not start.
    #[error("configuration: {0}")]
    Config(String),
    /// Another kvant holds the state directory.
    #[error("{0}: another kvant is running with this state directory (lock held)")]
    Locked(std::path::PathBuf),
    /// The state journal cannot be read or written.
    #[error("state: {0}")]
    State(String),
    /// Watching the inbox failed.
    #[error("watching {path}: {reason}")]
    Watch {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// One drop failed (the daemon goes on).
    #[error("{0}")]
    Drop(String),
}
