//! One fuzzing process: mutate, run, measure, until the time is up.
//!
//! The input being run is published in [`CURRENT_INPUT`] so that an abort
//! (a stack overflow ends in one) can still save it from a signal handler,
//! and a watchdog thread can save it and exit when it runs too long.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::fuzz::Target;

use crate::alloc;
use crate::mutate::{mutate, Rng};

/// The input now running (pointer, length), or null between inputs.
static CURRENT_INPUT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
/// Milliseconds since `EPOCH` when the current input started, 0 if idle.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
/// The file a crashing input is written to (an open descriptor).
static CRASH_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Exit status of a worker that stopped at a hang (its input saved).
pub const HANG_EXIT: i32 = 3;

/// Corpus entries kept beyond the seeds, and the largest one kept.
const MAX_CORPUS: usize = 400;
const MAX_KEPT_INPUT: usize = 2 << 20;
/// Inputs smaller than this do not count for the allocation ratio: fixed
/// costs dominate them.
const RATIO_MIN_INPUT: usize = 1024;

/// What one worker did.
#[derive(Debug, Default)]
pub struct Stats {
    pub execs: u64,
    pub panics: HashSet<String>,
    pub worst_ratio: f64,
    pub worst_ratio_at: (usize, usize),
    pub max_peak: usize,
    pub corpus: usize,
}

impl Stats {
    /// The line the supervisor parses.
    pub fn line(&self) -> String {
        format!(
            "STATS execs={} panics={} worst_ratio={:.2} ratio_peak={} ratio_input={} max_peak={} corpus={}",
            self.execs,
            self.panics.len(),
            self.worst_ratio,
            self.worst_ratio_at.0,
            self.worst_ratio_at.1,
            self.max_peak,
            self.corpus
        )
    }
}

/// A worker's settings.
pub struct Job {
    pub target: Target,
    pub fixtures: PathBuf,
    pub out: PathBuf,
    pub seconds: u64,
    pub timeout: Duration,
    pub seed: u64,
}

fn save(dir: &Path, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let p = dir.join(format!("{:016x}.bin", h.finish()));
    let _ = std::fs::write(&p, input);
    p
}

/// Seeds are made once per target and kept in `out/seeds`.
fn load_seeds(job: &Job, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
    let dir = job.out.join("seeds");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut seeds: Vec<Vec<u8>> = rd
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect();
        if !seeds.is_empty() {
            seeds.sort();
            return Ok(seeds);
        }
    }
    let seeds = job.target.seeds(&job.fixtures, scratch)?;
    if seeds.is_empty() {
        return Err("no seeds".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for s in &seeds {
        save(&dir, s);
    }
    Ok(seeds)
}

/// Normalises an error into a feedback key: digits dropped, cut short.
fn feedback_key(e: &str) -> String {
    e.chars()
        .filter(|c| !c.is_ascii_digit())
        .take(100)
        .collect()
}

/// Runs the job; returns its stats.
pub fn run(job: &Job) -> Result<Stats, String> {
    let scratch = job.out.join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let corpus_seeds = load_seeds(job, &scratch)?;
    for dir in ["crashes", "hangs"] {
        std::fs::create_dir_all(job.out.join(dir)).map_err(|e| e.to_string())?;
    }
    install_crash_saver(&job.out.join("crashes").join("last-abort.bin"));
    start_watchdog(job.timeout, job.out.join("hangs"));
    std::panic::set_hook(Box::new(|_| {}));

    let mut corpus = corpus_seeds;
    let n_seeds = corpus.len();
    let mut seen: HashSet<String> = HashSet::new();
    let mut rng = Rng::new(job.seed);
    let mut stats = Stats::default();
    let dict = job.target.dictionary();
    let deadline = Instant::now() + Duration::from_secs(job.seconds);
    let epoch = Instant::now();
    // Every seed once, unmutated, then mutants.
    let mut i = 0usize;
    while Instant::now() < deadline {
        let input = if i < n_seeds {
            corpus[i].clone()
        } else {
            let a = &corpus[rng.below(corpus.len())];
            let b = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, a, b, dict)
        };
        i += 1;
        CURRENT_LEN.store(input.len(), Ordering::SeqCst);
        CURRENT_INPUT.store(input.as_ptr() as *mut u8, Ordering::SeqCst);
        STARTED_MS.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let base = alloc::start();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.target.run(&input, &scratch)
        }));
        let peak = alloc::peak_since(base);
        STARTED_MS.store(0, Ordering::SeqCst);
        CURRENT_INPUT.store(std::ptr::null_mut(), Ordering::SeqCst);
        stats.execs += 1;
        stats.max_peak = stats.max_peak.max(peak);
        if input.len() >= RATIO_MIN_INPUT {
            let ratio = peak as f64 / input.len() as f64;
            if ratio > stats.worst_ratio {
                stats.worst_ratio = ratio;
                stats.worst_ratio_at = (peak, input.len());
            }
        }
        match outcome {
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let p = save(&job.out.join("crashes"), &input);
                if stats.panics.insert(feedback_key(&msg)) {
                    eprintln!("CRASH panic '{msg}', input saved as {}", p.display());
                }
            }
            Ok(result) => {
                let key = feedback_key(&result.err().unwrap_or_default());
                if seen.insert(key) && input.len() <= MAX_KEPT_INPUT && i > n_seeds {
                    if corpus.len() < n_seeds + MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let slot = n_seeds + rng.below(MAX_CORPUS);
                        corpus[slot] = input;
                    }
                }
            }
        }
    }
    stats.corpus = corpus.len();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(stats)
}

