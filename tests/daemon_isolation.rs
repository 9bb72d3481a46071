//! The daemon survives what a drop or a server does to it: converters
//! that abort, overflow their stack, run out of memory, hang or are
//! `kill -9`ed; a checkpoint truncated while it is read; a full output
//! folder; an Ollama that accepts and never answers; and systemd sees it
//! ready, its queue, and its watchdog pings (which stop when the loop
//! stalls). Real `kvant watch`, real fixtures, the real Ollama emulator.
//!
//! Conversions are made to die with the test-only `KVANT_TEST_FAULT`
//! switch (`src/daemon/isolate/fault.rs`), which the conversion child
//! reads for the drop it names.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvant::daemon::Step;
use sha2::Digest;

use support::daemon::{
    drop_file, drop_folder, kvant_retry, setup, tags, wait_for, wait_until, walk, Daemon,
};
use support::emulator::Emulator;
use support::fixtures;

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    walk(&dir.join("out"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".kvant-tmp"))
        .collect()
}

/// How many times the daemon started converting `drop` (its log says
/// `converting drop=<name>` each time).
fn conversions_of(log: &str, drop: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" converting") && l.contains(&format!("drop={drop}")))
        .filter(|l| {
            l.split("drop=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                == Some(drop)
        })
        .count()
}

fn sha256_file(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// The GGUF a clean, in-process conversion of `fixture` gives under the
/// model name `name`.
fn clean_conversion(fixture: &str, name: &str, out: &Path) -> String {
    let path = out.join(format!("{name}-q8_0.gguf"));
    let req = kvant::convert::ConvertRequest {
        source: fixtures::path(fixture),
        outputs: vec![kvant::convert::OutputSpec {
            file_type: kvant::quant::FileType::Q8_0,
            path: path.clone(),
        }],
        name: Some(name.into()),
        ..Default::default()
    };
    kvant::convert::convert(&req, &kvant::convert::NoProgress, &Default::default()).unwrap();
    sha256_file(&path)
}

/// The pids of `pid`'s children whose command line holds `needle`.
fn children_running(pid: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(child);
            }
        }
    }
    out
}

fn wait_for_temporary(dir: &Path, d: &Daemon) {
    let start = Instant::now();
    while temporaries(dir).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no conversion started:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_converter_death_fails_only_its_drop_and_a_restart_does_not_retry_it() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let faults = "abort@d-abort,stack@d-stack,alloc@d-alloc,hang@d-hang";
    let args = [
        "--types",
        "q8_0",
        "--max-memory",
        "1G",
        "--convert-timeout",
        "15",
    ];
    let env = [("KVANT_TEST_FAULT", faults)];
    let d = Daemon::start_with_env(dir.path(), &emu.url, &args, &env);
    let bad = ["d-abort", "d-stack", "d-alloc", "d-hang"];
    for b in bad {
        drop_folder(dir.path(), "nanogpt-az", b);
        std::thread::sleep(Duration::from_millis(30));
    }
    drop_folder(dir.path(), "nanogpt-az", "good");
    let st = wait_for(dir.path(), &bad, Step::Failed, &d, 400);
    let expected = [
        ("d-abort", "signal 6 (SIGABRT)"),
        ("d-stack", "stack overflow"),
        ("d-alloc", "ran out of memory (max_memory 1024 MiB)"),
        ("d-hang", "no progress for 15 s"),
    ];
    for (drop, reason) in expected {
        let r = &st.drops[drop];
        let e = r.error.clone().unwrap_or_default();
        assert!(e.contains(reason), "{drop}: {e}");
        assert!(e.contains("crashed 2 times"), "{drop}: {e}");
        assert_eq!(e.lines().count(), 1, "{drop}: {e}");
        assert_eq!(r.crashes, 2, "{drop}");
        assert_eq!(conversions_of(&d.log(), drop), 2, "{drop}\n{}", d.log());
    }
    wait_for(dir.path(), &["good"], Step::Registered, &d, 300);
    assert!(tags(&emu.url).iter().any(|m| m["name"] == "good:q8_0"));
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    assert!(d.terminate().success(), "the daemon itself never died");

    // A restart: the crashed drops stay failed; a drop dropped after them
    // is converted without them being tried again first.
    let d = Daemon::start_with_env(dir.path(), &emu.url, &args, &env);
    drop_folder(dir.path(), "nanogpt-az", "after-restart");
    let st = wait_for(dir.path(), &["after-restart"], Step::Registered, &d, 300);
    for drop in bad {
        assert_eq!(st.drops[drop].step, Step::Failed, "{drop}");
        assert_eq!(st.drops[drop].crashes, 2, "{drop}");
        assert_eq!(conversions_of(&d.log(), drop), 2, "{drop} retried");
    }
    // `kvant retry` is the way back: the crash count starts afresh.
    kvant_retry(dir.path(), "d-abort");
    wait_until(dir.path(), &d, 200, "d-abort tried again", |_| {
        conversions_of(&d.log(), "d-abort") == 4
    });
    wait_for(dir.path(), &["d-abort"], Step::Failed, &d, 200);
    assert!(d.terminate().success());
}

