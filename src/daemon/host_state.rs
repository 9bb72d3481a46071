//! The journal's record of one drop on one Ollama host: each host is
//! registered on its own, so each keeps its own step, error, attempts,
//! what it holds (names, digests, sizes) and what it answered.

use serde::{Deserialize, Serialize};

/// Where a drop is on one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStep {
    /// Waiting for its turn on this host (or for the host to answer).
    #[default]
    Pending,
    /// Being registered.
    Registering,
    /// Registered; reconciliation re-registers it if it goes missing.
    Registered,
    /// Failed on this host with `error` (`kvant retry` tries again).
    Failed,
    /// `kvant forget`: never registered here again.
    Forgotten,
}

/// One model name as the host lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostModel {
    /// `model:tag`.
    pub name: String,
    /// `/api/tags` digest.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// A drop on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its step.
    pub step: HostStep,
    /// The last error, one line.
    #[serde(default)]
    pub error: Option<String>,
    /// Attempts since the last success.
    #[serde(default)]
    pub attempts: u32,
    /// The server's version at the last registration.
    #[serde(default)]
    pub server_version: Option<String>,
    /// The names registered there.
    #[serde(default)]
    pub models: Vec<HostModel>,
    /// `/api/show` capabilities of the first output.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `native` or `go`.
    #[serde(default)]
    pub template_mode: Option<String>,
    /// Bytes the host holds for this drop (its models' blobs, plus the
    /// uploads Ollama ≥ 0.30 leaves until it restarts).
    #[serde(default)]
    pub disk_bytes: u64,
}

impl HostRecord {
    /// True when this host still needs the drop.
    pub fn wants_work(&self) -> bool {
        matches!(self.step, HostStep::Pending)
    }

    /// True when this host is finished with the drop, one way or another.
    pub fn settled(&self) -> bool {
        matches!(
            self.step,
            HostStep::Registered | HostStep::Forgotten | HostStep::Failed
        )
    }
}
