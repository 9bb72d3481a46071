//! Deciding when a drop is complete: its size and mtime (of every file, for
//! a folder) have not changed for the settle time, or it was renamed into
//! place, or a `*.done` marker appeared.
//!
//! The clock is a parameter (`now: Instant`), so the rule is tested without
//! sleeping. Invariant: a drop whose snapshot changed, or that still holds an
//! in-progress name (`x.part`), is never ready.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::filter::{is_checkpoint_name, is_ignored_name, is_in_progress_name};

/// Most files a folder drop may hold (a hostile inbox cannot make kvant walk
/// forever).
pub const MAX_FILES: usize = 10_000;
/// Deepest folder level walked inside a folder drop.
pub const MAX_DEPTH: usize = 6;

/// One file's observable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// What a drop looks like right now: every file's size and mtime.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Files by path relative to the drop (`""` for a single-file drop).
    pub files: BTreeMap<PathBuf, FileStat>,
    /// A file is still being written (an in-progress name in a folder).
    pub in_progress: bool,
    /// A `*.done` marker exists inside a folder drop.
    pub done_marker: bool,
    /// The drop holds something convertible (a checkpoint file or a folder
    /// with at least one file).
    pub usable: bool,
}

impl Snapshot {
    /// Total bytes.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// The newest mtime.
    pub fn newest_mtime_ns(&self) -> u64 {
        self.files.values().map(|f| f.mtime_ns).max().unwrap_or(0)
    }
}

fn stat(meta: &fs::Metadata) -> FileStat {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    FileStat {
        size: meta.len(),
        mtime_ns,
    }
}

/// Looks at a drop (a checkpoint file or a folder) without reading content.
/// A missing drop is `Err(NotFound)`.
pub fn snapshot(drop: &Path) -> io::Result<Snapshot> {
    let meta = fs::symlink_metadata(drop)?;
    let mut snap = Snapshot::default();
    if meta.is_file() {
        let name = drop.file_name().and_then(|n| n.to_str()).unwrap_or("");
        snap.usable = is_checkpoint_name(name);
        snap.files.insert(PathBuf::new(), stat(&meta));
        return Ok(snap);
    }
    if !meta.is_dir() {
        return Ok(snap);
    }
    let mut stack = vec![(drop.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if is_in_progress_name(&name) {
                snap.in_progress = true;
                continue;
            }
            if name.ends_with(".done") {
                snap.done_marker = true;
                continue;
            }
            if is_ignored_name(&name) {
                continue;
            }
            if meta.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            if snap.files.len() >= MAX_FILES {
                return Err(io::Error::other(format!(
                    "{}: more than {MAX_FILES} files",
                    drop.display()
                )));
            }
            let rel = path.strip_prefix(drop).unwrap_or(&path).to_path_buf();
            snap.files.insert(rel, stat(&meta));
        }
    }
    snap.usable = !snap.files.is_empty();
    Ok(snap)
}

#[derive(Debug)]
struct Pending {
    snapshot: Option<Snapshot>,
    since: Instant,
    forced: bool,
    order: u64,
}

/// Drops seen but not yet complete, with the moment each last changed.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    pending: BTreeMap<PathBuf, Pending>,
    next_order: u64,
}

impl Settler {
    /// A settler that needs `settle` of stillness.
    pub fn new(settle: Duration) -> Settler {
        Settler {
            settle,
            pending: BTreeMap::new(),
            next_order: 0,
        }
    }

    /// Starts (or keeps) watching `drop`; an event restarts nothing by itself,
    /// only a changed snapshot does.
    pub fn touch(&mut self, drop: &Path, now: Instant) {
        let order = self.next_order;
        let p = self
            .pending
            .entry(drop.to_path_buf())
            .or_insert_with(|| Pending {
                snapshot: None,
                since: now,
                forced: false,
                order,
            });
        if p.order == order {
            self.next_order += 1;
        }
    }

    /// The drop was renamed into place or its `*.done` marker appeared: it
    /// is complete as soon as it holds no in-progress file.
    pub fn force(&mut self, drop: &Path, now: Instant) {
        self.touch(drop, now);
        if let Some(p) = self.pending.get_mut(drop) {
            p.forced = true;
        }
    }

