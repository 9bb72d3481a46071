//! The hyper-parameters a graph needs, read from the `<arch>.*` keys with
//! the defaults llama.cpp's loader (`llama_model::load_hparams`) and
//! context (`llama_context` constructor) apply.

use crate::eval::EvalError;
use crate::gguf::{GgufValue, Metadata};

/// Shapes and constants of one model.
#[derive(Debug, Clone)]
pub(crate) struct HParams {
    /// `general.architecture`.
    pub arch: String,
    /// Hidden size.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Key (and query) head size.
    pub head_dim_k: usize,
    /// Value head size.
    pub head_dim_v: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Trained context length.
    pub n_ctx_train: usize,
    /// LayerNorm epsilon (`attention.layer_norm_epsilon`) or RMSNorm
    /// epsilon (`attention.layer_norm_rms_epsilon`), whichever the graph
    /// uses.
    pub norm_eps: f32,
    /// Rotary embedding constants (unused by GPT-2).
    pub rope: RopeParams,
}

/// `ggml_rope_ext`'s arguments as llama.cpp's context computes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeParams {
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// `rope.freq_base` (default 10000).
    pub freq_base: f32,
    /// 1 / `rope.scaling.factor` for linear and YaRN scaling, else 1.
    pub freq_scale: f32,
    /// YaRN extrapolation mix: 1 for YaRN scaling, else 0.
    pub ext_factor: f32,
    /// Magnitude factor handed to the kernel.
    pub attn_factor: f32,
    /// YaRN's β_fast and β_slow (32 and 1).
    pub beta_fast: f32,
    /// See `beta_fast`.
    pub beta_slow: f32,
    /// `rope.scaling.original_context_length`, else the trained context.
    pub n_ctx_orig: usize,
}

struct Keys<'a> {
    md: &'a Metadata,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.md.get(&self.key(k))
    }

    fn opt_u(&self, k: &str) -> Result<Option<usize>, EvalError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or(EvalError::BadKey {
                    key: self.key(k),
                    reason: format!("is not an unsigned integer ({})", v.display_short()),
                }),
        }
    }

    fn u(&self, k: &str) -> Result<usize, EvalError> {
        self.opt_u(k)?.ok_or(EvalError::BadKey {
            key: self.key(k),
            reason: "is missing".into(),
        })
    }

    fn opt_f(&self, k: &str) -> Result<Option<f32>, EvalError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|f| Some(f as f32)).ok_or(EvalError::BadKey {
                key: self.key(k),
                reason: format!("is not a number ({})", v.display_short()),
            }),
        }
    }

    fn f(&self, k: &str) -> Result<f32, EvalError> {
        self.opt_f(k)?.ok_or(EvalError::BadKey {
            key: self.key(k),
            reason: "is missing".into(),
        })
    }
}

impl HParams {
    /// Reads the keys of `md`; `rms` picks the RMSNorm epsilon key.
    pub fn read(md: &Metadata, rms: bool) -> Result<HParams, EvalError> {
        let arch = md
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or(EvalError::BadKey {
                key: "general.architecture".into(),
                reason: "is missing".into(),
            })?;
        let k = Keys { md, arch };
        let n_embd = k.u("embedding_length")?;
        let n_head = k.u("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 && k.get("attention.key_length").is_none() {
            return Err(EvalError::BadKey {
                key: k.key("attention.head_count"),
                reason: format!("{n_head} does not divide embedding_length {n_embd}"),
            });
        }
        let n_head_kv = k.opt_u("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(EvalError::BadKey {
                key: k.key("attention.head_count_kv"),
                reason: format!("{n_head_kv} does not divide head_count {n_head}"),
            });
        }
        let head_dim_k = k.opt_u("attention.key_length")?.unwrap_or(n_embd / n_head);
        let head_dim_v = k
            .opt_u("attention.value_length")?
            .unwrap_or(n_embd / n_head);
        let n_ctx_train = k.u("context_length")?;
        let norm_eps = if rms {
            k.f("attention.layer_norm_rms_epsilon")?
        } else {
            k.f("attention.layer_norm_epsilon")?
        };
        let rope = rope_params(&k, head_dim_k, n_ctx_train)?;
        Ok(HParams {
            arch: arch.to_owned(),
            n_embd,
            n_layer: k.u("block_count")?,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: k.u("feed_forward_length")?,
            n_ctx_train,
            norm_eps,
            rope,
        })
    }
}

/// llama.cpp's rope set-up: `load_hparams` reads the keys, the context
/// derives the YaRN factors (`llama_context::llama_context`).
fn rope_params(k: &Keys, head_dim: usize, n_ctx_train: usize) -> Result<RopeParams, EvalError> {
    let n_rot = k.opt_u("rope.dimension_count")?.unwrap_or(head_dim);
    if n_rot > head_dim || n_rot % 2 != 0 {
        return Err(EvalError::BadKey {
            key: k.key("rope.dimension_count"),
            reason: format!("{n_rot} does not fit head size {head_dim}"),
        });
    }
    let freq_base = k.opt_f("rope.freq_base")?.unwrap_or(10000.0);
    let kind = match k.get("rope.scaling.type") {
        None => "linear",
        Some(v) => v.as_str().ok_or(EvalError::BadKey {
            key: k.key("rope.scaling.type"),
            reason: "is not a string".into(),
        })?,
    };
    let factor = match k.opt_f("rope.scaling.factor")? {
        Some(f) => f,
        None => k.opt_f("rope.scale_linear")?.unwrap_or(0.0),
    };
    let mut freq_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
    let yarn = match kind {
        "none" => {
            freq_scale = 1.0;
            false
        }
        "linear" => false,
        "yarn" => true,
        other => {
            return Err(EvalError::BadKey {
                key: k.key("rope.scaling.type"),
                reason: format!("'{other}' is not supported (none, linear, yarn)"),
            })
        }
    };
    let rope_attn_factor = k.opt_f("rope.scaling.attn_factor")?.unwrap_or(1.0);
    let (ext_factor, mut attn_factor) = if yarn {
        // get_mscale(factor, 1) / (1 + 0.1 ln factor): the kernel applies
        // the magnitude correction itself when ext_factor is set.
        let factor = 1.0 / freq_scale;
        let mscale = if factor <= 1.0 {
            1.0
        } else {
            0.1 * factor.ln() + 1.0
        };
        (1.0, mscale * (1.0 / (1.0 + 0.1 * factor.ln())))
    } else {
        (0.0, 1.0)
    };
    attn_factor *= rope_attn_factor;
    let n_ctx_orig = k
        .opt_u("rope.scaling.original_context_length")?
        .unwrap_or(n_ctx_train);
    Ok(RopeParams {
        n_rot,
        freq_base,
        freq_scale,
        ext_factor,
        attn_factor,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig,
    })
}
