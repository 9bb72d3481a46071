//! The GGUF LoRA adapter llama.cpp's `llama_adapter_lora_init` reads:
//! `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`,
//! and per adapted base tensor `<gguf name>.lora_a` (`ne = [in, r]`, the
//! bytes of PEFT's A) and `<gguf name>.lora_b` (`ne = [r, out]`, the bytes
//! of B), applied as `W·x + scale·B·(A·x)` with `scale = alpha / rank`.
//!
//! Every rearrangement the base mapping applies to W is applied to the
//! factors: a RoPE row permutation permutes B's rows; a Conv1D transpose
//! needs nothing, as PEFT stores the factors in `nn.Linear` orientation
//! already (llama.cpp's own converter transposes them, which is wrong for
//! GPT-2). Per-module scaling that one alpha cannot express (rsLoRA,
//! `alpha_pattern`, `rank_pattern`) is folded into B.
//!
//! What llama.cpp cannot apply at run time — DoRA, whole saved modules,
//! embedding adapters, LoRA biases — is refused.

use super::pieces::PairKind;
use super::{Adapter, AdapterError};
use crate::arch::{transform, ArchPlan, Recipe};
use crate::gguf::{GgufValue, Metadata};

/// One tensor of the adapter file, as f32 elements in GGUF order.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorTensor {
    /// `blk.0.attn_q.weight.lora_a`.
    pub name: String,
    /// ggml dimensions.
    pub ne: Vec<u64>,
    /// The elements.
    pub data: Vec<f32>,
}

/// Refuses what llama.cpp cannot apply at run time.
pub fn check_runtime(adapter: &Adapter) -> Result<(), AdapterError> {
    let refuse = |reason: String| AdapterError::NotRuntime {
        adapter: adapter.dir.clone(),
        reason,
    };
    let p = &adapter.pieces;
    if let Some(m) = p.modules.values().find(|m| m.magnitude.is_some()) {
        return Err(refuse(format!("it is a DoRA adapter ('{}' has a magnitude vector), which llama.cpp cannot apply at run time", m.module)));
    }
    if let Some(name) = p.replacements.keys().next() {
        return Err(refuse(format!("it saves whole modules (modules_to_save or a saved embedding layer: '{name}'), which a llama.cpp LoRA adapter cannot carry")));
    }
    if let Some(m) = p.modules.values().find(|m| m.kind == PairKind::Embedding) {
        return Err(refuse(format!("it adapts the embedding '{}', which llama.cpp does not apply from an adapter file here", m.module)));
    }
    if let Some(m) = p.modules.values().find(|m| m.bias.is_some()) {
        return Err(refuse(format!(
            "'{}' has a LoRA bias (lora_bias), which a llama.cpp LoRA adapter cannot carry",
            m.module
        )));
    }
    Ok(())
}

/// The factor tensors for `plan` (the base's mapping), in the base's
/// tensor order, and the alpha to record.
pub fn factors(
    adapter: &Adapter,
    plan: &ArchPlan,
) -> Result<(Vec<FactorTensor>, f32), AdapterError> {
    check_runtime(adapter)?;
    let cfg = &adapter.config;
    let alpha = cfg.lora_alpha as f32;
    let weights_err = |e: crate::source::SourceError| AdapterError::Weights {
        path: adapter.weights.path.clone(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    let mut used = 0usize;
    for t in &plan.tensors {
        let Some(src) = t.recipe.source() else {
            continue;
        };
        let Some(m) = adapter
            .pieces
            .modules
            .values()
            .find(|m| m.weight_name() == src)
        else {
            continue;
        };
        used += 1;
        let (r, n_in, n_out) = (m.a.shape[0], m.a.shape[1], m.b.shape[0]);
        let a = m.a.to_f32().map_err(weights_err)?;
        let mut b = m.b.to_f32().map_err(weights_err)?;
        b = match &t.recipe {
            Recipe::Copy { .. } | Recipe::Transpose { .. } => b,
            Recipe::PermuteRope { n_head, .. } => transform::permute_rope(&b, n_out, r, *n_head),
            other => {
                return Err(AdapterError::NotRuntime {
                    adapter: adapter.dir.clone(),
                    reason: format!("'{src}' is rearranged by the base mapping ({other:?}) in a way the factors cannot follow"),
                })
            }
        };
        // llama.cpp scales by alpha / rank (rank = lora_b.ne[0]), or by 1
        // when alpha is 0; PEFT wants `scale`.
        let (_, scale) = cfg.rank_and_scale(&m.module);
        let runtime = if alpha == 0.0 {
            1.0
        } else {
            alpha as f64 / r as f64
        };
        let fold = (scale / runtime) as f32;
        if fold != 1.0 {
            b.iter_mut().for_each(|x| *x *= fold);
        }
        out.push(FactorTensor {
            name: format!("{}.lora_a", t.name),
            ne: vec![n_in as u64, r as u64],
            data: a,
        });
        out.push(FactorTensor {
            name: format!("{}.lora_b", t.name),
            ne: vec![r as u64, n_out as u64],
            data: b,
        });
    }
    if used != adapter.pieces.modules.len() {
        let missing = adapter
            .pieces
            .modules
            .values()
            .find(|m| {
                !plan
                    .tensors
                    .iter()
                    .any(|t| t.recipe.source() == Some(&m.weight_name()))
            })
            .map(|m| m.weight_name())
            .unwrap_or_default();
        return Err(AdapterError::NotRuntime {
            adapter: adapter.dir.clone(),
            reason: format!("the base GGUF has no tensor made from '{missing}' (a tied head?) for the adapter to attach to"),
        });
    }
    Ok((out, alpha))
}

/// The adapter file's metadata.
pub fn metadata(
    adapter: &Adapter,
    plan: &ArchPlan,
    name: &str,
    alpha: f32,
    base: &std::path::Path,
) -> Metadata {
    let mut md = Metadata::new();
    md.set("general.architecture", plan.arch);
    md.set("general.type", "adapter");
    md.set("general.name", name);
    md.extend(adapter.provenance(base));
    md.set("adapter.type", "lora");
    md.set("adapter.lora.alpha", GgufValue::F32(alpha));
    md
}