/// A daemon converting the drop `name` slowly (the `slow` fault), once
/// its converter has a partial file on disk; with the converter's pid.
fn converting_slowly(name: &str) -> (Emulator, tempfile::TempDir, Daemon, u32) {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let fault = format!("slow@{name}");
    let env = [("KVANT_TEST_FAULT", fault.as_str())];
    let d = Daemon::start_with_env(dir.path(), &emu.url, &["--types", "q8_0"], &env);
    drop_folder(dir.path(), "nanogpt-az", name);
    wait_for_temporary(dir.path(), &d);
    let pids = children_running(d.child.id(), "__convert-job");
    assert_eq!(pids.len(), 1, "one converter child: {pids:?}");
    (emu, dir, d, pids[0])
}

#[test]
fn kill_9_of_the_converter_leaves_no_partial_file_and_the_drop_is_redone() {
    let (_emu, dir, d, pid) = converting_slowly("slowpoke");
    let partial: Vec<PathBuf> = temporaries(dir.path());
    assert!(
        partial
            .iter()
            .all(|p| p.to_string_lossy().contains(&format!(".{pid}.kvant-tmp"))),
        "{partial:?}"
    );
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let st = wait_until(dir.path(), &d, 60, "the crash journaled", |st| {
        st.drops.get("slowpoke").is_some_and(|r| r.crashes == 1)
    });
    let e = st.drops["slowpoke"].error.clone().unwrap_or_default();
    assert!(e.contains("signal 9 (SIGKILL)"), "{e}");
    for p in &partial {
        assert!(!p.exists(), "partial file left: {}", p.display());
    }
    // Crashed once: converted again (and this time left alone).
    let st = wait_for(dir.path(), &["slowpoke"], Step::Registered, &d, 300);
    let out = &st.drops["slowpoke"].outputs[0];
    assert_eq!(sha256_file(&out.path), out.sha256);
    kvant::gguf::GgufFile::open(&out.path).unwrap();
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn a_checkpoint_truncated_mid_conversion_is_redone_once_it_settles() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let env = [("KVANT_TEST_FAULT", "slow@rewritten")];
    let mut d = Daemon::start_with_env(dir.path(), &emu.url, &["--types", "q8_0"], &env);
    drop_folder(dir.path(), "nanogpt-az", "rewritten");
    wait_for_temporary(dir.path(), &d);
    // What an interrupted scp over the file, or nanoGPT saving in place,
    // does: cut it short, then write it whole again.
    let ckpt = dir.path().join("inbox/rewritten/ckpt.pt");
    let bytes = std::fs::read(fixtures::path("nanogpt-az/ckpt.pt")).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&ckpt).unwrap();
    f.set_len(bytes.len() as u64 / 3).unwrap();
    drop(f);
    wait_until(dir.path(), &d, 120, "the change noticed", |st| {
        st.drops
            .get("rewritten")
            .is_some_and(|r| matches!(r.step, Step::Changed | Step::Queued))
    });
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&ckpt)
        .unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let st = wait_for(dir.path(), &["rewritten"], Step::Registered, &d, 300);
    let log = d.log();
    assert!(
        log.contains("changed while it was converted") || log.contains("a newer version arrived"),
        "{log}"
    );
    let clean = tempfile::tempdir().unwrap();
    let out = &st.drops["rewritten"].outputs[0];
    assert_eq!(
        sha256_file(&out.path),
        clean_conversion("nanogpt-az", "rewritten", clean.path()),
        "the redone output is the clean conversion"
    );
    assert!(temporaries(dir.path()).is_empty());
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test mounts a tmpfs and must run as root (CI and the dev machines do)"
        );
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount -t tmpfs failed");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_output_folder_fails_the_drop_cleanly_and_retry_completes() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let out = dir.path().join("out");
    let _fs = Tmpfs::mount(&out, "8m");
    // Leave 512 KiB: the Modelfile and report fit, the GGUF does not.
    let ballast = out.join("ballast");
    std::fs::write(&ballast, vec![7u8; (8 << 20) - (512 << 10)]).unwrap();
    let d = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    drop_folder(dir.path(), "nanogpt-az", "full");
    let st = wait_for(dir.path(), &["full"], Step::Failed, &d, 120);
    let e = st.drops["full"].error.clone().unwrap_or_default();
    assert!(
        e.starts_with(&format!("no space left on device in {}", out.display())),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    // The journal is whole and still knows the drop.
    let journal = kvant::daemon::State::load(&dir.path().join("state")).unwrap();
    assert_eq!(journal.drops["full"].step, Step::Failed);

    std::fs::remove_file(&ballast).unwrap();
    kvant_retry(dir.path(), "full");
    let st = wait_for(dir.path(), &["full"], Step::Registered, &d, 120);
    let o = &st.drops["full"].outputs[0];
    assert_eq!(sha256_file(&o.path), o.sha256);
    kvant::gguf::GgufFile::open(&o.path).unwrap();
    assert!(tags(&emu.url).iter().any(|m| m["name"] == "full:q8_0"));
}

