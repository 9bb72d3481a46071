//! The GPT-2 family: nanoGPT, minGPT and Hugging Face `GPT2LMHeadModel`
//! checkpoints, mapped to llama.cpp's `gpt2` architecture.
//!
//! Shapes decide what they can: layers, width, vocabulary rows, context,
//! feed-forward width and whether the model has biases are read from the
//! tensors and cross-checked against any stored hyper-parameters. Only the
//! head count must come from the user or the stored config.
//!
//! Layout: nanoGPT's `nn.Linear` weights are `[out, in]` and go in as they
//! are; Hugging Face's `Conv1D` weights are `[in, out]` and are transposed.
//! Which one a checkpoint uses is read from `c_attn.weight`'s shape
//! (`[C, 3C]` is Conv1D), never guessed from the file name.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::plan::{ArchPlan, PlannedTensor, Recipe};
use super::{ArchError, HParamOverrides};
use crate::gguf::{GgufValue, Metadata};
use crate::source::Checkpoint;

/// Source name prefixes that hold the transformer (`transformer.` for
/// nanoGPT and HF, none for the original hub files).
const PREFIXES: [&str; 2] = ["transformer.", ""];

/// True when the checkpoint looks like a GPT-2 family model.
pub fn matches(ck: &Checkpoint) -> bool {
    PREFIXES
        .iter()
        .any(|p| ck.tensor(&format!("{p}h.0.attn.c_attn.weight")).is_some())
}

struct Names<'a> {
    ck: &'a Checkpoint,
    prefix: &'static str,
}

impl Names<'_> {
    fn name(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn shape(&self, rest: &str) -> Result<&[usize], ArchError> {
        let n = self.name(rest);
        self.ck
            .tensor(&n)
            .map(|t| t.shape.as_slice())
            .ok_or(ArchError::MissingTensor(n))
    }

    fn has(&self, rest: &str) -> bool {
        self.ck.tensor(&self.name(rest)).is_some()
    }
}

fn cfg_usize(config: Option<&Value>, keys: &[&str]) -> Option<usize> {
    let c = config?;
    keys.iter()
        .find_map(|k| c.get(*k).and_then(Value::as_u64))
        .map(|v| v as usize)
}

fn check(what: &str, stored: Option<usize>, derived: usize) -> Result<(), ArchError> {
    match stored {
        Some(s) if s != derived => Err(ArchError::Inconsistent(format!(
            "the stored hyper-parameters say {what} = {s}, but the tensors have {derived}"
        ))),
        _ => Ok(()),
    }
}

