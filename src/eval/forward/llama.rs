//! The LLaMA-family graph, shared by the three architectures whose
//! llama.cpp graphs differ only in small switches (`src/models/llama.cpp`,
//! `qwen2.cpp`, `qwen3.cpp`): RMSNorm pre-norm blocks, Q/K/V projections
//! with optional biases (Qwen2's), Qwen3's per-head RMSNorm of Q and K
//! before RoPE, RoPE (normal pairs for `llama`, whose Q/K rows the
//! converter permuted; NEOX pairs for Qwen), `rope_freqs.weight` factors
//! (Llama-3.1 scaling), GQA attention scaled by 1/√head_dim, a SwiGLU MLP,
//! a final RMSNorm and the (possibly tied, possibly biased) output.

use super::attention::{attention, AttnShape};
use super::hparams::HParams;
use super::linear::{Linear, Qkv, QkvWidths};
use super::ops::{add_assign, rms_norm, swiglu};
use super::rope::{Rope, RopeMode};
use super::weights::{Matrix, Store};
use super::{embed, Buffers, MatmulObserver, Outputs};
use crate::eval::EvalError;

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    qkv: Qkv,
    /// Qwen3's `attn_q_norm` and `attn_k_norm` (one head wide).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The weights of a `llama`, `qwen2` or `qwen3` model.
#[derive(Debug, Clone)]
pub(crate) struct Llama {
    mode: RopeMode,
    freq_factors: Option<Vec<f32>>,
    tok_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Linear,
}

impl Llama {
    /// Finds every tensor the graph of `hp.arch` needs.
    pub fn load(store: &Store, hp: &HParams, n_vocab: usize) -> Result<Llama, EvalError> {
        let (n, n_ff) = (hp.n_embd, hp.n_ff);
        let qwen3 = hp.arch == "qwen3";
        let widths = QkvWidths::of(hp);
        let layers = (0..hp.n_layer)
            .map(|l| {
                let p = |s: &str| format!("blk.{l}.{s}");
                let qk_norm = if qwen3 {
                    Some((
                        store.vector(&p("attn_q_norm.weight"), hp.head_dim_k)?,
                        store.vector(&p("attn_k_norm.weight"), hp.head_dim_k)?,
                    ))
                } else {
                    None
                };
                Ok(Layer {
                    attn_norm: store.vector(&p("attn_norm.weight"), n)?,
                    qkv: Qkv::load(store, l, n, widths)?,
                    qk_norm,
                    wo: Linear::load(store, &p("attn_output"), widths.q, n)?,
                    ffn_norm: store.vector(&p("ffn_norm.weight"), n)?,
                    gate: Linear::load(store, &p("ffn_gate"), n, n_ff)?,
                    up: Linear::load(store, &p("ffn_up"), n, n_ff)?,
                    down: Linear::load(store, &p("ffn_down"), n_ff, n)?,
                })
            })
            .collect::<Result<_, EvalError>>()?;
        let output = if store.has("output.weight") {
            Linear::load(store, "output", n, n_vocab)?
        } else {
            Linear {
                w: store.matrix("token_embd.weight", n, n_vocab)?,
                b: None,
            }
        };
        // llama.cpp reads rope_freqs for `llama` only (qwen2/qwen3 pass no
        // factors to ggml_rope_ext).
        let freq_factors = if hp.arch == "llama" {
            store.optional_vector("rope_freqs.weight", hp.rope.n_rot / 2)?
        } else {
            None
        };
        Ok(Llama {
            mode: if hp.arch == "llama" {
                RopeMode::Normal
            } else {
                RopeMode::Neox
            },
            freq_factors,
            tok_embd: store.matrix("token_embd.weight", n, n_vocab)?,
            layers,
            output_norm: store.vector("output_norm.weight", n)?,
            output,
        })
    }

    /// Logits of the positions `outputs` keeps, `rows × n_vocab`.
    pub fn logits(
        &self,
        store: &Store,
        hp: &HParams,
        tokens: &[u32],
        outputs: Outputs,
        mut observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>, EvalError> {
        let n_tokens = tokens.len();
        let (n, eps, n_ff) = (hp.n_embd, hp.norm_eps, hp.n_ff);
        let mut b = Buffers::new(hp, n_tokens);
        embed(store, &self.tok_embd, tokens, &mut b.x)?;
        let shape = AttnShape::of(hp);
        let rope = Rope {
            params: hp.rope,
            mode: self.mode,
            freq_factors: self.freq_factors.as_deref(),
        };
        let mut rows = n_tokens;
        for (il, layer) in self.layers.iter().enumerate() {
            b.h.copy_from_slice(&b.x);
            rms_norm(&mut b.h, n, eps, &layer.attn_norm);
            layer.qkv.forward(
                store,
                &b.h,
                n_tokens,
                [&mut b.q, &mut b.k, &mut b.v],
                &mut b.scratch,
                &mut observer,
            )?;
            if let Some((qn, kn)) = &layer.qk_norm {
                rms_norm(&mut b.q, hp.head_dim_k, eps, qn);
                rms_norm(&mut b.k, hp.head_dim_k, eps, kn);
            }
            rope.apply(&mut b.q, hp.n_head, hp.head_dim_k);
            rope.apply(&mut b.k, hp.n_head_kv, hp.head_dim_k);
            attention(shape, &b.q, &mut b.k, &mut b.v, &mut b.attn, n_tokens);
            layer
                .wo
                .forward(store, &b.attn, n_tokens, &mut b.h, &mut observer)?;
            add_assign(&mut b.x, &b.h);
            if il + 1 == self.layers.len() {
                rows = b.drop_first_rows(outputs.dropped_after_last_attention(), rows, hp);
            }
            b.h.copy_from_slice(&b.x);
            rms_norm(&mut b.h, n, eps, &layer.ffn_norm);
            // ggml runs the gate first: it is swiglu's first source.
            layer
                .gate
                .forward(store, &b.h, rows, &mut b.ff, &mut observer)?;
            layer
                .up
                .forward(store, &b.h, rows, &mut b.ff_up, &mut observer)?;
            swiglu(&mut b.ff, &b.ff_up, n_ff);
            layer
                .down
                .forward(store, &b.ff, rows, &mut b.h, &mut observer)?;
            add_assign(&mut b.x, &b.h);
        }
        let rows = b.drop_first_rows(outputs.dropped_before_output(), rows, hp);
        b.h.copy_from_slice(&b.x);
        rms_norm(&mut b.h, n, eps, &self.output_norm);
        let mut logits = vec![0f32; rows * self.output.w.n_out];
        self.output
            .forward(store, &b.h, rows, &mut logits, &mut observer)?;
        Ok(logits)
    }
}
