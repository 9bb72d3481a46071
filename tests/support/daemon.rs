//! The real `kvant watch` binary run for one test in a temporary folder
//! (`inbox/`, `out/`, `state/`, `kvant.log`), and the helpers the daemon
//! tests share: waiting for a step, dropping fixtures in as a careful user
//! does (staged, then renamed into the inbox), listing what Ollama has.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvant::daemon::{State, Step};
use serde_json::Value;

use super::fixtures;

/// `kvant watch` on `dir`'s folders, with `--settle 1` unless `extra` says.
fn watch_args(dir: &Path, ollama: &str, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["watch".into(), "--inbox".into()];
    args.push(dir.join("inbox").into());
    args.push("--output".into());
    args.push(dir.join("out").into());
    args.push("--state-dir".into());
    args.push(dir.join("state").into());
    args.extend(["--ollama".into(), ollama.into()]);
    if !extra.contains(&"--settle") {
        args.extend(["--settle".into(), "1".into()]);
    }
    args.extend(extra.iter().map(Into::into));
    args
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    dir: PathBuf,
}

impl Daemon {
    /// Starts `kvant watch` on `dir` with `--settle 1` unless `extra` says.
    pub fn start(dir: &Path, ollama: &str, extra: &[&str]) -> Daemon {
        Self::start_with_env(dir, ollama, extra, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        ollama: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvant"));
        cmd.args(watch_args(dir, ollama, extra));
        Self::spawn(cmd, dir, env)
    }

    /// `kvant watch --config dir/config.toml`, the config naming `dir`'s
    /// folders, every URL of `hosts` (`ollama = [...]`), `types =
    /// ["q8_0"]`, `settle = 1`, then `extra_toml`.
    pub fn start_with_config(
        dir: &Path,
        hosts: &[&str],
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let list: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        let config = format!(
            "inbox = {:?}\noutput = {:?}\nstate_dir = {:?}\nollama = [{}]\ntypes = [\"q8_0\"]\nsettle = 1\n{extra_toml}",
            dir.join("inbox"),
            dir.join("out"),
            dir.join("state"),
            list.join(", ")
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvant"));
        cmd.arg("watch").arg("--config").arg(path);
        Self::spawn(cmd, dir, env)
    }

    /// Started as systemd starts a `WatchdogSec=` service: `WATCHDOG_USEC`
    /// and `WATCHDOG_PID` naming the daemon's own pid (a shell exports its
    /// pid and `exec`s kvant, which keeps it).
    pub fn start_under_watchdog(
        dir: &Path,
        ollama: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        watchdog_usec: u64,
    ) -> Daemon {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_kvant"))
            .args(watch_args(dir, ollama, extra))
            .env("WATCHDOG_USEC", watchdog_usec.to_string());
        Self::spawn(cmd, dir, env)
    }

    fn spawn(mut cmd: Command, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kvant.log"))
            .unwrap();
        let child = cmd
            .env_remove("OLLAMA_HOST")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon {
            child,
            dir: dir.to_owned(),
        }
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kvant.log")).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The journal now (empty before the daemon wrote one).
pub fn state(dir: &Path) -> State {
    State::load(&dir.join("state")).unwrap_or_default()
}

/// Waits until every named drop reached `step`, returning the state;
/// fails with the journal and the log after `secs`.
pub fn wait_for(dir: &Path, drops: &[&str], step: Step, daemon: &Daemon, secs: u64) -> State {
    wait_until(
        dir,
        daemon,
        secs,
        &format!("{drops:?} to be {step:?}"),
        |st| {
            drops
                .iter()
                .all(|d| st.drops.get(*d).is_some_and(|r| r.step == step))
        },
    )
}

/// Waits until `done` holds for the journal, returning it; fails with the
/// journal and the log after `secs`.
pub fn wait_until(
    dir: &Path,
    daemon: &Daemon,
    secs: u64,
    what: &str,
    done: impl Fn(&State) -> bool,
) -> State {
    let start = Instant::now();
    loop {
        let st = state(dir);
        if done(&st) {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; state: {:#?}\nlog:\n{}",
            st.drops
                .iter()
                .map(|(n, r)| (n, r.step, r.crashes, r.error.clone(), &r.hosts))
                .collect::<Vec<_>>(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until `done` holds for the daemon's log, returning it; fails
/// with the log after `secs`.
pub fn wait_for_log(daemon: &Daemon, secs: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let log = daemon.log();
        if done(&log) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The models the server at `url` lists.
pub fn tags(url: &str) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(kvant::ollama::Client::new(url).tags()).unwrap()
}

/// A temporary folder with an empty `inbox/`.
pub fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    dir
}

/// Copies the files of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Drops are made in a staging folder and renamed into the inbox, as a
/// careful user (or rsync) does; slow in-place copies are tested apart.
pub fn drop_folder(dir: &Path, fixture: &str, name: &str) {
    let staging = dir.join(format!("staging-{name}"));
    copy_dir(&fixtures::path(fixture), &staging);
    std::fs::rename(&staging, dir.join("inbox").join(name)).unwrap();
}

/// One file of the fixtures dropped in as `inbox/<name>` (copied beside
/// the inbox, then renamed into it).
pub fn drop_file(dir: &Path, fixture: &str, name: &str) {
    let staging = dir.join(format!("staging-{name}"));
    std::fs::copy(fixtures::path(fixture), &staging).unwrap();
    std::fs::rename(&staging, dir.join("inbox").join(name)).unwrap();
}

/// `kvant retry <drop>` against the test's state folder; fails the test
/// with kvant's stderr when it does not succeed.
pub fn kvant_retry(dir: &Path, drop: &str) {
    kvant_on_state(dir, &["retry", drop]);
}

/// `kvant <args…> --state-dir <dir>/state` (retry, forget); fails the
/// test with kvant's stderr when it does not succeed.
pub fn kvant_on_state(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvant {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Waits until `drop` is registered under a version label `ok` accepts,
/// returning the label.
pub fn wait_for_version(
    dir: &Path,
    drop: &str,
    daemon: &Daemon,
    secs: u64,
    ok: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let st = state(dir);
        let r = st.drops.get(drop);
        if let Some((Step::Registered, Some(v))) = r.map(|r| (r.step, &r.version_label)) {
            if ok(v) {
                return v.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{r:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The digest `/api/tags` lists for `name`.
pub fn digest_of(listed: &[Value], name: &str) -> Value {
    listed
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["digest"].clone())
        .unwrap_or_else(|| panic!("{name} missing: {listed:?}"))
}
