//! The conversion child (`kvant __convert-job`): reads one [`JobSpec`] on
//! stdin, converts, and reports progress and the outcome as JSON lines on
//! stdout. SIGTERM cancels it cleanly (the outputs' temporaries are
//! removed by their own drop guards), which is how the daemon stops it at
//! shutdown.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::fault::{after_chunk, after_tensor, fault_for};
use super::{ChildMessage, JobSpec};
use crate::convert::Progress;
use crate::daemon::job::convert_drop;
use crate::eval::ChunkProgress;

/// Set by SIGTERM; the conversion checks it between tensors.
static CANCEL: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigterm(_: libc::c_int) {
    // An atomic store is async-signal-safe.
    CANCEL.store(true, Ordering::Relaxed);
}

fn install_sigterm_handler() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn emit(msg: &ChildMessage) {
    // The parent gone means nobody listens: nothing to do about it.
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Progress as JSON lines, and the place test faults fire.
struct LineProgress {
    total: AtomicUsize,
    done: AtomicUsize,
    fault: Option<String>,
}

impl Progress for LineProgress {
    fn start(&self, total_tensors: usize) {
        self.total.store(total_tensors, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        emit(&ChildMessage::Progress {
            done: 0,
            total: total_tensors,
        });
    }

    fn tensor_done(&self, _name: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        emit(&ChildMessage::Progress {
            done,
            total: self.total.load(Ordering::Relaxed),
        });
        after_tensor(self.fault.as_deref(), done);
    }
}

/// Measuring reports chunks as progress too, so a long evaluation is not
/// taken for a hang.
impl ChunkProgress for LineProgress {
    fn start(&self, n_chunks: usize) {
        self.total.store(n_chunks, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        emit(&ChildMessage::Progress {
            done: 0,
            total: n_chunks,
        });
    }

    fn chunk_done(&self, index: usize, _ppl: f64) {
        emit(&ChildMessage::Progress {
            done: index + 1,
            total: self.total.load(Ordering::Relaxed),
        });
        after_chunk(self.fault.as_deref());
    }
}

/// A full disk named as such, with the folder: the drop is retried when
/// space is back.
fn explain(message: String, output: &Path) -> String {
    if message.contains("os error 28") || message.contains("No space left on device") {
        format!("no space left on device in {}: {message}", output.display())
    } else {
        message
    }
}

fn read_job() -> Result<JobSpec, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading the job: {e}"))?;
    serde_json::from_str(&input).map_err(|e| format!("bad job: {e}"))
}

/// The child's main: exit 0 when the conversion succeeded, 1 when it
/// failed cleanly (the reason was sent as an `error` line).
pub fn run_convert_job() -> ExitCode {
    install_sigterm_handler();
    let outcome = read_job().and_then(|job| {
        let name = job
            .drop
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let progress = LineProgress {
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            fault: fault_for(&name),
        };
        convert_drop(&job, &progress, &progress, &CANCEL).map_err(|e| explain(e, &job.output))
    });
    match outcome {
        Ok(converted) => {
            emit(&ChildMessage::Result { converted });
            ExitCode::SUCCESS
        }
        Err(message) => {
            emit(&ChildMessage::Error { message });
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_names_the_folder() {
        let e = explain(
            "/o/m/.m.gguf.1.kvant-tmp: No space left on device (os error 28)".into(),
            Path::new("/o"),
        );
        assert!(e.starts_with("no space left on device in /o: "), "{e}");
        assert_eq!(explain("bad".into(), Path::new("/o")), "bad");
    }
}
