//! Several Ollama hosts at once: the real `kvant watch` binary with a
//! config listing emulators of different Ollama versions (0.5.4's legacy
//! Modelfile create, 0.12.6's JSON create, 0.33.0's llama-server rewrite),
//! real fixtures dropped into a real inbox.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kvant::daemon::{HostStep, State, Step};

use support::cli::names;
use support::daemon::{
    digest_of, drop_folder, kvant_on_state, setup, tags, wait_for_log, wait_until, Daemon,
};
use support::emulator::Emulator;
use support::fixtures;

fn host_step(st: &State, drop: &str, host: &str) -> Option<HostStep> {
    Some(st.drops.get(drop)?.hosts.get(host)?.step)
}

fn registered_on(st: &State, drops: &[&str], hosts: &[&str]) -> bool {
    drops.iter().all(|d| {
        hosts
            .iter()
            .all(|h| host_step(st, d, h) == Some(HostStep::Registered))
    })
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
    let dir = setup();
    let dir = dir.path();
    let (old_url, mid_url, new_url) = (old.url.clone(), mid.url.clone(), new.url.clone());
    let three = [old_url.as_str(), mid_url.as_str(), new_url.as_str()];
    let w = Daemon::start_with_config(dir, &three, "reconcile_interval = 2\n", &[]);

    drop_folder(dir, "nanogpt-az", "az-gpt");
    let st = wait_until(dir, &w, 240, "az-gpt on three hosts", |st| {
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
    wait_until(dir, &w, 240, "hf-gpt2 on the hosts that are up", |st| {
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
    let st = wait_until(dir, &w, 240, "second.pt on the hosts that are up", |st| {
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
        &w,
        240,
        "the backlog on the host that came back",
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
    assert!(w.terminate().success(), "SIGTERM must exit 0");

    // A fourth host added to the configuration gets everything at start.
    let fourth = Emulator::start(&["--emulate-version", "0.12.6"]);
    let four = [three[0], three[1], three[2], fourth.url.as_str()];
    let w = Daemon::start_with_config(dir, &four, "reconcile_interval = 2\n", &[]);
    let all = ["az-gpt", "hf-gpt2", "second.pt"];
    wait_until(dir, &w, 240, "every model on the fourth host", |st| {
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
    let st = wait_until(dir, &w, 120, "the refill journaled", |st| {
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
    assert!(w.terminate().success(), "SIGTERM must exit 0");
}

/// Another tool puts its own model under `name` on `url` (a create from
/// the same model with a system prompt: a new manifest, a new digest).
fn replace_by_hand(url: &str, name: &str, system: &str) {
    let body = serde_json::json!({ "model": name, "from": name, "system": system });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(kvant::ollama::Client::new(url).create(&body))
        .unwrap();
}

fn digest_on(url: &str, name: &str) -> String {
    digest_of(&tags(url), name)
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Reconciliation compares digests: a model kvant registered that was
/// replaced under its name is registered again with a WARN naming the host
/// and both digests; after `kvant forget` the replacement is kept.
#[test]
fn a_model_replaced_by_hand_is_registered_again_unless_forgotten() {
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = setup();
    let dir = dir.path();
    let env = [("RUST_LOG", "info,kvant=debug")];
    let w = Daemon::start_with_config(dir, &[&emu.url], "reconcile_interval = 1\n", &env);
    drop_folder(dir, "nanogpt-az", "az-gpt");
    let st = wait_until(dir, &w, 240, "az-gpt registered", |st| {
        registered_on(st, &["az-gpt"], &[&emu.url])
    });
    let name = "az-gpt:q8_0";
    let kvants = digest_on(&emu.url, name);
    let recorded = &st.drops["az-gpt"].hosts[emu.url.as_str()].models;
    assert!(
        recorded
            .iter()
            .any(|m| m.name == name && m.digest == kvants),
        "the journal records the digest: {recorded:?}"
    );

    replace_by_hand(&emu.url, name, "a hand-made variant");
    let theirs = digest_on(&emu.url, name);
    assert_ne!(theirs, kvants);
    let log = wait_for_log(&w, 240, "the replacement noticed", |log| {
        log.contains(&format!("{name} was replaced on the host"))
    });
    let warn = log
        .lines()
        .find(|l| l.contains("was replaced on the host"))
        .unwrap();
    assert!(
        warn.contains("WARN")
            && warn.contains(&emu.url)
            && warn.contains(&theirs[..12])
            && warn.contains(&kvants[..12]),
        "{warn}"
    );
    wait_until(dir, &w, 240, "kvant's version back", |st| {
        registered_on(st, &["az-gpt"], &[&emu.url]) && digest_on(&emu.url, name) == kvants
    });

    // Forgotten on the host: a replacement stays.
    kvant_on_state(dir, &["forget", "az-gpt", "--host", &emu.url]);
    wait_for_log(&w, 120, "the forget taken", |log| {
        log.contains("forgotten on this host")
    });
    replace_by_hand(&emu.url, name, "kept on purpose");
    let kept = digest_on(&emu.url, name);
    let mark = w.log().len();
    let log = wait_for_log(
        &w,
        120,
        "two reconciliations after the replacement",
        |log| log[mark..].matches("reconciled:").count() >= 2,
    );
    assert!(!log[mark..].contains("was replaced on the host"), "{log}");
    assert_eq!(digest_on(&emu.url, name), kept);
    assert!(w.terminate().success());
}
