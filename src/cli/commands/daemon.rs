//! `kvant watch`, `status`, `retry`, `service install`.

use std::process::ExitCode;

use anyhow::Context;

use kvant::daemon::{self, ConfigOverrides, ServiceOptions};

use crate::cli::args::{ForgetArgs, ReportArgs, RetryArgs, ServiceCommand, StateArgs, WatchArgs};

fn state_dir(a: &StateArgs) -> anyhow::Result<std::path::PathBuf> {
    let cfg = daemon::load_config(
        a.config.as_deref(),
        ConfigOverrides {
            state_dir: a.state_dir.clone(),
            ..Default::default()
        },
    )?;
    Ok(cfg.state_dir)
}

pub fn watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let cfg = daemon::load_config(
        a.config.as_deref(),
        ConfigOverrides {
            inbox: a.inbox,
            output: a.output,
            state_dir: a.state_dir,
            ollama: a.ollama,
            types: a.types,
            settle: a.settle,
            keep: a.keep,
            max_memory: a.max_memory,
            convert_timeout: a.convert_timeout,
        },
    )?;
    if a.check_config {
        println!(
            "configuration ok: inbox {}, output {}, state {}, Ollama {}",
            cfg.inbox.display(),
            cfg.output.display(),
            cfg.state_dir.display(),
            cfg.hosts
                .iter()
                .map(|h| h.url.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn status(a: StateArgs) -> anyhow::Result<ExitCode> {
    print!("{}", daemon::render_status(&state_dir(&a)?)?);
    Ok(ExitCode::SUCCESS)
}

pub fn retry(a: RetryArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir(&a.state)?;
    daemon::request_retry(&dir, &a.drop)?;
    println!(
        "retry of '{}' requested; the daemon picks it up (now, or when it next starts)",
        a.drop
    );
    Ok(ExitCode::SUCCESS)
}

pub fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let cfg = daemon::load_config(
        a.state.config.as_deref(),
        ConfigOverrides {
            state_dir: a.state.state_dir.clone(),
            output: a.output.clone(),
            ..Default::default()
        },
    )?;
    print!(
        "{}",
        daemon::render_quality_report(&cfg.output, &cfg.state_dir, &a.drop)?
    );
    Ok(ExitCode::SUCCESS)
}

pub fn forget(a: ForgetArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir(&a.state)?;
    daemon::request_forget(&dir, &a.drop, a.host.as_deref())?;
    println!(
        "'{}' will not be registered again on {}; the daemon records it (now, or when it next starts)",
        a.drop,
        a.host.as_deref().unwrap_or("any host")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn service(c: ServiceCommand) -> anyhow::Result<ExitCode> {
    let ServiceCommand::Install { system } = c;
    let binary = std::env::current_exe().context("finding this binary")?;
    let binary = binary.canonicalize().unwrap_or(binary);
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .context("HOME is not set")?;
    let cfg = daemon::load_config(None, ConfigOverrides::default())?;
    let out = daemon::install_service(&ServiceOptions {
        system,
        binary,
        home,
        writable: vec![cfg.inbox, cfg.output, cfg.state_dir],
    })?;
    println!(
        "wrote {}\nenable it with: {}",
        out.path.display(),
        out.enable_hint
    );
    Ok(ExitCode::SUCCESS)
}
