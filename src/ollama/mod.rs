//! Ollama REST client side: host parsing, model names, the HTTP client, and the one-shot
//! registration sequence. Knows nothing about checkpoints or quantization; it only ships an
//! already written GGUF to a running Ollama server and checks the result.

pub mod api;
pub mod client;
pub mod error;
pub mod host;
pub mod names;
pub mod register;
pub mod retry;

pub use client::Client;
pub use error::OllamaError;
pub use host::parse_host;
pub use names::{sanitize_model_name, validate_name};
pub use register::{register, Registered, Registration};
