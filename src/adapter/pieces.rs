//! An adapter's tensors sorted by what they do to the base: low-rank pairs
//! per module, DoRA magnitudes, LoRA biases and whole replacement tensors,
//! each keyed by the base tensor it changes.
//!
//! Names follow `get_peft_model_state_dict`: `base_model.model.` + the
//! module's path in the base + a suffix (`.lora_A.weight`,
//! `.lora_embedding_A`, `.lora_magnitude_vector[.weight]`, `.lora_B.bias`);
//! anything else is a saved module (`modules_to_save`, a saved embedding
//! layer, base biases), whose `.base_layer` infix PEFT leaves in place for
//! wrapped modules.

use std::collections::BTreeMap;
use std::path::Path;

use super::AdapterError;
use crate::source::{Checkpoint, SourceTensor};

/// How a module's low-rank pair applies to its base weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// `lora_A (r, in)`, `lora_B (out, r)` on an `nn.Linear` or `Conv1D`.
    Linear,
    /// `lora_embedding_A (r, vocab)`, `lora_embedding_B (dim, r)`.
    Embedding,
}

/// Everything an adapter does to one targeted module.
#[derive(Debug, Clone)]
pub struct ModuleAdapter {
    /// The module's path in the base (`model.layers.0.self_attn.q_proj`),
    /// what PEFT's patterns are matched against.
    pub module: String,
    /// Linear or embedding.
    pub kind: PairKind,
    /// The down factor.
    pub a: SourceTensor,
    /// The up factor.
    pub b: SourceTensor,
    /// DoRA's per-output magnitude, if any.
    pub magnitude: Option<SourceTensor>,
    /// `lora_B.bias` (`lora_bias=True`), if any.
    pub bias: Option<SourceTensor>,
}

impl ModuleAdapter {
    /// The base tensor the pair changes.
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.module)
    }
}

/// An adapter's tensors, sorted.
#[derive(Debug, Clone, Default)]
pub struct Pieces {
    /// Per targeted module, by module path.
    pub modules: BTreeMap<String, ModuleAdapter>,
    /// Whole tensors that replace the base's, by base tensor name.
    pub replacements: BTreeMap<String, SourceTensor>,
}

const PREFIX: &str = "base_model.model.";

/// Which slot of a [`Partial`] a name suffix fills.
type Slot = fn(&mut Partial) -> &mut Option<SourceTensor>;

#[derive(Default)]
struct Partial {
    kind: Option<PairKind>,
    a: Option<SourceTensor>,
    b: Option<SourceTensor>,
    magnitude: Option<SourceTensor>,
    bias: Option<SourceTensor>,
}

/// Sorts the tensors of the opened adapter file `ck`.
pub fn sort(ck: &Checkpoint) -> Result<Pieces, AdapterError> {
    let bad = |reason: String| AdapterError::Weights {
        path: ck.path.clone(),
        reason,
    };
    let mut partial: BTreeMap<String, Partial> = BTreeMap::new();
    let mut pieces = Pieces::default();
    for t in &ck.tensors {
        let name = t.name.strip_prefix(PREFIX).unwrap_or(&t.name);
        let suffixes: [(&str, Slot, Option<PairKind>); 7] = [
            (".lora_A.weight", |p| &mut p.a, Some(PairKind::Linear)),
            (".lora_B.weight", |p| &mut p.b, Some(PairKind::Linear)),
            (".lora_embedding_A", |p| &mut p.a, Some(PairKind::Embedding)),
            (".lora_embedding_B", |p| &mut p.b, Some(PairKind::Embedding)),
            (".lora_magnitude_vector.weight", |p| &mut p.magnitude, None),
            (".lora_magnitude_vector", |p| &mut p.magnitude, None),
            (".lora_B.bias", |p| &mut p.bias, None),
        ];
        if let Some((module, slot, kind)) = suffixes
            .iter()
            .find_map(|(s, slot, kind)| name.strip_suffix(s).map(|m| (m, slot, kind)))
        {
            let p = partial.entry(module.to_owned()).or_default();
            if let Some(k) = kind {
                if p.kind.is_some_and(|old| old != *k) {
                    return Err(bad(format!(
                        "module '{module}' has both Linear and embedding factors"
                    )));
                }
                p.kind = Some(*k);
            }
            *slot(p) = Some(t.clone());
            continue;
        }
        if name.contains("trainable_tokens") || name.contains("lora_") {
            return Err(bad(format!(
                "tensor '{}' is not a LoRA factor kvant applies (trainable_token_indices and other LoRA variants are not supported)",
                t.name
            )));
        }
        let base = name.replace(".base_layer.", ".");
        if pieces
            .replacements
            .insert(base.clone(), t.clone())
            .is_some()
        {
            return Err(bad(format!("two tensors replace the base's '{base}'")));
        }
    }
    for (module, p) in partial {
        let missing = |what: &str| bad(format!("module '{module}' has no {what}"));
        let a = p.a.ok_or_else(|| missing("lora_A factor"))?;
        let b = p.b.ok_or_else(|| missing("lora_B factor"))?;
        pieces.modules.insert(
            module.clone(),
            ModuleAdapter {
                module,
                kind: p.kind.unwrap_or(PairKind::Linear),
                a,
                b,
                magnitude: p.magnitude,
                bias: p.bias,
            },
        );
    }
    if pieces.modules.is_empty() && pieces.replacements.is_empty() {
        return Err(bad("the adapter holds no tensors".into()));
    }
    Ok(pieces)
}

/// The adapter's weights file in `dir`: `adapter_model.safetensors`, else
/// the legacy `adapter_model.bin` (read by the allowlisted torch reader).
pub fn weights_file(dir: &Path) -> Result<std::path::PathBuf, AdapterError> {
    for name in ["adapter_model.safetensors", "adapter_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(AdapterError::Weights {
        path: dir.to_owned(),
        reason: "adapter_config.json but no adapter_model.safetensors or adapter_model.bin".into(),
    })
}
