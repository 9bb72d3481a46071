//! Noticing drops in the inbox: which names count ([`filter`]), when a drop
//! is complete ([`settle`]), and the file-system watcher that only forwards
//! events ([`watcher`]).
//!
//! This module must not know about conversion, Ollama or the journal. Its
//! invariant: a drop is never reported ready while it may still be written.

pub mod filter;
pub mod settle;
pub mod watcher;

pub use filter::{drop_root, is_checkpoint_name, is_ignored_name, is_in_progress_name};
pub use settle::{snapshot, Settler, Snapshot};
pub use watcher::{InboxEvent, InboxWatcher};
