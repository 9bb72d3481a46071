//! The default model name, from the checkpoint's path.

use std::path::Path;

/// File stems that say nothing about the model; the folder name is used
/// instead.
const GENERIC_STEMS: [&str; 6] = [
    "ckpt",
    "model",
    "best_model",
    "pytorch_model",
    "final",
    "checkpoint",
];

/// The model's name: a folder's own name, a file's stem, or the file's
/// folder name when the stem is generic (`ckpt.pt` says nothing; its
/// folder usually does).
pub fn default_name(checkpoint: &Path) -> String {
    let abs = std::path::absolute(checkpoint).unwrap_or_else(|_| checkpoint.to_owned());
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if abs.is_dir() {
        return file_name(&abs).unwrap_or_else(|| "model".into());
    }
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.is_empty() || GENERIC_STEMS.contains(&stem.as_str()) {
        abs.parent()
            .and_then(file_name)
            .unwrap_or_else(|| "model".into())
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_file_names_take_the_folder_name() {
        assert_eq!(default_name(Path::new("/runs/az-gpt/ckpt.pt")), "az-gpt");
        assert_eq!(
            default_name(Path::new("/runs/az-gpt/shakespeare.pt")),
            "shakespeare"
        );
    }
}
