//! The LLaMA family as Hugging Face saves it — `LlamaForCausalLM`,
//! `MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM` — mapped to
//! llama.cpp's `llama`, `qwen2` and `qwen3` architectures.
//!
//! What differs between them, and why:
//! * `llama`/Mistral use llama.cpp's "normal" RoPE (adjacent pairs), so Q
//!   and K rows are permuted from Hugging Face's rotate-half layout, with
//!   the KV head count for K (grouped-query attention), exactly as
//!   llama.cpp's converter `permute` does.
//! * Qwen2/Qwen3 use NEOX RoPE (halves), the layout HF already has: no
//!   permutation. Qwen2 has Q/K/V biases; Qwen3 has per-head Q/K RMS norms
//!   and may set `head_dim` independently of `hidden_size / heads`.

use serde_json::{json, Value};

use super::plan::{ArchPlan, PlannedTensor, Recipe};
use super::ArchError;
use crate::gguf::{GgufValue, Metadata};
use crate::source::Checkpoint;

/// The supported Hugging Face architectures and their llama.cpp names.
pub const ARCHITECTURES: [(&str, &str); 4] = [
    ("LlamaForCausalLM", "llama"),
    ("MistralForCausalLM", "llama"),
    ("Qwen2ForCausalLM", "qwen2"),
    ("Qwen3ForCausalLM", "qwen3"),
];

