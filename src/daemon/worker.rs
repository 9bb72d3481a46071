//! The daemon loop. One task owns the journal and decides; blocking work
//! (hashing a drop, converting it) runs one job at a time on a worker thread;
//! registrations run as concurrent tasks that retry while Ollama is down, so
//! conversion never waits for Ollama.
//!
//! Life of a drop: seen (watcher event or scan) → settled ([`Settler`]) →
//! hashed (unchanged content is never redone) → `queued` → `converting` →
//! `converted` (Modelfile and report written) → `registering` (names
//! journaled first) → `registered`, or `failed` with the reason.
//!
//! On start, interrupted work is resumed from the journal: `queued` and
//! `converting` convert again, `converted` and `registering` re-check their
//! outputs' SHA-256 and register again (creating a model is idempotent).
//!
//! Must not know how conversion or the Ollama protocol work.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::model_settings::ModelSettings;
use super::pipeline::{Pipeline, RealPipeline};
use super::state::{DropRecord, Fingerprint, Journal, OutputRecord, Step};
use super::{DaemonConfig, DaemonError};
use crate::convert::{ConvertError, ConvertReport, ConvertRequest, OutputSpec};
use crate::ollama::retry::Backoff;
use crate::ollama::{sanitize_model_name, sanitize_tag, OllamaError, Registration};
use crate::quant::FileType;
use crate::watch::filter::{drop_root, DropRef};
use crate::watch::{snapshot, InboxEvent, InboxWatcher, Settler, Snapshot};

/// Knobs the tests turn down; the defaults suit a real service.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Wait schedule between registration attempts.
    pub backoff: Backoff,
    /// Attempts for a registration failing with a retryable server error
    /// (5xx, bad answer); "cannot connect" retries without limit.
    pub max_register_attempts: u32,
    /// How often pending drops are looked at again.
    pub tick: Duration,
    /// Prompt of the smoke generation after registering.
    pub smoke_prompt: String,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff: Backoff::default(),
            max_register_attempts: 5,
            tick: Duration::from_millis(500),
            smoke_prompt: "Hello".into(),
        }
    }
}

/// Runs the daemon against the real converter and Ollama until `shutdown`
/// completes (use [`super::signals::shutdown_signal`]). Returns `Ok` after a
/// clean stop: intake stopped, the current step finished or cancelled, the
/// journal flushed.
pub async fn run(config: DaemonConfig, shutdown: impl Future) -> Result<(), DaemonError> {
    let pipeline = Arc::new(RealPipeline::new(&config.ollama_url));
    run_with(config, pipeline, Tuning::default(), shutdown).await
}

enum Job {
    Hash(PathBuf),
    Convert(String),
}

enum SlotDone {
    Hashed {
        drop: PathBuf,
        before: Snapshot,
        result: Result<Fingerprint, String>,
    },
    Converted {
        id: String,
        result: Result<ConvertReport, ConvertError>,
    },
}

enum TaskDone {
    Registered {
        id: String,
        attempts: u32,
        result: Result<Vec<String>, String>,
    },
    Pruned {
        id: String,
        ok: bool,
    },
}

enum Wake {
    Shutdown,
    Event(Option<InboxEvent>),
    Tick,
    Slot(Result<SlotDone, tokio::task::JoinError>),
    Task(Result<TaskDone, tokio::task::JoinError>),
}

struct Daemon<P: Pipeline> {
    cfg: DaemonConfig,
    inbox: PathBuf,
    pipeline: Arc<P>,
    tuning: Tuning,
    journal: Journal,
    settler: Settler,
    queue: VecDeque<Job>,
    cancel: Arc<AtomicBool>,
}

fn span_for(id: &str, path: &Path) -> tracing::Span {
    tracing::info_span!("drop", id = %id, path = %path.display())
}

