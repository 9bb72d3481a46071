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
        let port_file = dir.path().join("port");
        let models = dir.path().join("models");
        let log = std::fs::File::create(dir.path().join("emulator.log")).expect("log");
        let child = Command::new("python3")
            .arg(script())
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--models")
            .arg(&models)
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
                Self::read_log(dir.path())
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Emulator {
            child,
            url: format!("http://127.0.0.1:{port}"),
            models,
            _dir: dir,
        }
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
