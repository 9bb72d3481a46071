//! Registering every converted drop on every configured Ollama host.
//!
//! Hosts are independent: each has at most one task at a time (a
//! registration or a reconciliation), its own backoff while it is down or
//! failing, and its own queue, taken in arrival order, so a host that comes
//! back replays its backlog in order while the others never wait for it.
//! A drop's overall step follows its hosts: `registered` once every host
//! has it (or was told to forget it), `failed` once none is still trying
//! and one failed, otherwise `converted` (waiting) or `registering`.
//!
//! Retention (`keep`) and `latest` are applied per host. Reconciliation
//! (`reconcile`) compares each host's models with the journal at start and
//! every `reconcile_interval`; `kvant forget` marks a drop as not wanted on
//! a host, so a model deleted there on purpose is never brought back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::config::DaemonConfig;
use super::publish::{publish, PublishOptions, Published};
use super::reconcile::{drift, list_models, owners, Drift, Listed};
use super::settings;
use super::state::{DropRecord, HostRecord, HostStep, OutputRecord, State, Step};
use super::DaemonError;
use crate::durable;
use crate::ollama::retry::Backoff;
use crate::ollama::{Client, OllamaError};

/// Registration attempts on server errors (5xx) before a drop fails on a
/// host. Connection failures (the host down) are retried without limit.
const MAX_SERVER_ERRORS: u32 = 5;

/// What a host task reports.
pub(super) enum Event {
    /// A drop's registration on a host ended.
    Published {
        host: String,
        drop: String,
        result: Result<Published, OllamaError>,
    },
    /// A host's model list, for reconciliation.
    Listed {
        host: String,
        result: Result<Listed, OllamaError>,
    },
}

struct Host {
    url: String,
    client: Client,
    /// Earliest time for the next task (backoff while down or failing).
    next_try: Instant,
    /// Consecutive failures of the host as a whole.
    failures: u32,
    next_reconcile: Instant,
    busy: bool,
}

/// The hosts and their running tasks.
pub(super) struct Fleet {
    hosts: Vec<Host>,
    tasks: JoinSet<Event>,
    server_errors: HashMap<(String, String), u32>,
    backoff: Backoff,
}

fn forget_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("forget")
}

