//! Noticing finished drops in the inbox.
//!
//! A drop is a checkpoint file (`*.pt`, `*.pth`, `*.bin`, `*.safetensors`,
//! `*.gguf`) or a folder (one model per folder) directly in the inbox. It
//! is ready when its size and mtime have not changed for the settle time,
//! when it was renamed into place, or when a `<name>.done` marker exists.
//! Temporary names (`.tmp`, `.part`, `~`, `.swp`, `.crdownload`, dot-files,
//! kvant's own temporaries) are ignored, and a folder that still holds one
//! is not ready.
//!
//! The notify callback only wakes the daemon (a full wake channel already
//! means "rescan"); every wake rescans the whole inbox, so a missed or
//! merged event can never lose a drop. This module does not read
//! checkpoint contents (except to fingerprint a ready drop) and does not
//! know that Ollama exists.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// File extensions of checkpoint drops.
pub const DROP_EXTENSIONS: [&str; 5] = ["pt", "pth", "bin", "safetensors", "gguf"];

/// True for names that are (or may be) half-written or hidden.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".tmp",
            ".part",
            ".swp",
            ".crdownload",
            ".partial",
            ".download",
        ]
        .iter()
        .any(|s| name.to_ascii_lowercase().ends_with(s))
}

/// A drop seen in the inbox, with its current size and mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name in the inbox.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Total bytes of its files.
    pub size: u64,
    /// Newest mtime of its files (ns).
    pub mtime_ns: u64,
    /// A `<name>.done` marker exists.
    pub done_marker: bool,
    /// A folder drop still holds temporary files.
    pub incomplete: bool,
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn walk(dir: &Path, size: &mut u64, mtime: &mut u64, incomplete: &mut bool, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = e.metadata() else { continue };
        if is_temporary(&name) {
            *incomplete = true;
            continue;
        }
        *mtime = (*mtime).max(mtime_ns(&m));
        if m.is_dir() && depth < 4 {
            walk(&e.path(), size, mtime, incomplete, depth + 1);
        } else if m.is_file() {
            *size += m.len();
        }
    }
}

