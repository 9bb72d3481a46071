//! Errors of the Ollama layer, classified as retryable (transient) or permanent, because the
//! daemon decides about backoff from that classification alone.

/// Everything that can go wrong while talking to Ollama.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OllamaError {
    /// `OLLAMA_HOST` (or a given host) could not be turned into a URL.
    #[error("invalid OLLAMA_HOST {value:?}: {reason}")]
    InvalidHost {
        /// The raw value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A model name violates Ollama's name grammar.
    #[error("invalid model name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The server answered with an error (HTTP status and/or `{"error":...}` line).
    #[error("ollama {endpoint} failed (HTTP {status}): {message}")]
    Api {
        /// Endpoint path, e.g. `/api/create`.
        endpoint: String,
        /// HTTP status (200 when the error came as a stream line).
        status: u16,
        /// Ollama's message verbatim.
        message: String,
    },
    /// Transport failure (connection refused/reset, timeout, body cut).
    #[error("ollama {endpoint}: transport error: {source}")]
    Transport {
        /// Endpoint path.
        endpoint: String,
        /// Underlying reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: std::path::PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered something we cannot interpret.
    #[error("ollama {endpoint}: unexpected response: {reason}")]
    Protocol {
        /// Endpoint path.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The model was created but does not look as expected.
    #[error("ollama verification of {model} failed: {reason}")]
    Verification {
        /// Model name.
        model: String,
        /// What differed.
        reason: String,
    },
}

impl OllamaError {
    /// True for transient failures worth retrying with backoff: transport errors
    /// (refused, reset, timeout), 5xx answers, and stream-cut protocol errors.
    /// 4xx answers carry a message that retrying will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            OllamaError::Transport { .. } => true,
            OllamaError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            OllamaError::Protocol { .. } => true,
            _ => false,
        }
    }
}
