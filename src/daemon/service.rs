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

/// One word of a systemd command line or path list: `%` doubled (else it
/// is a specifier), and the word double-quoted with `\` and `"` escaped
/// when it holds whitespace or quotes (else systemd splits a path like
/// `/opt/my tools/kvant` into two words).
fn systemd_word(s: &str) -> String {
    let e = s.replace('%', "%%");
    if e.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '\'' || c == ';') {
        format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        e
    }
}

/// How systemd follows the daemon: ready once intake runs, restarted when
/// the loop stops pinging. The loop pings twice per interval when idle; a
/// long pass (a start-up that re-hashes big outputs before READY, pruning
/// tags on a slow Ollama) must stay within these bounds.
const NOTIFY_SETTINGS: &str =
    "Type=notify\nNotifyAccess=main\nWatchdogSec=120\nTimeoutStartSec=30min\nTimeoutStopSec=60\n";

/// What the system unit takes away, each line a privilege kvant does not
/// use: it reads the inbox, writes its output and state folders, talks
/// HTTP to Ollama and a datagram to systemd, and starts its own binary as
/// the conversion child (with setrlimit, so `@resources` stays allowed).
/// `systemd-analyze security` rates the result (tests/daemon_isolation.rs).
const HARDENING: &str = "NoNewPrivileges=true\nPrivateTmp=true\nPrivateDevices=true\nPrivateUsers=true\n\
ProtectKernelTunables=true\nProtectKernelModules=true\nProtectKernelLogs=true\nProtectControlGroups=true\n\
ProtectClock=true\nProtectHostname=true\nProtectProc=invisible\nProcSubset=pid\n\
RestrictSUIDSGID=true\nRestrictNamespaces=true\nRestrictRealtime=true\nLockPersonality=true\n\
MemoryDenyWriteExecute=true\nRemoveIPC=true\nPrivateMounts=true\nCapabilityBoundingSet=\nAmbientCapabilities=\n\
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nSystemCallArchitectures=native\n\
SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\nSystemCallErrorNumber=EPERM\nUMask=0027\n";

/// The systemd user unit.
pub fn render_user_unit(binary: &Path) -> String {
    format!(
        "[Unit]\nDescription=kvant: checkpoints to quantized GGUF models in Ollama\nAfter=network-online.target\n\n\
[Service]\n{notify}ExecStartPre={bin} watch --check-config\nExecStart={bin} watch\nRestart=on-failure\nRestartSec=5\n\n\
[Install]\nWantedBy=default.target\n",
        notify = NOTIFY_SETTINGS,
        bin = systemd_word(&binary.display().to_string())
    )
}

/// The hardened system unit.
pub fn render_system_unit(binary: &Path, writable: &[PathBuf]) -> String {
    let rw: Vec<String> = writable
        .iter()
        .map(|p| systemd_word(&p.display().to_string()))
        .collect();
    format!(
        "[Unit]\nDescription=kvant: checkpoints to quantized GGUF models in Ollama\nAfter=network-online.target ollama.service\nWants=network-online.target\n\n\
[Service]\n{notify}User=kvant\nGroup=kvant\nExecStartPre={bin} watch --check-config\nExecStart={bin} watch\nRestart=on-failure\nRestartSec=5\n\
ProtectSystem=strict\nProtectHome=read-only\nReadWritePaths={rw}\n{hardening}\n\
[Install]\nWantedBy=multi-user.target\n",
        notify = NOTIFY_SETTINGS,
        hardening = HARDENING,
        bin = systemd_word(&binary.display().to_string()),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs `systemd-analyze verify` on `unit`; returns its complaints about
    /// the file (empty when accepted).
    fn verify(unit: &Path) -> String {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .output()
            .expect("systemd-analyze (apt install systemd)");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        if out.status.success() && !err.contains(&format!("{name}:")) {
            String::new()
        } else {
            err
        }
    }

    #[test]
    fn binary_paths_with_spaces_and_percent_survive_systemd_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("my tools/100%");
        std::fs::create_dir_all(&odd).unwrap();
        let bin = odd.join("kvant");
        std::fs::copy("/bin/true", &bin).unwrap();
        let unit = render_system_unit(&bin, &[dir.path().join("in box")]);
        assert!(unit.contains("my tools/100%%/kvant\" watch\n"), "{unit}");
        let path = dir.path().join("kvant-odd.service");
        std::fs::write(&path, &unit).unwrap();
        assert_eq!(verify(&path), "");
        let user = dir.path().join("kvant-user.service");
        std::fs::write(&user, render_user_unit(&bin)).unwrap();
        assert_eq!(verify(&user), "");
        // Written without quoting, systemd would run `/…/my` with arguments.
        let naive = unit.replace(
            &systemd_word(&bin.display().to_string()),
            &bin.display().to_string(),
        );
        let naive_path = dir.path().join("kvant-naive.service");
        std::fs::write(&naive_path, naive).unwrap();
        assert_ne!(verify(&naive_path), "");
    }

    #[test]
    fn plain_paths_are_written_as_they_are() {
        assert_eq!(systemd_word("/usr/local/bin/kvant"), "/usr/local/bin/kvant");
        assert_eq!(systemd_word("/a b/k"), "\"/a b/k\"");
        assert_eq!(systemd_word("/a\"b"), "\"/a\\\"b\"");
    }
}
