//! The persistent journal of drops, and the lock that keeps two daemons
//! from sharing it.
//!
//! On disk (`<state_dir>/state.json`, written with temp + fsync + rename):
//!
//! ```text
//! { "version": "2",
//!   "drops": { "<drop name>": {
//!       "path", "fingerprint": {size, mtime_ns, sha256},
//!       "step": queued|converting|converted|registering|registered|failed,
//!       "error", "attempts", "version_label", "model", "seq", "crashes",
//!       "outputs": [{file_type, path, sha256, tags: [..], registered, held_back}],
//!       "best_version",
//!       "hosts": { "<url>": {step: pending|registering|registered|failed|forgotten,
//!                  error, attempts, server_version, models: [{name, digest, size}],
//!                  capabilities, template_mode, disk_bytes} } } },
//!   "host_versions": { "<url>": { "<model>": ["<label>", ..] } } }
//! ```
//!
//! A version "1" file (one host, no `hosts`) is read as is; the daemon
//! then assigns its registrations to the first configured host
//! ([`State::adopt_single_host`]) and writes version "2".
//!
//! Recovery rules after a crash (`kill -9` at any moment):
//! * `converting` goes back to `queued`: outputs only appear by rename when
//!   complete, so the conversion is simply done again;
//! * `registering` goes back to `converted`: every registration step is
//!   idempotent by name (create overwrites, copy overwrites), so finishing
//!   it again registers the model exactly once;
//! * a finished output whose file is missing or whose sha256 differs is
//!   re-converted;
//! * `crashes` survives restarts: a drop that crashed its converter
//!   [`MAX_CRASHES`] times stays failed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::host_state::{HostModel, HostRecord, HostStep};
use super::DaemonError;
use crate::durable;

/// Identity of one version of a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Total size of its files.
    pub size: u64,
    /// Latest modification time (ns since the epoch).
    pub mtime_ns: u64,
    /// SHA-256 over its files' contents (names and bytes).
    pub sha256: String,
}

/// Where a drop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Waiting to be converted.
    Queued,
    /// Being converted.
    Converting,
    /// Converted; registration pending.
    Converted,
    /// Being registered.
    Registering,
    /// Done.
    Registered,
    /// Failed with `error`; retried when it changes or on `kvant retry`.
    Failed,
    /// Changed (rewritten, truncated, deleted) while it was converted;
    /// taken again once it settles.
    Changed,
}

/// One output file of a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Mix name (`q4_k_m`).
    pub file_type: String,
    /// GGUF path.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Ollama names it is registered under (`model:q4_k_m`, …).
    pub tags: Vec<String>,
    /// Whether registration finished.
    pub registered: bool,
    /// Why the quality gate held it back (`mean KLD 0.31 > budget 0.1`):
    /// written and reported, never registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

impl OutputRecord {
    /// Whether the quality gate lets it be registered.
    pub fn publishable(&self) -> bool {
        self.held_back.is_none()
    }
}

impl DropRecord {
    /// The outputs registration deals with: those the gate let through.
    pub fn publishable_outputs(&self) -> impl Iterator<Item = &OutputRecord> {
        self.outputs.iter().filter(|o| o.publishable())
    }
}

/// One drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// The file or folder in the inbox.
    pub path: PathBuf,
    /// The version being (or last) processed.
    pub fingerprint: Fingerprint,
    /// Its step.
    pub step: Step,
    /// The last error, one line.
    pub error: Option<String>,
    /// Registration attempts so far.
    pub attempts: u32,
    /// Version label (nanoGPT `iter_num`, else a content hash prefix).
    pub version_label: Option<String>,
    /// Ollama model name.
    pub model: Option<String>,
    /// Outputs.
    pub outputs: Vec<OutputRecord>,
    /// Arrival order (drops are converted first come, first served).
    #[serde(default)]
    pub seq: u64,
    /// Times the converter crashed or hung on this version; at
    /// [`MAX_CRASHES`] the drop is failed and not retried until it changes
    /// or `kvant retry` is asked, so no restart crash-loops on it.
    #[serde(default)]
    pub crashes: u32,
    /// Its registration on each Ollama host, by base URL.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostRecord>,
    /// The model's version with the lowest held-out perplexity so far
    /// (`<model>:best`; `keep` never prunes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_version: Option<String>,
}

