//! Bad input gets a clear one-line error naming the file and the reason, a
//! non-zero exit, no panic, and no output file left behind. The evil pickle
//! runs nothing.

mod support;

use std::process::Command;

use support::fixtures;

/// (fixture, words the reason must contain, case-insensitive)
const BAD: &[(&str, &[&str])] = &[
    ("bad/truncated.pt", &["truncated.pt"]),
    ("bad/random-bytes.pt", &["random-bytes.pt"]),
    ("bad/empty.pt", &["empty.pt"]),
    ("bad/evil-pickle.pt", &["evil-pickle.pt", "posix.system"]),
    ("bad/path-traversal.pt", &["path-traversal.pt", ".."]),
    (
        "bad/lying-header.safetensors",
        &["lying-header.safetensors"],
    ),
    (
        "bad/huge-header-len.safetensors",
        &["huge-header-len.safetensors"],
    ),
    ("bad/complex-dtype.pt", &["complex-dtype.pt", "complex"]),
];

const EVIL_MARKER: &str = "/tmp/kvant-evil-marker";

#[test]
fn every_bad_fixture_fails_cleanly() {
    let _ = std::fs::remove_file(EVIL_MARKER);
    for (rel, words) in BAD {
        let src = fixtures::path(rel);
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("out.gguf");
        let run = Command::new(env!("CARGO_BIN_EXE_kvant"))
            .args(["convert"])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(["--type", "q8_0", "--n-head", "4"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{rel}: exit status; stderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{rel} panicked: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{rel}: expected one error line, got: {stderr}"
        );
        let line = lines[0].to_lowercase();
        for w in *words {
            assert!(
                line.contains(&w.to_lowercase()),
                "{rel}: '{w}' missing from: {}",
                lines[0]
            );
        }
        let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{rel}: files left behind: {left:?}");
    }
    assert!(
        !std::path::Path::new(EVIL_MARKER).exists(),
        "the evil pickle's command ran"
    );
}

#[test]
fn inspect_of_a_bad_file_fails_cleanly_too() {
    let run = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("inspect")
        .arg(fixtures::path("bad/random-bytes.pt"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("random-bytes.pt") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(["convert", "--type", "q9_9"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
}
