//! Installing kvant as a service that starts at login/boot: a systemd user
//! unit (no root), a hardened systemd system unit, or a launchd agent on
//! macOS. The renderers are pure and testable on any OS; only
//! [`install_service`] picks by platform.
//!
//! Must not start or enable the service (that needs the user's consent and
//! privileges); it returns the command that does.

use std::path::{Path, PathBuf};

use super::DaemonError;

/// launchd label and plist file stem.
pub const LAUNCHD_LABEL: &str = "io.github.kvant.kvant";

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// The system-wide hardened unit (`/etc/systemd/system`) instead of
    /// the per-user one.
    pub system: bool,
    /// The kvant binary the service runs (absolute).
    pub binary: PathBuf,
    /// The user's home (user units and launchd agents go below it).
    pub home: PathBuf,
    /// `--config` passed to the daemon, if any.
    pub config: Option<PathBuf>,
    /// Directories the daemon writes (inbox, output, state): the hardened
    /// unit's `ReadWritePaths=`.
    pub writable_dirs: Vec<PathBuf>,
    /// Where log files go for launchd (default `~/Library/Logs/kvant`).
    pub log_dir: Option<PathBuf>,
    /// Directory for the system unit (default `/etc/systemd/system`).
    pub system_unit_dir: Option<PathBuf>,
    /// `User=` of the system unit (default: none, i.e. root — set one).
    pub user: Option<String>,
}

/// What was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// The file written.
    pub path: PathBuf,
    /// The command that enables and starts it.
    pub enable_hint: String,
}

fn daemon_args(opts: &ServiceOptions) -> Vec<String> {
    let mut args = vec![opts.binary.display().to_string(), "daemon".to_owned()];
    if let Some(c) = &opts.config {
        args.push("--config".into());
        args.push(c.display().to_string());
    }
    args
}

/// systemd quoting: every argument in double quotes, `\` `"` escaped and
/// `%` doubled (specifier).
fn systemd_quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// The systemd unit text (user or hardened system variant).
pub fn render_systemd_unit(opts: &ServiceOptions) -> String {
    let args: Vec<String> = daemon_args(opts).iter().map(|a| systemd_quote(a)).collect();
    let exec = args.join(" ");
    let mut u = String::new();
    u.push_str("[Unit]\n");
    u.push_str(
        "Description=kvant: convert dropped checkpoints to GGUF and register them with Ollama\n",
    );
    u.push_str("Documentation=https://github.com/kvant/kvant\n");
    u.push_str("After=network-online.target\nWants=network-online.target\n\n");
    u.push_str("[Service]\nType=simple\n");
    if opts.system {
        if let Some(user) = &opts.user {
            u.push_str(&format!("User={user}\n"));
        }
    }
    u.push_str(&format!("ExecStart={exec}\n"));
    u.push_str("Restart=on-failure\nRestartSec=5\nKillSignal=SIGTERM\nTimeoutStopSec=120\n");
    if opts.system {
        u.push_str("NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=read-only\nPrivateTmp=yes\nPrivateDevices=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\nRestrictRealtime=yes\nRestrictNamespaces=yes\n");
        u.push_str("StateDirectory=kvant\n");
        if !opts.writable_dirs.is_empty() {
            let dirs: Vec<String> = opts
                .writable_dirs
                .iter()
                .map(|d| systemd_quote(&d.display().to_string()))
                .collect();
            u.push_str(&format!("ReadWritePaths={}\n", dirs.join(" ")));
        }
    }
    u.push_str("\n[Install]\n");
    u.push_str(if opts.system {
        "WantedBy=multi-user.target\n"
    } else {
        "WantedBy=default.target\n"
    });
    u
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The launchd agent plist: runs the daemon at login, restarts it if it
/// exits, logs to `log_dir`.
pub fn render_launchd_plist(opts: &ServiceOptions) -> String {
    let log_dir = opts
        .log_dir
        .clone()
        .unwrap_or_else(|| opts.home.join("Library/Logs/kvant"));
    let args: String = daemon_args(opts)
        .iter()
        .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{LAUNCHD_LABEL}</string>
    <key>ProgramArguments</key>
    <array>
{args}    </array>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ProcessType</key>
    <string>Background</string>
    <key>StandardOutPath</key>
    <string>{out}</string>
    <key>StandardErrorPath</key>
    <string>{err}</string>
</dict>
</plist>
"#,
        out = xml_escape(&log_dir.join("kvant.out.log").display().to_string()),
        err = xml_escape(&log_dir.join("kvant.err.log").display().to_string()),
    )
}

