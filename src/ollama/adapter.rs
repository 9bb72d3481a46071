//! A LoRA adapter layer on top of a registered model: which servers can
//! take one, and how the create request carries it — `adapters` in the
//! JSON create (≥ 0.5.5), `ADAPTER @sha256:…` in the legacy Modelfile.
//!
//! Ollama accepts one GGUF adapter per model and applies it at scale 1.0
//! (llama.cpp's `--lora`); create does not check it, llama.cpp does when
//! the model loads. What a server cannot run is refused here, before
//! anything is uploaded:
//! * before 0.30, the architectures Ollama ran on its own Go engine
//!   answered "loras are not yet implemented" at load time (0.30 moved
//!   every GGUF to llama-server);
//! * from 0.34.1, creating adapter models was removed (ollama PR #14969,
//!   as reported in generative-computing/mellea#1651; models built
//!   earlier still run).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::client::Version;
use super::OllamaError;

/// The adapter GGUF to register with a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterLayer {
    /// The adapter GGUF file.
    pub path: PathBuf,
    /// Its SHA-256 (lower-case hex), as journaled when it was written.
    pub sha256: String,
    /// Its `general.architecture` (the base's).
    pub arch: String,
}

/// The first version that runs every GGUF on llama-server (adapters on
/// any architecture llama.cpp supports).
const LLAMA_SERVER_ONLY: Version = (0, 30, 0);

/// The first version that no longer creates adapter models.
const NO_ADAPTER_CREATE: Version = (0, 34, 1);

/// Architectures Ollama ran on its Go engine before 0.30, which refused
/// LoRA adapters (`OllamaEngineRequired`, v0.24).
const GO_ENGINE_ARCHS: &[&str] = &[
    "bert",
    "deepseek2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gpt-oss",
    "gptoss",
    "llama4",
    "mistral3",
    "mllama",
    "qwen3",
    "qwen3moe",
    "qwen35",
    "qwen35moe",
    "qwen3next",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen25vl",
    "olmo3",
    "lfm2",
    "lfm2moe",
    "glm4moelite",
    "nemotron_h",
];

fn dotted(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// Why a server of `version` cannot run an adapter for `arch` models, if
/// it cannot.
pub fn adapter_unsupported(version: Version, arch: &str) -> Option<String> {
    if version >= NO_ADAPTER_CREATE {
        return Some(format!(
            "Ollama {} no longer creates models with a LoRA adapter (removed in 0.34.1, ollama PR #14969)",
            dotted(version)
        ));
    }
    if version < LLAMA_SERVER_ONLY && GO_ENGINE_ARCHS.contains(&arch) {
        return Some(format!(
            "Ollama {} runs {arch} models on its own engine, which cannot apply LoRA adapters (\"loras are not yet implemented\"; fixed by 0.30)",
            dotted(version)
        ));
    }
    None
}

/// Refuses `layer` on a server of `version` at `url` (not retried: the
/// server will not change its mind).
pub(super) fn check_supported(
    url: &str,
    version: Version,
    layer: &AdapterLayer,
) -> Result<(), OllamaError> {
    match adapter_unsupported(version, &layer.arch) {
        None => Ok(()),
        Some(reason) => Err(OllamaError::Unsupported {
            url: url.to_owned(),
            reason: format!("{reason}; register the fine-tune merged into its base instead"),
        }),
    }
}

/// The file name the create request gives the adapter.
fn file_key(layer: &AdapterLayer) -> String {
    layer
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf"))
        .unwrap_or_else(|| "adapter.gguf".into())
}

/// Adds the adapter to a JSON create body.
pub(super) fn add_to_json_create(body: &mut Value, layer: &AdapterLayer) {
    body["adapters"] = json!({ file_key(layer): format!("sha256:{}", layer.sha256) });
}

/// The legacy Modelfile's reference to the uploaded adapter blob.
pub(super) fn legacy_reference(layer: &AdapterLayer) -> String {
    format!("@sha256:{}", layer.sha256)
}

/// Checks that `/api/show` describes a model with an adapter layer (its
/// Modelfile has an `ADAPTER` line).
pub(super) fn check_shown(name: &str, show: &Value) -> Result<(), OllamaError> {
    let modelfile = show.get("modelfile").and_then(Value::as_str).unwrap_or("");
    let has = modelfile
        .lines()
        .any(|l| l.trim_start().to_ascii_uppercase().starts_with("ADAPTER "));
    if has {
        return Ok(());
    }
    Err(OllamaError::Protocol {
        endpoint: "/api/show".into(),
        reason: format!("'{name}' was created without its adapter layer"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_servers_take_an_adapter() {
        assert_eq!(adapter_unsupported((0, 12, 6), "llama"), None);
        assert_eq!(adapter_unsupported((0, 30, 0), "qwen3"), None);
        assert_eq!(adapter_unsupported((0, 34, 0), "gpt2"), None);
        let go = adapter_unsupported((0, 24, 0), "qwen3").unwrap_or_default();
        assert!(go.contains("0.24.0") && go.contains("qwen3"), "{go}");
        let gone = adapter_unsupported((0, 34, 1), "llama").unwrap_or_default();
        assert!(gone.contains("0.34.1"), "{gone}");
    }

    #[test]
    fn the_json_create_names_the_adapter_file() {
        let layer = AdapterLayer {
            path: "/o/ft/ft-lora.gguf".into(),
            sha256: "ab".into(),
            arch: "llama".into(),
        };
        let mut body = json!({ "model": "ft:q8_0" });
        add_to_json_create(&mut body, &layer);
        assert_eq!(body["adapters"], json!({ "ft-lora.gguf": "sha256:ab" }));
        assert!(check_shown("ft", &json!({ "modelfile": "FROM /b\nADAPTER /a\n" })).is_ok());
        assert!(check_shown("ft", &json!({ "modelfile": "FROM /b\n" })).is_err());
    }
}
