//! The daemon's loop: intake (scan + settle + fingerprint), one conversion
//! at a time, registrations alongside, retries with backoff, and a clean
//! shutdown. Every state change is journaled before the next step starts.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::DaemonConfig;
use super::hosts::{retry_failed_hosts, Fleet};
use super::isolate::{self, convert_isolated, JobOutcome, JobSpec, Limits};
use super::journal::Journal;
use super::notify::Notifier;
use super::state::{self, DropRecord, Fingerprint, State, Step, MAX_CRASHES};
use super::status::summary_line;
use super::DaemonError;
use crate::durable;
use crate::watch::{content_hash, scan, Candidate, Settler, Watcher};

/// A finished conversion: the drop, the version it started from, and how
/// it ended.
type ConvertResult = (String, Fingerprint, JobOutcome);

fn retry_dir(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("retry")
}

/// Asks a running (or the next) daemon to retry `drop`.
pub fn request_retry(state_dir: &Path, drop: &str) -> Result<(), DaemonError> {
    let dir = retry_dir(state_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::State(format!("{}: {e}", dir.display())))?;
    let safe: String = drop
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    durable::write_atomic(&dir.join(safe), drop.as_bytes())
        .map_err(|e| DaemonError::State(e.to_string()))
}

fn take_retry_requests(state_dir: &Path, st: &mut State) -> bool {
    let Ok(rd) = std::fs::read_dir(retry_dir(state_dir)) else {
        return false;
    };
    let mut changed = false;
    for e in rd.flatten() {
        // A request still being written (`kvant retry` writes it
        // atomically) is taken on the next pass, not removed under it.
        if durable::is_temp_name(&e.file_name()) {
            continue;
        }
        let name = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(r) = st.drops.get_mut(name.trim()) {
            if r.step == Step::Failed {
                info!(drop = %name.trim(), "retry requested");
                r.step = if r.outputs.iter().all(|o| o.path.is_file()) && !r.outputs.is_empty() {
                    Step::Converted
                } else {
                    Step::Queued
                };
                r.error = None;
                r.attempts = 0;
                r.crashes = 0;
                retry_failed_hosts(r);
                changed = true;
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    changed
}

/// Where the conversion of the drop version `sha256` journals its
/// measurements (removed once the outcome is journaled).
fn measure_journal_dir(state_dir: &Path, sha256: &str) -> std::path::PathBuf {
    state_dir
        .join("measure")
        .join(&sha256[..sha256.len().min(16)])
}

fn sweep_outputs(output: &Path) {
    let _ = durable::remove_stale_temps(output);
    if let Ok(rd) = std::fs::read_dir(output) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                if let Ok(removed) = durable::remove_stale_temps(&e.path()) {
                    for p in removed {
                        info!(file = %p.display(), "removed a partial file left by an interrupted run");
                    }
                }
            }
        }
    }
}