/// Converter crashes after which a drop version is given up.
pub const MAX_CRASHES: u32 = 2;

/// The journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Drops by name.
    pub drops: BTreeMap<String, DropRecord>,
    /// Registered version labels per Ollama model, oldest first (for
    /// `keep`).
    #[serde(default)]
    pub versions: BTreeMap<String, Vec<String>>,
    /// Next arrival number.
    #[serde(default)]
    pub next_seq: u64,
    /// Registered version labels per host and model, oldest first (for
    /// `keep`, applied per host).
    #[serde(default)]
    pub host_versions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum OnDisk {
    #[serde(rename = "1")]
    V1(State),
    #[serde(rename = "2")]
    V2(State),
}

/// The journal's path in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl State {
    /// Reads the journal (empty when absent). A damaged file is an error
    /// naming it, never silently replaced.
    pub fn load(dir: &Path) -> Result<State, DaemonError> {
        let p = state_path(dir);
        match std::fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(OnDisk::V1(s) | OnDisk::V2(s)) => Ok(s),
                Err(e) => Err(DaemonError::State(format!(
                    "{} is damaged: {e}; move it away to start afresh",
                    p.display()
                ))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(DaemonError::State(format!("{}: {e}", p.display()))),
        }
    }

    /// Writes the journal atomically.
    pub fn save(&self, dir: &Path) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec_pretty(&OnDisk::V2(self.clone()))
            .map_err(|e| DaemonError::State(e.to_string()))?;
        durable::write_atomic(&state_path(dir), &bytes)
            .map_err(|e| DaemonError::State(format!("{}: {e}", dir.display())))
    }

    /// Migrates a single-host journal (version "1"): registrations
    /// recorded without a host belong to `url`, the host of that time.
    /// Idempotent.
    pub fn adopt_single_host(&mut self, url: &str) {
        for d in self.drops.values_mut() {
            let done = !d.outputs.is_empty() && d.outputs.iter().all(|o| o.registered);
            if d.hosts.is_empty() && done {
                let models = d
                    .outputs
                    .iter()
                    .flat_map(|o| &o.tags)
                    .map(|t| HostModel {
                        name: t.clone(),
                        ..Default::default()
                    })
                    .collect();
                d.hosts.insert(
                    url.to_owned(),
                    HostRecord {
                        step: HostStep::Registered,
                        models,
                        ..Default::default()
                    },
                );
            }
        }
        if !self.versions.is_empty() && self.host_versions.is_empty() {
            self.host_versions
                .insert(url.to_owned(), std::mem::take(&mut self.versions));
        }
    }

    /// Applies the crash-recovery rules (module doc).
    pub fn recover(&mut self) {
        for d in self.drops.values_mut() {
            for h in d.hosts.values_mut() {
                if h.step == HostStep::Registering {
                    h.step = HostStep::Pending;
                }
            }
            match d.step {
                Step::Converting => d.step = Step::Queued,
                Step::Registering => d.step = Step::Converted,
                _ => {}
            }
            if matches!(d.step, Step::Converted | Step::Registered)
                && !d.outputs.iter().all(output_intact)
            {
                d.step = Step::Queued;
            }
        }
    }
}

