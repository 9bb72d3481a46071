//! Which names in the inbox are drops, which are someone's half-written
//! temporary files, and which inbox entry a changed path belongs to.
//!
//! Pure functions over names and paths: no I/O except in [`drop_root`]'s
//! caller. Invariant: a name that any common copier, browser, editor or kvant
//! itself uses while writing is never a drop.

use std::path::{Component, Path, PathBuf};

/// File extensions (lower-case, no dot) of single-file checkpoint drops.
pub const CHECKPOINT_EXTENSIONS: [&str; 5] = ["pt", "pth", "bin", "safetensors", "gguf"];

/// Suffixes copiers and editors use for files still being written.
const IN_PROGRESS_SUFFIXES: [&str; 6] = [".tmp", ".part", "~", ".swp", ".crdownload", ".kvant-tmp"];

/// True for names that mean "still being written" (`x.part`, `x.tmp`,
/// `x~`, `.x.swp`, `x.crdownload`, kvant's own `.kvant-tmp`): a folder
/// holding one is not complete yet.
pub fn is_in_progress_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IN_PROGRESS_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// True for names that are never part of a drop: in-progress names and
/// dot-files (`.DS_Store`, `.x.part`).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || is_in_progress_name(name)
}

/// True when `name` is a single-file checkpoint (`*.pt`, `*.pth`, `*.bin`,
/// `*.safetensors`, `*.gguf`) and not an ignored name.
pub fn is_checkpoint_name(name: &str) -> bool {
    if is_ignored_name(name) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    match lower.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && CHECKPOINT_EXTENSIONS.contains(&ext),
        None => false,
    }
}

/// A `<drop>.done` marker's drop name (`ckpt.pt.done` → `ckpt.pt`).
pub fn done_marker_target(name: &str) -> Option<&str> {
    name.strip_suffix(".done").filter(|s| !s.is_empty())
}

/// What a changed path in the inbox means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropRef {
    /// The path belongs to this drop (a top-level file or folder).
    Drop(PathBuf),
    /// A `<drop>.done` marker appeared for this drop.
    Done(PathBuf),
}

/// The inbox entry `path` belongs to: the first component below `inbox`.
/// `None` for the inbox itself, paths outside it and ignored top-level
/// names. Whether the entry is a file or folder is decided later, by
/// looking at it.
pub fn drop_root(inbox: &Path, path: &Path) -> Option<DropRef> {
    let rel = path.strip_prefix(inbox).ok()?;
    let first = match rel.components().next()? {
        Component::Normal(n) => n.to_str()?,
        _ => return None,
    };
    let is_top = rel.components().count() == 1;
    if is_top {
        if let Some(target) = done_marker_target(first) {
            return Some(DropRef::Done(inbox.join(target)));
        }
    }
    if is_ignored_name(first) || first == crate::daemon::model_settings::SETTINGS_FILE {
        return None;
    }
    if first.ends_with(crate::daemon::model_settings::SIDE_SETTINGS_SUFFIX) {
        return None;
    }
    Some(DropRef::Drop(inbox.join(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_and_temporaries() {
        for yes in [
            "ckpt.pt",
            "m.PTH",
            "pytorch_model.bin",
            "model.safetensors",
            "x.gguf",
        ] {
            assert!(is_checkpoint_name(yes), "{yes}");
        }
        for no in [
            "ckpt.pt.part",
            "ckpt.pt.tmp",
            "ckpt.pt~",
            ".ckpt.pt.swp",
            "ckpt.pt.crdownload",
            ".ckpt.pt.123.kvant-tmp",
            ".hidden.pt",
            "notes.txt",
            ".pt",
            "pt",
        ] {
            assert!(!is_checkpoint_name(no), "{no}");
        }
        assert!(is_in_progress_name("a.PART"));
        assert!(!is_in_progress_name("a.pt"));
        assert!(is_ignored_name(".DS_Store"));
    }

    #[test]
    fn paths_map_to_their_top_level_drop() {
        let inbox = Path::new("/in");
        assert_eq!(
            drop_root(inbox, Path::new("/in/run1/sub/model.safetensors")),
            Some(DropRef::Drop(PathBuf::from("/in/run1")))
        );
        assert_eq!(
            drop_root(inbox, Path::new("/in/ckpt.pt")),
            Some(DropRef::Drop(PathBuf::from("/in/ckpt.pt")))
        );
        assert_eq!(
            drop_root(inbox, Path::new("/in/ckpt.pt.done")),
            Some(DropRef::Done(PathBuf::from("/in/ckpt.pt")))
        );
        assert_eq!(drop_root(inbox, Path::new("/in/ckpt.pt.part")), None);
        assert_eq!(drop_root(inbox, Path::new("/in/.x.pt.1.kvant-tmp")), None);
        assert_eq!(drop_root(inbox, Path::new("/in/kvant.toml")), None);
        assert_eq!(drop_root(inbox, Path::new("/in")), None);
        assert_eq!(drop_root(inbox, Path::new("/elsewhere/x.pt")), None);
    }
}
