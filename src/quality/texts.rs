//! Which text a drop is measured on (held-out) and calibrated on
//! (importance matrix): named in `kvant.toml` or the config, else found
//! beside the checkpoint by the names people give them.

use std::path::{Path, PathBuf};

/// Held-out text files looked for beside a checkpoint, in this order.
pub const EVAL_TEXT_NAMES: [&str; 5] = [
    "heldout.txt",
    "val.txt",
    "valid.txt",
    "eval.txt",
    "test.txt",
];
/// nanoGPT's held-out token ids (`prepare.py`'s uint16 file).
pub const EVAL_TOKEN_NAME: &str = "val.bin";
/// Calibration text files looked for beside a checkpoint, in this order.
pub const CALIBRATION_TEXT_NAMES: [&str; 2] = ["train.txt", "calibration.txt"];
/// nanoGPT's training token ids.
pub const CALIBRATION_TOKEN_NAME: &str = "train.bin";

/// Where a drop's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// A UTF-8 text, tokenized with the model's vocabulary.
    Text(PathBuf),
    /// Token ids (uint16 little-endian, nanoGPT's `*.bin`).
    Tokens(PathBuf),
    /// Nothing found; the names that were looked for, for the log line.
    Missing {
        /// Every file name tried, in order.
        looked_for: Vec<String>,
    },
}

impl TextSource {
    /// A file given by name: a `.bin` file is nanoGPT token ids, anything
    /// else UTF-8 text.
    pub fn from_path(p: PathBuf) -> TextSource {
        if p.extension().is_some_and(|e| e == "bin") {
            TextSource::Tokens(p)
        } else {
            TextSource::Text(p)
        }
    }

    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TextSource::Text(p) | TextSource::Tokens(p) => Some(p),
            TextSource::Missing { .. } => None,
        }
    }

    /// The file's name for reports (`heldout.txt`).
    pub fn display_name(&self) -> String {
        self.path()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "none".to_string())
    }
}

/// What to look for: the held-out or the calibration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRole {
    /// Measured on (`eval_text`).
    Heldout,
    /// Calibrated on (`calibration`).
    Calibration,
}

impl TextRole {
    fn names(self) -> (&'static [&'static str], &'static str) {
        match self {
            TextRole::Heldout => (&EVAL_TEXT_NAMES, EVAL_TOKEN_NAME),
            TextRole::Calibration => (&CALIBRATION_TEXT_NAMES, CALIBRATION_TOKEN_NAME),
        }
    }
}

/// The text for `role`: `explicit` (from `kvant.toml`, relative to the
/// drop folder, or from the config or command line) wins; else the first
/// of the usual names that exists in `beside` (the drop folder, or the
/// folder of a dropped file). A `.bin` file is read as token ids.
pub fn find_text(role: TextRole, explicit: Option<&Path>, beside: &Path) -> TextSource {
    if let Some(p) = explicit {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            beside.join(p)
        };
        return TextSource::from_path(p);
    }
    let (texts, tokens) = role.names();
    texts
        .iter()
        .chain(std::iter::once(&tokens))
        .map(|name| beside.join(name))
        .find(|p| p.is_file())
        .map(TextSource::from_path)
        .unwrap_or_else(|| TextSource::Missing {
            looked_for: texts
                .iter()
                .chain(std::iter::once(&tokens))
                .map(|s| s.to_string())
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_wins_then_the_usual_names_in_order_then_token_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let missing = find_text(TextRole::Heldout, None, d);
        assert_eq!(
            missing,
            TextSource::Missing {
                looked_for: vec![
                    "heldout.txt".into(),
                    "val.txt".into(),
                    "valid.txt".into(),
                    "eval.txt".into(),
                    "test.txt".into(),
                    "val.bin".into()
                ]
            }
        );
        std::fs::write(d.join("val.bin"), [1, 0]).expect("write");
        assert_eq!(
            find_text(TextRole::Heldout, None, d),
            TextSource::Tokens(d.join("val.bin"))
        );
        std::fs::write(d.join("test.txt"), "x").expect("write");
        std::fs::write(d.join("val.txt"), "x").expect("write");
        assert_eq!(
            find_text(TextRole::Heldout, None, d),
            TextSource::Text(d.join("val.txt"))
        );
        assert_eq!(
            find_text(TextRole::Heldout, Some(Path::new("corpus/mine.txt")), d),
            TextSource::Text(d.join("corpus/mine.txt"))
        );
        assert_eq!(
            find_text(TextRole::Calibration, None, d),
            TextSource::Missing {
                looked_for: vec![
                    "train.txt".into(),
                    "calibration.txt".into(),
                    "train.bin".into()
                ]
            }
        );
        std::fs::write(d.join("train.bin"), [1, 0]).expect("write");
        assert_eq!(
            find_text(TextRole::Calibration, None, d).display_name(),
            "train.bin"
        );
    }
}
