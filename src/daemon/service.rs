//! Installing kvant as a service: a systemd user unit (no root needed), a
//! hardened system unit, or a launchd agent on macOS. The files are
//! rendered from the binary's real path; `kvant service install` writes
//! the right one and says how to enable it.

use std::path::{Path, PathBuf};

use super::DaemonError;
use crate::durable::write_atomic;

/// What to install.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// System-wide unit (needs root) instead of a user unit.
    pub system: bool,
    /// The kvant binary.
    pub binary: PathBuf,
    /// Home directory (user units and agents go under it).
    pub home: PathBuf,
    /// Folders the hardened unit must be able to write.
    pub writable: Vec<PathBuf>,
}

/// The installed file and how to start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Where the unit or plist was written.
    pub path: PathBuf,
    /// Commands to enable it.
    pub enable_hint: String,
}

/// The systemd user unit.
pub fn render_user_unit(binary: &Path) -> String {
    format!(
        "[Unit]\nDescription=kvant: checkpoints to quantized GGUF models in Ollama\nAfter=network-online.target\n\n\
[Service]\nType=simple\nExecStartPre={bin} watch --check-config\nExecStart={bin} watch\nRestart=on-failure\nRestartSec=5\n\n\
[Install]\nWantedBy=default.target\n",
        bin = binary.display()
    )
}

/// The hardened system unit.
pub fn render_system_unit(binary: &Path, writable: &[PathBuf]) -> String {
    let rw: Vec<String> = writable.iter().map(|p| p.display().to_string()).collect();
    format!(
        "[Unit]\nDescription=kvant: checkpoints to quantized GGUF models in Ollama\nAfter=network-online.target ollama.service\nWants=network-online.target\n\n\
[Service]\nType=simple\nUser=kvant\nGroup=kvant\nExecStartPre={bin} watch --check-config\nExecStart={bin} watch\nRestart=on-failure\nRestartSec=5\n\
ProtectSystem=strict\nProtectHome=read-only\nReadWritePaths={rw}\nNoNewPrivileges=true\nPrivateTmp=true\nPrivateDevices=true\n\
ProtectKernelTunables=true\nProtectControlGroups=true\nRestrictSUIDSGID=true\nLockPersonality=true\n\n\
[Install]\nWantedBy=multi-user.target\n",
        bin = binary.display(),
        rw = rw.join(" ")
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The launchd agent plist.
pub fn render_launchd_plist(binary: &Path, home: &Path) -> String {
    let log = home.join("Library/Logs/kvant.log");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>io.github.kvant.kvant</string>
  <key>ProgramArguments</key>
  <array>
    <string>{bin}</string>
    <string>watch</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <true/>
  <key>StandardOutPath</key>
  <string>{log}</string>
  <key>StandardErrorPath</key>
  <string>{log}</string>
</dict>
</plist>
"#,
        bin = xml_escape(&binary.display().to_string()),
        log = xml_escape(&log.display().to_string())
    )
}

/// Writes the service file for this platform.
pub fn install_service(o: &ServiceOptions) -> Result<InstallOutcome, DaemonError> {
    let write = |p: &Path, text: &str| -> Result<(), DaemonError> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| DaemonError::Config(format!("{}: {e}", d.display())))?;
        }
        write_atomic(p, text.as_bytes())
            .map_err(|e| DaemonError::Config(format!("{}: {e}", p.display())))
    };
    if cfg!(target_os = "macos") && !o.system {
        let path = o
            .home
            .join("Library/LaunchAgents/io.github.kvant.kvant.plist");
        write(&path, &render_launchd_plist(&o.binary, &o.home))?;
        return Ok(InstallOutcome {
            enable_hint: format!("launchctl load -w {}", path.display()),
            path,
        });
    }
    if o.system {
        let path = PathBuf::from("/etc/systemd/system/kvant.service");
        write(&path, &render_system_unit(&o.binary, &o.writable))?;
        return Ok(InstallOutcome {
            enable_hint: "sudo systemctl daemon-reload && sudo systemctl enable --now kvant".into(),
            path,
        });
    }
    let path = o.home.join(".config/systemd/user/kvant.service");
    write(&path, &render_user_unit(&o.binary))?;
    Ok(InstallOutcome {
        enable_hint: "systemctl --user daemon-reload && systemctl --user enable --now kvant".into(),
        path,
    })
}
