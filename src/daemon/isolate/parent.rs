//! The daemon's side: start the child with its limits, feed it the job,
//! follow its progress, stop it on shutdown or when it hangs, and turn how
//! it ended into a [`JobOutcome`].

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::reason::{crash_reason, Ending};
use super::{ChildMessage, JobSpec, CHILD_SUBCOMMAND};
use crate::daemon::job::Converted;
use crate::durable;

/// How long a cancelled child gets to stop at a tensor boundary before it
/// is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(20);

/// Lines of the child's stderr kept to explain its death.
const STDERR_TAIL: usize = 64;

/// What a child may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Address-space limit (`RLIMIT_AS`) in bytes; `None`: unlimited.
    pub max_memory: Option<u64>,
    /// Longest time without progress before the child is killed.
    pub timeout: Duration,
}

impl Limits {
    /// The limits for a drop of `drop_size` bytes: `max_memory` if
    /// configured, else twice the machine's memory plus the drop's size —
    /// an address-space limit counts the mapped checkpoint and reserved but
    /// untouched memory, so a legitimate job never meets this default; a
    /// runaway one meets it (or the OOM killer) before the machine swaps to
    /// death.
    pub fn for_drop(max_memory: Option<u64>, timeout: Duration, drop_size: u64) -> Limits {
        let max_memory =
            max_memory.or_else(|| physical_memory().map(|m| 2 * m.max(4 << 30) + drop_size));
        Limits {
            max_memory,
            timeout,
        }
    }
}

fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
    }
    #[cfg(not(unix))]
    None
}

/// How an isolated conversion ended.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Outputs are in place.
    Converted(Converted),
    /// The converter reported an error (bad input, a full disk): one line.
    Failed(String),
    /// The converter died or hung: one line; counts toward the drop's
    /// crash limit.
    Crashed(String),
    /// Stopped for shutdown; the drop is redone next start.
    Cancelled,
}

/// Tensors done and in total, updated as the child reports them (for the
/// daemon's status line).
#[derive(Debug, Default)]
pub struct JobProgress {
    /// Tensors written.
    pub done: AtomicUsize,
    /// Tensors in the model (0 until known).
    pub total: AtomicUsize,
}

/// Runs `job` in a child process of `exe` under `limits`. `cancel` stops
/// it (SIGTERM, then SIGKILL after a grace period). Never fails: every
/// ending is an outcome. The child's temporaries are gone when this
/// returns.
pub async fn convert_isolated(
    exe: &Path,
    job: &JobSpec,
    limits: Limits,
    cancel: &CancellationToken,
    progress: &Arc<JobProgress>,
) -> JobOutcome {
    let mut child = match spawn(exe, limits) {
        Ok(c) => c,
        Err(e) => return JobOutcome::Failed(format!("cannot start the converter: {e}")),
    };
    let pid = child.id().unwrap_or(0);
    let outcome = follow(&mut child, job, limits, cancel, progress).await;
    let removed = durable::remove_temps_of_process(&job.output, pid);
    for p in removed {
        info!(file = %p.display(), "removed the converter's partial file");
    }
    outcome
}

fn spawn(exe: &Path, limits: Limits) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The daemon speaks to systemd, never its children.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true);
    #[cfg(unix)]
    {
        let max_memory = limits.max_memory;
        // SAFETY: `apply_limits` only makes async-signal-safe system calls
        // (setrlimit, prctl), as a pre_exec hook must.
        unsafe {
            cmd.pre_exec(move || apply_limits(max_memory));
        }
    }
    #[cfg(not(unix))]
    let _ = limits;
    cmd.spawn()
}

#[cfg(unix)]
fn apply_limits(max_memory: Option<u64>) -> std::io::Result<()> {
    let set = |resource, bytes: u64| {
        let lim = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: bytes as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    if let Some(bytes) = max_memory {
        set(libc::RLIMIT_AS, bytes)?;
    }
    // A crashing multi-gigabyte converter must not write a core file of
    // its size into the daemon's working directory.
    set(libc::RLIMIT_CORE, 0)?;
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    unsafe {
        // Die with the daemon: a child outliving a `kill -9`ed daemon
        // would keep writing while the next one sweeps temporaries.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    Ok(())
}

/// Forwards the child's stderr to the daemon's, keeping its tail.
async fn forward_stderr(stderr: ChildStderr) -> String {
    let mut tail = VecDeque::with_capacity(STDERR_TAIL);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Vec::from(tail).join("\n")
}

async fn follow(
    child: &mut Child,
    job: &JobSpec,
    limits: Limits,
    cancel: &CancellationToken,
    progress: &JobProgress,
) -> JobOutcome {
    let stderr = child.stderr.take().map(|e| tokio::spawn(forward_stderr(e)));
    if let Some(mut stdin) = child.stdin.take() {
        let job = serde_json::to_vec(job).unwrap_or_default();
        // A child that died at once is explained by its exit status.
        let _ = stdin.write_all(&job).await;
    }
    let Some(stdout) = child.stdout.take() else {
        let _ = child.start_kill();
        return JobOutcome::Failed("the converter has no stdout".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let (mut result, mut error) = (None, None);
    let (mut cancelled, mut timed_out) = (false, false);
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => match serde_json::from_str::<ChildMessage>(&l) {
                    Ok(ChildMessage::Progress { done, total }) => {
                        progress.done.store(done, Ordering::Relaxed);
                        progress.total.store(total, Ordering::Relaxed);
                        if !cancelled {
                            deadline.as_mut().reset(tokio::time::Instant::now() + limits.timeout);
                        }
                    }
                    Ok(ChildMessage::Result { converted }) => result = Some(converted),
                    Ok(ChildMessage::Error { message }) => error = Some(message),
                    Err(e) => warn!("unexpected line from the converter ({e}): {l}"),
                },
                _ => break,
            },
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                terminate(child);
                deadline.as_mut().reset(tokio::time::Instant::now() + CANCEL_GRACE);
            }
            _ = &mut deadline => {
                timed_out = !cancelled;
                let _ = child.start_kill();
                break;
            }
        }
    }
    let status = match tokio::time::timeout(limits.timeout, child.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    let tail = match stderr {
        Some(h) => h.await.unwrap_or_default(),
        None => String::new(),
    };
    let ending = if timed_out {
        Ending::TimedOut(limits.timeout.as_secs())
    } else {
        ending_of(status)
    };
    match (result, error) {
        (Some(c), _) if ending == Ending::Code(0) => JobOutcome::Converted(c),
        _ if cancelled => JobOutcome::Cancelled,
        (_, Some(e)) if e == "cancelled" => JobOutcome::Cancelled,
        (_, Some(e)) if matches!(ending, Ending::Code(_)) => JobOutcome::Failed(e),
        _ => JobOutcome::Crashed(crash_reason(ending, &tail, limits.max_memory)),
    }
}

/// Asks the child to stop at the next tensor.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: kill sends a signal to our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        return;
    }
    let _ = child.start_kill();
}

fn ending_of(status: Option<std::process::ExitStatus>) -> Ending {
    let Some(status) = status else {
        return Ending::Code(-1);
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Ending::Signal(sig);
        }
    }
    Ending::Code(status.code().unwrap_or(-1))
}
