//! Quantization: f32 rows into ggml block bytes, byte-identical to
//! llama.cpp's reference quantizers, and the per-tensor type policy.
//!
//! * [`GgmlType`] — ids and block geometry; [`FileType`] — the mixes.
//! * `legacy` (Q4_0 … Q8_0) and `kquants` (Q2_K … Q6_K) — one block struct
//!   and its reference quantizer each; `search` — the scale searches they
//!   share; `imatrix_kernels` — the importance-weighted variants.
//! * [`quantize`] / [`dequantize`] — whole tensors, rows in parallel.
//! * [`dot`] — ggml-cpu's row products and matrix products against those
//!   blocks (activations quantized to the weight's `vec_dot_type`), with
//!   `activation` (Q8_0/Q8_1/Q8_K), `legacy_dot`, `kquants_dot`,
//!   `dense_dot` and the shared fast engine `unpacked_dot` beside them;
//!   [`matmul_repacked`] — the product of the Q4_0/Q4_K weights ggml-cpu
//!   repacks ([`is_repacked`]), in its 8x8 kernels' float order.
//! * `policy` — which type each tensor gets ([`choose_types`], llama.cpp's
//!   `llama-quant.cpp` rules); `imatrix` — reading importance matrices.
//!
//! Apart from `imatrix` (which reads llama.cpp's importance-matrix files),
//! this module must not know about files, GGUF offsets or where tensors
//! came from.

mod activation;
mod dense_dot;
pub mod dot;
mod error;
mod fp16;
mod ftype;
mod imatrix;
mod imatrix_kernels;
mod kquants;
mod kquants_dot;
mod kquants_vnni;
mod legacy;
mod legacy_dot;
mod lockstep;
mod policy;
mod repack_dot;
mod row_blocks;
mod rows;
mod search;
mod types;
mod unpacked_dot;

pub use error::QuantError;
pub use fp16::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
pub use ftype::FileType;
pub use imatrix::{Imatrix, ImatrixError};
pub use policy::{choose_types, PolicyError, PolicyModel, PolicyTensor, TypeOverrides};
pub use repack_dot::{is_repacked, matmul_repacked};
pub use rows::{dequantize, quantize, quantize_into, quantize_rows, Rows};
pub use types::GgmlType;
