//! `ggml_mul_mat(W, X)` for a whole sequence at once: the observer sees
//! the f32 input first (as `cb_eval` sees `src1`), then every output is
//! checked to be finite, so a broken weight is named where it first shows.

use super::weights::{Matrix, Store};
use super::MatmulObserver;
use crate::eval::EvalError;
use rayon::prelude::*;

use crate::quant::{
    bf16_bits_to_f32, dot, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits, GgmlType,
};

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
/// the quantized types), then integer (or dense) block dot products.
fn multiply(
    store: &Store,
    w: &Matrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), EvalError> {
    let dense = matches!(w.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    if dense && n_tokens >= 2 && w.n_in % 8 == 0 {
        dense_tinyblas(w.ty, store.data(w), w.n_in, w.n_out, x, out);
        return Ok(());
    }
    dot::matmul(w.ty, store.data(w), w.n_out, w.n_in, x, n_tokens, out).map_err(|source| {
        EvalError::Quant {
            tensor: w.name.clone(),
            source,
        }
    })
}

/// Output rows decoded and multiplied per parallel task.
const ROWS_PER_TASK: usize = 16;

/// F32, F16 and BF16 products as llama.cpp's CPU backend runs them for
/// two or more tokens (llamafile's `tinyBLAS`, taken when the row length
/// is a multiple of 8): the activations rounded to the weight's type, one
/// eight-lane multiply-add accumulator per output over the row, the lanes
/// summed as its `hsum`. The order shows at the 1e-3 level of the logits.
fn dense_tinyblas(ty: GgmlType, w: &[u8], n_in: usize, n_out: usize, x: &[f32], out: &mut [f32]) {
    let width = ty.type_size();
    let decode = |b: &[u8]| match ty {
        GgmlType::F16 => f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])),
        GgmlType::BF16 => bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    };
    let round = |v: f32| match ty {
        GgmlType::F16 => f16_bits_to_f32(f32_to_f16_bits(v)),
        GgmlType::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(v)),
        _ => v,
    };
    let acts: Vec<f32> = x.par_iter().map(|&v| round(v)).collect();
    let n_tokens = x.len() / n_in;
    let blocks: Vec<(usize, Vec<f32>)> = w
        .par_chunks(ROWS_PER_TASK * n_in * width)
        .enumerate()
        .map(|(b, bytes)| {
            let rows: Vec<f32> = bytes.chunks_exact(width).map(decode).collect();
            let n_rows = rows.len() / n_in;
            let mut res = vec![0f32; n_tokens * n_rows];
            for (t, xt) in acts.chunks_exact(n_in).enumerate() {
                for (r, row) in rows.chunks_exact(n_in).enumerate() {
                    res[t * n_rows + r] = dot8(row, xt);
                }
            }
            (b * ROWS_PER_TASK, res)
        })
        .collect();
    for (r0, res) in blocks {
        let n = res.len() / n_tokens;
        for (t, part) in res.chunks_exact(n).enumerate() {
            out[t * n_out + r0..][..n].copy_from_slice(part);
        }
    }
}

/// One eight-lane multiply-add accumulator, summed as tinyBLAS's `hsum`.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    let t = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (t[0] + t[2]) + (t[1] + t[3])
}