/// Lists the drops in `inbox` (not recursive beyond each drop).
pub fn scan(inbox: &Path) -> std::io::Result<Vec<Candidate>> {
    let mut names = HashSet::new();
    let mut entries = Vec::new();
    for e in std::fs::read_dir(inbox)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        names.insert(name.clone());
        entries.push((name, e));
    }
    let mut out = Vec::new();
    for (name, e) in entries {
        if is_temporary(&name) || name.ends_with(".done") || name == "kvant.toml" {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        let (mut size, mut mtime, mut incomplete) = (0u64, mtime_ns(&m), false);
        if m.is_dir() {
            walk(&e.path(), &mut size, &mut mtime, &mut incomplete, 0);
        } else {
            let ext_ok = Path::new(&name)
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| DROP_EXTENSIONS.iter().any(|d| x.eq_ignore_ascii_case(d)));
            if !ext_ok {
                continue;
            }
            size = m.len();
        }
        out.push(Candidate {
            done_marker: names.contains(&format!("{name}.done")),
            name,
            path: e.path(),
            size,
            mtime_ns: mtime,
            incomplete,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Decides when a candidate has settled.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    seen: HashMap<String, (u64, u64, Instant)>,
}

impl Settler {
    /// A settler with the given quiet time.
    pub fn new(settle: Duration) -> Settler {
        Settler {
            settle,
            seen: HashMap::new(),
        }
    }

    /// True when `c` is ready at `now`. `renamed` says it was renamed
    /// into place (complete by construction).
    pub fn ready(&mut self, c: &Candidate, now: Instant, renamed: bool) -> bool {
        if c.incomplete {
            self.seen.remove(&c.name);
            return false;
        }
        if c.done_marker || renamed {
            return true;
        }
        let entry = self
            .seen
            .entry(c.name.clone())
            .or_insert((c.size, c.mtime_ns, now));
        if entry.0 != c.size || entry.1 != c.mtime_ns {
            *entry = (c.size, c.mtime_ns, now);
            return false;
        }
        now.duration_since(entry.2) >= self.settle
    }
}

/// SHA-256 over a drop's files (relative names and contents, in order).
/// Reading a multi-gigabyte drop takes a while: setting `cancel` (daemon
/// shutdown) stops it within one 1 MiB read with an `Interrupted` error.
pub fn content_hash(path: &Path, cancel: &AtomicBool) -> std::io::Result<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        fn collect(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
            for e in std::fs::read_dir(dir)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if is_temporary(&name) {
                    continue;
                }
                let p = e.path();
                if p.is_dir() && depth < 4 {
                    collect(&p, out, depth + 1)?;
                } else if p.is_file() {
                    out.push(p);
                }
            }
            Ok(())
        }
        collect(path, &mut files, 0)?;
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let rel = f
            .strip_prefix(path)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        h.update(rel.as_bytes());
        h.update([0u8]);
        let mut file = std::fs::File::open(&f)?;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "hashing cancelled",
                ));
            }
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A notify watcher that wakes the daemon and remembers what was renamed
/// into place.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    renamed: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    /// Watches `inbox`; `wake` is signalled (never blocking) on any event.
    pub fn start(inbox: &Path, wake: tokio::sync::mpsc::Sender<()>) -> notify::Result<Watcher> {
        use notify::event::{EventKind, ModifyKind, RenameMode};
        use notify::Watcher as _;
        let renamed: Arc<Mutex<HashSet<String>>> = Arc::default();
        let r = renamed.clone();
        let inbox_owned = inbox.to_owned();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if matches!(
                    ev.kind,
                    EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                ) {
                    for p in &ev.paths {
                        if p.parent() == Some(inbox_owned.as_path()) {
                            if let (Some(n), Ok(mut set)) = (p.file_name(), r.lock()) {
                                set.insert(n.to_string_lossy().into_owned());
                            }
                        }
                    }
                }
            }
            // Full means a wake is already pending: the rescan covers it.
            let _ = wake.try_send(());
        })?;
        w.watch(inbox, notify::RecursiveMode::Recursive)?;
        Ok(Watcher { _inner: w, renamed })
    }

    /// Takes (and forgets) whether `name` was renamed into place.
    pub fn take_renamed(&self, name: &str) -> bool {
        self.renamed
            .lock()
            .map(|mut s| s.remove(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(size: u64, mtime: u64) -> Candidate {
        Candidate {
            name: "m.pt".into(),
            path: "/in/m.pt".into(),
            size,
            mtime_ns: mtime,
            done_marker: false,
            incomplete: false,
        }
    }

    #[test]
    fn ready_only_after_quiet_time_and_restarts_on_change() {
        let mut s = Settler::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(!s.ready(&cand(10, 1), t0, false));
        assert!(!s.ready(&cand(10, 1), t0 + Duration::from_secs(4), false));
        // still growing: the clock restarts
        assert!(!s.ready(&cand(20, 2), t0 + Duration::from_secs(6), false));
        assert!(!s.ready(&cand(20, 2), t0 + Duration::from_secs(10), false));
        assert!(s.ready(&cand(20, 2), t0 + Duration::from_secs(11), false));
    }

    #[test]
    fn markers_and_renames_skip_the_wait_but_incomplete_folders_never_are_ready() {
        let mut s = Settler::new(Duration::from_secs(60));
        let now = Instant::now();
        assert!(s.ready(&cand(1, 1), now, true));
        let mut c = cand(1, 1);
        c.done_marker = true;
        assert!(s.ready(&c, now, false));
        c.incomplete = true;
        assert!(!s.ready(&c, now, true));
    }

    #[test]
    fn temporary_names_are_ignored() {
        for n in [
            ".ckpt.pt",
            "ckpt.pt.part",
            "x~",
            "a.swp",
            "b.crdownload",
            ".model.gguf.1.kvant-tmp",
            "c.tmp",
        ] {
            assert!(is_temporary(n), "{n}");
        }
        assert!(!is_temporary("ckpt.pt"));
    }

    #[test]
    fn hashing_stops_when_cancelled_and_names_a_vanished_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("m.pt");
        std::fs::write(&f, vec![7u8; 3 << 20]).expect("write");
        let go = AtomicBool::new(false);
        let a = content_hash(&f, &go).expect("hash");
        assert_eq!(a, content_hash(&f, &go).expect("hash again"));
        let stop = AtomicBool::new(true);
        let err = content_hash(&f, &stop).expect_err("cancelled");
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
        std::fs::remove_file(&f).expect("remove");
        let err = content_hash(&f, &go).expect_err("gone");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