/// Accepts connections and never answers, until stopped.
struct HungServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HungServer {
    fn start() -> HungServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((conn, _)) = listener.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        HungServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the port (and every connection held).
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

#[test]
fn a_hung_ollama_does_not_stop_conversions_and_status_says_so() {
    let hung = HungServer::start();
    let port = hung.port;
    let url = format!("http://127.0.0.1:{port}");
    let dir = setup();
    let d = Daemon::start(dir.path(), &url, &["--types", "q8_0"]);
    drop_folder(dir.path(), "nanogpt-az", "first");
    drop_folder(dir.path(), "nanogpt-az", "second");
    // Both are converted while the first registration hangs.
    let st = wait_until(dir.path(), &d, 180, "both converted", |st| {
        ["first", "second"].iter().all(|n| {
            st.drops
                .get(*n)
                .is_some_and(|r| matches!(r.step, Step::Converted | Step::Registering))
        })
    });
    assert!(st.drops["second"].outputs[0].path.is_file());
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_kvant"))
            .args(["status", "--state-dir"])
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let start = Instant::now();
    while !status().contains("Ollama not answering") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}\n{}",
            status(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    hung.stop();
    let _emu = Emulator::start(&["--port", &port.to_string()]);
    wait_for(dir.path(), &["first", "second"], Step::Registered, &d, 240);
    let listed = tags(&url);
    for m in ["first:q8_0", "second:q8_0"] {
        assert!(listed.iter().any(|t| t["name"] == m), "{m}: {listed:?}");
    }
    assert!(!status().contains("Ollama not answering"), "{}", status());
}

/// Reads every datagram waiting on `sock` (non-blocking).
fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[test]
fn systemd_sees_ready_status_and_watchdog_pings_which_stop_when_the_loop_stalls() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let env = [
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("KVANT_TEST_FAULT", "stall@stall-me.pt"),
    ];
    let mut d =
        Daemon::start_under_watchdog(dir.path(), &emu.url, &["--types", "q8_0"], &env, 1_000_000);
    let mut seen: Vec<String> = Vec::new();
    let received = |seen: &mut Vec<String>, want: &dyn Fn(&[String]) -> bool, what: &str| {
        let start = Instant::now();
        while !want(seen) {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "no {what} in {seen:?}\n{}",
                d.log()
            );
            seen.extend(drain(&sock));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let pings = |s: &[String]| s.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    received(
        &mut seen,
        &|s| s.iter().any(|m| m.contains("READY=1")),
        "READY",
    );
    received(&mut seen, &|s| pings(s) >= 3, "periodic WATCHDOG");
    drop_folder(dir.path(), "nanogpt-az", "good");
    received(
        &mut seen,
        &|s| {
            s.iter()
                .any(|m| m.contains("STATUS=") && m.contains("1 registered"))
        },
        "STATUS with the queue",
    );
    assert!(
        seen.iter().any(|m| m.contains("STATUS=converting good")),
        "{seen:?}"
    );

    // Stall the loop: the pings stop (a helper thread would go on).
    drop_file(dir.path(), "nanogpt-az/ckpt.pt", "stall-me.pt");
    let start = Instant::now();
    while !d.log().contains("test fault: the daemon's loop stalls") {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = drain(&sock);
    assert!(pings(&before) + pings(&seen) >= 3);
    // Five watchdog intervals: a live loop pings about ten times.
    std::thread::sleep(Duration::from_secs(5));
    let after = drain(&sock);
    assert_eq!(
        pings(&after),
        0,
        "pings went on while the loop stalled: {after:?}"
    );
    assert!(d.child.try_wait().unwrap().is_none());
}

#[test]
fn the_system_unit_is_hardened_and_speaks_notify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("kvant.service");
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_kvant")).unwrap();
    let text = kvant::daemon::render_system_unit(&bin, &[dir.path().to_owned()]);
    assert!(
        text.contains("Type=notify\n") && text.contains("WatchdogSec="),
        "{text}"
    );
    std::fs::write(&unit, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt install systemd)");
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for kvant.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security: exposure {score}");
    // The unit as it was before hardening scored 7.4 (MEDIUM).
    assert!(score <= 2.0, "exposure {score}:\n{report}");
}

/// Fills the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let ballast = dir.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![7u8; 4096];
    // tmpfs allocates as it is written: the write that fails is the one
    // that found no page left.
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..1]).is_ok() {}
    ballast
}

