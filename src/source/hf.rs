//! Hugging Face model folders: `config.json` plus weights in
//! `model.safetensors`, `pytorch_model.bin`, or shards listed by
//! `*.index.json` (`weight_map`: tensor name → shard file).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{open_file, Checkpoint, SourceError, SourceFormat};

/// Most shards a model may list (the largest public models have a few
/// hundred).
const MAX_SHARDS: usize = 10_000;

fn read_json(p: &Path) -> Result<Value, SourceError> {
    let text = std::fs::read_to_string(p).map_err(|e| SourceError::Io {
        path: p.to_owned(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| SourceError::Malformed {
        path: p.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })
}

/// Opens the folder `dir`.
pub fn open(dir: &Path) -> Result<Checkpoint, SourceError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(SourceError::Unsupported {
            path: dir.to_owned(),
            reason:
                "not a Hugging Face model folder (no config.json); name the checkpoint file instead"
                    .into(),
        });
    }
    let config = read_json(&config_path)?;
    let mut files = Vec::new();
    for single in ["model.safetensors", "pytorch_model.bin"] {
        if dir.join(single).is_file() {
            files.push(dir.join(single));
            break;
        }
    }
    if files.is_empty() {
        for index in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            let p = dir.join(index);
            if !p.is_file() {
                continue;
            }
            let idx = read_json(&p)?;
            let map = idx
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| SourceError::Malformed {
                    path: p.clone(),
                    reason: "no weight_map".into(),
                })?;
            let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
            if shards.len() > MAX_SHARDS {
                return Err(SourceError::Malformed {
                    path: p,
                    reason: format!("{} shards listed", shards.len()),
                });
            }
            for s in shards {
                if s.contains('/') || s.contains('\\') || s.starts_with('.') {
                    return Err(SourceError::Malformed {
                        path: p.clone(),
                        reason: format!("shard name '{s}' is not a plain file name"),
                    });
                }
                files.push(dir.join(s));
            }
            break;
        }
    }
    if files.is_empty() {
        return Err(SourceError::Unsupported {
            path: dir.to_owned(),
            reason: "config.json but no weights (looked for model.safetensors, pytorch_model.bin and their .index.json)".into(),
        });
    }
    let mut tensors = Vec::new();
    let mut extra = serde_json::Map::new();
    for f in &files {
        let ck = open_file(f)?;
        extra.extend(ck.extra);
        tensors.extend(ck.tensors);
    }
    let mut seen = BTreeSet::new();
    for t in &tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(SourceError::Malformed {
                path: dir.to_owned(),
                reason: format!("tensor '{}' appears in two shards", t.name),
            });
        }
    }
    Ok(Checkpoint {
        path: dir.to_owned(),
        format: SourceFormat::HfFolder,
        tensors,
        config: Some(config),
        extra,
    })
}
