//! Where the real checkpoint fixtures are: `../shared/fixtures` beside the
//! repository, or `$KVANT_FIXTURES`. A missing fixture fails the test with
//! a message saying where it looked; it never skips.

use std::path::PathBuf;

/// The fixtures folder. Panics (failing the test loudly) when missing.
pub fn dir() -> PathBuf {
    let dir = match std::env::var_os("KVANT_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "fixtures not found at {} (set KVANT_FIXTURES to the shared fixtures folder)",
        dir.display()
    );
    dir
}

/// A path inside the fixtures folder, which must exist.
pub fn path(rel: &str) -> PathBuf {
    let p = dir().join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// Parses a JSON fixture.
pub fn json(rel: &str) -> serde_json::Value {
    let p = path(rel);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}
