//! Finding the pieces of a model given one path: the checkpoint itself,
//! the hyper-parameters stored beside a bare state_dict, and the tokenizer
//! files.
//!
//! Rules, in order:
//! * a file is the checkpoint; its folder is searched for the rest;
//! * a folder with `adapter_config.json` is a PEFT adapter (its base is
//!   found by [`crate::adapter::find_base`]);
//! * a folder with `config.json` and Hugging Face weights
//!   (`model.safetensors`, `pytorch_model.bin`, or their `.index.json`) is
//!   a Hugging Face model folder;
//! * any other folder must hold one checkpoint file (`ckpt.pt`, nanoGPT's
//!   name, wins when there are several).

use std::path::{Path, PathBuf};

use super::ConvertError;

/// Extensions of checkpoint files.
pub const CHECKPOINT_EXTENSIONS: [&str; 4] = ["pt", "pth", "bin", "safetensors"];

const HF_WEIGHTS: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Where a model's pieces are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// What to hand to [`crate::source::open`]: a file or an HF folder.
    pub checkpoint: PathBuf,
    /// The folder the rest was looked for in.
    pub dir: PathBuf,
    /// A `config.json` beside a checkpoint file (nanoGPT model_args keys
    /// for a bare state_dict), if any. Not set for HF folders, whose
    /// config the source reader returns.
    pub sidecar_config: Option<PathBuf>,
    /// True for a GGUF file (re-quantized, not converted).
    pub is_gguf: bool,
}

/// True when `dir` looks like a Hugging Face model folder.
pub fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file() && HF_WEIGHTS.iter().any(|w| dir.join(w).is_file())
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Locates the checkpoint for `src` (a file or folder).
pub fn locate(src: &Path) -> Result<ModelPaths, ConvertError> {
    let meta = std::fs::metadata(src)
        .map_err(|e| ConvertError::Other(format!("{}: {e}", src.display())))?;
    if meta.is_file() {
        let dir = src
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let is_gguf = has_ext(src, &["gguf"]);
        let cfg = dir.join("config.json");
        return Ok(ModelPaths {
            checkpoint: src.to_owned(),
            sidecar_config: (!is_gguf && cfg.is_file()).then_some(cfg),
            dir,
            is_gguf,
        });
    }
    if is_hf_folder(src) || crate::adapter::is_adapter_folder(src) {
        return Ok(ModelPaths {
            checkpoint: src.to_owned(),
            dir: src.to_owned(),
            sidecar_config: None,
            is_gguf: false,
        });
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(|e| ConvertError::Other(format!("{}: {e}", src.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && has_ext(p, &CHECKPOINT_EXTENSIONS)
        })
        .collect();
    candidates.sort();
    let chosen = if let Some(ckpt) = candidates.iter().find(|p| p.ends_with("ckpt.pt")) {
        ckpt.clone()
    } else if candidates.len() == 1 {
        candidates.remove(0)
    } else if candidates.is_empty() {
        let ggufs: Vec<PathBuf> = std::fs::read_dir(src)
            .map_err(|e| ConvertError::Other(format!("{}: {e}", src.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| has_ext(p, &["gguf"]))
            .collect();
        if let [one] = ggufs.as_slice() {
            return locate(one);
        }
        return Err(ConvertError::Other(format!(
            "{}: no checkpoint found (looked for *.pt, *.pth, *.bin, *.safetensors, a Hugging Face config.json with weights, or one *.gguf)",
            src.display()
        )));
    } else {
        let names: Vec<String> = candidates
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        return Err(ConvertError::Other(format!(
            "{}: several checkpoints ({}); name one file instead of the folder",
            src.display(),
            names.join(", ")
        )));
    };
    locate(&chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_with_several_checkpoints_prefers_ckpt_pt() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("best_model.pt"), b"x").expect("w");
        std::fs::write(d.path().join("ckpt.pt"), b"x").expect("w");
        let p = locate(d.path()).expect("locate");
        assert_eq!(p.checkpoint, d.path().join("ckpt.pt"));
    }

    #[test]
    fn ambiguous_folder_is_an_error_naming_the_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a.pt"), b"x").expect("w");
        std::fs::write(d.path().join("b.safetensors"), b"x").expect("w");
        let e = locate(d.path()).expect_err("ambiguous").to_string();
        assert!(e.contains("a.pt") && e.contains("b.safetensors"), "{e}");
    }

    #[test]
    fn hf_folder_is_recognised() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("config.json"), b"{}").expect("w");
        std::fs::write(d.path().join("model.safetensors"), b"x").expect("w");
        let p = locate(d.path()).expect("locate");
        assert_eq!(p.checkpoint, d.path());
        assert_eq!(p.sidecar_config, None);
    }
}
