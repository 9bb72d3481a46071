//! `adapter_config.json` as PEFT's `LoraConfig.save_pretrained` writes it,
//! read leniently (alpha may be an int or a float, pattern maps may be
//! empty or null) within a size limit, and the per-module scaling PEFT
//! derives from it.

use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::AdapterError;

/// The file name PEFT writes (`CONFIG_NAME`).
pub const CONFIG_NAME: &str = "adapter_config.json";

/// Largest `adapter_config.json` read: real ones are about a kilobyte; a
/// megabyte leaves room for long pattern maps and nothing else.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `{regex: value}` in the file's order: PEFT tries the keys in dict
/// order and the first match wins, so the order is kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pattern(pub Vec<(String, f64)>);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map from module-name patterns to numbers, or null")
            }
            fn visit_unit<E>(self) -> Result<Pattern, E> {
                Ok(Pattern::default())
            }
            fn visit_none<E>(self) -> Result<Pattern, E> {
                Ok(Pattern::default())
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Pattern, D2::Error> {
                d.deserialize_map(V)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Pattern, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(Pattern(out))
            }
        }
        d.deserialize_option(V)
    }
}

/// The fields of `adapter_config.json` that change the weights. Everything
/// else (target selection, dropout, task type) is irrelevant once the
/// tensor names are read.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AdapterConfig {
    /// `"LORA"` for a LoRA adapter.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// The base's hub id or local path.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// The base's hub revision (branch, tag or commit).
    #[serde(default)]
    pub revision: Option<String>,
    /// Default rank.
    #[serde(default = "default_r")]
    pub r: f64,
    /// Default alpha.
    #[serde(default = "default_r")]
    pub lora_alpha: f64,
    /// rsLoRA: scaling alpha/√r instead of alpha/r.
    #[serde(default, deserialize_with = "null_false")]
    pub use_rslora: bool,
    /// DoRA (a magnitude vector per module).
    #[serde(default, deserialize_with = "null_false")]
    pub use_dora: bool,
    /// Per-module ranks.
    #[serde(default)]
    pub rank_pattern: Pattern,
    /// Per-module alphas.
    #[serde(default)]
    pub alpha_pattern: Pattern,
    /// Whole modules saved in the adapter.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// `init_lora_weights`: PiSSA/OLoRA/… adapters changed the base too.
    #[serde(default)]
    pub init_lora_weights: Option<serde_json::Value>,
}

fn default_r() -> f64 {
    8.0
}

fn null_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// Reads and validates `dir/adapter_config.json`.
pub fn read(dir: &Path) -> Result<AdapterConfig, AdapterError> {
    let path = dir.join(CONFIG_NAME);
    let bad = |reason: String| AdapterError::Config {
        path: path.clone(),
        reason,
    };
    let meta = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(bad(format!(
            "{} bytes; an adapter config is at most {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    parse(&text, path.clone())
}

/// Parses the text of an `adapter_config.json` read from `path`.
pub fn parse(text: &str, path: PathBuf) -> Result<AdapterConfig, AdapterError> {
    let cfg: AdapterConfig = serde_json::from_str(text).map_err(|e| AdapterError::Config {
        path: path.clone(),
        reason: format!("invalid JSON: {e}"),
    })?;
    let kind = cfg.peft_type.as_deref().unwrap_or("");
    if !kind.eq_ignore_ascii_case("LORA") {
        return Err(AdapterError::NotLora {
            path,
            peft_type: if kind.is_empty() {
                "no peft_type".into()
            } else {
                format!("peft_type {kind}")
            },
        });
    }
    if let Some(init) = cfg.init_lora_weights.as_ref().and_then(|v| v.as_str()) {
        let init = init.to_ascii_lowercase();
        if ["pissa", "olora", "corda", "loftq"]
            .iter()
            .any(|p| init.starts_with(p))
        {
            return Err(AdapterError::Config {
                path,
                reason: format!("init_lora_weights '{init}' changed the base model as well; convert it to a plain LoRA first (PEFT's convert_pissa_to_lora / path_initial_model_for_weight_conversion)"),
            });
        }
    }
    for (what, p) in [
        ("rank_pattern", &cfg.rank_pattern),
        ("alpha_pattern", &cfg.alpha_pattern),
    ] {
        for (key, _) in &p.0 {
            pattern_regex(key).map_err(|e| AdapterError::Config {
                path: path.clone(),
                reason: format!("{what} key '{key}' is not a regular expression kvant reads: {e}"),
            })?;
        }
    }
    Ok(cfg)
}

/// PEFT's `get_pattern_key`: `re.match(rf"(.*\.)?({key})$", module)`.
fn pattern_regex(key: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
}

fn lookup(p: &Pattern, module: &str) -> Option<f64> {
    p.0.iter()
        .find(|(k, _)| pattern_regex(k).is_ok_and(|re| re.is_match(module)))
        .map(|(_, v)| *v)
}

impl AdapterConfig {
    /// The rank and scaling PEFT gives `module` (its path in the base
    /// model, e.g. `model.layers.0.self_attn.q_proj`): rank and alpha
    /// from the first matching pattern key, else the defaults; scaling
    /// alpha/r, or alpha/√r with rsLoRA (`LoraLayer.update_layer`).
    pub fn rank_and_scale(&self, module: &str) -> (f64, f64) {
        let r = lookup(&self.rank_pattern, module).unwrap_or(self.r);
        let alpha = lookup(&self.alpha_pattern, module).unwrap_or(self.lora_alpha);
        let scale = if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        };
        (r, scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<AdapterConfig, AdapterError> {
        parse(text, PathBuf::from("adapter_config.json"))
    }

    #[test]
    fn patterns_match_module_suffixes_as_peft_does() {
        let c = cfg(
            r#"{"peft_type":"LORA","r":16,"lora_alpha":8,"use_rslora":true,
            "rank_pattern":{"q_proj":4},"alpha_pattern":{"v_proj":24}}"#,
        )
        .expect("valid");
        let (r, s) = c.rank_and_scale("model.layers.0.self_attn.q_proj");
        assert_eq!((r, s), (4.0, 8.0 / 2.0));
        let (r, s) = c.rank_and_scale("model.layers.1.self_attn.v_proj");
        assert_eq!((r, s), (16.0, 24.0 / 4.0));
        // "q_proj" must match a whole name component.
        assert_eq!(c.rank_and_scale("model.layers.0.self_attn.xq_proj").0, 16.0);
    }

    #[test]
    fn first_matching_key_in_file_order_wins() {
        let c = cfg(r#"{"peft_type":"LORA","r":8,"lora_alpha":8,
            "rank_pattern":{"layers.0.*":2,"q_proj":4}}"#)
        .expect("valid");
        assert_eq!(c.rank_and_scale("model.layers.0.self_attn.q_proj").0, 2.0);
        assert_eq!(c.rank_and_scale("model.layers.1.self_attn.q_proj").0, 4.0);
    }

    #[test]
    fn other_peft_types_are_not_lora() {
        let e = cfg(r#"{"peft_type":"IA3"}"#).expect_err("IA3");
        assert!(e.to_string().contains("not a LoRA adapter"), "{e}");
        assert!(e.to_string().contains("IA3"), "{e}");
    }

    #[test]
    fn null_fields_take_defaults_and_float_alpha_is_read() {
        let c =
            cfg(r#"{"peft_type":"LORA","lora_alpha":16.0,"rank_pattern":null,"use_dora":null}"#)
                .expect("valid");
        assert_eq!(c.rank_and_scale("x"), (8.0, 2.0));
        assert!(!c.use_dora);
    }
}
