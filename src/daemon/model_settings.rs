//! Per-model settings: a `kvant.toml` inside a folder drop, or
//! `<checkpoint>.kvant.toml` beside a single-file drop (e.g.
//! `ckpt.pt.kvant.toml`). Every key is optional.
//!
//! Example:
//!
//! ```toml
//! name = "az-gpt"                 # Ollama model name (sanitized)
//! types = ["q4_k_m", "q8_0"]      # replaces the daemon's `types`
//! template = "{{ .Prompt }}"      # Modelfile TEMPLATE (Go template)
//! system = "You answer in Azerbaijani."
//! license = "MIT"
//! n_head = 6                      # for bare state_dicts without a config
//!
//! [parameters]                    # Modelfile PARAMETERs
//! temperature = 0.7
//! top_k = 40
//! ```
//!
//! Parsing only; the loop decides what to do with the values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DaemonError;

/// The settings file name inside a folder drop.
pub const SETTINGS_FILE: &str = "kvant.toml";
/// The suffix of a single-file drop's settings file.
pub const SIDE_SETTINGS_SUFFIX: &str = ".kvant.toml";
/// Largest settings file read.
const MAX_BYTES: u64 = 1 << 20;

/// What one model's `kvant.toml` says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model name in Ollama (before `:tag`); sanitized to a valid name.
    pub name: Option<String>,
    /// Quantizations for this model, replacing the daemon's default.
    pub types: Option<Vec<String>>,
    /// Modelfile `TEMPLATE`.
    pub template: Option<String>,
    /// Modelfile `SYSTEM`.
    pub system: Option<String>,
    /// Modelfile `PARAMETER`s (`temperature = 0.7`).
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
    /// Modelfile `LICENSE`.
    pub license: Option<String>,
    /// Attention heads, for checkpoints that do not record them.
    pub n_head: Option<usize>,
}

impl ModelSettings {
    /// Parses settings text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ModelSettings, DaemonError> {
        let s: ModelSettings = toml::from_str(text).map_err(|e| DaemonError::ModelSettings {
            path: path.to_path_buf(),
            reason: e.message().to_owned(),
        })?;
        if let Some(types) = &s.types {
            for t in types {
                t.parse::<crate::quant::FileType>()
                    .map_err(|e| DaemonError::ModelSettings {
                        path: path.to_path_buf(),
                        reason: format!("types: {e}"),
                    })?;
            }
        }
        if s.n_head == Some(0) {
            return Err(DaemonError::ModelSettings {
                path: path.to_path_buf(),
                reason: "n_head must be at least 1".into(),
            });
        }
        Ok(s)
    }

    /// The settings file for a drop, whether or not it exists.
    pub fn path_for(drop: &Path) -> PathBuf {
        if drop.is_dir() {
            drop.join(SETTINGS_FILE)
        } else {
            let name = drop
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            drop.with_file_name(format!("{name}{SIDE_SETTINGS_SUFFIX}"))
        }
    }

    /// Reads a drop's settings; no file means defaults.
    pub fn load_for(drop: &Path) -> Result<ModelSettings, DaemonError> {
        let path = Self::path_for(drop);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ModelSettings::default())
            }
            Err(e) => return Err(DaemonError::Io { path, source: e }),
        };
        if meta.len() > MAX_BYTES {
            return Err(DaemonError::ModelSettings {
                path,
                reason: format!("larger than {MAX_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(DaemonError::io(&path))?;
        Self::parse(&text, &path)
    }

    /// Parameters as JSON values, for the Ollama create request.
    pub fn parameters_json(&self) -> Vec<(String, serde_json::Value)> {
        self.parameters
            .iter()
            .map(|(k, v)| {
                let j = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                (k.clone(), j)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let text = r#"
name = "az-gpt"
types = ["q4_k_m", "Q8_0"]
template = "{{ .Prompt }}"
system = "You answer in Azerbaijani."
license = "MIT"
n_head = 6

[parameters]
temperature = 0.7
top_k = 40
"#;
        let s = ModelSettings::parse(text, Path::new("kvant.toml")).unwrap();
        assert_eq!(s.name.as_deref(), Some("az-gpt"));
        assert_eq!(s.types.as_ref().unwrap().len(), 2);
        assert_eq!(s.n_head, Some(6));
        let p = s.parameters_json();
        assert_eq!(p[0], ("temperature".to_owned(), serde_json::json!(0.7)));
        assert_eq!(p[1], ("top_k".to_owned(), serde_json::json!(40)));
    }

    #[test]
    fn mistakes_name_the_file() {
        for bad in ["nmae = \"x\"", "types = [\"q9\"]", "n_head = 0", "name = 3"] {
            let e = ModelSettings::parse(bad, Path::new("/in/run/kvant.toml")).unwrap_err();
            assert!(e.to_string().starts_with("/in/run/kvant.toml: "), "{e}");
        }
    }

    #[test]
    fn settings_file_locations() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run");
        std::fs::create_dir(&run).unwrap();
        assert_eq!(ModelSettings::path_for(&run), run.join("kvant.toml"));
        let ck = t.path().join("ckpt.pt");
        assert_eq!(
            ModelSettings::path_for(&ck),
            t.path().join("ckpt.pt.kvant.toml")
        );
        assert_eq!(
            ModelSettings::load_for(&ck).unwrap(),
            ModelSettings::default()
        );
        std::fs::write(t.path().join("ckpt.pt.kvant.toml"), "name = \"x\"").unwrap();
        assert_eq!(
            ModelSettings::load_for(&ck).unwrap().name.as_deref(),
            Some("x")
        );
    }
}
