//! Reading checkpoints lazily and safely.
//!
//! [`open`] lists a checkpoint's tensors (name, dtype, shape, byte range in
//! a memory map) together with the hyper-parameters stored beside them. It
//! reads torch `.pt`/`.pth`/`.bin` files (zip archives, and the legacy
//! pre-1.6 stream) through an allowlisted pickle interpreter that never
//! runs code, `.safetensors` files, and
//! Hugging Face folders (single or sharded). Tensor bytes are only touched
//! when [`SourceTensor::to_f32`] is called, one tensor at a time.
//!
//! This module must not know GGUF names, model families or quant types.

mod error;
mod hf;
mod safetensors;
mod tensor;
pub(crate) mod torch;

pub use error::SourceError;
pub use tensor::{DType, SourceTensor};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

/// What kind of file a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceFormat {
    /// A `torch.save` zip archive (`.pt`, `.pth`, `.bin`).
    TorchZip,
    /// A legacy (pre-1.6, non-zip) `torch.save` stream.
    TorchLegacy,
    /// A `.safetensors` file.
    Safetensors,
    /// A Hugging Face model folder (`config.json` + weights).
    HfFolder,
}

/// An opened checkpoint: its tensors and the metadata found with them.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The file or folder it was read from.
    pub path: PathBuf,
    /// Its format.
    pub format: SourceFormat,
    /// The model's tensors in file order, names prefix-stripped, buffers
    /// such as `attn.bias` masks still included (the family mapping decides
    /// what to drop). Optimizer state is never read.
    pub tensors: Vec<SourceTensor>,
    /// Hyper-parameters stored with the weights: nanoGPT's `model_args`, or
    /// a Hugging Face `config.json`, as JSON. `None` for a bare state_dict.
    pub config: Option<serde_json::Value>,
    /// Other plain values saved beside the model (nanoGPT's `iter_num`,
    /// `best_val_loss`, `config`), as JSON, for reports and version tags.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Checkpoint {
    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Opens the checkpoint at `path`: a torch archive, a safetensors file or a
/// Hugging Face folder.
pub fn open(path: &Path) -> Result<Checkpoint, SourceError> {
    if path.is_dir() {
        return hf::open(path);
    }
    open_file(path)
}

/// Opens one checkpoint file, choosing the reader by content (not by
/// name: `.bin` may be either).
fn open_file(path: &Path) -> Result<Checkpoint, SourceError> {
    let io = |e| SourceError::Io {
        path: path.to_owned(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(SourceError::Malformed {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    // SAFETY: read-only map of a file that has settled (the daemon waits
    // for drops to stop changing); see ripgrep's mmap.rs for the residual
    // SIGBUS risk if another process truncates it meanwhile.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(io)?);
    if torch::is_zip(&map) {
        return torch::open(path, map);
    }
    if torch::is_legacy(&map) {
        return torch::open_legacy(path, map);
    }
    let is_safetensors_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    // A safetensors header: u64 length then '{'.
    if is_safetensors_name || (map.len() > 8 && map[8] == b'{') {
        return safetensors::open(path, map);
    }
    let reason = if map.first() == Some(&0x80) {
        "a pickle, but not a torch.save file (no torch magic number): kvant reads torch.save checkpoints only".to_owned()
    } else {
        "not a PyTorch checkpoint (no zip signature) nor a safetensors file".to_owned()
    };
    Err(SourceError::Unsupported {
        path: path.to_owned(),
        reason,
    })
}
