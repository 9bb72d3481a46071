//! The journal of drops (`<state dir>/state.json`): for every version of
//! every drop, its fingerprint, step, outputs, Ollama names, last error and
//! attempt count. Written whole and atomically after every change
//! ([`crate::durable::write_atomic`]), version-tagged, guarded by a lock
//! file so two daemons cannot share it.
//!
//! Must not know how conversion or registration work. Invariants: the file
//! on disk is always a complete journal (old or new, never half); a step is
//! journaled *before* it is acted on, so a restart knows what may have been
//! interrupted.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::DaemonError;

/// The journal file's name.
pub const STATE_FILE: &str = "state.json";
/// The lock file's name.
pub const LOCK_FILE: &str = "kvant.lock";
/// Folder of retry requests written while a daemon holds the lock.
pub const RETRY_DIR: &str = "retry-requests";
/// Largest journal read back.
const MAX_STATE_BYTES: u64 = 256 << 20;

/// Where a drop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Waiting for the converter.
    Queued,
    /// Being converted (a restart converts again from scratch).
    Converting,
    /// GGUF files written and hashed; registration pending.
    Converted,
    /// Registration intended (names journaled) and in progress or waiting
    /// for Ollama; a restart registers again (creating is idempotent).
    Registering,
    /// Done: registered and verified.
    Registered,
    /// Gave up; `error` says why. Retried only if the drop changes or on
    /// `kvant retry`.
    Failed,
}

impl Step {
    /// The lower-case word shown in `kvant status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Queued => "queued",
            Step::Converting => "converting",
            Step::Converted => "converted",
            Step::Registering => "registering",
            Step::Registered => "registered",
            Step::Failed => "failed",
        }
    }
}

/// What a drop's content was when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Total bytes.
    pub size: u64,
    /// Newest mtime, ns since the epoch.
    pub mtime_ns: u64,
    /// SHA-256 over the content (for a folder: every file's path and hash).
    pub sha256: String,
}

/// One written GGUF file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Quantization (`q4_k_m`).
    pub file_type: String,
    /// The file.
    pub path: PathBuf,
    /// Its SHA-256, checked again on restart before it is registered.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// One version of one drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// Stable id: `<model>-<first 12 hex of sha256>`.
    pub id: String,
    /// Order of arrival.
    pub seq: u64,
    /// The drop in the inbox.
    pub path: PathBuf,
    /// Ollama model name (before `:tag`).
    pub model: String,
    /// The immutable per-version tag suffix (`iter400` or a short hash).
    pub version_tag: String,
    /// Content when taken.
    pub fingerprint: Fingerprint,
    /// Current step.
    pub step: Step,
    /// GGUF files written.
    pub outputs: Vec<OutputRecord>,
    /// Names to register (journaled before registering).
    pub intended_names: Vec<String>,
    /// Names registered and verified.
    pub ollama_names: Vec<String>,
    /// Last error, if any.
    pub error: Option<String>,
    /// Attempts of the current step.
    pub attempts: u32,
    /// Older version whose immutable tags were deleted by `keep`.
    #[serde(default)]
    pub pruned: bool,
    /// Last change, seconds since the epoch.
    pub updated_unix: u64,
    /// Context length for the Modelfile (from the conversion).
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// Stop strings for the Modelfile (from the conversion).
    #[serde(default)]
    pub stop: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum JournalFile {
    #[serde(rename = "1")]
    V1 {
        next_seq: u64,
        drops: Vec<DropRecord>,
    },
}

/// The journal, loaded and locked.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    _lock: File,
    next_seq: u64,
    /// Every record, oldest first.
    pub drops: Vec<DropRecord>,
}

/// Seconds since the epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock(dir: &Path) -> Result<File, DaemonError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(DaemonError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(DaemonError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(DaemonError::Io { path, source: e }),
    }
}