/// Runs the daemon until `shutdown` resolves (SIGTERM/SIGINT in the CLI).
/// On shutdown it stops taking work, cancels the conversion in progress
/// (no partial file remains; the drop is redone next start), journals the
/// state and returns `Ok`.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    for d in [&cfg.inbox, &cfg.output] {
        std::fs::create_dir_all(d)
            .map_err(|e| DaemonError::Config(format!("{}: {e}", d.display())))?;
    }
    let _lock = state::lock(&cfg.state_dir)?;
    sweep_outputs(&cfg.output);
    let mut st = State::load(&cfg.state_dir)?;
    st.adopt_single_host(&cfg.ollama);
    st.recover();
    st.save(&cfg.state_dir)?;
    let mut fleet = Fleet::new(&cfg)?;
    info!(
        "kvant watching {} (output {}, state {}, Ollama {}, types {}; configuration: {})",
        cfg.inbox.display(),
        cfg.output.display(),
        cfg.state_dir.display(),
        cfg.hosts
            .iter()
            .map(|h| h.url.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        cfg.types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
        cfg.source
    );
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel(1);
    let watcher = Watcher::start(&cfg.inbox, wake_tx).map_err(|e| DaemonError::Watch {
        path: cfg.inbox.clone(),
        reason: e.to_string(),
    })?;
    // The conversion child is this very binary.
    let exe = Arc::new(std::env::current_exe().map_err(|e| {
        DaemonError::Config(format!(
            "cannot find kvant's own binary to run conversions: {e}"
        ))
    })?);
    let stop_child = CancellationToken::new();
    let job_progress = Arc::new(isolate::JobProgress::default());
    let mut notifier = Notifier::from_env();
    notifier.ready(&summary_line(&st, None));
    let mut journal = Journal::new(cfg.state_dir.clone());
    let mut settler = Settler::new(cfg.settle);
    let cancel = Arc::new(AtomicBool::new(false));
    let cfg = Arc::new(cfg);
    let mut hashing: Option<JoinHandle<(Candidate, std::io::Result<String>)>> = None;
    let mut hashing_name: Option<String> = None;
    let mut renamed: HashSet<String> = HashSet::new();
    let mut unreadable: HashMap<String, (u64, u64)> = HashMap::new();
    let mut converting: Option<JoinHandle<ConvertResult>> = None;
    let mut converting_name: Option<String> = None;
    tokio::pin!(shutdown);

    loop {
        let summary = summary_line(
            &st,
            converting_name
                .as_deref()
                .map(|n| (n, job_progress.as_ref())),
        );
        notifier.tick(&match journal.failure() {
            Some(e) => format!("intake stopped, the journal cannot be written ({e}); {summary}"),
            None => summary,
        });
        let writable = journal.writable(&st);
        let mut dirty = writable && take_retry_requests(&cfg.state_dir, &mut st);
        dirty |= writable && fleet.take_forget_requests(&cfg.state_dir, &mut st);

        // Intake: new and changed drops, in arrival order (oldest mtime
        // first). Every candidate is observed on every pass (settling is
        // timed from the first observation); hashing reads the whole drop,
        // so it runs off this loop, one drop at a time (arrival order is
        // queue order), and shutdown interrupts it.
        match scan(&cfg.inbox).map(|c| if writable { c } else { vec![] }) {
            Ok(mut cands) => {
                cands.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
                let now = Instant::now();
                let mut next = None;
                for c in cands {
                    let known = st.drops.get(&c.name).is_some_and(|r| {
                        r.fingerprint.size == c.size && r.fingerprint.mtime_ns == c.mtime_ns
                    });
                    let in_hash = hashing_name.as_deref() == Some(c.name.as_str());
                    let unreadable_as_is = unreadable.get(&c.name) == Some(&(c.size, c.mtime_ns));
                    if known || in_hash || unreadable_as_is {
                        continue;
                    }
                    // A rename noticed now must still count when the drop's
                    // turn to be hashed comes.
                    if watcher.take_renamed(&c.name) {
                        renamed.insert(c.name.clone());
                    }
                    if settler.ready(&c, now, renamed.contains(&c.name)) && next.is_none() {
                        next = Some(c);
                    }
                }
                if let Some(c) = next.filter(|_| hashing.is_none()) {
                    isolate::stall_if_asked(&c.name);
                    renamed.remove(&c.name);
                    hashing_name = Some(c.name.clone());
                    let cancel = cancel.clone();
                    hashing = Some(tokio::task::spawn_blocking(move || {
                        let sha = content_hash(&c.path, &cancel);
                        (c, sha)
                    }));
                }
            }
            Err(e) => warn!(inbox = %cfg.inbox.display(), "cannot scan the inbox: {e}"),
        }

        // One conversion at a time, first come first served.
        if converting.is_none() && writable {
            let next = st
                .drops
                .iter()
                .filter(|(_, r)| r.step == Step::Queued)
                .min_by_key(|(_, r)| r.seq)
                .map(|(n, r)| (n.clone(), r.path.clone(), r.fingerprint.clone()));
            if let Some((name, path, fp)) = next {
                if let Some(r) = st.drops.get_mut(&name) {
                    r.step = Step::Converting;
                }
                dirty = false;
                if !journal.save(&st) {
                    if let Some(r) = st.drops.get_mut(&name) {
                        r.step = Step::Queued;
                    }
                    continue;
                }
                info!(drop = %name, "converting");
                let job = JobSpec {
                    drop: path,
                    content_sha: fp.sha256.clone(),
                    output: cfg.output.clone(),
                    types: cfg.types.iter().map(|t| t.to_string()).collect(),
                    quality: cfg.quality.clone(),
                    journal_dir: Some(measure_journal_dir(&cfg.state_dir, &fp.sha256)),
                };
                let limits = Limits::for_drop(cfg.max_memory, cfg.convert_timeout, fp.size);
                let (exe, stop, progress) = (exe.clone(), stop_child.clone(), job_progress.clone());
                progress.done.store(0, Ordering::Relaxed);
                progress.total.store(0, Ordering::Relaxed);
                converting_name = Some(name.clone());
                converting = Some(tokio::spawn(async move {
                    let outcome = convert_isolated(&exe, &job, limits, &stop, &progress).await;
                    (name, fp, outcome)
                }));
            }
        }

        // Registrations run beside conversions, each host on its own;
        // none starts while the journal cannot record it.
        if writable && fleet.start(&cfg, &mut st) {
            journal.save(&st);
            dirty = false;
        }
        if dirty {
            journal.save(&st);
        }

        tokio::select! {
            _ = &mut shutdown => break,
            _ = wake_rx.recv() => {}
            res = async { match hashing.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                hashing = None;
                hashing_name = None;
                match res {
                    Ok((c, Ok(sha))) => {
                        if intake(&mut st, c, sha) {
                            journal.save(&st);
                        }
                    }
                    Ok((c, Err(e))) => {
                        // Said once; tried again when the drop changes.
                        warn!(drop = %c.name, "cannot read: {e}");
                        unreadable.insert(c.name, (c.size, c.mtime_ns));
                    }
                    Err(e) => error!("hashing task failed: {e}"),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            res = async { match converting.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                converting = None;
                converting_name = None;
                match res {
                    Ok((name, started, outcome)) => {
                        let on_disk = current_fingerprint(&cfg.inbox, &name);
                        let redo = matches!(outcome, JobOutcome::Cancelled | JobOutcome::Crashed(_));
                        finish_conversion(&mut st, &name, &started, on_disk, outcome);
                        // The outcome is journaled below; a redo keeps
                        // what was measured so far.
                        if journal.save(&st) && !redo {
                            let _ = std::fs::remove_dir_all(measure_journal_dir(&cfg.state_dir, &started.sha256));
                        }
                    }
                    Err(e) => error!("conversion task failed: {e}"),
                }
                journal.save(&st);
            }
            Some(ev) = fleet.next(), if fleet.busy() => {
                fleet.finish(&cfg, &mut st, ev);
                journal.save(&st);
            }
        }
    }

    info!("shutting down: no new work; stopping the current step");
    notifier.stopping();
    cancel.store(true, Ordering::Relaxed);
    stop_child.cancel();
    if let Some(h) = hashing.take() {
        let _ = h.await; // returns within one read: the hash sees `cancel`
    }
    if let Some(h) = converting.take() {
        // The child stops at its next tensor (or is killed after a grace
        // period); its temporaries are removed either way.
        if let Ok((name, started, outcome)) = h.await {
            let on_disk = current_fingerprint(&cfg.inbox, &name);
            finish_conversion(&mut st, &name, &started, on_disk, outcome);
        }
    }
    fleet.stop(&mut st);
    st.save(&cfg.state_dir)?;
    info!("stopped");
    Ok(())
}

/// Records a hashed candidate: a new drop or a new version of one is
/// queued (behind everything queued before it); a drop only touched (same
/// content) just gets its new fingerprint. Returns whether the state
/// changed.
fn intake(st: &mut State, c: Candidate, sha256: String) -> bool {
    let fp = Fingerprint {
        size: c.size,
        mtime_ns: c.mtime_ns,
        sha256,
    };
    if let Some(r) = st.drops.get_mut(&c.name) {
        // A drop that changed mid-conversion is converted again even when
        // it settled back to the same content.
        if r.step == Step::Changed {
            info!(drop = %c.name, "settled after changing mid-conversion; queued again");
            r.step = Step::Queued;
            r.error = None;
            r.crashes = 0;
            r.fingerprint = fp;
            return true;
        }
        if r.fingerprint.sha256 == fp.sha256 {
            r.fingerprint = fp;
            return true;
        }
    }
    info!(drop = %c.name, sha256 = %&fp.sha256[..12], "new drop version queued");
    let seq = st.next_seq;
    st.next_seq += 1;
    st.drops.insert(
        c.name.clone(),
        DropRecord {
            path: c.path,
            fingerprint: fp,
            step: Step::Queued,
            error: None,
            attempts: 0,
            version_label: None,
            model: None,
            outputs: vec![],
            seq,
            crashes: 0,
            hosts: Default::default(),
            best_version: None,
        },
    );
    true
}

/// The drop's (size, mtime) in the inbox now, `None` when it is gone.
fn current_fingerprint(inbox: &Path, name: &str) -> Option<(u64, u64)> {
    scan(inbox)
        .ok()?
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| (c.size, c.mtime_ns))
}

/// Journals how a conversion of the version `started` ended. A drop that
/// changed on disk meanwhile is not judged by it (a file truncated under
/// the reader crashes it, a rewritten one gives a mix): it is taken again
/// once it settles, and a newer version already queued is left alone.
fn finish_conversion(
    st: &mut State,
    name: &str,
    started: &Fingerprint,
    on_disk: Option<(u64, u64)>,
    outcome: JobOutcome,
) {
    let next_seq = st.next_seq;
    let Some(rec) = st.drops.get_mut(name) else {
        return;
    };
    if rec.fingerprint.sha256 != started.sha256 {
        info!(drop = %name, "a newer version arrived during the conversion; it is queued");
        return;
    }
    if on_disk != Some((started.size, started.mtime_ns)) {
        let settled = on_disk == Some((rec.fingerprint.size, rec.fingerprint.mtime_ns));
        warn!(drop = %name, "the drop changed while it was converted; it is taken again once it settles");
        rec.step = if settled { Step::Queued } else { Step::Changed };
        rec.error = Some("changed while it was converted; taken again once it settles".into());
        return;
    }
    match outcome {
        JobOutcome::Converted(c) => {
            info!(drop = %name, model = %c.model, version = %c.version_label, "converted: {}", c.outputs.iter().map(|o| o.path.display().to_string()).collect::<Vec<_>>().join(", "));
            rec.step = Step::Converted;
            rec.model = Some(c.model);
            rec.version_label = Some(c.version_label);
            rec.outputs = c.outputs;
            rec.best_version = c.best_version;
            rec.attempts = 0;
            rec.crashes = 0;
            rec.error = None;
        }
        JobOutcome::Cancelled => {
            info!(drop = %name, "conversion cancelled; it will be redone");
            rec.step = Step::Queued;
        }
        JobOutcome::Failed(e) => {
            error!(drop = %name, "failed: {e}");
            rec.step = Step::Failed;
            rec.error = Some(e);
        }
        JobOutcome::Crashed(reason) => {
            rec.crashes += 1;
            if rec.crashes >= MAX_CRASHES {
                error!(drop = %name, crashes = rec.crashes, "failed: {reason}");
                rec.step = Step::Failed;
                rec.error = Some(format!(
                    "{reason} (crashed {} times; not retried until the drop changes or `kvant retry`)",
                    rec.crashes
                ));
            } else {
                warn!(drop = %name, crashes = rec.crashes, "{reason}; it goes back in the queue, behind the others");
                rec.step = Step::Queued;
                rec.error = Some(reason);
                rec.seq = next_seq;
                st.next_seq += 1;
            }
        }
    }
}
