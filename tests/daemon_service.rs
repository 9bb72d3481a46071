//! Service files as the real tools read them: `systemd-analyze verify`
//! accepts the units; python3's plistlib parses the launchd agent.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvant::daemon::service::{install_launchd, install_systemd};
use kvant::daemon::ServiceOptions;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvant"))
}

fn verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze must be installed (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify rejected {}:\n{stderr}",
        unit.display()
    );
    // Complaints about our own file (unknown keys, bad values) are printed
    // with its name even when the exit code is 0.
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&name) || l.contains("Unknown key"))
        .collect();
    assert!(ours.is_empty(), "{ours:#?}");
}

#[test]
fn user_unit_installs_under_home_and_verifies() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("my config.toml");
    let outcome = install_systemd(&ServiceOptions {
        binary: binary(),
        home: home.path().to_path_buf(),
        config: Some(cfg.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        outcome.path,
        home.path().join(".config/systemd/user/kvant.service")
    );
    assert!(outcome.enable_hint.contains("systemctl --user"));
    let text = std::fs::read_to_string(&outcome.path).unwrap();
    assert!(text.contains(&format!(
        "ExecStart=\"{}\" \"daemon\" \"--config\" \"{}\"",
        binary().display(),
        cfg.display()
    )));
    assert!(text.contains("WantedBy=default.target"));
    verify(&outcome.path);
}

#[test]
fn system_unit_is_hardened_and_verifies() {
    let home = tempfile::tempdir().unwrap();
    let units = home.path().join("etc");
    let inbox = home.path().join("inbox");
    let outcome = install_systemd(&ServiceOptions {
        system: true,
        binary: binary(),
        home: home.path().to_path_buf(),
        writable_dirs: vec![inbox.clone(), home.path().join("models")],
        system_unit_dir: Some(units.clone()),
        user: Some("kvant".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(outcome.path, units.join("kvant.service"));
    let text = std::fs::read_to_string(&outcome.path).unwrap();
    for line in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "User=kvant",
        "WantedBy=multi-user.target",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    assert!(text.contains(&format!("ReadWritePaths=\"{}\"", inbox.display())));
    verify(&outcome.path);
}

#[test]
fn launchd_plist_parses_with_the_real_binary() {
    let home = tempfile::tempdir().unwrap();
    let outcome = install_launchd(&ServiceOptions {
        binary: binary(),
        home: home.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        outcome.path,
        home.path()
            .join("Library/LaunchAgents/io.github.kvant.kvant.plist")
    );
    let script = r#"
import json, plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
print(json.dumps(p))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&outcome.path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "plistlib rejected the plist: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["Label"], "io.github.kvant.kvant");
    assert_eq!(
        p["ProgramArguments"],
        serde_json::json!([binary().display().to_string(), "daemon"])
    );
    assert_eq!(p["RunAtLoad"], true);
    assert_eq!(p["KeepAlive"]["SuccessfulExit"], false);
    let logs = home.path().join("Library/Logs/kvant");
    assert_eq!(
        p["StandardOutPath"],
        logs.join("kvant.out.log").display().to_string()
    );
    assert_eq!(
        p["StandardErrorPath"],
        logs.join("kvant.err.log").display().to_string()
    );
    assert!(logs.is_dir());
}

#[test]
fn relative_binary_is_refused() {
    let e = install_systemd(&ServiceOptions {
        binary: PathBuf::from("kvant"),
        home: PathBuf::from("/tmp"),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("absolute path"), "{e}");
}
