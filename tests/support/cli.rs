//! `kvant register` as a user runs it, for the tests of how kvant reaches
//! a server (https, proxies, redirects): the real binary, `OLLAMA_HOST`
//! removed so only `--ollama` counts, environment set on the child only.

use std::path::Path;
use std::process::{Command, Output};

/// `kvant register <gguf> --name <name> --ollama <url> <extra…>` with
/// `env` added to the child's environment; `RUST_LOG=trace` unless `env`
/// says otherwise, so a secret that leaks into any log line is seen.
pub fn register(
    gguf: &Path,
    name: &str,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("register")
        .arg(gguf)
        .args(["--name", name, "--ollama", url])
        .args(extra)
        .env_remove("OLLAMA_HOST")
        .env_clear_proxies()
        .env("RUST_LOG", "trace")
        .envs(env.iter().copied())
        .output()
        .expect("kvant runs")
}

/// Removes every proxy variable the machine running the tests may have,
/// so each test says exactly which ones kvant sees.
trait ClearProxies {
    fn env_clear_proxies(&mut self) -> &mut Self;
}

impl ClearProxies for Command {
    fn env_clear_proxies(&mut self) -> &mut Self {
        for v in PROXY_VARS {
            self.env_remove(v);
        }
        self
    }
}

/// The variables kvant's proxy rules read.
pub const PROXY_VARS: [&str; 9] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// Its stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names the server at `url` lists.
pub fn names(url: &str) -> Vec<String> {
    super::daemon::tags(url)
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}