fn get_u(config: &Value, key: &str) -> Option<usize> {
    config.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn need_u(config: &Value, key: &str) -> Result<usize, ArchError> {
    get_u(config, key).ok_or_else(|| ArchError::Missing {
        what: format!("config.json key '{key}'"),
        how: "the Hugging Face config.json must have it".into(),
    })
}

/// `rope_theta` at the top level (transformers 4) or in
/// `rope_parameters` (transformers 5).
fn rope_params(config: &Value) -> (Option<f64>, Option<&Value>) {
    let nested = config.get("rope_parameters");
    let theta = config
        .get("rope_theta")
        .and_then(Value::as_f64)
        .or_else(|| {
            nested
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
        });
    let scaling = config
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or(nested);
    (theta, scaling)
}

/// Maps a checkpoint whose `config.json` names `hf_arch` (one of
/// [`ARCHITECTURES`]).
pub fn plan(ck: &Checkpoint, config: &Value, hf_arch: &str) -> Result<ArchPlan, ArchError> {
    let arch: &'static str = ARCHITECTURES
        .iter()
        .find(|(h, _)| *h == hf_arch)
        .map(|(_, a)| *a)
        .ok_or_else(|| ArchError::UnknownFamily(hf_arch.to_owned()))?;
    let n_layer = need_u(config, "num_hidden_layers")?;
    let n_embd = need_u(config, "hidden_size")?;
    let n_ff = need_u(config, "intermediate_size")?;
    let n_head = need_u(config, "num_attention_heads")?;
    let n_head_kv = get_u(config, "num_key_value_heads").unwrap_or(n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(ArchError::Inconsistent(format!(
            "num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
        )));
    }
    let head_dim = get_u(config, "head_dim").unwrap_or(n_embd / n_head);
    let n_ctx = need_u(config, "max_position_embeddings")?;
    let eps = config
        .get("rms_norm_eps")
        .and_then(Value::as_f64)
        .unwrap_or(1e-6) as f32;
    let (theta, scaling) = rope_params(config);

    let t = |name: &str| ck.tensor(name);
    let shape = |name: &str| -> Result<Vec<usize>, ArchError> {
        t(name)
            .map(|x| x.shape.clone())
            .ok_or_else(|| ArchError::MissingTensor(name.to_owned()))
    };
    let embed = shape("model.embed_tokens.weight")?;
    let [n_vocab, embd_cols] = [embed[0], *embed.get(1).unwrap_or(&0)];
    if embd_cols != n_embd {
        return Err(ArchError::Inconsistent(format!(
            "model.embed_tokens.weight is {embed:?} but hidden_size is {n_embd}"
        )));
    }
    if let Some(v) = get_u(config, "vocab_size") {
        if v != n_vocab {
            return Err(ArchError::Inconsistent(format!(
                "vocab_size {v} but model.embed_tokens.weight has {n_vocab} rows"
            )));
        }
    }

    let mut md = Metadata::new();
    md.set("general.architecture", arch);
    let key = |k: &str| format!("{arch}.{k}");
    md.set(key("context_length"), GgufValue::U32(n_ctx as u32));
    md.set(key("embedding_length"), GgufValue::U32(n_embd as u32));
    md.set(key("block_count"), GgufValue::U32(n_layer as u32));
    md.set(key("feed_forward_length"), GgufValue::U32(n_ff as u32));
    md.set(key("attention.head_count"), GgufValue::U32(n_head as u32));
    md.set(
        key("attention.head_count_kv"),
        GgufValue::U32(n_head_kv as u32),
    );
    if let Some(theta) = theta {
        md.set(key("rope.freq_base"), GgufValue::F32(theta as f32));
    }
    md.set(key("attention.layer_norm_rms_epsilon"), GgufValue::F32(eps));
    if head_dim * n_head != n_embd || arch == "qwen3" {
        md.set(key("attention.key_length"), GgufValue::U32(head_dim as u32));
        md.set(
            key("attention.value_length"),
            GgufValue::U32(head_dim as u32),
        );
    }
    if arch == "llama" {
        md.set(key("vocab_size"), GgufValue::U32(n_vocab as u32));
        md.set(key("rope.dimension_count"), GgufValue::U32(head_dim as u32));
    }
    let rope_freqs = rope_scaling(&mut md, arch, scaling, theta, head_dim)?;

    let permute = arch == "llama";
    let mut tensors = Vec::new();
    // Llama-3.1-style scaling travels as a tensor of per-frequency
    // factors, first in the file as llama.cpp's converter writes it.
    if let Some(values) = rope_freqs {
        tensors.push(PlannedTensor {
            name: "rope_freqs.weight".into(),
            ne: vec![values.len() as u64],
            recipe: Recipe::Computed { values },
            keep_f32: true,
        });
    }
    let mut push =
        |gguf: String, src: &str, recipe: Recipe, keep_f32: bool| -> Result<(), ArchError> {
            let s = shape(src)?;
            tensors.push(PlannedTensor {
                name: gguf,
                ne: s.iter().rev().map(|&d| d as u64).collect(),
                recipe,
                keep_f32: keep_f32 || s.len() < 2,
            });
            Ok(())
        };
    let copy = |s: &str| Recipe::Copy {
        source: s.to_owned(),
    };
    push(
        "token_embd.weight".into(),
        "model.embed_tokens.weight",
        copy("model.embed_tokens.weight"),
        false,
    )?;
    for l in 0..n_layer {
        let src = |s: &str| format!("model.layers.{l}.{s}");
        let dst = |s: &str| format!("blk.{l}.{s}");
        push(
            dst("attn_norm.weight"),
            &src("input_layernorm.weight"),
            copy(&src("input_layernorm.weight")),
            true,
        )?;
        for (proj, heads, gguf) in [
            ("q_proj", n_head, "attn_q"),
            ("k_proj", n_head_kv, "attn_k"),
            ("v_proj", 0, "attn_v"),
        ] {
            for kind in ["weight", "bias"] {
                let name = src(&format!("self_attn.{proj}.{kind}"));
                if kind == "bias" && t(&name).is_none() {
                    continue;
                }
                let recipe = if permute && heads > 0 {
                    Recipe::PermuteRope {
                        source: name.clone(),
                        n_head: heads,
                    }
                } else {
                    copy(&name)
                };
                push(
                    dst(&format!("{gguf}.{kind}")),
                    &name,
                    recipe,
                    kind == "bias",
                )?;
            }
        }
        push(
            dst("attn_output.weight"),
            &src("self_attn.o_proj.weight"),
            copy(&src("self_attn.o_proj.weight")),
            false,
        )?;
        if arch == "qwen3" {
            push(
                dst("attn_q_norm.weight"),
                &src("self_attn.q_norm.weight"),
                copy(&src("self_attn.q_norm.weight")),
                true,
            )?;
            push(
                dst("attn_k_norm.weight"),
                &src("self_attn.k_norm.weight"),
                copy(&src("self_attn.k_norm.weight")),
                true,
            )?;
        }
        push(
            dst("ffn_norm.weight"),
            &src("post_attention_layernorm.weight"),
            copy(&src("post_attention_layernorm.weight")),
            true,
        )?;
        push(
            dst("ffn_gate.weight"),
            &src("mlp.gate_proj.weight"),
            copy(&src("mlp.gate_proj.weight")),
            false,
        )?;
        push(
            dst("ffn_up.weight"),
            &src("mlp.up_proj.weight"),
            copy(&src("mlp.up_proj.weight")),
            false,
        )?;
        push(
            dst("ffn_down.weight"),
            &src("mlp.down_proj.weight"),
            copy(&src("mlp.down_proj.weight")),
            false,
        )?;
    }
    push(
        "output_norm.weight".into(),
        "model.norm.weight",
        copy("model.norm.weight"),
        true,
    )?;
    // A tied head is absent from safetensors; llama.cpp then re-uses
    // token_embd. An explicit, different lm_head is written.
    if let Some(head) = t("lm_head.weight") {
        let same = t("model.embed_tokens.weight").is_some_and(|e| head.same_bytes(e));
        if !same {
            push(
                "output.weight".into(),
                "lm_head.weight",
                copy("lm_head.weight"),
                false,
            )?;
        }
    }
    let hparams = json!({
        "architecture": hf_arch,
        "n_layer": n_layer, "n_embd": n_embd, "n_ff": n_ff, "n_head": n_head,
        "n_head_kv": n_head_kv, "head_dim": head_dim, "n_ctx": n_ctx, "n_vocab": n_vocab,
        "rope_theta": theta, "rms_norm_eps": eps,
    });
    Ok(ArchPlan {
        arch,
        metadata: md,
        tensors,
        n_vocab,
        context_length: n_ctx as u32,
        hparams,
    })
}

/// Writes the rope scaling keys; for Llama-3.1's `llama3` type, returns
/// the frequency factors llama.cpp reads from `rope_freqs.weight`.
fn rope_scaling(
    md: &mut Metadata,
    arch: &str,
    scaling: Option<&Value>,
    theta: Option<f64>,
    head_dim: usize,
) -> Result<Option<Vec<f32>>, ArchError> {
    let Some(s) = scaling else { return Ok(None) };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = s.get("factor").and_then(Value::as_f64);
    match (kind, factor) {
        ("default", _) => Ok(None),
        ("llama3", _) if arch == "llama" => Ok(Some(llama3_rope_factors(
            s,
            theta.unwrap_or(10000.0),
            head_dim,
        ))),
        ("linear", Some(f)) | ("yarn", Some(f)) => {
            md.set(format!("{arch}.rope.scaling.type"), kind);
            md.set(
                format!("{arch}.rope.scaling.factor"),
                GgufValue::F32(f as f32),
            );
            if let Some(orig) = s
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
            {
                md.set(
                    format!("{arch}.rope.scaling.original_context_length"),
                    GgufValue::U32(orig as u32),
                );
            }
            Ok(None)
        }
        (other, _) => Err(ArchError::Inconsistent(format!(
            "rope scaling type '{other}' is not supported for {arch} (supported: default, linear, yarn, and llama3 for Llama)"
        ))),
    }
}

/// Llama-3.1's rope scaling as frequency factors: rotary frequencies whose
/// wavelength is shorter than `original_context / high_freq_factor` keep
/// their speed (factor 1), those longer than `original_context /
/// low_freq_factor` are slowed by `factor`, and the band between is
/// interpolated. This is Hugging Face's `_compute_llama3_parameters`
/// expressed as the divisor llama.cpp applies (`theta / factor[i]`), in
/// f32 as llama.cpp's converter computes it.
pub fn llama3_rope_factors(scaling: &Value, theta: f64, head_dim: usize) -> Vec<f32> {
    let get =
        |k: &str, default: f64| scaling.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
    let factor = get("factor", 8.0);
    let low = get("low_freq_factor", 1.0);
    let high = get("high_freq_factor", 4.0);
    let old_ctx = get("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    let dim = head_dim as f32;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / dim);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}
