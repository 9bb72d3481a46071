//! The benchmarks' few command-line options (`cargo bench -- --quick`).

/// True when `name` (e.g. `--quick`) was given.
pub fn has(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// The value after `name` (`--threads 4`), if given.
pub fn value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
