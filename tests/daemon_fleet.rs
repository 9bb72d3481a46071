//! Several Ollama hosts at once: the real `kvant watch` binary with a
//! config listing emulators of different Ollama versions (0.5.4's legacy
//! Modelfile create, 0.12.6's JSON create, 0.33.0's llama-server rewrite),
//! real fixtures dropped into a real inbox.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvant::daemon::{HostStep, State, Step};

use support::emulator::Emulator;
use support::fixtures;

/// `kvant watch --config FILE`, its stderr in `dir/kvant.log`.
struct Watch {
    child: Child,
    dir: PathBuf,
}

impl Watch {
    fn start(dir: &Path, hosts: &[&str], extra_toml: &str) -> Watch {
        let list: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        let config = format!(
            "inbox = {:?}\noutput = {:?}\nstate_dir = {:?}\nollama = [{}]\ntypes = [\"q8_0\"]\nsettle = 1\n{extra_toml}",
            dir.join("inbox"),
            dir.join("out"),
            dir.join("state"),
            list.join(", ")
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kvant.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kvant"))
            .arg("watch")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env_remove("OLLAMA_HOST")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Watch {
            child,
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kvant.log")).unwrap_or_default()
    }

    fn terminate(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success(), "SIGTERM must exit 0");
        std::mem::forget(self);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(dir: &Path) -> State {
    State::load(&dir.join("state")).unwrap_or_default()
}

fn host_step(st: &State, drop: &str, host: &str) -> Option<HostStep> {
    Some(st.drops.get(drop)?.hosts.get(host)?.step)
}

/// Waits until `done` holds for the journal.
fn wait_until(
    dir: &Path,
    what: &str,
    w: &Watch,
    secs: u64,
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
            "timed out waiting for {what}; journal: {:#?}\nlog:\n{}",
            st.drops
                .iter()
                .map(|(n, r)| (n, r.step, &r.hosts))
                .collect::<Vec<_>>(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn registered_on(st: &State, drops: &[&str], hosts: &[&str]) -> bool {
    drops.iter().all(|d| {
        hosts
            .iter()
            .all(|h| host_step(st, d, h) == Some(HostStep::Registered))
    })
}

fn names(url: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(kvant::ollama::Client::new(url).tags())
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

fn drop_folder(dir: &Path, fixture: &str, name: &str) {
    let staging = dir.join(format!("staging-{name}"));
    std::fs::create_dir_all(&staging).unwrap();
    for e in std::fs::read_dir(fixtures::path(fixture)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), staging.join(e.file_name())).unwrap();
    }
    std::fs::rename(&staging, dir.join("inbox").join(name)).unwrap();
}

fn status(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("status")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The `kvant status` line of `host` under `drop`.
fn status_line(table: &str, drop: &str, host: &str) -> String {
    let mut in_drop = false;
    for line in table.lines() {
        if !line.starts_with("  @") {
            in_drop = line.starts_with(drop);
        } else if in_drop && line.contains(host) {
            return line.to_owned();
        }
    }
    panic!("no status line for {drop} on {host}:\n{table}")
}

/// Three hosts of three Ollama versions get every drop, each in its
/// API's form; a stopped host never delays the others and catches up in
/// order when it is back; a host added later gets every existing model at
/// the next start; a host whose store was wiped is refilled by
/// reconciliation; `kvant status` shows each host.
#[test]
fn every_host_gets_every_model_independently_and_catches_up() {
    let old = Emulator::start(&["--emulate-version", "0.5.4"]);
    let mid = Emulator::start(&["--emulate-version", "0.12.6"]);
    let mut new = Emulator::start(&["--emulate-version", "0.33.0"]);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    let (old_url, mid_url, new_url) = (old.url.clone(), mid.url.clone(), new.url.clone());
    let three = [old_url.as_str(), mid_url.as_str(), new_url.as_str()];
    let w = Watch::start(dir, &three, "reconcile_interval = 2\n");

    drop_folder(dir, "nanogpt-az", "az-gpt");
    let st = wait_until(dir, "az-gpt on three hosts", &w, 240, |st| {
        st.drops
            .get("az-gpt")
            .is_some_and(|r| r.step == Step::Registered)
    });
    let rec = &st.drops["az-gpt"];
    for (url, version) in [
        (&old_url, "0.5.4"),
        (&mid_url, "0.12.6"),
        (&new_url, "0.33.0"),
    ] {
        let h = &rec.hosts[url.as_str()];
        assert_eq!(h.server_version.as_deref(), Some(version));
        let listed = names(url);
        for n in ["az-gpt:q8_0", "az-gpt:latest"] {
            assert!(
                listed.iter().any(|l| l == n),
                "{n} not on {url}: {listed:?}"
            );
        }
        assert!(
            listed.iter().any(|l| l.starts_with("az-gpt:q8_0-")),
            "no version tag on {url}: {listed:?}"
        );
    }
    // 0.5.4 only accepts the legacy Modelfile create (a JSON `files` create
    // is refused there), 0.33.0 rewrote the upload: it holds the uploaded
    // blob besides its own copy until it restarts.
    let gguf_len = std::fs::metadata(&rec.outputs[0].path).unwrap().len();
    assert!(rec.hosts[new_url.as_str()].disk_bytes >= 2 * gguf_len);
    assert!(rec.hosts[mid_url.as_str()].disk_bytes < 2 * gguf_len);
    assert_eq!(
        rec.hosts[new_url.as_str()].capabilities,
        ["completion".to_owned()]
    );

    // One host down: the other two register without waiting for it.
    new.stop();
    drop_folder(dir, "hf-gpt2-az", "hf-gpt2");
    wait_until(dir, "hf-gpt2 on the hosts that are up", &w, 240, |st| {
        registered_on(st, &["hf-gpt2"], &three[..2])
    });
    std::fs::copy(
        fixtures::path("nanogpt-az/ckpt.pt"),
        dir.join("second.pt.part"),
    )
    .unwrap();
    std::fs::copy(
        fixtures::path("nanogpt-az/az_bpe_tokenizer.json"),
        dir.join("inbox/tokenizer.json"),
    )
    .unwrap();
    std::fs::rename(dir.join("second.pt.part"), dir.join("inbox/second.pt")).unwrap();
    let st = wait_until(dir, "second.pt on the hosts that are up", &w, 240, |st| {
        registered_on(st, &["second.pt"], &three[..2])
    });
    assert_eq!(st.drops["hf-gpt2"].step, Step::Converted);
    let down = &st.drops["hf-gpt2"].hosts[new_url.as_str()];
    assert_eq!(down.step, HostStep::Pending);
    assert!(
        down.error.as_deref().unwrap_or("").contains("cannot reach"),
        "{down:?}"
    );
    let table = status(dir);
    let line = status_line(&table, "hf-gpt2", &new_url);
    assert!(
        line.contains("pending") && line.contains("cannot reach"),
        "{table}"
    );
    let line = status_line(&table, "hf-gpt2", &mid_url);
    assert!(
        line.contains("registered") && line.contains("0.12.6"),
        "{table}"
    );

    // Back: its backlog is replayed in arrival order.
    new.resume();
    wait_until(
        dir,
        "the backlog on the host that came back",
        &w,
        240,
        |st| registered_on(st, &["hf-gpt2", "second.pt"], &three),
    );
    let log = w.log();
    let order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("registered:") && l.contains(new_url.as_str()))
        .filter_map(|l| {
            ["az-gpt", "hf-gpt2", "second.pt"]
                .into_iter()
                .find(|d| l.contains(&format!("drop={d}")))
        })
        .collect();
    assert_eq!(order, ["az-gpt", "hf-gpt2", "second.pt"], "{log}");
    w.terminate();

    // A fourth host added to the configuration gets everything at start.
    let fourth = Emulator::start(&["--emulate-version", "0.12.6"]);
    let four = [three[0], three[1], three[2], fourth.url.as_str()];
    let w = Watch::start(dir, &four, "reconcile_interval = 2\n");
    let all = ["az-gpt", "hf-gpt2", "second.pt"];
    wait_until(dir, "every model on the fourth host", &w, 240, |st| {
        registered_on(st, &all, &[fourth.url.as_str()])
    });
    let listed = names(&fourth.url);
    for n in [
        "az-gpt:q8_0",
        "hf-gpt2:q8_0",
        "second:q8_0",
        "second:latest",
    ] {
        assert!(listed.iter().any(|l| l == n), "{n}: {listed:?}");
    }

    // A host whose store is wiped is refilled by the next reconciliation.
    let mut mid = mid;
    mid.stop();
    std::fs::remove_dir_all(&mid.models).unwrap();
    mid.resume();
    assert!(names(&mid.url).is_empty());
    let start = Instant::now();
    loop {
        let listed = names(&mid.url);
        if ["az-gpt:q8_0", "hf-gpt2:q8_0", "second:q8_0"]
            .iter()
            .all(|n| listed.iter().any(|l| l == n))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the wiped host was not refilled: {listed:?}\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let st = wait_until(dir, "the refill journaled", &w, 120, |st| {
        registered_on(st, &all, &four)
    });
    assert!(st.drops.values().all(|r| r.step == Step::Registered));
    assert!(w
        .log()
        .contains("missing on the host; registering it again"));
    let table = status(dir);
    for d in all {
        for h in four {
            let line = status_line(&table, d, h);
            assert!(line.contains("registered"), "{table}");
        }
    }
    w.terminate();
}
