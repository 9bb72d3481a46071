//! Quantization: f32 rows into ggml block bytes, byte-identical to
//! llama.cpp's reference quantizers, and the per-tensor type policy.
//!
//! This module must not know about files, GGUF offsets or where tensors
//! came from.

mod ftype;
mod imatrix;
mod policy;
mod types;

pub use ftype::FileType;
pub use imatrix::{Imatrix, ImatrixError};
pub use policy::{choose_types, PolicyError, PolicyModel, PolicyTensor, TypeOverrides};
pub use types::GgmlType;
