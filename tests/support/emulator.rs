//! The Ollama emulator (`../shared/ollama-emulator/ollama_emulator.py`, or
//! `$KVANT_OLLAMA_EMULATOR`) started on port 0 for one test, killed when
//! dropped. Missing emulator or Python fails the test loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running emulator.
pub struct Emulator {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Its model store.
    pub models: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    let p = match std::env::var_os("KVANT_OLLAMA_EMULATOR") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/ollama-emulator/ollama_emulator.py"),
    };
    assert!(
        p.is_file(),
        "Ollama emulator not found at {} (set KVANT_OLLAMA_EMULATOR)",
        p.display()
    );
    p
}

impl Emulator {
    /// Starts one with extra flags (`--emulate-version`, `--faults`).
    pub fn start(args: &[&str]) -> Emulator {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Emulator {
        let models = dir.path().join("models");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, port) = Self::spawn(dir.path(), &models, "0", &args);
        Emulator {
            child,
            url: format!("http://127.0.0.1:{port}"),
            models,
            args,
            _dir: dir,
        }
    }

    /// Stops the server (its store stays), like `systemctl stop ollama`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and store.
    pub fn resume(&mut self) {
        let port = self.url.rsplit(':').next().unwrap_or("0").to_owned();
        let (child, _) = Self::spawn(self._dir.path(), &self.models, &port, &self.args);
        self.child = child;
    }

    fn spawn(dir: &Path, models: &Path, port: &str, args: &[String]) -> (Child, u16) {
        let port_file = dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("emulator.log"))
            .expect("log");
        let child = Command::new("python3")
            .arg(script())
            .args(["--port", port, "--port-file"])
            .arg(&port_file)
            .arg("--models")
            .arg(models)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 must be installed to run the Ollama emulator");
        let started = Instant::now();
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = s.trim().parse::<u16>() {
                    break p;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the emulator did not start: {}",
                Self::read_log(dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (child, port)
    }

    fn read_log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default()
    }

    /// The emulator's request log so far.
    pub fn log(&self) -> String {
        Self::read_log(self._dir.path())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
