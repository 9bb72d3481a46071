//! Talking to Ollama over its REST API (no `ollama` CLI needed):
//! `OLLAMA_HOST` parsing, model names, one call per endpoint, the whole
//! registration sequence, and the backoff schedule callers retry with.
//!
//! This module must not know GGUF internals or the watched folder.

mod client;
mod error;
mod host;
mod names;
mod register;
pub mod retry;

pub use client::{Client, Version, JSON_CREATE};
pub use error::OllamaError;
pub use host::{parse_host, OllamaHost};
pub use names::{is_valid_name, is_valid_part, sanitize_model_name, sanitize_tag};
pub use register::{register, Registered, Registration};
