//! The projections the graphs are made of: a weight with an optional
//! bias (`build_lora_mm` then `ggml_add`), and the Q/K/V projection,
//! fused (`attn_qkv`) or separate (`attn_q`, `attn_k`, `attn_v`), as
//! llama.cpp's `build_qkv` computes it.

use super::matmul::matmul;
use super::ops::add_bias;
use super::weights::{Matrix, Store};
use super::MatmulObserver;
use crate::eval::EvalError;

/// `y = W x (+ b)`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// The weight.
    pub w: Matrix,
    /// The bias, when the model has one.
    pub b: Option<Vec<f32>>,
}

impl Linear {
    /// `<prefix>.weight` `[n_in, n_out]` with `<prefix>.bias` if present.
    pub fn load(
        store: &Store,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear, EvalError> {
        Ok(Linear {
            w: store.matrix(&format!("{prefix}.weight"), n_in, n_out)?,
            b: store.optional_vector(&format!("{prefix}.bias"), n_out)?,
        })
    }

    /// Like `load`, but the bias must be there (GPT-2's graph needs it).
    pub fn load_biased(
        store: &Store,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear, EvalError> {
        Ok(Linear {
            w: store.matrix(&format!("{prefix}.weight"), n_in, n_out)?,
            b: Some(store.vector(&format!("{prefix}.bias"), n_out)?),
        })
    }

    /// Applies the projection to `n_tokens` rows of `x` into `out`.
    pub fn forward(
        &self,
        store: &Store,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        observer: &mut Option<&mut dyn MatmulObserver>,
    ) -> Result<(), EvalError> {
        let out = &mut out[..n_tokens * self.w.n_out];
        matmul(
            store,
            &self.w,
            &x[..n_tokens * self.w.n_in],
            n_tokens,
            out,
            observer,
        )?;
        if let Some(b) = &self.b {
            add_bias(out, b);
        }
        Ok(())
    }
}

/// The Q/K/V projection of one layer.
#[derive(Debug, Clone)]
pub(crate) enum Qkv {
    /// One `attn_qkv` matrix whose rows are Q, then K, then V.
    Fused(Linear),
    /// Three matrices.
    Separate {
        /// `attn_q`.
        q: Linear,
        /// `attn_k`.
        k: Linear,
        /// `attn_v`.
        v: Linear,
    },
}

/// Widths of Q, K and V rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QkvWidths {
    /// `n_head · head_dim_k`.
    pub q: usize,
    /// `n_head_kv · head_dim_k`.
    pub k: usize,
    /// `n_head_kv · head_dim_v`.
    pub v: usize,
}

impl Qkv {
    /// `blk.<l>.attn_qkv` when the file has it, else the three matrices.
    pub fn load(store: &Store, l: usize, n_in: usize, w: QkvWidths) -> Result<Qkv, EvalError> {
        let p = |s: &str| format!("blk.{l}.{s}");
        if store.has(&p("attn_qkv.weight")) {
            return Ok(Qkv::Fused(Linear::load(
                store,
                &p("attn_qkv"),
                n_in,
                w.q + w.k + w.v,
            )?));
        }
        Ok(Qkv::Separate {
            q: Linear::load(store, &p("attn_q"), n_in, w.q)?,
            k: Linear::load(store, &p("attn_k"), n_in, w.k)?,
            v: Linear::load(store, &p("attn_v"), n_in, w.v)?,
        })
    }

    /// Projects `x` into `q`, `k` and `v` (`scratch` holds the fused
    /// output).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        store: &Store,
        x: &[f32],
        n_tokens: usize,
        [q, k, v]: [&mut [f32]; 3],
        scratch: &mut Vec<f32>,
        observer: &mut Option<&mut dyn MatmulObserver>,
    ) -> Result<(), EvalError> {
        match self {
            Qkv::Separate {
                q: wq,
                k: wk,
                v: wv,
            } => {
                // ggml runs them in this order: build_attn expands Q, then
                // V, then K into the graph.
                wq.forward(store, x, n_tokens, q, observer)?;
                wv.forward(store, x, n_tokens, v, observer)?;
                wk.forward(store, x, n_tokens, k, observer)
            }
            Qkv::Fused(w) => {
                let n = w.w.n_out;
                scratch.resize(n_tokens * n, 0.0);
                w.forward(store, x, n_tokens, scratch, observer)?;
                let (nq, nk) = (q.len() / n_tokens, k.len() / n_tokens);
                let nv = v.len() / n_tokens;
                for (t, row) in scratch.chunks_exact(n).enumerate() {
                    q[t * nq..][..nq].copy_from_slice(&row[..nq]);
                    k[t * nk..][..nk].copy_from_slice(&row[nq..nq + nk]);
                    v[t * nv..][..nv].copy_from_slice(&row[nq + nk..nq + nk + nv]);
                }
                Ok(())
            }
        }
    }
}
