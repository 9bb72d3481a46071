//! Tokenizers: `tokenizer.json` (and SentencePiece models) into
//! `tokenizer.ggml.*` GGUF keys, and chat templates into Ollama templates.
//!
//! This module must not know about tensors or quantization.

pub mod chat_template;
