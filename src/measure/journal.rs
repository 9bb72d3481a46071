//! Where a measured conversion keeps its work: the reference's logits,
//! the computed importance matrix, and every finished measurement.
//!
//! In the daemon the folder is the drop version's own
//! (`<state_dir>/measure/<content sha>/`) and survives a `kill -9`: the
//! redone job finds the reference, the imatrix and each type measured so
//! far (keyed by the file's sha256 and the evaluation's tokens), and
//! measures only the rest. Everything is written atomically, so a record
//! is whole or absent. For `kvant convert` the files are temporaries
//! beside the outputs, removed when the job ends (and by the start-up
//! sweep if it is killed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::convert::ConvertError;
use crate::durable::{temp_path_for, write_atomic};
use crate::quality::TypeQuality;

const MEASUREMENTS: &str = "measurements.json";

/// The work folder of one measured conversion.
pub(super) struct Workspace {
    dir: PathBuf,
    /// `kvant convert`'s temporaries: removed on drop.
    temporary: Option<String>,
    created: Vec<PathBuf>,
    measured: BTreeMap<String, TypeQuality>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Other(format!("{}: {e}", path.display()))
}

impl Workspace {
    /// The journal in `journal_dir` (read back if a previous run left
    /// one), else temporaries named after `model` in `out_dir`.
    pub fn open(
        journal_dir: Option<&Path>,
        out_dir: &Path,
        model: &str,
    ) -> Result<Workspace, ConvertError> {
        let Some(dir) = journal_dir else {
            // The outputs' folder may not exist yet (the conversion makes
            // it): the work files come first.
            std::fs::create_dir_all(out_dir).map_err(|e| io_error(out_dir, e))?;
            return Ok(Workspace {
                dir: out_dir.to_owned(),
                temporary: Some(model.to_owned()),
                created: vec![],
                measured: BTreeMap::new(),
            });
        };
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(MEASUREMENTS);
        // A journal that cannot be read is redone, not trusted.
        let measured = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Workspace {
            dir: dir.to_owned(),
            temporary: None,
            created: vec![],
            measured,
        })
    }

    /// The path of the work file `name` (`reference.logits`).
    pub fn file(&mut self, name: &str) -> PathBuf {
        match &self.temporary {
            None => self.dir.join(name),
            Some(model) => {
                let p = temp_path_for(&self.dir.join(format!("{model}.{name}")));
                self.created.push(p.clone());
                p
            }
        }
    }

    /// Whether a work file survives from an earlier run of this job.
    pub fn reusable(&self, path: &Path) -> bool {
        self.temporary.is_none() && path.is_file()
    }

    /// A finished measurement, if journaled.
    pub fn measured(&self, key: &str) -> Option<TypeQuality> {
        self.measured.get(key).cloned()
    }

    /// Journals a finished measurement.
    pub fn record(&mut self, key: String, q: TypeQuality) -> Result<(), ConvertError> {
        self.measured.insert(key, q);
        if self.temporary.is_some() {
            return Ok(());
        }
        let path = self.dir.join(MEASUREMENTS);
        let bytes = serde_json::to_vec_pretty(&self.measured).map_err(|e| io_error(&path, e))?;
        write_atomic(&path, &bytes).map_err(|e| io_error(&path, e))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A short digest of token ids, naming what an evaluation ran on.
pub(super) fn tokens_digest(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::TypeQuality;

    fn quality() -> TypeQuality {
        TypeQuality {
            file_type: "q8_0".into(),
            size: 10,
            bits_per_weight: 8.5,
            ppl: 35.3,
            ppl_base: 35.2,
            kld_mean: 1e-4,
            kld_p99: 1e-3,
            same_top_p: 0.99,
            rms_dp: 0.01,
            n_tokens: 512,
        }
    }

    #[test]
    fn a_journal_is_read_back_by_the_next_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = dir.path().join("measure");
        let mut ws = Workspace::open(Some(&j), dir.path(), "m").expect("opens");
        ws.record("abc:t".into(), quality()).expect("records");
        drop(ws);
        let ws = Workspace::open(Some(&j), dir.path(), "m").expect("opens");
        assert_eq!(ws.measured("abc:t"), Some(quality()));
        assert_eq!(ws.measured("other"), None);
    }

    #[test]
    fn temporaries_are_removed_and_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ws = Workspace::open(None, dir.path(), "m").expect("opens");
        let p = ws.file("reference.logits");
        std::fs::write(&p, b"x").expect("writes");
        assert!(!ws.reusable(&p));
        drop(ws);
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("lists").count(), 0);
    }
}
