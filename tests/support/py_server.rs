//! The test servers written in Python beside this file (`tls_proxy.py`,
//! `forward_proxy.py`, `redirect_front.py`): started for one test in its
//! own folder, which receives `port`, `server.log` and the server's
//! `requests.jsonl`; killed when dropped. A missing Python fails loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running Python test server.
pub struct PyServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder.
    pub dir: PathBuf,
}

impl PyServer {
    /// Runs `tests/support/<script>` with `args` and `--dir <dir>`, and
    /// waits until it listens.
    pub fn start(script: &str, args: &[&str], dir: &Path) -> PyServer {
        std::fs::create_dir_all(dir).unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let child = Command::new("python3")
            // Their shared module is imported from the source tree: no
            // `__pycache__` left in it.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(path)
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .expect("python3 must be installed to run the test servers");
        let start = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(dir.join("port"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{script} did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        PyServer {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The requests it recorded so far, one JSON object each.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Forgets what it recorded (between the steps of a test).
    pub fn clear_requests(&self) {
        let _ = std::fs::remove_file(self.dir.join("requests.jsonl"));
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
