//! Reconciliation: what a host lists (`/api/tags`) against what the
//! journal says it holds. A model that went missing — the host's store
//! was wiped, or someone deleted it by hand — is registered again (its
//! blob is uploaded only if the host lacks it, `HEAD /api/blobs`). A host
//! added to the configuration later needs no comparison: it has no
//! record yet, so every drop is pending there.
//!
//! What is never brought back: drops marked with `kvant forget` on that
//! host, and versions `keep` pruned (the journal only holds each drop's
//! newest version).

use std::collections::HashSet;

use serde_json::Value;

use super::state::{DropRecord, HostStep};
use crate::ollama::{Client, OllamaError};

/// The names a host lists, lower-cased (Ollama matches names
/// case-insensitively).
pub(super) async fn list_names(client: &Client) -> Result<HashSet<String>, OllamaError> {
    Ok(client
        .tags()
        .await?
        .iter()
        .filter_map(|m| m.get("name").and_then(Value::as_str))
        .map(str::to_lowercase)
        .collect())
}

/// The first name `rec` should have on `host` but that `listed` lacks
/// (`None`: nothing missing, or the drop is not registered there).
pub(super) fn missing_models(
    rec: &DropRecord,
    host: &str,
    listed: &HashSet<String>,
) -> Option<String> {
    let h = rec
        .hosts
        .get(host)
        .filter(|h| h.step == HostStep::Registered)?;
    let expected = h.models.iter().map(|m| m.name.clone()).chain(
        rec.outputs
            .iter()
            .filter(|o| o.publish)
            .flat_map(|o| o.tags.iter().cloned()),
    );
    for name in expected {
        let lower = name.to_lowercase();
        let full = if lower.contains(':') {
            lower
        } else {
            format!("{lower}:latest")
        };
        if !listed.contains(&full) {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::{Fingerprint, HostModel, HostRecord, OutputRecord, Step};

    #[test]
    fn only_registered_drops_with_a_missing_name_are_refilled() {
        let mut rec = DropRecord {
            path: "/in/m".into(),
            fingerprint: Fingerprint {
                size: 1,
                mtime_ns: 2,
                sha256: "ab".into(),
            },
            step: Step::Registered,
            error: None,
            attempts: 0,
            crashes: 0,
            version_label: None,
            model: Some("m".into()),
            outputs: vec![OutputRecord {
                file_type: "q8_0".into(),
                path: "/o/m.gguf".into(),
                sha256: "cd".into(),
                tags: vec!["M:q8_0".into()],
                registered: true,
                publish: true,
                held_back: None,
            }],
            seq: 0,
            hosts: Default::default(),
            best_version: None,
        };
        rec.hosts.insert(
            "h".into(),
            HostRecord {
                step: HostStep::Registered,
                models: vec![HostModel {
                    name: "m:latest".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let all: HashSet<String> = ["m:q8_0".into(), "m:latest".into()].into();
        assert_eq!(missing_models(&rec, "h", &all), None);
        let wiped = HashSet::new();
        assert_eq!(
            missing_models(&rec, "h", &wiped).as_deref(),
            Some("m:latest")
        );
        if let Some(h) = rec.hosts.get_mut("h") {
            h.step = HostStep::Forgotten;
        }
        assert_eq!(
            missing_models(&rec, "h", &wiped),
            None,
            "forgotten stays gone"
        );
    }
}
