//! Talking to Ollama over its REST API (no `ollama` CLI needed):
//! `OLLAMA_HOST` parsing, model names, one call per endpoint, the whole
//! registration sequence, and the backoff schedule callers retry with.
//!
//! This module must not know GGUF internals or the watched folder.

mod adapter;
mod client;
mod connection;
mod error;
mod host;
mod names;
mod proxy;
mod redirect;
mod register;
pub mod retry;
mod template_mode;

pub use adapter::{adapter_unsupported, AdapterLayer};
pub use client::{Client, Version, JSON_CREATE};
pub use connection::{parse_header_lines, ClientOptions};
pub use error::OllamaError;
pub use host::{parse_host, OllamaHost};
pub use names::{is_valid_name, is_valid_part, sanitize_model_name, sanitize_tag};
pub use proxy::ProxyRules;
pub use redirect::MAX_REDIRECTS;
pub use register::{listed, register, Registered, Registration, SmokePolicy, CHAT_SMOKE_TOKENS};
pub use template_mode::{choose_template, TemplateChoice, TemplateMode, NATIVE_JINJA};
