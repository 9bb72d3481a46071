//! The shutdown signal: SIGTERM (systemd, launchd, `kill`) or SIGINT
//! (Ctrl-C). The daemon stops intake, finishes or cancels the current step
//! cleanly and flushes its journal when this future completes.

/// Completes on the first SIGTERM or SIGINT (Ctrl-C elsewhere). If a
/// handler cannot be installed, that signal is simply not awaited.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            (Ok(mut t), Err(_)) => {
                t.recv().await;
            }
            (Err(_), Ok(mut i)) => {
                i.recv().await;
            }
            (Err(_), Err(_)) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
