//! `ggml_mul_mat(W, X)` for a whole sequence at once: the observer sees
//! the f32 input first (as `cb_eval` sees `src1`), then every output is
//! checked to be finite, so a broken weight is named where it first shows.

use super::weights::{Matrix, Store};
use super::MatmulObserver;
use crate::eval::EvalError;
use crate::quant::{dot, is_repacked, matmul_repacked, GgmlType};

/// `out[t·n_out + r] = W[r] · x[t]` for `n_tokens` rows of `x`.
pub(crate) fn matmul(
    store: &Store,
    w: &Matrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    observer: &mut Option<&mut dyn MatmulObserver>,
) -> Result<(), EvalError> {
    debug_assert_eq!(x.len(), n_tokens * w.n_in);
    debug_assert_eq!(out.len(), n_tokens * w.n_out);
    if let Some(obs) = observer {
        obs.observe(&w.name, x, n_tokens, w.n_in);
    }
    multiply(store, w, x, n_tokens, out)?;
    super::ops::check_finite(out, &w.name)
}

/// ggml-cpu's product: the activations converted to the weight type's
/// `vec_dot_type` (f16 for F16, bf16 for BF16, Q8_0/Q8_1/Q8_K blocks for
/// the quantized types), then integer (or dense) block dot products, each
/// through the kernel ggml's `mul_mat` picks for this weight and batch:
/// llamafile's tinyBLAS for dense weights and two or more tokens, the
/// repacked 8×8 kernels for the Q4_0/Q4_K weights ggml repacks at load,
/// `vec_dot`'s order (or the tiled K-quant kernel's) for the rest.
fn multiply(
    store: &Store,
    w: &Matrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), EvalError> {
    let dense = matches!(w.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    let result = if dense && n_tokens >= 2 && w.n_in.is_multiple_of(8) {
        dot::matmul_tinyblas(w.ty, store.data(w), w.n_out, w.n_in, x, n_tokens, out)
    } else if is_repacked(w.ty, w.n_out, w.n_in) {
        matmul_repacked(w.ty, store.data(w), w.n_out, w.n_in, x, n_tokens, out)
    } else {
        dot::matmul(w.ty, store.data(w), w.n_out, w.n_in, x, n_tokens, out)
    };
    result.map_err(|source| EvalError::Quant {
        tensor: w.name.clone(),
        source,
    })
}
