//! The registration part of `<model>.report.json`: `registration` lists
//! what every host reported (name, version, template mode, capabilities,
//! smoke test, sizes), `hosts` each host's record, including how many
//! bytes it holds for the model.

use serde_json::{json, Value};

use super::config::DaemonConfig;
use super::state::HostRecord;
use crate::durable;
use crate::ollama::Registered;

/// Replaces `host`'s entries in the model's report (best effort: a report
/// that cannot be read or written is left as it is).
pub(super) fn record_host(
    cfg: &DaemonConfig,
    model: &str,
    host: &str,
    record: &HostRecord,
    registered: &[Registered],
) {
    let path = cfg.output.join(model).join(format!("{model}.report.json"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    let mut list: Vec<Value> = v["registration"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.get("host").and_then(Value::as_str) != Some(host))
        .collect();
    list.extend(registered.iter().map(|r| json!(r)));
    v["registration"] = Value::Array(list);
    if !v["hosts"].is_object() {
        v["hosts"] = json!({});
    }
    v["hosts"][host] = json!(record);
    if let Ok(bytes) = serde_json::to_vec_pretty(&v) {
        let _ = durable::write_atomic(&path, &bytes);
    }
}

/// `kvant report DROP`: the quality table of the drop's model (as the
/// report page shows it), read from `<output>/<model>/<model>.report.json`.
pub fn render_quality_report(
    output: &std::path::Path,
    state_dir: &std::path::Path,
    drop: &str,
) -> Result<String, super::DaemonError> {
    use super::DaemonError;
    let st = super::state::State::load(state_dir)?;
    let rec = st.drops.get(drop).ok_or_else(|| {
        DaemonError::Drop(format!(
            "no drop named '{drop}' in {} (see kvant status)",
            state_dir.display()
        ))
    })?;
    let model = rec.model.clone().ok_or_else(|| {
        DaemonError::Drop(format!(
            "'{drop}' has not been converted yet ({:?})",
            rec.step
        ))
    })?;
    let path = output.join(&model).join(format!("{model}.report.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| DaemonError::Drop(format!("{}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| DaemonError::Drop(format!("{}: {e}", path.display())))?;
    let quality = &v["quality"];
    if quality.get("measured") == Some(&Value::Bool(false)) || quality.is_null() {
        let reason = quality["reason"].as_str().unwrap_or("not measured");
        return Ok(format!("{model}: {reason}\n"));
    }
    let q: crate::quality::QualityReport = serde_json::from_value(quality.clone())
        .map_err(|e| DaemonError::Drop(format!("{}: quality: {e}", path.display())))?;
    let page = path.with_file_name(format!("{model}.report.html"));
    Ok(format!(
        "{}{}page: {}\n",
        crate::quality::render_table(&q),
        crate::quality::render_candidates(&q),
        page.display()
    ))
}