/// Reads the records without locking (for `kvant status` while the daemon
/// runs). A missing journal is empty.
pub fn read_records(dir: &Path) -> Result<Vec<DropRecord>, DaemonError> {
    Ok(read_file(dir)?.1)
}

fn read_file(dir: &Path) -> Result<(u64, Vec<DropRecord>), DaemonError> {
    let path = dir.join(STATE_FILE);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(e) => return Err(DaemonError::Io { path, source: e }),
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(DaemonError::StateCorrupt {
            path,
            reason: format!("larger than {MAX_STATE_BYTES} bytes"),
        });
    }
    let bytes = fs::read(&path).map_err(DaemonError::io(&path))?;
    match serde_json::from_slice::<JournalFile>(&bytes) {
        Ok(JournalFile::V1 { next_seq, drops }) => Ok((next_seq, drops)),
        Err(e) => Err(DaemonError::StateCorrupt {
            path,
            reason: e.to_string(),
        }),
    }
}

impl Journal {
    /// Opens (creating) the state directory, takes the lock, sweeps temp
    /// files a killed daemon left, and loads the journal.
    pub fn open(dir: &Path) -> Result<Journal, DaemonError> {
        fs::create_dir_all(dir).map_err(DaemonError::io(dir))?;
        let lock = lock(dir)?;
        crate::durable::remove_stale_temps(dir).map_err(DaemonError::io(dir))?;
        let (next_seq, drops) = read_file(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            _lock: lock,
            next_seq,
            drops,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the whole journal atomically.
    pub fn save(&self) -> Result<(), DaemonError> {
        let file = JournalFile::V1 {
            next_seq: self.next_seq,
            drops: self.drops.clone(),
        };
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| DaemonError::StateCorrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::durable::write_atomic(&path, &bytes).map_err(DaemonError::io(&path))
    }

    /// Adds a record (its `seq` is assigned here) and returns its index.
    pub fn insert(&mut self, mut rec: DropRecord) -> usize {
        rec.seq = self.next_seq;
        self.next_seq += 1;
        rec.updated_unix = now_unix();
        self.drops.push(rec);
        self.drops.len() - 1
    }

    /// The record with this id.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut DropRecord> {
        self.drops.iter_mut().find(|d| d.id == id)
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&DropRecord> {
        self.drops.iter().find(|d| d.id == id)
    }

    /// The newest record for a drop path.
    pub fn latest_for_path(&self, path: &Path) -> Option<&DropRecord> {
        self.drops.iter().rev().find(|d| d.path == path)
    }

    /// Changes one record's step (and error), stamps it, and saves.
    pub fn set_step(
        &mut self,
        id: &str,
        step: Step,
        error: Option<String>,
    ) -> Result<(), DaemonError> {
        if let Some(r) = self.get_mut(id) {
            r.step = step;
            r.error = error;
            r.updated_unix = now_unix();
        }
        self.save()
    }

    /// Applies retry requests other processes filed while this journal was
    /// locked; returns the ids re-queued.
    pub fn take_retry_requests(&mut self) -> Result<Vec<String>, DaemonError> {
        let dir = self.dir.join(RETRY_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DaemonError::Io {
                    path: dir,
                    source: e,
                })
            }
        };
        let mut done = Vec::new();
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some("request") {
                continue;
            }
            let target = fs::read_to_string(&p).unwrap_or_default();
            if let Ok(id) = requeue(&mut self.drops, target.trim()) {
                done.push(id);
            }
            let _ = fs::remove_file(&p);
        }
        if !done.is_empty() {
            self.save()?;
        }
        Ok(done)
    }
}

/// Marks a failed (or any) record as queued again; matches an id or a
/// drop path (newest record for it).
fn requeue(drops: &mut [DropRecord], id_or_path: &str) -> Result<String, DaemonError> {
    let path = Path::new(id_or_path);
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let rec = match drops.iter().position(|d| d.id == id_or_path) {
        Some(i) => &mut drops[i],
        None => drops
            .iter_mut()
            .rev()
            .find(|d| d.path == path || d.path == abs)
            .ok_or_else(|| DaemonError::UnknownDrop(id_or_path.to_owned()))?,
    };
    rec.step = Step::Queued;
    rec.error = None;
    rec.attempts = 0;
    rec.updated_unix = now_unix();
    Ok(rec.id.clone())
}

