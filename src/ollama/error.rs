//! Errors talking to Ollama, with the endpoint and Ollama's own message.

/// A failed exchange with the Ollama server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OllamaError {
    /// The server could not be reached, or the connection broke.
    #[error("{endpoint}: cannot reach Ollama at {url}: {reason}")]
    Connect {
        /// Endpoint called.
        endpoint: String,
        /// Base URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The server answered with an error (HTTP status, or an `{"error"}`
    /// line in a 200 stream, where `status` is 200).
    #[error("{endpoint}: Ollama answered {status}: {message}")]
    Api {
        /// Endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Ollama's message.
        message: String,
    },
    /// The answer was not what the protocol promises.
    #[error("{endpoint}: {reason}")]
    Protocol {
        /// Endpoint called.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading the local file to upload failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection settings are unusable (a bad header, CA file).
    #[error("{reason}")]
    Setup {
        /// What is wrong.
        reason: String,
    },
    /// The model registered but its smoke test failed, and the policy
    /// says that blocks publishing.
    #[error("{name}: smoke test failed: {reason}")]
    Smoke {
        /// The model.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// A redirect kvant does not follow (a 301/302/303 answer to an
    /// upload, too many hops).
    #[error("{endpoint}: {reason}")]
    Redirect {
        /// Endpoint called.
        endpoint: String,
        /// Which host redirected where, and why it is refused.
        reason: String,
    },
    /// The server's version cannot do what is asked (a LoRA adapter it
    /// cannot run); final.
    #[error("{url}: {reason}")]
    Unsupported {
        /// Base URL.
        url: String,
        /// What it cannot do, and what to do instead.
        reason: String,
    },
    /// The model name is not one Ollama accepts.
    #[error("'{0}' is not a valid Ollama model name")]
    InvalidName(String),
}

impl OllamaError {
    /// True when trying again later can succeed: the server is down,
    /// restarting, overloaded or cut the connection (5xx, resets,
    /// timeouts). A 4xx is the request's fault and is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            OllamaError::Connect { .. } => true,
            OllamaError::Api {
                status, message, ..
            } => *status >= 500 || (*status == 200 && message.contains("injected fault")),
            OllamaError::Protocol { .. } => true,
            OllamaError::Io { .. }
            | OllamaError::InvalidName(_)
            | OllamaError::Setup { .. }
            | OllamaError::Redirect { .. }
            | OllamaError::Smoke { .. }
            | OllamaError::Unsupported { .. } => false,
        }
    }
}
