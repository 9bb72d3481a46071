//! The GPT-2 graph (`llama_model_gpt2::graph` in llama.cpp's
//! `src/models/gpt2.cpp`): token plus learned position embeddings,
//! pre-LayerNorm blocks with a fused, biased QKV projection, causal
//! attention scaled by 1/√head_dim, a GELU (tanh form, through ggml's f16
//! table) MLP, a final LayerNorm and the (possibly tied) output matrix.

use super::attention::{attention, AttnShape};
use super::hparams::HParams;
use super::linear::{Linear, Qkv, QkvWidths};
use super::ops::{add_assign, gelu, layer_norm};
use super::weights::{Matrix, Store};
use super::{embed, Buffers, MatmulObserver, Outputs};
use crate::eval::EvalError;

/// LayerNorm weight and bias.
#[derive(Debug, Clone)]
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    fn load(store: &Store, prefix: &str, n: usize) -> Result<Norm, EvalError> {
        Ok(Norm {
            w: store.vector(&format!("{prefix}.weight"), n)?,
            b: store.vector(&format!("{prefix}.bias"), n)?,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Norm,
    qkv: Qkv,
    wo: Linear,
    ffn_norm: Norm,
    up: Linear,
    down: Linear,
}

/// GPT-2's weights.
#[derive(Debug, Clone)]
pub(crate) struct Gpt2 {
    tok_embd: Matrix,
    pos_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Norm,
    output: Matrix,
}

impl Gpt2 {
    /// Finds every tensor the graph needs, with its shape checked.
    pub fn load(store: &Store, hp: &HParams, n_vocab: usize) -> Result<Gpt2, EvalError> {
        let (n, n_ff) = (hp.n_embd, hp.n_ff);
        let widths = QkvWidths::of(hp);
        let layers = (0..hp.n_layer)
            .map(|l| {
                let p = |s: &str| format!("blk.{l}.{s}");
                let qkv = Qkv::load(store, l, n, widths)?;
                if let Qkv::Fused(Linear { b: None, w }) = &qkv {
                    return Err(EvalError::MissingTensor(w.name.replace("weight", "bias")));
                }
                Ok(Layer {
                    attn_norm: Norm::load(store, &p("attn_norm"), n)?,
                    qkv,
                    wo: Linear::load_biased(store, &p("attn_output"), widths.q, n)?,
                    ffn_norm: Norm::load(store, &p("ffn_norm"), n)?,
                    up: Linear::load_biased(store, &p("ffn_up"), n, n_ff)?,
                    down: Linear::load_biased(store, &p("ffn_down"), n_ff, n)?,
                })
            })
            .collect::<Result<_, EvalError>>()?;
        let output = if store.has("output.weight") {
            store.matrix("output.weight", n, n_vocab)?
        } else {
            store.matrix("token_embd.weight", n, n_vocab)?
        };
        Ok(Gpt2 {
            tok_embd: store.matrix("token_embd.weight", n, n_vocab)?,
            pos_embd: store.matrix("position_embd.weight", n, hp.n_ctx_train)?,
            layers,
            output_norm: Norm::load(store, "output_norm", n)?,
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
        if n_tokens > self.pos_embd.n_out {
            return Err(EvalError::TooLong {
                n_tokens,
                n_positions: self.pos_embd.n_out,
            });
        }
        let n = hp.n_embd;
        let mut b = Buffers::new(hp, n_tokens);
        embed(store, &self.tok_embd, tokens, &mut b.x)?;
        let positions: Vec<u32> = (0..n_tokens as u32).collect();
        embed(store, &self.pos_embd, &positions, &mut b.h)?;
        add_assign(&mut b.x, &b.h);
        let shape = AttnShape::of(hp);
        let mut rows = n_tokens;
        for (il, layer) in self.layers.iter().enumerate() {
            let ln = &layer.attn_norm;
            layer_norm(&b.x, &mut b.h, n, hp.norm_eps, &ln.w, &ln.b);
            layer.qkv.forward(
                store,
                &b.h,
                n_tokens,
                [&mut b.q, &mut b.k, &mut b.v],
                &mut b.scratch,
                &mut observer,
            )?;
            attention(shape, &b.q, &mut b.k, &mut b.v, &mut b.attn, n_tokens);
            layer
                .wo
                .forward(store, &b.attn, n_tokens, &mut b.h, &mut observer)?;
            add_assign(&mut b.x, &b.h[..n_tokens * n]);
            if il + 1 == self.layers.len() {
                rows = b.drop_first_rows(outputs.dropped_after_last_attention(), rows, hp);
            }
            let ln = &layer.ffn_norm;
            layer_norm(&b.x, &mut b.h, n, hp.norm_eps, &ln.w, &ln.b);
            layer
                .up
                .forward(store, &b.h, rows, &mut b.ff, &mut observer)?;
            gelu(&mut b.ff);
            layer
                .down
                .forward(store, &b.ff, rows, &mut b.h, &mut observer)?;
            add_assign(&mut b.x, &b.h[..rows * n]);
        }
        let rows = b.drop_first_rows(outputs.dropped_before_output(), rows, hp);
        let ln = &self.output_norm;
        layer_norm(&b.x, &mut b.h, n, hp.norm_eps, &ln.w, &ln.b);
        let mut logits = vec![0f32; rows * self.output.n_out];
        super::matmul::matmul(store, &self.output, &b.h, rows, &mut logits, &mut observer)?;
        Ok(logits)
    }
}
