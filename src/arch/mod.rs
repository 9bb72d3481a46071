//! Model families: each maps one family's checkpoint tensors and
//! hyper-parameters to a GGUF architecture's tensor names and `<arch>.*`
//! keys.
//!
//! Everything here is a pure function of the tensor list (names, shapes)
//! and the stored config: no I/O, no tensor bytes (except comparing two
//! tensors to detect a tied head). The result is an [`ArchPlan`] that
//! `convert` executes.
//!
//! To add a family: a file with `matches` and `plan`, and a line in
//! [`plan`].

mod error;
mod gpt2;
mod llama;
mod plan;
pub mod transform;

pub use error::ArchError;
pub use plan::{ArchPlan, PlannedTensor, Recipe};

use crate::source::Checkpoint;

/// Hyper-parameters given on the command line or in `kvant.toml`, for
/// checkpoints that do not store them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HParamOverrides {
    /// Attention heads (cannot be derived from shapes).
    pub n_head: Option<usize>,
}

/// Picks the family of `ck` and maps it. `config` is the stored
/// hyper-parameters (nanoGPT `model_args`, HF `config.json`).
pub fn plan(
    ck: &Checkpoint,
    config: Option<&serde_json::Value>,
    overrides: &HParamOverrides,
) -> Result<ArchPlan, ArchError> {
    if let Some(archs) = config
        .and_then(|c| c.get("architectures"))
        .and_then(|a| a.as_array())
    {
        let names: Vec<&str> = archs.iter().filter_map(|a| a.as_str()).collect();
        if names.iter().any(|a| *a == "GPT2LMHeadModel") {
            return gpt2::plan(ck, config, overrides);
        }
        if let (Some(hf), Some(cfg)) = (
            names
                .iter()
                .find(|a| llama::ARCHITECTURES.iter().any(|(h, _)| h == *a)),
            config,
        ) {
            return llama::plan(ck, cfg, hf);
        }
        if !names.is_empty() && !gpt2::matches(ck) {
            return Err(ArchError::UnknownFamily(format!(
                "architecture {} is not supported (supported: {})",
                names.join(", "),
                SUPPORTED.join(", ")
            )));
        }
    }
    if gpt2::matches(ck) {
        return gpt2::plan(ck, config, overrides);
    }
    Err(ArchError::UnknownFamily(format!(
        "the tensors match no supported model family (supported: {}); first tensor names: {}",
        SUPPORTED.join(", "),
        ck.tensors
            .iter()
            .take(4)
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Hugging Face architectures (and checkpoint styles) kvant converts.
pub const SUPPORTED: &[&str] = &[
    "GPT2LMHeadModel (and nanoGPT/minGPT checkpoints)",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];
