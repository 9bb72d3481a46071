//! The file-system watcher: notify's callback only forwards paths into a
//! bounded channel. When the channel is full it sets a rescan flag instead
//! of blocking or dropping silently, so the daemon rescans the whole inbox
//! and no drop is ever lost.
//!
//! Must not decide readiness (that is [`super::settle`]) nor touch the
//! journal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Capacity of the event channel; beyond it, a rescan replaces events.
pub const EVENT_CAPACITY: usize = 1024;

/// One forwarded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxEvent {
    /// Something at this path changed.
    Changed(PathBuf),
    /// Something was renamed to this path (complete by construction).
    RenamedTo(PathBuf),
}

/// A running watcher over the inbox (recursive). Dropping it stops it.
pub struct InboxWatcher {
    _watcher: notify::RecommendedWatcher,
    /// Events, in arrival order.
    pub events: mpsc::Receiver<InboxEvent>,
    /// Set when events were lost (channel full, watcher error): rescan.
    pub rescan: Arc<AtomicBool>,
}

impl std::fmt::Debug for InboxWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxWatcher").finish_non_exhaustive()
    }
}

impl InboxWatcher {
    /// Starts watching `inbox`.
    pub fn start(inbox: &Path) -> notify::Result<InboxWatcher> {
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let rescan = Arc::new(AtomicBool::new(false));
        let flag = rescan.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let renamed = matches!(
                        event.kind,
                        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                    );
                    if event.need_rescan() {
                        flag.store(true, Ordering::SeqCst);
                    }
                    // For a rename pair, the last path is the destination.
                    let paths: Vec<PathBuf> = if renamed {
                        event.paths.last().cloned().into_iter().collect()
                    } else {
                        event.paths
                    };
                    for p in paths {
                        let ev = if renamed {
                            InboxEvent::RenamedTo(p)
                        } else {
                            InboxEvent::Changed(p)
                        };
                        if tx.try_send(ev).is_err() {
                            flag.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Err(_) => flag.store(true, Ordering::SeqCst),
            })?;
        watcher.watch(inbox, RecursiveMode::Recursive)?;
        Ok(InboxWatcher {
            _watcher: watcher,
            events: rx,
            rescan,
        })
    }
}
