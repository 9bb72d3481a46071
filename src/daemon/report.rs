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