/// `kvant retry`: queues a drop again, by id or path. When no daemon holds
/// the state directory the journal is changed directly (the next start
/// converts it); otherwise a request file is left for the running daemon,
/// which picks it up within a second. Returns the id.
pub fn retry(state_dir: &Path, drop_id_or_path: &str) -> Result<String, DaemonError> {
    match Journal::open(state_dir) {
        Ok(mut j) => {
            let id = requeue(&mut j.drops, drop_id_or_path)?;
            j.save()?;
            Ok(id)
        }
        Err(DaemonError::Locked { .. }) => {
            let mut records = read_records(state_dir)?;
            let id = requeue(&mut records, drop_id_or_path)?;
            let dir = state_dir.join(RETRY_DIR);
            fs::create_dir_all(&dir).map_err(DaemonError::io(&dir))?;
            let file = dir.join(format!("{}.request", hex::encode(id.as_bytes())));
            crate::durable::write_atomic(&file, id.as_bytes()).map_err(DaemonError::io(&file))?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// One line of `kvant status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropStatus {
    /// Drop id (for `kvant retry`).
    pub id: String,
    /// The drop in the inbox.
    pub path: PathBuf,
    /// Ollama model name.
    pub model: String,
    /// Current step.
    pub step: Step,
    /// Registered names.
    pub ollama_names: Vec<String>,
    /// Last error.
    pub error: Option<String>,
    /// Attempts of the current step.
    pub attempts: u32,
    /// Last change, seconds since the epoch.
    pub updated_unix: u64,
}

/// `kvant status`: every journaled drop, oldest first. Reads without the
/// lock, so it works while the daemon runs.
pub fn status(state_dir: &Path) -> Result<Vec<DropStatus>, DaemonError> {
    Ok(read_records(state_dir)?
        .into_iter()
        .map(|r| DropStatus {
            id: r.id,
            path: r.path,
            model: r.model,
            step: r.step,
            ollama_names: r.ollama_names,
            error: r.error,
            attempts: r.attempts,
            updated_unix: r.updated_unix,
        })
        .collect())
}

/// A plain-text table of [`status`] for the terminal.
pub fn render_status_table(rows: &[DropStatus]) -> String {
    let mut table = vec![[
        "ID".to_owned(),
        "STEP".to_owned(),
        "MODEL".to_owned(),
        "DROP".to_owned(),
        "DETAIL".to_owned(),
    ]];
    for r in rows {
        let detail = match (&r.error, r.ollama_names.is_empty()) {
            (Some(e), _) => format!("error (attempt {}): {e}", r.attempts),
            (None, false) => r.ollama_names.join(", "),
            (None, true) => String::new(),
        };
        let detail: String = detail.replace('\n', " ").chars().take(160).collect();
        table.push([
            r.id.clone(),
            r.step.as_str().to_owned(),
            r.model.clone(),
            r.path.display().to_string(),
            detail,
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, (w, c)) in widths.iter().zip(row).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, path: &str) -> DropRecord {
        DropRecord {
            id: id.into(),
            seq: 0,
            path: PathBuf::from(path),
            model: "m".into(),
            version_tag: "abc".into(),
            fingerprint: Fingerprint {
                size: 1,
                mtime_ns: 2,
                sha256: "ab".repeat(32),
            },
            step: Step::Failed,
            outputs: vec![OutputRecord {
                file_type: "q4_k_m".into(),
                path: PathBuf::from("/o/m.gguf"),
                sha256: "cd".repeat(32),
                size: 9,
            }],
            intended_names: vec!["m:q4_k_m".into()],
            ollama_names: vec![],
            error: Some("bad magic".into()),
            attempts: 1,
            pruned: false,
            updated_unix: 0,
            num_ctx: None,
            stop: vec![],
        }
    }

    #[test]
    fn round_trip_is_version_tagged() {
        let t = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(t.path()).unwrap();
            j.insert(record("a", "/in/a.pt"));
            j.insert(record("b", "/in/b.pt"));
            j.save().unwrap();
        }
        let text = fs::read_to_string(t.path().join(STATE_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], "1");
        let j = Journal::open(t.path()).unwrap();
        assert_eq!(j.drops.len(), 2);
        assert_eq!(j.drops[1].seq, 1);
        assert_eq!(j.drops[0].outputs[0].sha256, "cd".repeat(32));
        assert_eq!(j.drops[0].step, Step::Failed);
    }

    #[test]
    fn leftover_temp_is_swept_and_journal_intact() {
        let t = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(t.path()).unwrap();
            j.insert(record("a", "/in/a.pt"));
            j.save().unwrap();
        }
        let stale = t.path().join(".state.json.999.kvant-tmp");
        fs::write(&stale, b"{\"version\":\"1\",\"next_se").unwrap();
        let j = Journal::open(t.path()).unwrap();
        assert!(!stale.exists());
        assert_eq!(j.drops.len(), 1);
    }

    #[test]
    fn damaged_journal_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(STATE_FILE), b"{\"version\":\"1\",\"drops\":[").unwrap();
        let e = Journal::open(t.path()).unwrap_err();
        assert!(matches!(e, DaemonError::StateCorrupt { .. }), "{e}");
        assert!(
            e.to_string().contains("state.json: damaged state journal"),
            "{e}"
        );
        fs::write(t.path().join(STATE_FILE), b"{\"version\":\"7\"}").unwrap();
        assert!(matches!(
            Journal::open(t.path()).unwrap_err(),
            DaemonError::StateCorrupt { .. }
        ));
    }

    #[test]
    fn second_daemon_is_refused_while_lock_held() {
        let t = tempfile::tempdir().unwrap();
        let first = Journal::open(t.path()).unwrap();
        let e = Journal::open(t.path()).unwrap_err();
        assert!(matches!(e, DaemonError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("another kvant daemon"), "{e}");
        drop(first);
        Journal::open(t.path()).unwrap();
    }

    #[test]
    fn retry_directly_or_by_request() {
        let t = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(t.path()).unwrap();
            j.insert(record("a", "/in/a.pt"));
            j.save().unwrap();
        }
        assert_eq!(retry(t.path(), "/in/a.pt").unwrap(), "a");
        assert_eq!(status(t.path()).unwrap()[0].step, Step::Queued);
        assert!(matches!(
            retry(t.path(), "zzz").unwrap_err(),
            DaemonError::UnknownDrop(_)
        ));
        let mut j = Journal::open(t.path()).unwrap();
        j.set_step("a", Step::Failed, Some("x".into())).unwrap();
        // Locked: a request file, applied by the holder.
        assert_eq!(retry(t.path(), "a").unwrap(), "a");
        assert_eq!(j.get("a").unwrap().step, Step::Failed);
        assert_eq!(j.take_retry_requests().unwrap(), vec!["a".to_owned()]);
        assert_eq!(j.get("a").unwrap().step, Step::Queued);
        assert!(j.take_retry_requests().unwrap().is_empty());
    }

    #[test]
    fn status_table_lists_every_drop() {
        let rows = vec![DropStatus {
            id: "m-abc".into(),
            path: PathBuf::from("/in/a.pt"),
            model: "m".into(),
            step: Step::Failed,
            ollama_names: vec![],
            error: Some("bad magic".into()),
            attempts: 2,
            updated_unix: 0,
        }];
        let t = render_status_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].contains("failed"));
        assert!(lines[1].contains("error (attempt 2): bad magic"));
    }
}