#[test]
fn a_journal_that_cannot_be_written_stops_intake_until_it_can() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let state_dir = dir.path().join("state");
    let _fs = Tmpfs::mount(&state_dir, "1m");
    let d = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    wait_until(dir.path(), &d, 60, "the first journal", |_| {
        state_dir.join("state.json").is_file()
    });
    let ballast = fill(&state_dir);
    drop_folder(dir.path(), "nanogpt-az", "stuck");
    let start = Instant::now();
    while !d
        .log()
        .contains("intake stops until the journal can be written")
    {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is converted without its step on disk; the old journal is
    // whole.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(conversions_of(&d.log(), "stuck"), 0, "{}", d.log());
    let journal = kvant::daemon::State::load(&state_dir).unwrap();
    assert!(!journal.drops.contains_key("stuck"));
    std::fs::remove_file(&ballast).unwrap();
    wait_for(dir.path(), &["stuck"], Step::Registered, &d, 180);
    assert!(d.log().contains("intake resumes"), "{}", d.log());
}

#[test]
fn sigterm_mid_conversion_stops_the_converter_cleanly() {
    let (_emu, dir, d, pid) = converting_slowly("midway");
    assert!(d.terminate().success(), "SIGTERM must exit 0");
    // The child is gone (not left to write on), and so is its partial file.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "converter still running: {status}"
    );
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    let st = support::daemon::state(dir.path());
    assert_eq!(
        st.drops["midway"].step,
        Step::Queued,
        "redone at the next start"
    );
    assert_eq!(st.drops["midway"].crashes, 0, "a shutdown is not a crash");
}