/// Asks the daemon (now, or when it next starts) to stop registering
/// `drop` on `host` (every host when `None`) and never bring it back.
pub fn request_forget(state_dir: &Path, drop: &str, host: Option<&str>) -> Result<(), DaemonError> {
    let dir = forget_dir(state_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::State(format!("{}: {e}", dir.display())))?;
    let host = host
        .map(|h| crate::ollama::parse_host(Some(h)).base_url())
        .unwrap_or_default();
    let file: String = format!("{drop}@{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    durable::write_atomic(&dir.join(file), format!("{drop}\n{host}").as_bytes())
        .map_err(|e| DaemonError::State(e.to_string()))
}

/// Says why a drop is registered again on a host.
fn report_drift(drop: &str, host: &str, d: &Drift) {
    match d {
        Drift::Missing(name) => {
            info!(drop = %drop, host = %host, "{name} missing on the host; registering it again")
        }
        Drift::Replaced {
            name,
            registered,
            found,
        } => {
            let short = |d: &str| d.chars().take(12).collect::<String>();
            warn!(drop = %drop, host = %host, "{name} was replaced on the host (digest {} where kvant registered {}); registering kvant's version again (`kvant forget {drop} --host {host}` keeps the replacement)", short(found), short(registered));
        }
    }
}

/// True when `rec` has outputs to register on hosts.
fn registrable(rec: &DropRecord) -> bool {
    !rec.outputs.is_empty()
        && match rec.step {
            Step::Converted | Step::Registering | Step::Registered => true,
            Step::Failed => !rec.hosts.is_empty(),
            Step::Queued | Step::Converting | Step::Changed => false,
        }
}

/// Sets the drop's step from its hosts' (module doc).
pub(super) fn derive_step(rec: &mut DropRecord, urls: &[String]) {
    if !registrable(rec) {
        return;
    }
    let steps: Vec<(&String, HostStep)> = urls
        .iter()
        .map(|u| (u, rec.hosts.get(u).map(|h| h.step).unwrap_or_default()))
        .collect();
    let prefix = |u: &str| {
        if urls.len() > 1 {
            format!("{u}: ")
        } else {
            String::new()
        }
    };
    let errors = |want: HostStep| -> Option<String> {
        let e: Vec<String> = steps
            .iter()
            .filter(|(_, s)| *s == want)
            .filter_map(|(u, _)| {
                rec.hosts
                    .get(*u)?
                    .error
                    .as_ref()
                    .map(|e| format!("{}{e}", prefix(u)))
            })
            .collect();
        (!e.is_empty()).then(|| e.join("; "))
    };
    if steps
        .iter()
        .all(|(_, s)| matches!(s, HostStep::Registered | HostStep::Forgotten))
    {
        rec.step = Step::Registered;
        rec.error = None;
        rec.outputs
            .iter_mut()
            .filter(|o| o.publishable())
            .for_each(|o| o.registered = true);
    } else if steps.iter().any(|(_, s)| *s == HostStep::Registering) {
        rec.step = Step::Registering;
        rec.error = errors(HostStep::Pending);
    } else if steps.iter().any(|(_, s)| *s == HostStep::Pending) {
        rec.step = Step::Converted;
        rec.error = errors(HostStep::Pending);
    } else {
        rec.step = Step::Failed;
        rec.error = errors(HostStep::Failed);
    }
    rec.attempts = rec.hosts.values().map(|h| h.attempts).max().unwrap_or(0);
}

/// A failed drop asked to be retried: its failed hosts try again.
pub(super) fn retry_failed_hosts(rec: &mut DropRecord) {
    for h in rec.hosts.values_mut() {
        if h.step == HostStep::Failed {
            h.step = HostStep::Pending;
            h.error = None;
            h.attempts = 0;
        }
    }
}

impl Fleet {
    /// One client per configured host; a bad header or CA file stops the
    /// daemon before it starts.
    pub(super) fn new(cfg: &DaemonConfig) -> Result<Fleet, DaemonError> {
        let now = Instant::now();
        let hosts = cfg
            .hosts
            .iter()
            .map(|h| {
                let client = Client::with_options(&h.url, &h.options)
                    .map_err(|e| DaemonError::Config(format!("{}: {e}", h.url)))?;
                Ok(Host {
                    url: h.url.clone(),
                    client,
                    next_try: now,
                    failures: 0,
                    next_reconcile: now,
                    busy: false,
                })
            })
            .collect::<Result<_, DaemonError>>()?;
        Ok(Fleet {
            hosts,
            tasks: JoinSet::new(),
            server_errors: HashMap::new(),
            // Retry often enough that a restarted Ollama is noticed within
            // half a minute.
            backoff: Backoff {
                max: Duration::from_secs(30),
                ..Backoff::default()
            },
        })
    }

    fn urls(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.url.clone()).collect()
    }

    /// True while a host task runs (the loop then waits on [`Fleet::next`]).
    pub(super) fn busy(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// The next finished host task.
    pub(super) async fn next(&mut self) -> Option<Event> {
        match self.tasks.join_next().await? {
            Ok(ev) => Some(ev),
            Err(e) => {
                error!("a registration task failed: {e}");
                None
            }
        }
    }

    /// Starts what each idle host can do now: reconcile when due, else
    /// register its oldest pending drop. Returns whether the state changed.
    pub(super) fn start(&mut self, cfg: &DaemonConfig, st: &mut State) -> bool {
        let now = Instant::now();
        let urls = self.urls();
        let mut changed = false;
        for host in &mut self.hosts {
            if host.busy || host.next_try > now {
                continue;
            }
            if host.next_reconcile <= now {
                host.busy = true;
                let (client, url) = (host.client.clone(), host.url.clone());
                self.tasks.spawn(async move {
                    let result = list_models(&client).await;
                    Event::Listed { host: url, result }
                });
                continue;
            }
            let next = st
                .drops
                .iter()
                .filter(|(_, r)| registrable(r))
                .filter(|(_, r)| r.hosts.get(&host.url).is_none_or(HostRecord::wants_work))
                .min_by_key(|(_, r)| r.seq)
                .map(|(n, _)| n.clone());
            let Some(name) = next else { continue };
            let prune = prune_list(cfg, st, &host.url, &name);
            let Some(rec) = st.drops.get_mut(&name) else {
                continue;
            };
            rec.hosts.entry(host.url.clone()).or_default().step = HostStep::Registering;
            derive_step(rec, &urls);
            changed = true;
            let model = rec.model.clone().unwrap_or_default();
            // The quality gate's decision was journaled with the outputs:
            // only those within budget are registered.
            let outputs: Vec<OutputRecord> = rec.publishable_outputs().cloned().collect();
            let best = rec.best_version.is_some() && rec.best_version == rec.version_label;
            let drop_settings = settings::load(&settings_dir(&rec.path)).unwrap_or_default();
            let options = PublishOptions {
                template_mode: drop_settings.template_mode.unwrap_or(cfg.template_mode),
                smoke_policy: cfg.chat_smoke,
                prune,
                best,
            };
            info!(drop = %name, model = %model, host = %host.url, "registering with Ollama");
            host.busy = true;
            let (client, url) = (host.client.clone(), host.url.clone());
            self.tasks.spawn(async move {
                let result = publish(&client, &model, &outputs, &options).await;
                Event::Published {
                    host: url,
                    drop: name,
                    result,
                }
            });
        }
        changed
    }

    /// Records a finished task in the journal (the caller saves it).
    pub(super) fn finish(&mut self, cfg: &DaemonConfig, st: &mut State, ev: Event) {
        let urls = self.urls();
        match ev {
            Event::Listed { host, result } => {
                let interval = cfg.reconcile_interval;
                let Some(h) = self.hosts.iter_mut().find(|h| h.url == host) else {
                    return;
                };
                h.busy = false;
                match result {
                    Ok(listed) => {
                        h.failures = 0;
                        h.next_reconcile = Instant::now() + interval;
                        debug!(host = %host, "reconciled: the host lists {} models", listed.len());
                        let owners = owners(st.drops.values(), &host);
                        for (drop, rec) in st.drops.iter_mut() {
                            let Some(d) = drift(rec, &host, &listed, &owners) else {
                                continue;
                            };
                            report_drift(drop, &host, &d);
                            if let Some(r) = rec.hosts.get_mut(&host) {
                                r.step = HostStep::Pending;
                            }
                            derive_step(rec, &urls);
                        }
                    }
                    Err(e) => {
                        h.failures += 1;
                        let wait = self.backoff.delay_random(h.failures);
                        warn!(host = %host, "cannot list the host's models, retrying in {:.1}s: {e}", wait.as_secs_f64());
                        h.next_try = Instant::now() + wait;
                        // The drops waiting for this host say why (kvant
                        // status, the systemd STATUS line).
                        for rec in st.drops.values_mut() {
                            if registrable(rec)
                                && rec.hosts.get(&host).is_none_or(HostRecord::wants_work)
                            {
                                rec.hosts.entry(host.clone()).or_default().error =
                                    Some(e.to_string());
                                derive_step(rec, &urls);
                            }
                        }
                    }
                }
            }
            Event::Published { host, drop, result } => {
                if let Some(h) = self.hosts.iter_mut().find(|h| h.url == host) {
                    h.busy = false;
                }
                match result {
                    Ok(p) => self.succeeded(cfg, st, &host, &drop, p),
                    Err(e) => self.failed(st, &host, &drop, e),
                }
                if let Some(rec) = st.drops.get_mut(&drop) {
                    derive_step(rec, &urls);
                }
            }
        }
    }

    fn succeeded(
        &mut self,
        cfg: &DaemonConfig,
        st: &mut State,
        host: &str,
        drop: &str,
        p: Published,
    ) {
        self.server_errors
            .remove(&(host.to_owned(), drop.to_owned()));
        if let Some(h) = self.hosts.iter_mut().find(|h| h.url == host) {
            h.failures = 0;
        }
        let Some(rec) = st.drops.get_mut(drop) else {
            return;
        };
        let model = rec.model.clone().unwrap_or_default();
        let first = p.registered.first();
        let mut disk: HashMap<&str, u64> = HashMap::new();
        for m in &p.models {
            disk.insert(&m.digest, m.size);
        }
        let orphaned: u64 = p.registered.iter().map(|r| r.orphaned_upload_bytes).sum();
        let record = HostRecord {
            step: HostStep::Registered,
            error: None,
            attempts: 0,
            server_version: first.map(|r| r.server_version.clone()),
            models: p.models.clone(),
            capabilities: first.map(|r| r.capabilities.clone()).unwrap_or_default(),
            template_mode: first.map(|r| r.template_mode.clone()),
            disk_bytes: disk.values().sum::<u64>() + orphaned,
        };
        info!(drop = %drop, model = %model, host = %host, "registered: {}", p.registered.iter().map(|r| format!("{} ({}, {}, {} template, capabilities {})", r.name, r.family, r.quantization_level, r.template_mode, r.capabilities.join("+"))).collect::<Vec<_>>().join(", "));
        for w in p.registered.iter().flat_map(|r| &r.warnings) {
            warn!(drop = %drop, host = %host, "{w}");
        }
        for w in &p.prune_errors {
            warn!(drop = %drop, host = %host, "{w}");
        }
        super::report::record_host(cfg, &model, host, &record, &p.registered);
        rec.hosts.insert(host.to_owned(), record);
        let label = rec.version_label.clone().unwrap_or_default();
        let versions = st
            .host_versions
            .entry(host.to_owned())
            .or_default()
            .entry(model.clone())
            .or_default();
        versions.retain(|v| v != &label);
        versions.push(label);
        if let Some(keep) = cfg.keep.filter(|k| *k > 0) {
            let old = excess_versions(versions, keep, rec.best_version.as_deref());
            versions.retain(|v| !old.contains(v));
            for old in old {
                info!(model = %model, host = %host, "pruned old version {old}");
            }
        }
    }

    fn failed(&mut self, st: &mut State, host: &str, drop: &str, e: OllamaError) {
        let Some(rec) = st.drops.get_mut(drop) else {
            return;
        };
        let r = rec.hosts.entry(host.to_owned()).or_default();
        r.attempts += 1;
        r.error = Some(e.to_string());
        // A host being down is waited out without limit; errors the server
        // answers with (a failing create) count toward a bound.
        let down = matches!(e, OllamaError::Connect { .. });
        let answered = self
            .server_errors
            .entry((host.to_owned(), drop.to_owned()))
            .or_default();
        if !down {
            *answered += 1;
        }
        if e.is_retryable() && (down || *answered < MAX_SERVER_ERRORS) {
            let wait = self.backoff.delay_random(r.attempts);
            warn!(drop = %drop, host = %host, attempt = r.attempts, "registration failed, retrying in {:.1}s: {e}", wait.as_secs_f64());
            r.step = HostStep::Pending;
            if let Some(h) = self.hosts.iter_mut().find(|h| h.url == host) {
                h.next_try = Instant::now() + wait;
            }
        } else {
            error!(drop = %drop, host = %host, "registration failed: {e}");
            r.step = HostStep::Failed;
        }
    }

    /// Takes `kvant forget` requests. Returns whether the state changed.
    pub(super) fn take_forget_requests(&self, state_dir: &Path, st: &mut State) -> bool {
        let Ok(rd) = std::fs::read_dir(forget_dir(state_dir)) else {
            return false;
        };
        let urls = self.urls();
        let mut changed = false;
        for e in rd.flatten() {
            // A request still being written (`kvant forget` writes it
            // atomically) is taken on the next pass, once renamed.
            if durable::is_temp_name(&e.file_name()) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let (drop, host) = text.split_once('\n').unwrap_or((text.as_str(), ""));
            if let Some(rec) = st.drops.get_mut(drop) {
                let targets: Vec<String> = if host.is_empty() {
                    urls.clone()
                } else {
                    vec![host.to_owned()]
                };
                for t in targets {
                    let r = rec.hosts.entry(t.clone()).or_default();
                    if r.step != HostStep::Registering {
                        info!(drop = %drop, host = %t, "forgotten on this host: never registered there again");
                        r.step = HostStep::Forgotten;
                        changed = true;
                    }
                }
                derive_step(rec, &urls);
            }
            let _ = std::fs::remove_file(e.path());
        }
        changed
    }

    /// Shutdown: running registrations are abandoned (finished again at
    /// the next start; every step is idempotent).
    pub(super) fn stop(&mut self, st: &mut State) {
        self.tasks.abort_all();
        let urls = self.urls();
        for rec in st.drops.values_mut() {
            let mut touched = false;
            for h in rec.hosts.values_mut() {
                if h.step == HostStep::Registering {
                    h.step = HostStep::Pending;
                    touched = true;
                }
            }
            if touched {
                derive_step(rec, &urls);
            }
        }
    }
}

/// The folder holding a drop's `kvant.toml`.
fn settings_dir(drop: &Path) -> PathBuf {
    if drop.is_dir() {
        drop.to_owned()
    } else {
        drop.parent().map(Path::to_owned).unwrap_or_default()
    }
}

/// The version tags `keep` deletes on `host` once `drop` is registered
/// there.
fn prune_list(cfg: &DaemonConfig, st: &State, host: &str, drop: &str) -> Vec<String> {
    let (Some(keep), Some(rec)) = (cfg.keep.filter(|k| *k > 0), st.drops.get(drop)) else {
        return vec![];
    };
    let model = rec.model.clone().unwrap_or_default();
    let label = rec.version_label.clone().unwrap_or_default();
    let mut versions: Vec<String> = st
        .host_versions
        .get(host)
        .and_then(|m| m.get(&model))
        .cloned()
        .unwrap_or_default();
    versions.retain(|v| v != &label);
    versions.push(label);
    let mut tags = Vec::new();
    for old in excess_versions(&versions, keep, rec.best_version.as_deref()) {
        // An adapter drop's adapter file is an output without tags.
        for o in rec.publishable_outputs().filter(|o| !o.tags.is_empty()) {
            tags.push(format!("{model}:{}-{old}", o.file_type));
        }
    }
    tags
}

/// The versions (oldest first) `keep` retires: all but the newest `keep`,
/// never the one `<model>:best` points at.
fn excess_versions(versions: &[String], keep: usize, best: Option<&str>) -> Vec<String> {
    let n = versions.len().saturating_sub(keep);
    versions[..n]
        .iter()
        .filter(|v| Some(v.as_str()) != best)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::{Fingerprint, OutputRecord};

    fn rec(hosts: &[(&str, HostStep)]) -> DropRecord {
        DropRecord {
            path: "/in/m".into(),
            fingerprint: Fingerprint {
                size: 1,
                mtime_ns: 2,
                sha256: "ab".into(),
            },
            step: Step::Converted,
            error: None,
            attempts: 0,
            crashes: 0,
            version_label: Some("v1".into()),
            model: Some("m".into()),
            outputs: vec![OutputRecord {
                file_type: "q8_0".into(),
                path: "/o/m.gguf".into(),
                sha256: "cd".into(),
                tags: vec!["m:q8_0".into()],
                registered: false,
                held_back: None,
            }],
            best_version: None,
            seq: 0,
            hosts: hosts
                .iter()
                .map(|(u, s)| {
                    (
                        (*u).to_owned(),
                        HostRecord {
                            step: *s,
                            error: Some(format!("{s:?}")),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_drop_follows_its_hosts() {
        let urls = vec!["a".to_owned(), "b".to_owned()];
        let mut r = rec(&[("a", HostStep::Registered)]);
        derive_step(&mut r, &urls);
        assert_eq!(r.step, Step::Converted, "b has not got it yet");
        let mut r = rec(&[("a", HostStep::Registered), ("b", HostStep::Forgotten)]);
        derive_step(&mut r, &urls);
        assert_eq!(r.step, Step::Registered);
        assert!(r.outputs[0].registered);
        let mut r = rec(&[("a", HostStep::Failed), ("b", HostStep::Registered)]);
        derive_step(&mut r, &urls);
        assert_eq!(r.step, Step::Failed);
        assert_eq!(r.error.as_deref(), Some("a: Failed"));
        retry_failed_hosts(&mut r);
        derive_step(&mut r, &urls);
        assert_eq!(r.step, Step::Converted);
    }
}
