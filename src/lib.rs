//! kvant turns freshly trained language-model checkpoints into quantized
//! GGUF files and registers them with a running Ollama.
//!
//! The data flows one way, and the modules are listed in that order:
//!
//! ```text
//! watch ─▶ source ─▶ arch ─▶ tokenizer ─▶ quant ─▶ gguf ─▶ ollama/modelfile
//!   (noticing a drop)  (reading)  (naming)   (vocab)   (bytes)  (file)   (serving)
//!                          └────────────── convert ──────────────┘
//!                                  daemon (queue, state, retries)
//! ```
//!
//! * [`source`] reads checkpoints lazily (torch zip + allowlisted pickle,
//!   safetensors, Hugging Face folders, GGUF) and never runs their code.
//! * [`adapter`] reads PEFT LoRA adapters, finds their base and merges
//!   them into it tensor by tensor (or writes a GGUF LoRA).
//! * [`arch`] maps one model family's tensors and hyper-parameters to GGUF
//!   names and keys, as pure functions.
//! * [`tokenizer`] turns `tokenizer.json` into `tokenizer.ggml.*` keys.
//! * [`quant`] turns f32 rows into ggml block bytes, byte-identical to
//!   llama.cpp, and decides each tensor's type.
//! * [`gguf`] owns the file format: a streaming writer that hashes as it
//!   writes, and a bounded reader.
//! * [`convert`] runs one job from a checkpoint to finished GGUF files.
//! * [`modelfile`] and [`ollama`] present the result to Ollama.
//! * [`eval`] runs a model's forward pass as llama.cpp computes it.
//! * [`measure`] measures a conversion against its own source (imatrix,
//!   reference logits, each type's KLD) and [`quality`] judges, chooses
//!   and draws from those numbers.
//! * [`watch`], [`durable`] and [`daemon`] make it an unattended service.
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod adapter;
pub mod arch;
pub mod convert;
pub mod daemon;
pub mod durable;
pub mod eval;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod gguf;
pub mod measure;
pub mod modelfile;
pub mod ollama;
pub mod quality;
pub mod quant;
pub mod source;
pub mod tokenizer;
pub mod watch;
