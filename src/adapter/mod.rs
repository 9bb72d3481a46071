//! PEFT LoRA adapters: recognising an adapter folder, finding its base,
//! and turning base + adapter into something llama.cpp runs — merged into
//! the base's weights, or as a GGUF LoRA adapter file.
//!
//! An adapter drop is a folder with `adapter_config.json` and
//! `adapter_model.safetensors` (or the legacy `adapter_model.bin`, read by
//! the allowlisted torch reader). This module sits between `source` and
//! `arch`: it reads the adapter and the base through `source`, and hands
//! `convert` a [`Merge`] that changes base tensors one at a time as the
//! streaming conversion reads them, so the base is never loaded whole.
//! It must not know about quantization or Ollama.

mod config;
mod find_base;
pub mod gguf_adapter;
mod merge;
mod pieces;

pub use config::{AdapterConfig, Pattern, CONFIG_NAME};
pub use find_base::{find as find_base, hf_hub_cache, FoundBase};
pub use merge::{plan_merge, replace_tensors, Merge};
pub use pieces::{ModuleAdapter, PairKind, Pieces};

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::source::{self, Checkpoint};

/// Why an adapter cannot be used. Each message is one line naming the
/// adapter (or its file) and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// `adapter_config.json` (or the drop's `kvant.toml`) is unreadable
    /// or invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PEFT adapter of another kind (IA3, prefix tuning, …).
    #[error("{path}: not a LoRA adapter ({peft_type}); kvant converts PEFT LoRA adapters (peft_type LORA) only")]
    NotLora {
        /// `adapter_config.json`.
        path: PathBuf,
        /// What it says it is.
        peft_type: String,
    },
    /// The adapter's weights are unreadable or incomplete.
    #[error("{path}: {reason}")]
    Weights {
        /// The weights file (or folder).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No base model was found.
    #[error("{adapter}: no base model found: {looked}; put the base model there, or set base = \"/path/to/base\" in the adapter folder's kvant.toml")]
    BaseNotFound {
        /// The adapter folder.
        adapter: PathBuf,
        /// Every place looked.
        looked: String,
    },
    /// The base does not fit the adapter.
    #[error("{adapter}: the base does not fit the adapter: tensor '{tensor}': {reason}")]
    Mismatch {
        /// The adapter folder.
        adapter: PathBuf,
        /// The tensor.
        tensor: String,
        /// Both shapes, or what is missing.
        reason: String,
    },
    /// The adapter cannot be written as a GGUF LoRA (llama.cpp cannot
    /// apply it at run time).
    #[error("{adapter}: {reason}; convert it merged instead (the default: drop adapter = \"lora\" from kvant.toml, or --as-adapter from the command line)")]
    NotRuntime {
        /// The adapter folder.
        adapter: PathBuf,
        /// What llama.cpp cannot apply.
        reason: String,
    },
    /// Reading a file failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
}

/// True when `path` is an adapter folder (it holds `adapter_config.json`).
pub fn is_adapter_folder(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG_NAME).is_file()
}

/// An opened adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// The adapter folder.
    pub dir: PathBuf,
    /// Its config.
    pub config: AdapterConfig,
    /// Its weights file, opened.
    pub weights: Checkpoint,
    /// Its tensors, sorted by what they do.
    pub pieces: Pieces,
    /// SHA-256 of `adapter_config.json` followed by the weights file: the
    /// adapter's identity (a new training checkpoint is a new hash).
    pub sha256: String,
}

/// Opens the adapter folder `dir`.
pub fn open(dir: &Path) -> Result<Adapter, AdapterError> {
    let config = config::read(dir)?;
    let file = pieces::weights_file(dir)?;
    let weights = source::open(&file)?;
    let pieces = pieces::sort(&weights)?;
    let mut h = Sha256::new();
    for p in [dir.join(CONFIG_NAME), file] {
        hash_file(&p, &mut h).map_err(|e| AdapterError::Weights {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(Adapter {
        dir: dir.to_owned(),
        config,
        weights,
        pieces,
        sha256: hex::encode(h.finalize()),
    })
}

fn hash_file(p: &Path, h: &mut Sha256) -> std::io::Result<()> {
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

impl Adapter {
    /// `general.base_model.*` keys (llama.cpp's naming) for the base, and
    /// `kvant.adapter.*` for the adapter itself.
    pub fn provenance(&self, base: &Path) -> crate::gguf::Metadata {
        use crate::gguf::GgufValue;
        let mut md = crate::gguf::Metadata::new();
        let id = self
            .config
            .base_model_name_or_path
            .clone()
            .unwrap_or_default();
        let name = Path::new(&id)
            .file_name()
            .or_else(|| base.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        md.set("general.base_model.count", GgufValue::U32(1));
        md.set("general.base_model.0.name", name);
        let parts: Vec<&str> = id.split('/').collect();
        if let [org, repo] = parts.as_slice() {
            if !org.is_empty() && !org.starts_with('.') && !Path::new(&id).exists() {
                md.set("general.base_model.0.organization", *org);
                md.set(
                    "general.base_model.0.repo_url",
                    format!("https://huggingface.co/{org}/{repo}"),
                );
            }
        }
        if let Some(rev) = &self.config.revision {
            md.set("general.base_model.0.version", rev.clone());
        }
        md.set("kvant.adapter.sha256", self.sha256.clone());
        md
    }
}