/// True when an output can still be registered as journaled: a registered
/// one only needs to exist (Ollama holds its own copy), an unregistered one
/// must still hash to the SHA-256 recorded when it was written — a file
/// damaged or replaced while the daemon was down is converted again, never
/// uploaded.
fn output_intact(o: &OutputRecord) -> bool {
    if o.registered {
        return o.path.is_file();
    }
    sha256_file(&o.path).is_ok_and(|h| h.eq_ignore_ascii_case(&o.sha256))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Holds `<state_dir>/lock` while the daemon runs.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Creates the state dir and takes its lock, or says who holds it.
// `File::try_lock` is std since 1.89; the toolchain is 1.95 (HELPERS.md)
// while Cargo.toml still says `rust-version = "1.85"`.
#[allow(clippy::incompatible_msrv)]
pub fn lock(dir: &Path) -> Result<StateLock, DaemonError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DaemonError::State(format!("{}: {e}", dir.display())))?;
    let p = dir.join("lock");
    let f = File::create(&p).map_err(|e| DaemonError::State(format!("{}: {e}", p.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(StateLock { _file: f }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::Locked(dir.to_owned())),
        // Not "another daemon": the file system cannot lock (say so).
        Err(std::fs::TryLockError::Error(e)) => Err(DaemonError::State(format!(
            "{}: cannot lock: {e}",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: Step) -> DropRecord {
        DropRecord {
            path: "/in/m".into(),
            fingerprint: Fingerprint {
                size: 1,
                mtime_ns: 2,
                sha256: "ab".into(),
            },
            step,
            error: None,
            attempts: 0,
            version_label: None,
            model: None,
            outputs: vec![],
            seq: 0,
            crashes: 0,
            hosts: Default::default(),
            best_version: None,
        }
    }

    #[test]
    fn round_trips_and_recovers_interrupted_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = State::default();
        s.drops.insert("a".into(), record(Step::Converting));
        s.drops.insert("b".into(), record(Step::Registering));
        s.save(dir.path()).expect("save");
        let mut back = State::load(dir.path()).expect("load");
        assert_eq!(back, s);
        back.recover();
        assert_eq!(back.drops["a"].step, Step::Queued);
        assert_eq!(back.drops["b"].step, Step::Converted);
    }

    #[test]
    fn a_single_host_journal_is_migrated_to_the_first_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = r#"{"version":"1","drops":{"m":{"path":"/in/m",
            "fingerprint":{"size":1,"mtime_ns":2,"sha256":"ab"},"step":"registered",
            "error":null,"attempts":0,"version_label":"v1","model":"m",
            "outputs":[{"file_type":"q8_0","path":"/o/m.gguf","sha256":"cd",
            "tags":["m:q8_0","m:q8_0-v1"],"registered":true}],"seq":0}},
            "versions":{"m":["v1"]},"next_seq":1}"#;
        std::fs::write(state_path(dir.path()), v1).expect("write");
        let mut s = State::load(dir.path()).expect("v1 reads");
        s.adopt_single_host("http://127.0.0.1:11434");
        let h = &s.drops["m"].hosts["http://127.0.0.1:11434"];
        assert_eq!(h.step, HostStep::Registered);
        assert_eq!(h.models.len(), 2);
        assert_eq!(s.host_versions["http://127.0.0.1:11434"]["m"], ["v1"]);
        s.save(dir.path()).expect("save");
        let text = std::fs::read_to_string(state_path(dir.path())).expect("read");
        assert!(text.contains("\"version\": \"2\""), "{text}");
        assert_eq!(State::load(dir.path()).expect("v2 reads"), s);
    }

    #[test]
    fn a_damaged_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(state_path(dir.path()), b"{\"version\":\"1\",\"dr").expect("write");
        let e = State::load(dir.path()).expect_err("damaged").to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn outputs_damaged_while_down_are_converted_again() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().expect("tempdir");
        let gguf = dir.path().join("m-q4_k_m.gguf");
        std::fs::write(&gguf, b"GGUF complete").expect("write");
        let out = OutputRecord {
            file_type: "q4_k_m".into(),
            path: gguf.clone(),
            sha256: hex::encode(Sha256::digest(b"GGUF complete")),
            tags: vec![],
            registered: false,
            held_back: None,
        };
        let mut s = State::default();
        let mut intact = record(Step::Registering);
        intact.outputs = vec![out.clone()];
        s.drops.insert("intact".into(), intact);
        s.recover();
        assert_eq!(s.drops["intact"].step, Step::Converted);

        // Same size, different bytes: only the hash notices.
        std::fs::write(&gguf, b"GGUF c0mplete").expect("write");
        let mut s = State::default();
        let mut damaged = record(Step::Converted);
        damaged.outputs = vec![out.clone()];
        s.drops.insert("damaged".into(), damaged);
        let mut done = record(Step::Registered);
        done.outputs = vec![OutputRecord {
            registered: true,
            ..out
        }];
        s.drops.insert("done".into(), done);
        s.recover();
        assert_eq!(s.drops["damaged"].step, Step::Queued);
        // Registered outputs live on in Ollama; existing is enough.
        assert_eq!(s.drops["done"].step, Step::Registered);
    }

    #[test]
    fn the_lock_keeps_a_second_daemon_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = lock(dir.path()).expect("first");
        assert!(matches!(lock(dir.path()), Err(DaemonError::Locked(_))));
    }
}