fn write(path: &Path, text: &str) -> Result<(), DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(DaemonError::io(parent))?;
    }
    crate::durable::write_atomic(path, text.as_bytes()).map_err(DaemonError::io(path))
}

fn check_binary(opts: &ServiceOptions) -> Result<(), DaemonError> {
    if !opts.binary.is_absolute() {
        return Err(DaemonError::Service {
            path: opts.binary.clone(),
            reason: "the service needs the binary's absolute path".into(),
        });
    }
    Ok(())
}

/// Writes the systemd unit (Linux and other non-macOS systems).
pub fn install_systemd(opts: &ServiceOptions) -> Result<InstallOutcome, DaemonError> {
    check_binary(opts)?;
    let path = if opts.system {
        opts.system_unit_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/systemd/system"))
            .join("kvant.service")
    } else {
        opts.home.join(".config/systemd/user/kvant.service")
    };
    write(&path, &render_systemd_unit(opts))?;
    let enable_hint = if opts.system {
        "sudo systemctl daemon-reload && sudo systemctl enable --now kvant.service".to_owned()
    } else {
        "systemctl --user daemon-reload && systemctl --user enable --now kvant.service (and `loginctl enable-linger $USER` to run without a login)".to_owned()
    };
    Ok(InstallOutcome { path, enable_hint })
}

/// Writes the launchd agent plist (macOS layout; callable anywhere).
pub fn install_launchd(opts: &ServiceOptions) -> Result<InstallOutcome, DaemonError> {
    check_binary(opts)?;
    if opts.system {
        return Err(DaemonError::Service {
            path: PathBuf::from("/Library/LaunchDaemons"),
            reason: "a system-wide launchd daemon is not supported; install the per-user agent"
                .into(),
        });
    }
    let path = opts
        .home
        .join("Library/LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist"));
    let log_dir = opts
        .log_dir
        .clone()
        .unwrap_or_else(|| opts.home.join("Library/Logs/kvant"));
    std::fs::create_dir_all(&log_dir).map_err(DaemonError::io(&log_dir))?;
    write(&path, &render_launchd_plist(opts))?;
    Ok(InstallOutcome {
        enable_hint: format!("launchctl bootstrap gui/$(id -u) {}", path.display()),
        path,
    })
}

/// Installs the service file for this platform: launchd on macOS, systemd
/// elsewhere.
pub fn install_service(opts: ServiceOptions) -> Result<InstallOutcome, DaemonError> {
    #[cfg(target_os = "macos")]
    {
        install_launchd(&opts)
    }
    #[cfg(not(target_os = "macos"))]
    {
        install_systemd(&opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_quoted() {
        let o = ServiceOptions {
            binary: PathBuf::from("/opt/my kvant/100%/kvant"),
            ..Default::default()
        };
        let u = render_systemd_unit(&o);
        assert!(
            u.contains("ExecStart=\"/opt/my kvant/100%%/kvant\" \"daemon\"\n"),
            "{u}"
        );
        let p = render_launchd_plist(&ServiceOptions {
            binary: PathBuf::from("/a&b/kvant"),
            ..Default::default()
        });
        assert!(p.contains("<string>/a&amp;b/kvant</string>"));
    }
}