/// [`run`] with any [`Pipeline`] and [`Tuning`] (tests use a fake).
pub async fn run_with<P: Pipeline>(
    config: DaemonConfig,
    pipeline: Arc<P>,
    tuning: Tuning,
    shutdown: impl Future,
) -> Result<(), DaemonError> {
    let journal = Journal::open(&config.state_dir)?;
    std::fs::create_dir_all(&config.inbox).map_err(DaemonError::io(&config.inbox))?;
    std::fs::create_dir_all(&config.output).map_err(DaemonError::io(&config.output))?;
    let inbox = config
        .inbox
        .canonicalize()
        .map_err(DaemonError::io(&config.inbox))?;
    let mut watcher = InboxWatcher::start(&inbox).map_err(|e| DaemonError::Watch {
        path: inbox.clone(),
        reason: e.to_string(),
    })?;
    let mut d = Daemon {
        settler: Settler::new(config.settle),
        cfg: config,
        inbox,
        pipeline,
        tuning,
        journal,
        queue: VecDeque::new(),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    tracing::info!(inbox = %d.inbox.display(), output = %d.cfg.output.display(), ollama = %d.cfg.ollama_url, "daemon started");

    let mut slot: Option<JoinHandle<SlotDone>> = None;
    let mut tasks: JoinSet<TaskDone> = JoinSet::new();
    d.recover(&mut tasks)?;
    d.scan_inbox();

    let mut tick = tokio::time::interval(d.tuning.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    loop {
        if slot.is_none() {
            slot = d.start_next_job()?;
        }
        let wake = tokio::select! {
            _ = &mut shutdown => Wake::Shutdown,
            ev = watcher.events.recv() => Wake::Event(ev),
            _ = tick.tick() => Wake::Tick,
            r = async { match slot.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => Wake::Slot(r),
            Some(r) = tasks.join_next(), if !tasks.is_empty() => Wake::Task(r),
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Event(Some(ev)) => d.on_event(ev),
            Wake::Event(None) => {
                watcher.rescan.store(true, Ordering::SeqCst);
            }
            Wake::Tick => {
                if watcher.rescan.swap(false, Ordering::SeqCst) {
                    tracing::info!("watcher lost events; rescanning the inbox");
                    d.scan_inbox();
                }
                d.on_tick()?;
            }
            Wake::Slot(r) => {
                slot = None;
                match r {
                    Ok(done) => d.on_slot_done(done, &mut tasks)?,
                    Err(e) => tracing::error!(error = %e, "worker thread failed"),
                }
            }
            Wake::Task(r) => match r {
                Ok(done) => d.on_task_done(done, &mut tasks)?,
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::error!(error = %e, "registration task failed"),
            },
        }
    }

    // Stop intake, cancel the conversion (it removes its partial outputs),
    // journal its outcome; registrations stay `registering` and resume on
    // the next start.
    tracing::info!("shutting down");
    drop(watcher);
    d.cancel.store(true, Ordering::SeqCst);
    if let Some(h) = slot.take() {
        if let Ok(done) = h.await {
            d.on_slot_done(done, &mut JoinSet::new())?;
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    d.journal.save()?;
    tracing::info!("stopped");
    Ok(())
}

impl<P: Pipeline> Daemon<P> {
    /// Resumes what the journal says was interrupted.
    fn recover(&mut self, tasks: &mut JoinSet<TaskDone>) -> Result<(), DaemonError> {
        let mut ids: Vec<(u64, String, Step)> = self
            .journal
            .drops
            .iter()
            .map(|r| (r.seq, r.id.clone(), r.step))
            .collect();
        ids.sort_by_key(|(seq, _, _)| *seq);
        for (_, id, step) in ids {
            match step {
                Step::Queued | Step::Converting => {
                    tracing::info!(drop = %id, step = step.as_str(), "resuming: converting again");
                    self.queue.push_back(Job::Convert(id));
                }
                Step::Converted | Step::Registering => {
                    let Some(rec) = self.journal.get(&id) else {
                        continue;
                    };
                    if outputs_intact(rec) {
                        tracing::info!(drop = %id, "resuming: registering again");
                        self.start_registration(&id, tasks)?;
                    } else {
                        tracing::warn!(drop = %id, "outputs missing or changed; converting again");
                        self.journal.set_step(&id, Step::Queued, None)?;
                        self.queue.push_back(Job::Convert(id));
                    }
                }
                Step::Registered | Step::Failed => {}
            }
        }
        let _ = tasks;
        Ok(())
    }

    /// Every entry already in the inbox, oldest first, is looked at.
    fn scan_inbox(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.inbox) else {
            return;
        };
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((t, p))
            })
            .collect();
        found.sort();
        let now = Instant::now();
        for (_, p) in found {
            match drop_root(&self.inbox, &p) {
                Some(DropRef::Drop(d)) => self.settler.touch(&d, now),
                Some(DropRef::Done(d)) => self.settler.force(&d, now),
                None => {}
            }
        }
    }

    fn on_event(&mut self, ev: InboxEvent) {
        let now = Instant::now();
        let (path, renamed) = match ev {
            InboxEvent::Changed(p) => (p, false),
            InboxEvent::RenamedTo(p) => (p, true),
        };
        match drop_root(&self.inbox, &path) {
            Some(DropRef::Drop(d)) if renamed && d == path => self.settler.force(&d, now),
            Some(DropRef::Drop(d)) => self.settler.touch(&d, now),
            Some(DropRef::Done(d)) => self.settler.force(&d, now),
            None => {}
        }
    }

    fn on_tick(&mut self) -> Result<(), DaemonError> {
        for id in self.journal.take_retry_requests()? {
            tracing::info!(drop = %id, "retry requested");
            self.queue.push_back(Job::Convert(id));
        }
        let now = Instant::now();
        for drop in self.settler.pending() {
            let seen = match snapshot(&drop) {
                Ok(s) => Some(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(drop = %drop.display(), error = %e, "cannot look at drop");
                    None
                }
            };
            let quick = seen.clone();
            if !self.settler.observe(&drop, seen, now) {
                continue;
            }
            let Some(snap) = quick else { continue };
            // Same size and mtime as the version already journaled: unchanged.
            if let Some(prev) = self.journal.latest_for_path(&drop) {
                if prev.fingerprint.size == snap.total_size()
                    && prev.fingerprint.mtime_ns == snap.newest_mtime_ns()
                {
                    tracing::debug!(drop = %drop.display(), "unchanged; skipping");
                    continue;
                }
            }
            let queued = self
                .queue
                .iter()
                .any(|j| matches!(j, Job::Hash(p) if *p == drop));
            if !queued {
                tracing::info!(drop = %drop.display(), "drop is complete");
                self.queue.push_back(Job::Hash(drop));
            }
        }
        Ok(())
    }

    /// Starts the next queued job on a worker thread.
    fn start_next_job(&mut self) -> Result<Option<JoinHandle<SlotDone>>, DaemonError> {
        while let Some(job) = self.queue.pop_front() {
            match job {
                Job::Hash(drop) => {
                    let Ok(before) = snapshot(&drop) else {
                        continue;
                    };
                    let b = before.clone();
                    return Ok(Some(tokio::task::spawn_blocking(move || {
                        let result = fingerprint(&drop, &b).map_err(|e| e.to_string());
                        SlotDone::Hashed {
                            drop,
                            before: b,
                            result,
                        }
                    })));
                }
                Job::Convert(id) => {
                    if let Some(h) = self.start_convert(&id)? {
                        return Ok(Some(h));
                    }
                }
            }
        }
        Ok(None)
    }

    fn start_convert(&mut self, id: &str) -> Result<Option<JoinHandle<SlotDone>>, DaemonError> {
        let Some(rec) = self.journal.get(id).cloned() else {
            return Ok(None);
        };
        let span = span_for(id, &rec.path);
        let _enter = span.enter();
        let settings = match ModelSettings::load_for(&rec.path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "bad kvant.toml");
                self.journal
                    .set_step(id, Step::Failed, Some(e.to_string()))?;
                return Ok(None);
            }
        };
        let types = self.types_for(&settings);
        let out_dir = self.cfg.output.join(&rec.model).join(id);
        if let Err(e) = std::fs::create_dir_all(&out_dir)
            .and_then(|_| crate::durable::remove_stale_temps(&out_dir))
        {
            let e = format!("{}: {e}", out_dir.display());
            tracing::error!(error = %e, "cannot prepare output folder");
            self.journal.set_step(id, Step::Failed, Some(e))?;
            return Ok(None);
        }
        let req = ConvertRequest {
            source: rec.path.clone(),
            outputs: types
                .iter()
                .map(|t| OutputSpec {
                    file_type: *t,
                    path: out_dir.join(format!("{}-{}.gguf", rec.model, t.name())),
                })
                .collect(),
            name: Some(rec.model.clone()),
            n_head: settings.n_head,
            ..ConvertRequest::default()
        };
        if let Some(r) = self.journal.get_mut(id) {
            r.step = Step::Converting;
            r.attempts += 1;
            r.error = None;
            r.updated_unix = super::state::now_unix();
        }
        self.journal.save()?;
        tracing::info!(types = ?types.iter().map(|t| t.name()).collect::<Vec<_>>(), "converting");
        let pipeline = self.pipeline.clone();
        let cancel = self.cancel.clone();
        let id = id.to_owned();
        let span = span.clone();
        Ok(Some(tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let result = pipeline.convert(&req, &cancel);
            SlotDone::Converted { id, result }
        })))
    }

    fn types_for(&self, settings: &ModelSettings) -> Vec<FileType> {
        settings
            .types
            .as_ref()
            .map(|ts| ts.iter().filter_map(|t| t.parse().ok()).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.cfg.types.clone())
    }

    fn on_slot_done(
        &mut self,
        done: SlotDone,
        tasks: &mut JoinSet<TaskDone>,
    ) -> Result<(), DaemonError> {
        match done {
            SlotDone::Hashed {
                drop,
                before,
                result,
            } => self.on_hashed(drop, before, result),
            SlotDone::Converted { id, result } => self.on_converted(&id, result, tasks),
        }
    }

    fn on_hashed(
        &mut self,
        drop: PathBuf,
        before: Snapshot,
        result: Result<Fingerprint, String>,
    ) -> Result<(), DaemonError> {
        // Changed while hashing: not complete after all.
        if snapshot(&drop).ok().as_ref() != Some(&before) {
            tracing::info!(drop = %drop.display(), "changed while hashing; waiting again");
            self.settler.touch(&drop, Instant::now());
            return Ok(());
        }
        let fp = match result {
            Ok(fp) => fp,
            Err(e) => {
                tracing::warn!(drop = %drop.display(), error = %e, "cannot read drop");
                return Ok(());
            }
        };
        if let Some(prev) = self.journal.latest_for_path(&drop) {
            if prev.fingerprint.sha256 == fp.sha256 {
                // Touched but identical: remember the new mtime, do nothing.
                let id = prev.id.clone();
                if let Some(r) = self.journal.get_mut(&id) {
                    r.fingerprint = fp;
                }
                self.journal.save()?;
                tracing::info!(drop = %id, "content unchanged; nothing to do");
                return Ok(());
            }
        }
        let settings = ModelSettings::load_for(&drop);
        let model = sanitize_model_name(
            &settings
                .as_ref()
                .ok()
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| crate::convert::default_name(&drop)),
        );
        let short = fp.sha256.get(..12).unwrap_or(&fp.sha256).to_owned();
        let mut id = format!("{model}-{short}");
        if self.journal.get(&id).is_some() {
            id = format!("{id}-{}", self.journal.drops.len());
        }
        let rec = DropRecord {
            id: id.clone(),
            seq: 0,
            path: drop.clone(),
            model,
            version_tag: short,
            fingerprint: fp,
            step: Step::Queued,
            outputs: Vec::new(),
            intended_names: Vec::new(),
            ollama_names: Vec::new(),
            error: None,
            attempts: 0,
            pruned: false,
            updated_unix: 0,
            num_ctx: None,
            stop: Vec::new(),
        };
        self.journal.insert(rec);
        if let Err(e) = settings {
            tracing::error!(drop = %id, error = %e, "bad kvant.toml");
            self.journal
                .set_step(&id, Step::Failed, Some(e.to_string()))?;
            return Ok(());
        }
        self.journal.save()?;
        tracing::info!(drop = %id, path = %drop.display(), "queued");
        self.queue.push_front(Job::Convert(id));
        Ok(())
    }

    fn on_converted(
        &mut self,
        id: &str,
        result: Result<ConvertReport, ConvertError>,
        tasks: &mut JoinSet<TaskDone>,
    ) -> Result<(), DaemonError> {
        let Some(rec) = self.journal.get(id).cloned() else {
            return Ok(());
        };
        let span = span_for(id, &rec.path);
        let _enter = span.enter();
        let report = match result {
            Ok(r) => r,
            Err(ConvertError::Cancelled) => {
                tracing::info!("conversion cancelled; will convert again on start");
                return self.journal.set_step(id, Step::Queued, None);
            }
            Err(e) => {
                tracing::error!(error = %e, "conversion failed");
                return self.journal.set_step(id, Step::Failed, Some(e.to_string()));
            }
        };
        let settings = ModelSettings::load_for(&rec.path).unwrap_or_default();
        let version_tag = report
            .version
            .as_deref()
            .map(sanitize_tag)
            .unwrap_or_else(|| rec.version_tag.clone());
        if let Err(e) = write_sidecars(&rec.model, &report, &settings) {
            tracing::error!(error = %e, "cannot write Modelfile or report");
            return self.journal.set_step(id, Step::Failed, Some(e.to_string()));
        }
        if let Some(r) = self.journal.get_mut(id) {
            r.version_tag = version_tag;
            r.outputs = report
                .outputs
                .iter()
                .map(|o| OutputRecord {
                    file_type: o.file_type.clone(),
                    path: o.path.clone(),
                    sha256: o.sha256.clone(),
                    size: o.size,
                })
                .collect();
            r.num_ctx = Some(report.context_length).filter(|n| *n > 0);
            r.stop = report.stop_tokens.clone();
            r.attempts = 0;
        }
        self.journal.set_step(id, Step::Converted, None)?;
        tracing::info!(seconds = report.seconds, "converted");
        self.start_registration(id, tasks)
    }

    /// Journals the names to register, then registers them in a task.
    fn start_registration(
        &mut self,
        id: &str,
        tasks: &mut JoinSet<TaskDone>,
    ) -> Result<(), DaemonError> {
        let Some(rec) = self.journal.get(id).cloned() else {
            return Ok(());
        };
        let names = names_for(&rec);
        if let Some(r) = self.journal.get_mut(id) {
            r.intended_names = names.iter().flat_map(|n| n.all()).collect();
        }
        self.journal.set_step(id, Step::Registering, None)?;
        let settings = ModelSettings::load_for(&rec.path).unwrap_or_default();
        let regs: Vec<(Registration, OutputNames)> = rec
            .outputs
            .iter()
            .zip(names)
            .map(|(o, n)| {
                (
                    Registration {
                        gguf: o.path.clone(),
                        sha256: o.sha256.clone(),
                        name: n.immutable.clone(),
                        template: settings.template.clone(),
                        system: settings.system.clone(),
                        num_ctx: rec.num_ctx,
                        stop: rec.stop.clone(),
                        parameters: settings.parameters_json(),
                        license: settings.license.clone(),
                        smoke_prompt: self.tuning.smoke_prompt.clone(),
                    },
                    n,
                )
            })
            .collect();
        let pipeline = self.pipeline.clone();
        let tuning = self.tuning.clone();
        let id = id.to_owned();
        let span = span_for(&id, &rec.path);
        tasks.spawn(
            async move {
                let mut attempts = 0;
                let result = register_all(&*pipeline, &tuning, regs, &mut attempts).await;
                TaskDone::Registered {
                    id,
                    attempts,
                    result,
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    fn on_task_done(
        &mut self,
        done: TaskDone,
        tasks: &mut JoinSet<TaskDone>,
    ) -> Result<(), DaemonError> {
        match done {
            TaskDone::Registered {
                id,
                attempts,
                result,
            } => {
                let path = self
                    .journal
                    .get(&id)
                    .map(|r| r.path.clone())
                    .unwrap_or_default();
                let span = span_for(&id, &path);
                let _enter = span.enter();
                if let Some(r) = self.journal.get_mut(&id) {
                    r.attempts = attempts;
                }
                match result {
                    Ok(names) => {
                        tracing::info!(names = ?names, "registered");
                        if let Some(r) = self.journal.get_mut(&id) {
                            r.ollama_names = names;
                        }
                        self.journal.set_step(&id, Step::Registered, None)?;
                        self.prune(&id, tasks);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "registration failed");
                        self.journal.set_step(&id, Step::Failed, Some(e))?;
                    }
                }
                Ok(())
            }
            TaskDone::Pruned { id, ok } => {
                if ok {
                    if let Some(r) = self.journal.get_mut(&id) {
                        r.pruned = true;
                        r.ollama_names
                            .retain(|n| !n.ends_with(&format!("-{}", r.version_tag)));
                    }
                    self.journal.save()?;
                }
                Ok(())
            }
        }
    }

    /// `keep N`: deletes the immutable tags of this model's versions older
    /// than the newest N.
    fn prune(&mut self, id: &str, tasks: &mut JoinSet<TaskDone>) {
        if self.cfg.keep == 0 {
            return;
        }
        let Some(model) = self.journal.get(id).map(|r| r.model.clone()) else {
            return;
        };
        let mut versions: Vec<&DropRecord> = self
            .journal
            .drops
            .iter()
            .filter(|r| r.model == model && r.step == Step::Registered && !r.pruned)
            .collect();
        versions.sort_by_key(|r| std::cmp::Reverse(r.seq));
        for old in versions.into_iter().skip(self.cfg.keep) {
            let doomed: Vec<String> = names_for(old).into_iter().map(|n| n.immutable).collect();
            let pipeline = self.pipeline.clone();
            let old_id = old.id.clone();
            tracing::info!(drop = %old_id, names = ?doomed, "pruning old version");
            tasks.spawn(
                async move {
                    let mut ok = true;
                    for n in doomed {
                        if let Err(e) = pipeline.delete(n.clone()).await {
                            tracing::warn!(name = %n, error = %e, "cannot delete old version");
                            ok = false;
                        }
                    }
                    TaskDone::Pruned { id: old_id, ok }
                }
                .instrument(span_for(&old.id, &old.path)),
            );
        }
    }
}

/// The names one output is registered under.
#[derive(Debug, Clone)]
struct OutputNames {
    /// `<model>:<type>-<version>`, never moved.
    immutable: String,
    /// `<model>:<type>`, moved to the newest version.
    by_type: String,
    /// `<model>:latest` for the first output.
    latest: Option<String>,
}

impl OutputNames {
    fn all(&self) -> Vec<String> {
        let mut v = vec![self.immutable.clone(), self.by_type.clone()];
        v.extend(self.latest.clone());
        v
    }
}

fn names_for(rec: &DropRecord) -> Vec<OutputNames> {
    rec.outputs
        .iter()
        .enumerate()
        .map(|(i, o)| OutputNames {
            immutable: format!("{}:{}-{}", rec.model, o.file_type, rec.version_tag),
            by_type: format!("{}:{}", rec.model, o.file_type),
            latest: (i == 0).then(|| format!("{}:latest", rec.model)),
        })
        .collect()
}

/// Retries one Ollama call: without limit while Ollama cannot be reached,
/// up to `max_register_attempts` for other retryable errors, never for
/// permanent ones.
async fn with_retries<T, F, Fut>(
    tuning: &Tuning,
    attempts: &mut u32,
    what: &str,
    mut call: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OllamaError>>,
{
    let mut failures = 0u32;
    loop {
        *attempts += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                failures += 1;
                let down = matches!(e, OllamaError::Connect { .. });
                if !e.is_retryable() || (!down && failures >= tuning.max_register_attempts) {
                    return Err(format!("{what}: {e}"));
                }
                let wait = tuning.backoff.delay_random(failures);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn register_all<P: Pipeline>(
    pipeline: &P,
    tuning: &Tuning,
    regs: Vec<(Registration, OutputNames)>,
    attempts: &mut u32,
) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for (reg, names) in regs {
        let name = reg.name.clone();
        let registered = with_retries(tuning, attempts, &format!("register {name}"), || {
            pipeline.register(reg.clone())
        })
        .await?;
        tracing::info!(name = %name, smoke = %registered.smoke_output, "verified");
        done.push(name.clone());
        for alias in std::iter::once(names.by_type.clone()).chain(names.latest.clone()) {
            with_retries(tuning, attempts, &format!("copy {name} to {alias}"), || {
                pipeline.copy(name.clone(), alias.clone())
            })
            .await?;
            done.push(alias);
        }
    }
    Ok(done)
}

/// Writes `<model>-<type>.Modelfile` beside each GGUF and
/// `<model>.report.json` beside them, atomically.
fn write_sidecars(
    model: &str,
    report: &ConvertReport,
    settings: &ModelSettings,
) -> Result<(), DaemonError> {
    for o in &report.outputs {
        let file_name = o
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut parameters = Vec::new();
        if report.context_length > 0 {
            parameters.push(("num_ctx".to_owned(), report.context_length.to_string()));
        }
        for s in &report.stop_tokens {
            parameters.push(("stop".to_owned(), s.clone()));
        }
        for (k, v) in settings.parameters_json() {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            parameters.push((k, text));
        }
        let mf = crate::modelfile::Modelfile {
            from: format!("./{file_name}"),
            template: settings.template.clone(),
            system: settings.system.clone(),
            parameters,
            license: settings.license.clone(),
        };
        let path = o
            .path
            .with_file_name(format!("{model}-{}.Modelfile", o.file_type));
        let text = mf.render().map_err(|e| DaemonError::ModelSettings {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::durable::write_atomic(&path, text.as_bytes()).map_err(DaemonError::io(&path))?;
    }
    if let Some(first) = report.outputs.first() {
        let path = first.path.with_file_name(format!("{model}.report.json"));
        let bytes = serde_json::to_vec_pretty(report).map_err(|e| DaemonError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::durable::write_atomic(&path, &bytes).map_err(DaemonError::io(&path))?;
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A drop's content fingerprint: a file's SHA-256, or for a folder the
/// SHA-256 over every file's relative path and SHA-256.
pub fn fingerprint(drop: &Path, snap: &Snapshot) -> std::io::Result<Fingerprint> {
    let sha256 = if drop.is_file() {
        sha256_file(drop)?
    } else {
        let mut h = Sha256::new();
        for rel in snap.files.keys() {
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(sha256_file(&drop.join(rel))?.as_bytes());
            h.update([b'\n']);
        }
        hex::encode(h.finalize())
    };
    Ok(Fingerprint {
        size: snap.total_size(),
        mtime_ns: snap.newest_mtime_ns(),
        sha256,
    })
}

/// True when every output still exists with its journaled SHA-256.
fn outputs_intact(rec: &DropRecord) -> bool {
    !rec.outputs.is_empty()
        && rec
            .outputs
            .iter()
            .all(|o| sha256_file(&o.path).is_ok_and(|s| s == o.sha256))
}
