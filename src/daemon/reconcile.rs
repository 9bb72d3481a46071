//! Reconciliation: what a host lists (`/api/tags`, names and digests)
//! against what the journal says it holds. A model that went missing — the
//! host's store was wiped, or someone deleted it by hand — is registered
//! again (its blob is uploaded only if the host lacks it, `HEAD
//! /api/blobs`). A model still listed under its name but with another
//! digest than kvant registered — replaced by hand or by another tool — is
//! registered again too, with a WARN naming the host and both digests:
//! kvant keeps the names it publishes pointing at its own conversion. A
//! host added to the configuration later needs no comparison: it has no
//! record yet, so every drop is pending there.
//!
//! What is never brought back: drops marked with `kvant forget` on that
//! host (so `kvant forget` is also how a hand-made replacement is kept),
//! and versions `keep` pruned (the journal only holds each drop's newest
//! version). A name two drops registered (`model:latest` of two drops of
//! one model) is checked by digest only for the drop that registered it
//! last, so two drops never take it from each other.

use std::collections::HashMap;

use serde_json::Value;

use super::state::{DropRecord, HostStep};
use crate::ollama::{Client, OllamaError};

/// What a host lists: full name (`model:tag`, lower-cased, since Ollama
/// matches names case-insensitively) to digest.
pub(super) type Listed = HashMap<String, String>;

/// How a host differs from the journal for one drop.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drift {
    /// The host lacks this name.
    Missing(String),
    /// The host lists the name with another model.
    Replaced {
        /// The name.
        name: String,
        /// The digest kvant registered.
        registered: String,
        /// The digest the host lists now.
        found: String,
    },
}

/// The models a host lists.
pub(super) async fn list_models(client: &Client) -> Result<Listed, OllamaError> {
    Ok(client
        .tags()
        .await?
        .iter()
        .filter_map(|m| {
            let name = m.get("name").and_then(Value::as_str)?;
            let digest = m.get("digest").and_then(Value::as_str).unwrap_or("");
            Some((name.to_lowercase(), digest.to_owned()))
        })
        .collect())
}

/// `name` as the host lists it (`:latest` when no tag is given).
fn full_name(name: &str) -> String {
    let lower = name.to_lowercase();
    if lower.contains(':') {
        lower
    } else {
        format!("{lower}:latest")
    }
}

/// For each name registered on `host`, the `seq` of the drop that
/// registered it last (the one whose digest counts).
pub(super) fn owners<'a>(
    drops: impl Iterator<Item = &'a DropRecord>,
    host: &str,
) -> HashMap<String, u64> {
    let mut owners: HashMap<String, u64> = HashMap::new();
    for rec in drops {
        let Some(h) = rec
            .hosts
            .get(host)
            .filter(|h| h.step == HostStep::Registered)
        else {
            continue;
        };
        for m in &h.models {
            let seq = owners.entry(full_name(&m.name)).or_insert(rec.seq);
            *seq = (*seq).max(rec.seq);
        }
    }
    owners
}

/// The first way `rec` is out of step on `host` (`None`: in step, or the
/// drop is not registered there).
pub(super) fn drift(
    rec: &DropRecord,
    host: &str,
    listed: &Listed,
    owners: &HashMap<String, u64>,
) -> Option<Drift> {
    let h = rec
        .hosts
        .get(host)
        .filter(|h| h.step == HostStep::Registered)?;
    let tags = rec
        .publishable_outputs()
        .flat_map(|o| o.tags.iter().cloned());
    for name in h.models.iter().map(|m| m.name.clone()).chain(tags) {
        if !listed.contains_key(&full_name(&name)) {
            return Some(Drift::Missing(name));
        }
    }
    for m in &h.models {
        let full = full_name(&m.name);
        let found = listed.get(&full).map(String::as_str).unwrap_or("");
        let owned = owners.get(&full) == Some(&rec.seq);
        if owned && !m.digest.is_empty() && !found.is_empty() && found != m.digest {
            return Some(Drift::Replaced {
                name: m.name.clone(),
                registered: m.digest.clone(),
                found: found.to_owned(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::{Fingerprint, HostModel, HostRecord, OutputRecord, Step};

    fn rec(seq: u64, digest: &str) -> DropRecord {
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
                held_back: None,
            }],
            seq,
            hosts: Default::default(),
            best_version: None,
        };
        rec.hosts.insert(
            "h".into(),
            HostRecord {
                step: HostStep::Registered,
                models: vec![HostModel {
                    name: "m:latest".into(),
                    digest: digest.into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        rec
    }

    fn listed(pairs: &[(&str, &str)]) -> Listed {
        pairs
            .iter()
            .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
            .collect()
    }

    #[test]
    fn only_registered_drops_with_a_missing_name_are_refilled() {
        let mut rec = rec(0, "");
        let owners = owners([&rec].into_iter(), "h");
        let all = listed(&[("m:q8_0", "d1"), ("m:latest", "d1")]);
        assert_eq!(drift(&rec, "h", &all, &owners), None);
        let wiped = Listed::new();
        assert_eq!(
            drift(&rec, "h", &wiped, &owners),
            Some(Drift::Missing("m:latest".into()))
        );
        if let Some(h) = rec.hosts.get_mut("h") {
            h.step = HostStep::Forgotten;
        }
        assert_eq!(
            drift(&rec, "h", &wiped, &owners),
            None,
            "forgotten stays gone"
        );
    }

    #[test]
    fn a_name_listed_with_another_digest_is_replaced_unless_a_newer_drop_owns_it() {
        let old = rec(1, "aaa");
        let owners_one = owners([&old].into_iter(), "h");
        let same = listed(&[("m:q8_0", "aaa"), ("m:latest", "aaa")]);
        assert_eq!(drift(&old, "h", &same, &owners_one), None);
        let other = listed(&[("m:q8_0", "aaa"), ("m:latest", "bbb")]);
        assert_eq!(
            drift(&old, "h", &other, &owners_one),
            Some(Drift::Replaced {
                name: "m:latest".into(),
                registered: "aaa".into(),
                found: "bbb".into(),
            })
        );
        let newer = rec(2, "bbb");
        let owners_two = owners([&old, &newer].into_iter(), "h");
        assert_eq!(drift(&old, "h", &other, &owners_two), None);
        assert_eq!(drift(&newer, "h", &other, &owners_two), None);
    }
}
