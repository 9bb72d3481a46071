//! Shared helpers for the integration tests. Each test binary includes this
//! with `mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod archive;
pub mod browser;
pub mod cli;
pub mod daemon;
pub mod edit;
pub mod emulator;
pub mod fixtures;
pub mod ggml;
pub mod ggml_cpu;
pub mod ggml_repack;
pub mod llama;
pub mod llama_tools;
pub mod logits;
pub mod py_server;
pub mod quantize;
