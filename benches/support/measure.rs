//! Wall time and peak RSS of one step, measured in a child process of its
//! own (`wait4`'s `ru_maxrss`), shared by the benchmarks.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one measured step cost.
pub struct Measured {
    pub seconds: f64,
    pub peak_rss_mib: f64,
}

/// The flag that puts a benchmark binary into [`run_measured`]'s child mode;
/// its `main` must check for it first.
pub const MEASURE_FLAG: &str = "--measure";

/// Runs `cmd`, returning wall time and the child's peak RSS. With `log`,
/// the program's stdout and stderr go to that file (through a pipe,
/// llama.cpp's log thread may lose its last lines at exit).
///
/// The child is started by a fresh, small copy of this binary (`--measure`)
/// rather than by this process: Linux carries the RSS high-water mark of
/// the process that execs into the child's `ru_maxrss`, and this process
/// may have held large buffers, which would hide any child's peak below
/// that.
pub fn measure(cmd: &Command, log: Option<&Path>) -> Measured {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("self"));
    child.arg(MEASURE_FLAG).arg(report.path());
    if let Some(log) = log {
        let file = std::fs::File::create(log).expect("log file");
        let err = file.try_clone().expect("log file");
        child.stdout(Stdio::from(file)).stderr(Stdio::from(err));
    }
    let status = child
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .status()
        .expect("spawn");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed: {status}");
    let kib: f64 = std::fs::read_to_string(report.path())
        .expect("peak RSS report")
        .trim()
        .parse()
        .expect("peak RSS in KiB");
    Measured {
        seconds,
        peak_rss_mib: kib / 1024.0,
    }
}

/// Child mode (`--measure REPORT PROGRAM ARGS...`): runs the program,
/// writes its peak RSS in KiB (`wait4`'s `ru_maxrss`) to REPORT, and
/// exits non-zero if the program failed.
pub fn run_measured(report: &str, program: &str, args: &[String]) {
    // Reaped below with wait4, which also reports the child's peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(program).args(args).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on our own child; `usage` is a valid out pointer.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    std::fs::write(report, usage.ru_maxrss.to_string()).expect("writing the report");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        std::process::exit(1);
    }
}
