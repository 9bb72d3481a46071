//! `kvant status`: the journal as a table, each drop followed by one line
//! per Ollama host (its step, server version, what it holds or its error);
//! and the one-line summary the daemon sends systemd as its `STATUS=`
//! (what `systemctl status kvant` shows).

use std::path::Path;
use std::sync::atomic::Ordering;

use super::isolate::JobProgress;
use super::state::{HostRecord, HostStep, State, Step};
use super::DaemonError;

/// Marks a registration error that means the server accepted the
/// connection but never answered (see `ollama::Client`).
const NOT_ANSWERING: &str = "Ollama not answering";

/// Drops whose registration waits on a server that does not answer.
fn waiting_on_hung_ollama(st: &State) -> usize {
    st.drops
        .values()
        .filter(|r| {
            matches!(r.step, Step::Converted | Step::Registering)
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.contains(NOT_ANSWERING))
        })
        .count()
}

/// One line for the service manager: the conversion in progress, the
/// queue, what waits for Ollama, failures.
pub(super) fn summary_line(st: &State, converting: Option<(&str, &JobProgress)>) -> String {
    let count = |step| st.drops.values().filter(|r| r.step == step).count();
    let mut parts = Vec::new();
    if let Some((name, p)) = converting {
        let (done, total) = (
            p.done.load(Ordering::Relaxed),
            p.total.load(Ordering::Relaxed),
        );
        parts.push(format!("converting {name} ({done}/{total} tensors)"));
    }
    parts.push(format!("{} queued", count(Step::Queued)));
    let waiting = count(Step::Converted) + count(Step::Registering);
    if waiting > 0 {
        parts.push(format!("{waiting} to register"));
    }
    parts.push(format!("{} registered", count(Step::Registered)));
    let failed = count(Step::Failed);
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if waiting_on_hung_ollama(st) > 0 {
        parts.push(NOT_ANSWERING.to_owned());
    }
    parts.join(", ")
}

/// The table of drops, their steps, models and errors.
pub fn render_status(state_dir: &Path) -> Result<String, DaemonError> {
    let st = State::load(state_dir)?;
    if st.drops.is_empty() {
        return Ok(format!("no drops recorded in {}\n", state_dir.display()));
    }
    let mut out = String::new();
    let waiting_on_hung = waiting_on_hung_ollama(&st);
    if waiting_on_hung > 0 {
        out.push_str(&format!(
            "{NOT_ANSWERING}: {waiting_on_hung} drop(s) wait to be registered (retried with backoff)\n\n"
        ));
    }
    out.push_str(&format!(
        "{:<32} {:<12} {:<24} {:<14} {}\n",
        "DROP", "STEP", "MODEL", "VERSION", "DETAIL"
    ));
    let mut rows: Vec<_> = st.drops.iter().collect();
    rows.sort_by_key(|(_, r)| r.seq);
    for (name, r) in rows {
        let step = format!("{:?}", r.step).to_lowercase();
        let detail = match (&r.step, &r.error) {
            (Step::Failed, Some(e)) => e.clone(),
            (_, Some(e)) => format!("retrying: {e}"),
            (Step::Registered, None) => r
                .publishable_outputs()
                .flat_map(|o| o.tags.first().cloned())
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<32} {:<12} {:<24} {:<14} {}\n",
            name,
            step,
            r.model.as_deref().unwrap_or("-"),
            r.version_label.as_deref().unwrap_or("-"),
            detail.replace('\n', " ")
        ));
        for o in &r.outputs {
            if let Some(why) = &o.held_back {
                out.push_str(&format!(
                    "  {:<30} not registered (quality gate): {why}\n",
                    o.file_type
                ));
            }
        }
        for (url, h) in &r.hosts {
            out.push_str(&host_line(url, h));
        }
    }
    Ok(out)
}

/// `  @ <url>  <step>  <version>  <detail>` for one host of a drop.
fn host_line(url: &str, h: &HostRecord) -> String {
    let step = format!("{:?}", h.step).to_lowercase();
    let detail = match (h.step, &h.error) {
        (HostStep::Registered, _) => {
            let mut d = format!(
                "{} ({} template",
                h.models.first().map(|m| m.name.as_str()).unwrap_or("-"),
                h.template_mode.as_deref().unwrap_or("go")
            );
            if !h.capabilities.is_empty() {
                d.push_str(&format!(", capabilities {}", h.capabilities.join("+")));
            }
            d.push_str(&format!(
                ", {:.1} MiB on the host)",
                h.disk_bytes as f64 / 1048576.0
            ));
            d
        }
        (HostStep::Failed, Some(e)) => e.clone(),
        (_, Some(e)) => format!("retrying ({} attempts): {e}", h.attempts),
        _ => String::new(),
    };
    format!(
        "  @ {:<42} {:<12} {:<10} {}\n",
        url,
        step,
        h.server_version.as_deref().unwrap_or("-"),
        detail.replace('\n', " ")
    )
}
