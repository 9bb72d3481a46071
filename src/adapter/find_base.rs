//! Finding an adapter's base model, in this order:
//!
//! 1. `base = "PATH"` in the adapter folder's `kvant.toml` (relative to
//!    the folder);
//! 2. `base_model_name_or_path` as a local path: absolute, or relative to
//!    the adapter folder;
//! 3. a folder named like that name's last component beside the adapter
//!    folder (for the daemon that is the inbox), or in `inbox` when given;
//! 4. the Hugging Face cache as `huggingface_hub` lays it out:
//!    `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`;
//!    `models--{org}--{name}/refs/{revision or main}` holds a commit, and
//!    `snapshots/{commit}/` the files (symlinks into `blobs/`).
//!
//! Nothing is guessed beyond these; a miss lists every place looked.

use std::path::{Path, PathBuf};

use super::{AdapterConfig, AdapterError};
use crate::convert::is_hf_folder;

/// Where the base was found, and by which rule (for the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBase {
    /// The base: a model folder or a checkpoint file.
    pub path: PathBuf,
    /// How it was found.
    pub rule: &'static str,
}

/// Largest `kvant.toml` read for the `base` key.
const MAX_TOML_BYTES: u64 = 1 << 20;

/// The `base` key of `dir/kvant.toml`, if any.
fn toml_base(dir: &Path) -> Result<Option<PathBuf>, AdapterError> {
    let p = dir.join("kvant.toml");
    let bad = |reason: String| AdapterError::Config {
        path: p.clone(),
        reason,
    };
    if !p.is_file() {
        return Ok(None);
    }
    let len = std::fs::metadata(&p).map_err(|e| bad(e.to_string()))?.len();
    if len > MAX_TOML_BYTES {
        return Err(bad(format!("{len} bytes is too large for a kvant.toml")));
    }
    let text = std::fs::read_to_string(&p).map_err(|e| bad(e.to_string()))?;
    let v: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match v.get("base") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(dir.join(s))),
        Some(other) => Err(bad(format!("base must be a path string, not {other}"))),
    }
}

/// A usable base: a Hugging Face folder or a checkpoint file.
fn usable(p: &Path) -> bool {
    p.is_file() || is_hf_folder(p)
}

/// The Hugging Face hub cache folder, as `huggingface_hub` resolves it.
pub fn hf_hub_cache() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| {
            env("HOME")
                .or_else(|| directories::BaseDirs::new().map(|d| d.home_dir().to_owned()))
                .map(|h| h.join(".cache/huggingface/hub"))
        })
}

/// The snapshot folder of `repo_id` at `revision` in the cache `hub`, and
/// the ref file consulted (for messages).
fn hf_snapshot(hub: &Path, repo_id: &str, revision: Option<&str>) -> (PathBuf, Option<PathBuf>) {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let rev = revision.unwrap_or("main");
    // A commit hash names its snapshot directly.
    let is_commit = rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit());
    if is_commit {
        return (repo.join("snapshots").join(rev), None);
    }
    let refs = repo.join("refs").join(rev);
    let commit = std::fs::read_to_string(&refs)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|c| !c.is_empty() && !c.contains(['/', '\\']) && c != "..");
    match commit {
        Some(c) => (repo.join("snapshots").join(c), Some(refs)),
        None => (refs.clone(), Some(refs)),
    }
}

/// Finds the base of the adapter in `dir` with config `cfg`.
pub fn find(
    dir: &Path,
    cfg: &AdapterConfig,
    inbox: Option<&Path>,
) -> Result<FoundBase, AdapterError> {
    let mut looked: Vec<String> = Vec::new();
    if let Some(p) = toml_base(dir)? {
        if p.exists() {
            return Ok(FoundBase {
                path: p,
                rule: "kvant.toml base",
            });
        }
        return Err(AdapterError::BaseNotFound {
            adapter: dir.to_owned(),
            looked: format!("{} (base in kvant.toml), which does not exist", p.display()),
        });
    }
    let id = cfg.base_model_name_or_path.clone().unwrap_or_default();
    if !id.is_empty() {
        let local = dir.join(&id); // absolute ids replace the folder
        if usable(&local) {
            return Ok(FoundBase {
                path: local,
                rule: "base_model_name_or_path as a path",
            });
        }
        looked.push(local.display().to_string());
        if let Some(last) = Path::new(&id).file_name() {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            for place in [parent, inbox].into_iter().flatten() {
                let p = place.join(last);
                if usable(&p) {
                    return Ok(FoundBase {
                        path: p,
                        rule: "a folder of the base's name beside the adapter",
                    });
                }
                looked.push(p.display().to_string());
            }
        }
        let hub_id =
            !Path::new(&id).is_absolute() && !id.starts_with('.') && id.split('/').count() <= 2;
        match (hub_id, hf_hub_cache()) {
            (true, Some(hub)) => {
                let (snap, refs) = hf_snapshot(&hub, &id, cfg.revision.as_deref());
                if usable(&snap) {
                    return Ok(FoundBase {
                        path: snap,
                        rule: "the Hugging Face cache",
                    });
                }
                looked.push(match refs {
                    Some(r) if snap != r => format!("{} (via {})", snap.display(), r.display()),
                    _ => snap.display().to_string(),
                });
            }
            (true, None) => looked
                .push("the Hugging Face cache (no HF_HUB_CACHE, HF_HOME or home folder)".into()),
            (false, _) => {}
        }
    }
    let named = if id.is_empty() {
        "adapter_config.json names no base_model_name_or_path".to_owned()
    } else {
        format!("base '{id}' looked for in {}", looked.join(", "))
    };
    Err(AdapterError::BaseNotFound {
        adapter: dir.to_owned(),
        looked: named,
    })
}
