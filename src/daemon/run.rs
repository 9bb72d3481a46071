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
use tracing::{error, info, warn};

use super::config::DaemonConfig;
use super::hosts::{retry_failed_hosts, Fleet};
use super::job::{convert_drop, Converted};
use super::state::{self, DropRecord, Fingerprint, State, Step};
use super::DaemonError;
use crate::durable;
use crate::watch::{content_hash, scan, Candidate, Settler, Watcher};

type ConvertResult = (String, Result<Converted, String>);

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
                retry_failed_hosts(r);
                changed = true;
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    changed
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
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.source
    );
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel(1);
    let watcher = Watcher::start(&cfg.inbox, wake_tx).map_err(|e| DaemonError::Watch {
        path: cfg.inbox.clone(),
        reason: e.to_string(),
    })?;
    let mut settler = Settler::new(cfg.settle);
    let cancel = Arc::new(AtomicBool::new(false));
    let cfg = Arc::new(cfg);
    let mut hashing: Option<JoinHandle<(Candidate, std::io::Result<String>)>> = None;
    let mut hashing_name: Option<String> = None;
    let mut renamed: HashSet<String> = HashSet::new();
    let mut unreadable: HashMap<String, (u64, u64)> = HashMap::new();
    let mut converting: Option<JoinHandle<ConvertResult>> = None;
    tokio::pin!(shutdown);

    loop {
        let mut dirty = take_retry_requests(&cfg.state_dir, &mut st);
        dirty |= fleet.take_forget_requests(&cfg.state_dir, &mut st);

        // Intake: new and changed drops, in arrival order (oldest mtime
        // first). Every candidate is observed on every pass (settling is
        // timed from the first observation); hashing reads the whole drop,
        // so it runs off this loop, one drop at a time (arrival order is
        // queue order), and shutdown interrupts it.
        match scan(&cfg.inbox) {
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
        if converting.is_none() {
            let next = st
                .drops
                .iter()
                .filter(|(_, r)| r.step == Step::Queued)
                .min_by_key(|(_, r)| r.seq)
                .map(|(n, r)| (n.clone(), r.path.clone(), r.fingerprint.sha256.clone()));
            if let Some((name, path, sha)) = next {
                if let Some(r) = st.drops.get_mut(&name) {
                    r.step = Step::Converting;
                }
                st.save(&cfg.state_dir)?;
                dirty = false;
                info!(drop = %name, "converting");
                let cfg2 = cfg.clone();
                let cancel2 = cancel.clone();
                converting = Some(tokio::task::spawn_blocking(move || {
                    let r = convert_drop(&cfg2, &path, &sha, &cancel2);
                    (name, r)
                }));
            }
        }

        // Registrations run beside conversions, each host on its own.
        if fleet.start(&cfg, &mut st) {
            st.save(&cfg.state_dir)?;
            dirty = false;
        }
        if dirty {
            st.save(&cfg.state_dir)?;
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
                            st.save(&cfg.state_dir)?;
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
                match res {
                    Ok((name, r)) => finish_conversion(&mut st, &name, r),
                    Err(e) => error!("conversion task failed: {e}"),
                }
                st.save(&cfg.state_dir)?;
            }
            Some(ev) = fleet.next(), if fleet.busy() => {
                fleet.finish(&cfg, &mut st, ev);
                st.save(&cfg.state_dir)?;
            }
        }
    }

    info!("shutting down: no new work; stopping the current step");
    cancel.store(true, Ordering::Relaxed);
    if let Some(h) = hashing.take() {
        let _ = h.await; // returns within one read: the hash sees `cancel`
    }
    if let Some(h) = converting.take() {
        if let Ok((name, r)) = h.await {
            finish_conversion(&mut st, &name, r);
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
            hosts: Default::default(),
        },
    );
    true
}

fn finish_conversion(st: &mut State, name: &str, r: Result<Converted, String>) {
    let Some(rec) = st.drops.get_mut(name) else {
        return;
    };
    match r {
        Ok(c) => {
            info!(drop = %name, model = %c.model, version = %c.version_label, "converted: {}", c.outputs.iter().map(|o| o.path.display().to_string()).collect::<Vec<_>>().join(", "));
            rec.step = Step::Converted;
            rec.model = Some(c.model);
            rec.version_label = Some(c.version_label);
            rec.outputs = c.outputs;
            rec.attempts = 0;
            rec.error = None;
        }
        Err(e) if e == "cancelled" => {
            info!(drop = %name, "conversion cancelled; it will be redone");
            rec.step = Step::Queued;
        }
        Err(e) => {
            error!(drop = %name, "failed: {e}");
            rec.step = Step::Failed;
            rec.error = Some(e);
        }
    }
}
