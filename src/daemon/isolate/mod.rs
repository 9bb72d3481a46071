//! Isolated conversions: every conversion runs in a child process — this
//! same binary, `kvant __convert-job` — so whatever a hostile or changing
//! checkpoint does to the converter (a panic, an abort, a stack overflow,
//! SIGBUS from a mapped file truncated underneath, the OOM killer, a hang)
//! fails that one drop with a one-line reason, and the daemon goes on.
//!
//! The protocol, one JSON document each way:
//!
//! ```text
//! parent → child (stdin, then closed):
//!   {"drop", "content_sha", "output", "types": ["q4_k_m", "auto", ..],
//!    "quality": {eval_text, max_kld, ..}, "journal_dir"}
//! child → parent (stdout, one JSON object per line):
//!   {"event":"progress","done":N,"total":M}   after each tensor
//!   {"event":"result","converted":{model, version_label, outputs}}
//!   {"event":"error","message":"<one line>"}
//! ```
//!
//! The child's stderr (its log lines, and what the Rust runtime prints as
//! it dies: "has overflowed its stack", "memory allocation of … failed")
//! is forwarded to the daemon's stderr and its tail kept to explain a
//! death (`reason`).
//!
//! Invariants:
//! * the child dies with the daemon (`PR_SET_PDEATHSIG`), never outlives
//!   it to write into an output folder the next daemon sweeps;
//! * whatever way the child ends, the temporaries it left (named with its
//!   pid, see [`crate::durable::temp_path_for`]) are removed before the
//!   outcome is journaled: a crash never leaves a partial file;
//! * limits — address space (`max_memory`, `RLIMIT_AS`) and time without
//!   progress (`convert_timeout`) — are applied by the parent, so the
//!   child cannot lift them.

mod child;
mod fault;
mod parent;
mod reason;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::job::Converted;

pub use child::run_convert_job;
pub use fault::{stall_if_asked, TEST_FAULT_ENV};
pub use parent::{convert_isolated, JobOutcome, JobProgress, Limits};

/// The hidden subcommand the daemon runs its child as.
pub const CHILD_SUBCOMMAND: &str = "__convert-job";

/// One conversion, as the parent hands it to the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The drop (file or folder in the inbox).
    pub drop: PathBuf,
    /// Its content hash (the version label falls back to it).
    pub content_sha: String,
    /// The daemon's output folder.
    pub output: PathBuf,
    /// The daemon's default types (a drop's kvant.toml may override).
    pub types: Vec<String>,
    /// The daemon's quality keys (a drop's kvant.toml wins key by key).
    #[serde(default)]
    pub quality: crate::daemon::QualitySettings,
    /// Where measurements are journaled, so a killed job redoes only the
    /// rest.
    #[serde(default)]
    pub journal_dir: Option<PathBuf>,
}

/// One line the child writes on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ChildMessage {
    /// A tensor was written to every output.
    Progress {
        /// Tensors done.
        done: usize,
        /// Tensors in the model.
        total: usize,
    },
    /// The conversion finished; outputs are in place.
    Result {
        /// What registration needs.
        converted: Converted,
    },
    /// The conversion failed cleanly (bad input, no space, cancelled).
    Error {
        /// One line naming the file and the reason.
        message: String,
    },
}
