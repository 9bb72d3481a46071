//! `ggml_mul_mat(W, X)` for a whole sequence at once: the observer sees
//! the f32 input first (as `cb_eval` sees `src1`), then every output is
//! checked to be finite, so a broken weight is named where it first shows.

use rayon::prelude::*;

use super::weights::{Matrix, Store};
use super::MatmulObserver;
use crate::eval::EvalError;
use crate::quant::GgmlType;

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

fn multiply(
    store: &Store,
    w: &Matrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), EvalError> {
    match w.ty {
        GgmlType::F32 => {
            f32_matmul(store.data(w), w.n_in, w.n_out, x, n_tokens, out);
            Ok(())
        }
        other => Err(EvalError::BadTensor {
            tensor: w.name.clone(),
            reason: format!("{other} weights cannot be multiplied yet"),
        }),
    }
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 32;

fn f32_matmul(w: &[u8], n_in: usize, n_out: usize, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let blocks: Vec<(usize, Vec<f32>)> = (0..n_out.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|b| {
            let r0 = b * ROWS_PER_TASK;
            let r1 = (r0 + ROWS_PER_TASK).min(n_out);
            let rows: Vec<f32> = w[r0 * n_in * 4..r1 * n_in * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut res = vec![0f32; n_tokens * (r1 - r0)];
            for t in 0..n_tokens {
                let xt = &x[t * n_in..][..n_in];
                for (r, row) in rows.chunks_exact(n_in).enumerate() {
                    res[t * (r1 - r0) + r] = super::ops::dot(row, xt);
                }
            }
            (r0, res)
        })
        .collect();
    for (r0, res) in blocks {
        let n = res.len() / n_tokens;
        for t in 0..n_tokens {
            out[t * n_out + r0..][..n].copy_from_slice(&res[t * n..][..n]);
        }
    }
}