/// A thread that saves the running input and ends the worker when one
/// input has run longer than `timeout`.
fn start_watchdog(timeout: Duration, hangs: PathBuf) {
    let epoch = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let started = STARTED_MS.load(Ordering::SeqCst);
        if started == 0 {
            continue;
        }
        let now = epoch.elapsed().as_millis() as u64 + 1;
        if now.saturating_sub(started) > timeout.as_millis() as u64 {
            let ptr = CURRENT_INPUT.load(Ordering::SeqCst);
            if !ptr.is_null() {
                let len = CURRENT_LEN.load(Ordering::SeqCst);
                // SAFETY: the main thread keeps the input alive and
                // unchanged while STARTED_MS is set (it is stuck in it).
                let input = unsafe { std::slice::from_raw_parts(ptr, len) };
                let p = save(&hangs, input);
                eprintln!("HANG over {timeout:?}, input saved as {}", p.display());
            }
            let _ = std::io::stderr().flush();
            std::process::exit(HANG_EXIT);
        }
    });
}

#[cfg(target_os = "linux")]
extern "C" fn on_fatal_signal(sig: libc::c_int) {
    let ptr = CURRENT_INPUT.load(Ordering::SeqCst);
    let fd = CRASH_FD.load(Ordering::SeqCst);
    if !ptr.is_null() && fd != usize::MAX {
        let len = CURRENT_LEN.load(Ordering::SeqCst);
        // SAFETY: write(2) is async-signal-safe; the buffer is the input
        // the main thread was running when it died.
        unsafe {
            libc::write(fd as libc::c_int, ptr as *const libc::c_void, len);
        }
    }
    // SAFETY: back to the default action, then die of the same signal so
    // the supervisor sees it.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Saves the running input to `path` if the process aborts (a stack
/// overflow ends in SIGABRT after Rust's own handler reports it).
#[cfg(target_os = "linux")]
fn install_crash_saver(path: &Path) {
    use std::os::fd::IntoRawFd;
    let Ok(f) = std::fs::File::create(path) else {
        return;
    };
    CRASH_FD.store(f.into_raw_fd() as usize, Ordering::SeqCst);
    for sig in [libc::SIGABRT, libc::SIGILL, libc::SIGFPE] {
        // SAFETY: installs a handler that only calls async-signal-safe
        // functions.
        unsafe {
            libc::signal(sig, on_fatal_signal as *const () as libc::sighandler_t);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn install_crash_saver(_path: &Path) {}