/// Maps a GPT-2 family checkpoint. `config` is nanoGPT's `model_args` or
/// a Hugging Face `config.json`.
pub fn plan(
    ck: &Checkpoint,
    config: Option<&Value>,
    overrides: &HParamOverrides,
) -> Result<ArchPlan, ArchError> {
    let prefix = PREFIXES
        .into_iter()
        .find(|p| ck.tensor(&format!("{p}h.0.attn.c_attn.weight")).is_some())
        .ok_or_else(|| ArchError::MissingTensor("transformer.h.0.attn.c_attn.weight".into()))?;
    let n = Names { ck, prefix };

    // Shapes first: they are the truth.
    let wte = n.shape("wte.weight")?;
    let wpe = n.shape("wpe.weight")?;
    let [n_vocab, n_embd] = two_d(wte, "wte.weight")?;
    let [n_ctx, wpe_embd] = two_d(wpe, "wpe.weight")?;
    if wpe_embd != n_embd {
        return Err(ArchError::Inconsistent(format!(
            "wpe.weight is {wpe:?} but wte.weight is {wte:?}"
        )));
    }
    let layers: BTreeSet<usize> = ck
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(&format!("{prefix}h.")))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    let n_layer = layers.len();
    if layers.iter().copied().ne(0..n_layer) {
        return Err(ArchError::Inconsistent(format!(
            "layer numbers are not 0..{n_layer}: {layers:?}"
        )));
    }
    let c_attn = n.shape("h.0.attn.c_attn.weight")?;
    let conv1d = match two_d(c_attn, "c_attn.weight")? {
        [o, i] if o == 3 * n_embd && i == n_embd => false,
        [i, o] if o == 3 * n_embd && i == n_embd => true,
        _ => {
            return Err(ArchError::Inconsistent(format!(
                "h.0.attn.c_attn.weight is {c_attn:?}, expected [{}, {n_embd}] or its transpose",
                3 * n_embd
            )))
        }
    };
    let c_fc = two_d(n.shape("h.0.mlp.c_fc.weight")?, "c_fc.weight")?;
    let n_ff = if conv1d { c_fc[1] } else { c_fc[0] };
    let bias = n.has("h.0.ln_1.bias");

    // Stored hyper-parameters must agree with the shapes.
    check("n_layer", cfg_usize(config, &["n_layer"]), n_layer)?;
    check("n_embd", cfg_usize(config, &["n_embd"]), n_embd)?;
    check("vocab_size", cfg_usize(config, &["vocab_size"]), n_vocab)?;
    check(
        "block_size / n_positions",
        cfg_usize(config, &["block_size", "n_positions", "n_ctx"]),
        n_ctx,
    )?;
    if let Some(b) = config.and_then(|c| c.get("bias")).and_then(Value::as_bool) {
        if b != bias {
            return Err(ArchError::Inconsistent(format!(
                "the stored hyper-parameters say bias = {b}, but the tensors {} biases",
                if bias { "have" } else { "have no" }
            )));
        }
    }
    let stored_head = cfg_usize(config, &["n_head", "num_attention_heads"]);
    let n_head = match (overrides.n_head, stored_head) {
        (Some(o), Some(s)) if o != s => {
            return Err(ArchError::Inconsistent(format!(
                "--n-head {o} contradicts the stored n_head = {s}"
            )))
        }
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            return Err(ArchError::Missing {
                what: "n_head (the number of attention heads)".into(),
                how: "pass --n-head N, or put a config.json beside the checkpoint with {\"n_head\": N} (nanoGPT's model_args keys)".into(),
            })
        }
    };
    if n_head == 0 || n_embd % n_head != 0 {
        return Err(ArchError::Inconsistent(format!(
            "n_head = {n_head} does not divide n_embd = {n_embd}"
        )));
    }
    let eps = config
        .and_then(|c| c.get("layer_norm_epsilon"))
        .and_then(Value::as_f64)
        .unwrap_or(1e-5) as f32;

    let mut md = Metadata::new();
    md.set("general.architecture", "gpt2");
    md.set("gpt2.context_length", GgufValue::U32(n_ctx as u32));
    md.set("gpt2.embedding_length", GgufValue::U32(n_embd as u32));
    md.set("gpt2.feed_forward_length", GgufValue::U32(n_ff as u32));
    md.set("gpt2.block_count", GgufValue::U32(n_layer as u32));
    md.set("gpt2.attention.head_count", GgufValue::U32(n_head as u32));
    md.set("gpt2.attention.layer_norm_epsilon", GgufValue::F32(eps));

    let mut tensors = Vec::new();
    let matrix = |gguf: String, src: String, rows: usize, cols: usize| PlannedTensor {
        name: gguf,
        ne: vec![cols as u64, rows as u64],
        recipe: if conv1d {
            Recipe::Transpose { source: src }
        } else {
            Recipe::Copy { source: src }
        },
        keep_f32: false,
    };
    let vector = |gguf: String, src: Option<String>, len: usize| PlannedTensor {
        name: gguf,
        ne: vec![len as u64],
        recipe: match src {
            Some(source) => Recipe::Copy { source },
            None => Recipe::Zeros,
        },
        keep_f32: true,
    };
    // A bias the checkpoint has, or zeros when it was trained without.
    let bias_src = |rest: &str| -> Result<Option<String>, ArchError> {
        if bias {
            n.shape(rest)?;
            Ok(Some(n.name(rest)))
        } else {
            Ok(None)
        }
    };

    tensors.push(PlannedTensor {
        name: "token_embd.weight".into(),
        ne: vec![n_embd as u64, n_vocab as u64],
        recipe: Recipe::Copy {
            source: n.name("wte.weight"),
        },
        keep_f32: false,
    });
    tensors.push(PlannedTensor {
        name: "position_embd.weight".into(),
        ne: vec![n_embd as u64, n_ctx as u64],
        recipe: Recipe::Copy {
            source: n.name("wpe.weight"),
        },
        keep_f32: true,
    });
    for l in 0..n_layer {
        let h = |rest: &str| format!("h.{l}.{rest}");
        let b = |rest: &str| format!("blk.{l}.{rest}");
        n.shape(&h("ln_1.weight"))?;
        tensors.push(vector(
            b("attn_norm.weight"),
            Some(n.name(&h("ln_1.weight"))),
            n_embd,
        ));
        tensors.push(vector(
            b("attn_norm.bias"),
            bias_src(&h("ln_1.bias"))?,
            n_embd,
        ));
        n.shape(&h("attn.c_attn.weight"))?;
        tensors.push(matrix(
            b("attn_qkv.weight"),
            n.name(&h("attn.c_attn.weight")),
            3 * n_embd,
            n_embd,
        ));
        tensors.push(vector(
            b("attn_qkv.bias"),
            bias_src(&h("attn.c_attn.bias"))?,
            3 * n_embd,
        ));
        n.shape(&h("attn.c_proj.weight"))?;
        tensors.push(matrix(
            b("attn_output.weight"),
            n.name(&h("attn.c_proj.weight")),
            n_embd,
            n_embd,
        ));
        tensors.push(vector(
            b("attn_output.bias"),
            bias_src(&h("attn.c_proj.bias"))?,
            n_embd,
        ));
        n.shape(&h("ln_2.weight"))?;
        tensors.push(vector(
            b("ffn_norm.weight"),
            Some(n.name(&h("ln_2.weight"))),
            n_embd,
        ));
        tensors.push(vector(
            b("ffn_norm.bias"),
            bias_src(&h("ln_2.bias"))?,
            n_embd,
        ));
        n.shape(&h("mlp.c_fc.weight"))?;
        tensors.push(matrix(
            b("ffn_up.weight"),
            n.name(&h("mlp.c_fc.weight")),
            n_ff,
            n_embd,
        ));
        tensors.push(vector(
            b("ffn_up.bias"),
            bias_src(&h("mlp.c_fc.bias"))?,
            n_ff,
        ));
        n.shape(&h("mlp.c_proj.weight"))?;
        tensors.push(matrix(
            b("ffn_down.weight"),
            n.name(&h("mlp.c_proj.weight")),
            n_embd,
            n_ff,
        ));
        tensors.push(vector(
            b("ffn_down.bias"),
            bias_src(&h("mlp.c_proj.bias"))?,
            n_embd,
        ));
    }
    n.shape("ln_f.weight")?;
    tensors.push(vector(
        "output_norm.weight".into(),
        Some(n.name("ln_f.weight")),
        n_embd,
    ));
    tensors.push(vector(
        "output_norm.bias".into(),
        bias_src("ln_f.bias")?,
        n_embd,
    ));

    // The output projection: llama.cpp re-uses token_embd when
    // output.weight is absent, so a tied head is written once.
    if let Some(lm_head) = ck.tensor("lm_head.weight") {
        let wte_t = ck.tensor(&n.name("wte.weight"));
        let tied = lm_head.shape == wte && wte_t.is_some_and(|w| lm_head.same_bytes(w));
        if !tied {
            if lm_head.shape != wte {
                return Err(ArchError::Inconsistent(format!(
                    "lm_head.weight is {:?} but wte.weight is {wte:?}",
                    lm_head.shape
                )));
            }
            tensors.push(PlannedTensor {
                name: "output.weight".into(),
                ne: vec![n_embd as u64, n_vocab as u64],
                recipe: Recipe::Copy {
                    source: "lm_head.weight".into(),
                },
                keep_f32: false,
            });
        }
    }

    let hparams = json!({
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "n_ff": n_ff,
        "n_ctx": n_ctx,
        "n_vocab": n_vocab,
        "bias": bias,
        "layout": if conv1d { "conv1d" } else { "linear" },
        "layer_norm_epsilon": eps,
    });
    Ok(ArchPlan {
        arch: "gpt2",
        metadata: md,
        tensors,
        n_vocab,
        context_length: n_ctx as u32,
        hparams,
    })
}

fn two_d(shape: &[usize], what: &str) -> Result<[usize; 2], ArchError> {
    match shape {
        [a, b] => Ok([*a, *b]),
        _ => Err(ArchError::Inconsistent(format!(
            "{what} should be 2-D, is {shape:?}"
        ))),
    }
}
