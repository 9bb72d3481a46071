//! Per-model settings: an optional `kvant.toml` in the drop folder (or
//! beside a dropped file).
//!
//! ```toml
//! name = "az-gpt"                 # Ollama model name (default: the folder's)
//! types = ["q4_k_m", "q8_0"]      # default: the daemon's
//! template = "{{ .Prompt }}"      # Ollama Go template (default: raw prompt)
//! system = "Sən köməkçisən."       # SYSTEM
//! license = "MIT"                 # LICENSE
//! n_head = 4                      # for a bare state_dict
//! base = "../hf-llama-az"         # a LoRA adapter's base (see crate::adapter)
//! adapter = "merged"              # a LoRA adapter drop merged, or "lora": its base plus an Ollama adapter layer
//! template_mode = "native"        # auto | go | native (default: the daemon's)
//! eval_text = "heldout.txt"       # quality keys: see `quality_settings`
//! max_kld = 0.05
//! [parameters]                    # Ollama PARAMETERs
//! temperature = 0.7
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::DaemonError;

/// The keys of a `kvant.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model name in Ollama.
    pub name: Option<String>,
    /// File types for this model.
    pub types: Option<Vec<String>>,
    /// Go template.
    pub template: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// Extra Ollama parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
    /// License text.
    pub license: Option<String>,
    /// Attention heads, for a bare state_dict.
    pub n_head: Option<usize>,
    /// A LoRA adapter drop's base model (a path, relative to the drop);
    /// read by the adapter's base search.
    pub base: Option<std::path::PathBuf>,
    /// `"merged"` (the default) for a LoRA adapter drop, or `"lora"`:
    /// registered as its base plus an adapter layer (`adapter_job`).
    pub adapter: Option<String>,
    /// Go or native chat templates for this model (default: the daemon's).
    pub template_mode: Option<crate::ollama::TemplateMode>,
    /// Held-out and calibration texts, the budget, the evaluation size.
    #[serde(skip)]
    pub quality: super::quality_settings::QualitySettings,
}

/// Reads `dir/kvant.toml` if present.
pub fn load(dir: &Path) -> Result<ModelSettings, DaemonError> {
    let p = dir.join("kvant.toml");
    if !p.is_file() {
        return Ok(ModelSettings::default());
    }
    let text = std::fs::read_to_string(&p)
        .map_err(|e| DaemonError::Drop(format!("{}: {e}", p.display())))?;
    let bad = |e: String| DaemonError::Drop(format!("{}: {e}", p.display()));
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let quality = super::quality_settings::QualitySettings::take_from(&mut table).map_err(bad)?;
    let mut settings: ModelSettings = table.try_into().map_err(|e| bad(e.to_string()))?;
    settings.quality = quality;
    Ok(settings)
}