    /// Drops still waiting, in the order they were first seen (so a burst
    /// is processed in arrival order).
    pub fn pending(&self) -> Vec<PathBuf> {
        let mut v: Vec<(&u64, &PathBuf)> =
            self.pending.iter().map(|(k, p)| (&p.order, k)).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records what `drop` looks like at `now` (`None`: it vanished) and
    /// says whether it is complete. A complete drop is forgotten, so it is
    /// reported once; a vanished one is forgotten too.
    pub fn observe(&mut self, drop: &Path, seen: Option<Snapshot>, now: Instant) -> bool {
        let Some(p) = self.pending.get_mut(drop) else {
            return false;
        };
        let Some(seen) = seen else {
            self.pending.remove(drop);
            return false;
        };
        if p.snapshot.as_ref() != Some(&seen) {
            p.snapshot = Some(seen.clone());
            p.since = now;
            // A forced drop is still complete if it only now became visible.
            if !(p.forced && !seen.in_progress && seen.usable) {
                return false;
            }
        }
        let complete = seen.usable
            && !seen.in_progress
            && (p.forced
                || seen.done_marker
                || now.saturating_duration_since(p.since) >= self.settle);
        if complete {
            self.pending.remove(drop);
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(size: u64, mtime: u64) -> Snapshot {
        let mut s = Snapshot {
            usable: true,
            ..Snapshot::default()
        };
        s.files.insert(
            PathBuf::new(),
            FileStat {
                size,
                mtime_ns: mtime,
            },
        );
        s
    }

    #[test]
    fn ready_only_after_a_full_still_settle_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let d = Path::new("/in/ckpt.pt");
        let mut st = Settler::new(s);
        st.touch(d, t0);
        assert!(!st.observe(d, Some(snap(10, 1)), t0));
        assert!(!st.observe(d, Some(snap(10, 1)), t0 + Duration::from_secs(4)));
        // A second chunk lands: the clock restarts.
        assert!(!st.observe(d, Some(snap(20, 2)), t0 + Duration::from_secs(4)));
        assert!(!st.observe(d, Some(snap(20, 2)), t0 + Duration::from_secs(8)));
        assert!(st.observe(d, Some(snap(20, 2)), t0 + Duration::from_secs(9)));
        // Reported once.
        assert!(!st.observe(d, Some(snap(20, 2)), t0 + Duration::from_secs(20)));
        assert!(st.is_empty());
    }

    #[test]
    fn pending_keeps_arrival_order() {
        let t0 = Instant::now();
        let mut st = Settler::new(Duration::from_secs(1));
        for n in ["/in/z.pt", "/in/a.pt", "/in/m.pt", "/in/z.pt"] {
            st.touch(Path::new(n), t0);
        }
        let order: Vec<PathBuf> = ["/in/z.pt", "/in/a.pt", "/in/m.pt"]
            .map(PathBuf::from)
            .into();
        assert_eq!(st.pending(), order);
    }

    #[test]
    fn same_size_new_mtime_restarts_the_clock() {
        let t0 = Instant::now();
        let d = Path::new("/in/a.pt");
        let mut st = Settler::new(Duration::from_secs(2));
        st.touch(d, t0);
        st.observe(d, Some(snap(10, 1)), t0);
        assert!(!st.observe(d, Some(snap(10, 2)), t0 + Duration::from_secs(3)));
        assert!(st.observe(d, Some(snap(10, 2)), t0 + Duration::from_secs(5)));
    }

    #[test]
    fn rename_or_marker_is_ready_at_once_unless_in_progress() {
        let t0 = Instant::now();
        let d = Path::new("/in/run");
        let mut st = Settler::new(Duration::from_secs(60));
        st.force(d, t0);
        let mut busy = snap(1, 1);
        busy.in_progress = true;
        assert!(!st.observe(d, Some(busy), t0));
        assert!(st.observe(d, Some(snap(1, 1)), t0));

        let mut marked = snap(3, 3);
        marked.done_marker = true;
        st.touch(d, t0);
        st.observe(d, Some(marked.clone()), t0);
        assert!(st.observe(d, Some(marked), t0));
    }

    #[test]
    fn unusable_or_vanished_drops_never_ready() {
        let t0 = Instant::now();
        let d = Path::new("/in/x");
        let mut st = Settler::new(Duration::from_secs(1));
        st.touch(d, t0);
        let empty = Snapshot::default();
        st.observe(d, Some(empty.clone()), t0);
        assert!(!st.observe(d, Some(empty), t0 + Duration::from_secs(10)));
        assert!(!st.observe(d, None, t0 + Duration::from_secs(11)));
        assert!(st.is_empty());
    }

    #[test]
    fn folder_snapshot_sees_every_file_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        fs::create_dir_all(run.join("sub")).unwrap();
        fs::write(run.join("config.json"), b"{}").unwrap();
        fs::write(run.join("sub/model.safetensors"), b"abc").unwrap();
        fs::write(run.join(".DS_Store"), b"x").unwrap();
        let s = snapshot(&run).unwrap();
        assert_eq!(s.files.len(), 2);
        assert_eq!(s.total_size(), 5);
        assert!(s.usable && !s.in_progress && !s.done_marker);
        fs::write(run.join("model.safetensors.part"), b"x").unwrap();
        assert!(snapshot(&run).unwrap().in_progress);
        fs::write(run.join("x.done"), b"").unwrap();
        assert!(snapshot(&run).unwrap().done_marker);
    }
}
