//! Evaluating models kvant writes: a forward pass computed the way
//! llama.cpp's CPU backend computes it, so logits, perplexity and
//! importance statistics agree with what Ollama's runner would produce.
//!
//! * [`forward`] — the forward pass over a GGUF file (weights read from
//!   the map) or over a checkpoint's full-precision tensors.
//!
//! This module must not know how text is tokenized or how statistics are
//! reported: it turns token ids into logits.

mod error;
pub mod forward;

pub use error::EvalError;
