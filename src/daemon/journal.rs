//! Writing the journal from the daemon's loop. A journal that cannot be
//! written (a full or read-only state folder) stops intake — no drop is
//! hashed, converted or registered without its step on disk first — and
//! the loop tries again each pass, resuming when a write succeeds. The
//! previous `state.json` stays whole meanwhile (it is replaced only by
//! rename, see [`crate::durable`]).

use std::path::PathBuf;

use tracing::{error, info};

use super::state::State;

/// The journal's folder and whether writing it is failing.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    failing: Option<String>,
}

impl Journal {
    pub(super) fn new(dir: PathBuf) -> Journal {
        Journal { dir, failing: None }
    }

    /// Writes `st`; false (said once, not per pass) when it cannot.
    pub(super) fn save(&mut self, st: &State) -> bool {
        match st.save(&self.dir) {
            Ok(()) => {
                if self.failing.take().is_some() {
                    info!(state = %self.dir.display(), "the journal can be written again; intake resumes");
                }
                true
            }
            Err(e) => {
                if self.failing.is_none() {
                    error!(state = %self.dir.display(), "{e}; intake stops until the journal can be written");
                }
                self.failing = Some(e.to_string());
                false
            }
        }
    }

    /// Whether new work may start: true when the last write succeeded, or
    /// when writing again now does.
    pub(super) fn writable(&mut self, st: &State) -> bool {
        self.failing.is_none() || self.save(st)
    }

    /// Why intake is stopped, if it is.
    pub(super) fn failure(&self) -> Option<&str> {
        self.failing.as_deref()
    }
}
