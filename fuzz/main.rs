//! kvant's fuzzing runner: structured mutation of the real fixtures against
//! every reader of hostile input (`kvant::fuzz::Target`), on the stable
//! toolchain. See README "Fuzzing" and `scripts/fuzz.sh`.
//!
//! ```text
//! kvant-fuzz TARGET --seconds N --fixtures DIR --out DIR [--timeout S] [--seed N]
//! kvant-fuzz TARGET --replay INPUT     # one input, panics shown
//! ```
//!
//! The supervisor runs workers (this binary with `--worker`) until the
//! time is up, restarting one that dies: a panic is caught in the worker,
//! an abort or fatal signal (a stack overflow) kills it and its input is
//! kept under `OUT/TARGET/crashes/`, an input running past the time bound
//! is kept under `hangs/`. The last line reports executions, unique
//! crashes, hangs and the worst peak heap per input byte; the exit status
//! is 1 if anything crashed or hung.

mod alloc;
mod mutate;
mod worker;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kvant::fuzz::Target;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn usage() -> String {
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    format!(
        "usage: kvant-fuzz TARGET --seconds N --fixtures DIR --out DIR [--timeout SECONDS] [--seed N]\ntargets: {}",
        names.join(" ")
    )
}

struct Args {
    job: worker::Job,
    worker: bool,
    replay: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let name = args.next().ok_or_else(usage)?;
    let target =
        Target::from_name(&name).ok_or_else(|| format!("unknown target {name}\n{}", usage()))?;
    let mut job = worker::Job {
        target,
        fixtures: PathBuf::from("../shared/fixtures"),
        out: PathBuf::from("target/fuzz"),
        seconds: 10,
        timeout: Duration::from_secs(10),
        seed: 1,
    };
    let mut worker = false;
    let mut replay = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--seconds" => job.seconds = number(value()?)?,
            "--timeout" => job.timeout = Duration::from_secs(number(value()?)?),
            "--seed" => job.seed = number(value()?)?,
            "--fixtures" => job.fixtures = PathBuf::from(value()?),
            "--out" => job.out = PathBuf::from(value()?),
            "--worker" => worker = true,
            "--replay" => replay = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    if !worker {
        job.out = job.out.join(target.name());
    }
    Ok(Args {
        job,
        worker,
        replay,
    })
}

/// The campaign's totals over every worker.
#[derive(Default)]
struct Totals {
    execs: u64,
    crashes: u64,
    hangs: u64,
    worst_ratio: f64,
    ratio_peak: u64,
    ratio_input: u64,
    max_peak: u64,
    corpus: u64,
}

impl Totals {
    fn add_stats_line(&mut self, line: &str) {
        let field = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0.0)
        };
        self.execs += field("execs") as u64;
        self.crashes += field("panics") as u64;
        let ratio = field("worst_ratio");
        if ratio > self.worst_ratio {
            self.worst_ratio = ratio;
            self.ratio_peak = field("ratio_peak") as u64;
            self.ratio_input = field("ratio_input") as u64;
        }
        self.max_peak = self.max_peak.max(field("max_peak") as u64);
        self.corpus = self.corpus.max(field("corpus") as u64);
    }
}

fn supervise(job: &worker::Job) -> Result<Totals, String> {
    std::fs::create_dir_all(job.out.join("crashes")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut restarts = 0u64;
    loop {
        let left = job.seconds.saturating_sub(start.elapsed().as_secs());
        if left == 0 {
            break;
        }
        let mut child = Command::new(&exe)
            .arg(job.target.name())
            .arg("--worker")
            .args(["--seconds", &left.to_string()])
            .args(["--timeout", &job.timeout.as_secs().to_string()])
            .args([
                "--seed",
                &(job.seed.wrapping_mul(1000) + restarts).to_string(),
            ])
            .arg("--fixtures")
            .arg(&job.fixtures)
            .arg("--out")
            .arg(&job.out)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting a worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let mut got_stats = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("STATS ") {
                totals.add_stats_line(&line);
                got_stats = true;
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        restarts += 1;
        match status.code() {
            Some(0) if got_stats => break,
            Some(worker::HANG_EXIT) => totals.hangs += 1,
            Some(2) => return Err("the worker could not start (see above)".into()),
            _ => {
                totals.crashes += 1;
                let last = job.out.join("crashes").join("last-abort.bin");
                let kept = job
                    .out
                    .join("crashes")
                    .join(format!("abort-{restarts}.bin"));
                let saved = std::fs::metadata(&last).is_ok_and(|m| m.len() > 0)
                    && std::fs::rename(&last, &kept).is_ok();
                eprintln!(
                    "CRASH worker died ({status}); input {}",
                    if saved {
                        kept.display().to_string()
                    } else {
                        "not saved".into()
                    }
                );
            }
        }
    }
    let _ = std::fs::remove_file(job.out.join("crashes").join("last-abort.bin"));
    Ok(totals)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(input) = &args.replay {
        // One input, panics unguarded: for backtraces and regressions.
        let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let scratch = std::env::temp_dir().join(format!("kvant-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&scratch);
        let outcome = args.job.target.run(&bytes, &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        println!("{}: {outcome:?}", input.display());
        return ExitCode::SUCCESS;
    }
    if args.worker {
        return match worker::run(&args.job) {
            Ok(stats) => {
                println!("{}", stats.line());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kvant-fuzz {}: {e}", args.job.target.name());
                ExitCode::from(2)
            }
        };
    }
    let job = &args.job;
    match supervise(job) {
        Ok(t) => {
            println!(
                "{}: {} execs in {} s, {} unique crashes, {} hangs (bound {} s), peak heap at most {:.1} x input ({} B for a {} B input; largest peak {} B), corpus {}",
                job.target.name(),
                t.execs,
                job.seconds,
                t.crashes,
                t.hangs,
                job.timeout.as_secs(),
                t.worst_ratio,
                t.ratio_peak,
                t.ratio_input,
                t.max_peak,
                t.corpus
            );
            if t.crashes + t.hangs > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("kvant-fuzz {}: {e}", job.target.name());
            ExitCode::from(2)
        }
    }
}
