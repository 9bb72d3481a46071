//! Crash-safe files: write to a temporary name in the same directory,
//! `sync_all`, rename over the final name, then fsync the directory.
//!
//! Why this order: until the rename, the final name either does not exist or
//! holds the previous complete version; the rename is atomic on POSIX file
//! systems; the directory fsync makes the rename itself survive a power cut.
//! A `kill -9` can leave only a temporary file behind, never a half-written
//! final file. Temporary names start with `.` and end in
//! [`TEMP_SUFFIX`], so watchers ignore them and [`remove_stale_temps`] can
//! sweep them at start-up.
//!
//! This module does not know what the bytes mean.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of every temporary file kvant creates.
pub const TEMP_SUFFIX: &str = ".kvant-tmp";

/// The temporary name used while `final_path` is being written:
/// `.<file name>.<pid>.kvant-tmp` in the same directory.
pub fn temp_path_for(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let tmp = format!(".{name}.{}{TEMP_SUFFIX}", std::process::id());
    final_path.with_file_name(tmp)
}

/// True when `name` is a file [`temp_path_for`] named (still being
/// written; its final name appears when it is committed).
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().ends_with(TEMP_SUFFIX)
}

/// A file being written under a temporary name. [`AtomicFile::commit`]
/// makes it appear under its final name; dropping it uncommitted removes the
/// temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    final_path: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `final_path` (truncating a leftover
    /// one of this process).
    pub fn create(final_path: &Path) -> io::Result<AtomicFile> {
        let temp = temp_path_for(final_path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            final_path: final_path.to_owned(),
        })
    }

    /// The file to write into.
    pub fn file(&mut self) -> &mut File {
        // `file` is only None after commit, which consumes self.
        self.file.as_mut().expect("AtomicFile used after commit")
    }

    /// The final path this file will appear under.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Flushes to disk, renames over the final name and syncs the directory.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        fs::rename(&self.temp, &self.final_path)?;
        sync_parent_dir(&self.final_path)?;
        Ok(self.final_path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` atomically (temp, fsync, rename, dir fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.file().write_all(bytes)?;
    f.commit()?;
    Ok(())
}

/// Asks the kernel to start writing `range` of `file` to disk now,
/// without waiting for them (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`).
/// A large output written this way overlaps its disk writes with the rest of
/// the job, so the fsync in [`AtomicFile::commit`] finds little left to do.
/// A hint only: durability still comes from that fsync, and elsewhere this
/// does nothing.
pub fn start_writeback(file: &File, range: std::ops::Range<u64>) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            i64::try_from(range.start),
            i64::try_from(range.end.saturating_sub(range.start)),
        ) else {
            return;
        };
        // SAFETY: a valid open descriptor and a byte range of it; the call
        // only schedules writeback and touches no memory of ours. Its
        // result is ignored: it is a hint.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, range);
}

/// fsyncs the directory holding `path`, so a rename into it is durable.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Removes temporary files a killed kvant left in `dir` (not recursive).
/// Returns the paths removed.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            let p = entry.path();
            fs::remove_file(&p)?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Removes the temporaries process `pid` left in `dir` and in the
/// folders directly under it (a conversion child that died mid-write),
/// sparing other processes' files in progress. Returns the paths removed;
/// a file that cannot be removed is left for the start-up sweep.
pub fn remove_temps_of_process(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let suffix = format!(".{pid}{TEMP_SUFFIX}");
    let mut removed = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    if let Ok(rd) = fs::read_dir(dir) {
        dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                && name.ends_with(&suffix)
                && fs::remove_file(entry.path()).is_ok()
            {
                removed.push(entry.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("model.gguf");
        {
            let mut f = AtomicFile::create(&target).expect("create");
            f.file().write_all(b"half").expect("write");
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn commit_replaces_the_final_file_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("state.json");
        write_atomic(&target, b"one").expect("first");
        write_atomic(&target, b"two").expect("second");
        assert_eq!(fs::read(&target).expect("read"), b"two");
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 1);
    }

    #[test]
    fn only_the_dead_process_temps_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m");
        fs::create_dir(&model).expect("mkdir");
        let dead = model.join(format!(".m.gguf.41{TEMP_SUFFIX}"));
        let alive = model.join(format!(".m.report.json.7{TEMP_SUFFIX}"));
        fs::write(&dead, b"half").expect("write");
        fs::write(&alive, b"in progress").expect("write");
        assert_eq!(remove_temps_of_process(dir.path(), 41), vec![dead]);
        assert!(alive.exists());
    }

    #[test]
    fn stale_temps_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join(format!(".x.gguf.123{TEMP_SUFFIX}"));
        fs::write(&stale, b"junk").expect("write");
        fs::write(dir.path().join("keep.gguf"), b"k").expect("write");
        let removed = remove_stale_temps(dir.path()).expect("sweep");
        assert_eq!(removed, vec![stale]);
        assert!(dir.path().join("keep.gguf").exists());
    }
}
