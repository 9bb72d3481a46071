//! Telling systemd how the daemon is (`Type=notify`, `WatchdogSec=`):
//! `READY=1` once intake runs, `STATUS=` with the queue (what `systemctl
//! status kvant` shows), `WATCHDOG=1` pings and `STOPPING=1`.
//!
//! The pings come from the daemon's loop itself, each pass, never from a
//! helper thread: a thread would keep pinging while the loop is stuck, and
//! systemd could not restart a hung daemon. The loop wakes at least every
//! half second, so a ping is due at most every half watchdog interval.
//!
//! Without `NOTIFY_SOCKET` (not run by systemd) everything here is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::debug;

/// The daemon's link to the service manager.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0u64;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec));
        Notifier {
            enabled,
            watchdog,
            last_ping: None,
            last_status: String::new(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, state) {
                debug!("cannot notify the service manager: {e}");
            }
        }
    }

    /// Intake runs: the service is up.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.last_status = status.to_owned();
        self.last_ping = Some(Instant::now());
    }

    /// One pass of the loop: a watchdog ping when half the interval has
    /// gone by, and the status line when it changed.
    pub fn tick(&mut self, status: &str) {
        if status != self.last_status {
            self.send(&[NotifyState::Status(status)]);
            self.last_status = status.to_owned();
        }
        if let Some(interval) = self.watchdog {
            let due = self.last_ping.is_none_or(|t| t.elapsed() >= interval / 2);
            if due {
                self.send(&[NotifyState::Watchdog]);
                self.last_ping = Some(Instant::now());
            }
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
