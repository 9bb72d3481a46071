//! The quality keys of the daemon's config and of a drop's `kvant.toml`
//! (the drop's win, key by key), and how they become the measuring
//! options of one conversion.
//!
//! ```toml
//! eval_text = "heldout.txt"   # default: heldout.txt, val.txt, … beside the drop
//! calibration = "train.txt"   # default: train.txt, calibration.txt, train.bin
//! max_kld = 0.1               # the gate (defaults justified in quality::budget)
//! max_ppl_increase = 10       # percent
//! eval_ctx = 256              # tokens per chunk
//! eval_chunks = 3             # chunks of held-out text
//! calibration_chunks = 4      # chunks of calibration text for the imatrix
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::measure::MeasureOptions;
use crate::quality::{find_text, Budget, TextRole};

/// Quality keys, every one optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualitySettings {
    /// The held-out text (relative paths: to the drop folder).
    pub eval_text: Option<PathBuf>,
    /// The calibration text for the importance matrix.
    pub calibration: Option<PathBuf>,
    /// Largest mean KLD a published type may show.
    pub max_kld: Option<f64>,
    /// Largest perplexity increase, in percent.
    pub max_ppl_increase: Option<f64>,
    /// Tokens per evaluation chunk.
    pub eval_ctx: Option<usize>,
    /// Chunks evaluated.
    pub eval_chunks: Option<usize>,
    /// Chunks of calibration text run for the importance matrix.
    pub calibration_chunks: Option<usize>,
}

/// The keys [`QualitySettings`] reads.
const KEYS: [&str; 7] = [
    "eval_text",
    "calibration",
    "max_kld",
    "max_ppl_increase",
    "eval_ctx",
    "eval_chunks",
    "calibration_chunks",
];

impl QualitySettings {
    /// Takes the quality keys out of a parsed `kvant.toml` or config file,
    /// leaving the rest for its own (strict) reader.
    pub fn take_from(table: &mut toml::Table) -> Result<QualitySettings, String> {
        let mut own = toml::Table::new();
        for key in KEYS {
            if let Some(v) = table.remove(key) {
                own.insert(key.to_owned(), v);
            }
        }
        let q: QualitySettings = own.try_into().map_err(|e| e.to_string())?;
        q.validate()?;
        Ok(q)
    }

    /// `self`'s keys, `fallback`'s where `self` has none.
    pub fn or(&self, fallback: &QualitySettings) -> QualitySettings {
        QualitySettings {
            eval_text: self
                .eval_text
                .clone()
                .or_else(|| fallback.eval_text.clone()),
            calibration: self
                .calibration
                .clone()
                .or_else(|| fallback.calibration.clone()),
            max_kld: self.max_kld.or(fallback.max_kld),
            max_ppl_increase: self.max_ppl_increase.or(fallback.max_ppl_increase),
            eval_ctx: self.eval_ctx.or(fallback.eval_ctx),
            eval_chunks: self.eval_chunks.or(fallback.eval_chunks),
            calibration_chunks: self.calibration_chunks.or(fallback.calibration_chunks),
        }
    }

    /// Checks the values a user wrote.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_kld", self.max_kld),
            ("max_ppl_increase", self.max_ppl_increase),
        ] {
            if v.is_some_and(|v| v.is_nan() || v < 0.0) {
                return Err(format!("{key} must be a number >= 0"));
            }
        }
        if self.eval_ctx.is_some_and(|c| c < 4) {
            return Err("eval_ctx must be at least 4 tokens".into());
        }
        if self.eval_chunks == Some(0) || self.calibration_chunks == Some(0) {
            return Err("eval_chunks and calibration_chunks must be at least 1".into());
        }
        Ok(())
    }

    /// The options for a drop whose files are in `drop_dir`, journaling
    /// its measurements in `journal_dir`.
    pub fn options(&self, drop_dir: &Path, journal_dir: Option<PathBuf>) -> MeasureOptions {
        let defaults = MeasureOptions::default();
        MeasureOptions {
            eval_text: find_text(TextRole::Heldout, self.eval_text.as_deref(), drop_dir),
            calibration: find_text(TextRole::Calibration, self.calibration.as_deref(), drop_dir),
            budget: Budget {
                max_kld: self.max_kld.unwrap_or(defaults.budget.max_kld),
                max_ppl_increase: self
                    .max_ppl_increase
                    .unwrap_or(defaults.budget.max_ppl_increase),
            },
            eval_ctx: self.eval_ctx.unwrap_or(defaults.eval_ctx),
            eval_chunks: self.eval_chunks.unwrap_or(defaults.eval_chunks),
            calibration_chunks: self
                .calibration_chunks
                .unwrap_or(defaults.calibration_chunks),
            journal_dir,
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_keys_win_and_the_texts_are_found_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("val.txt"), "text").expect("writes");
        let daemon = QualitySettings {
            max_kld: Some(0.2),
            eval_chunks: Some(8),
            ..Default::default()
        };
        let drop = QualitySettings {
            max_kld: Some(0.01),
            ..Default::default()
        };
        let merged = drop.or(&daemon);
        assert_eq!(merged.max_kld, Some(0.01));
        assert_eq!(merged.eval_chunks, Some(8));
        let o = merged.options(dir.path(), None);
        assert_eq!(o.budget.max_kld, 0.01);
        assert_eq!(o.eval_chunks, 8);
        assert_eq!(
            o.eval_text.path(),
            Some(dir.path().join("val.txt").as_path())
        );
        assert!(o.calibration.path().is_none());
        let mut t: toml::Table =
            toml::from_str("name = \"m\"\nmax_kld = 0.05\neval_ctx = 128").expect("toml");
        let q = QualitySettings::take_from(&mut t).expect("reads");
        assert_eq!((q.max_kld, q.eval_ctx), (Some(0.05), Some(128)));
        assert_eq!(t.len(), 1, "only the other keys are left: {t:?}");
        let mut bad: toml::Table = toml::from_str("eval_chunks = 0").expect("toml");
        assert!(QualitySettings::take_from(&mut bad).is_err());
        assert!(QualitySettings {
            max_kld: Some(f64::NAN),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
