//! An Ollama behind an https reverse proxy that requires a bearer token
//! (`tests/support/tls_proxy.py`: its own CA, given to kvant as a CA file,
//! nothing added to the system's roots): registration works through it, a
//! wrong token fails with one clear line, and the token is never printed.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvant::quant::FileType;

use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;

struct Proxy {
    child: Child,
    url: String,
}

impl Proxy {
    fn start(upstream: &str, token: &str, dir: &Path) -> Proxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls_proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--upstream", upstream, "--token", token, "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(dir.join("port")) {
                break p.trim().to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the TLS proxy did not start: {}",
                std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Proxy {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn registers_through_an_https_proxy_with_a_bearer_token_never_shown() {
    let token = "kv-s3cret-t0ken-4242";
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&emu.url, token, dir.path());
    let (gguf, _) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    let headers = dir.path().join("box.headers");
    let register = |headers_text: &str, log: &str| {
        std::fs::write(&headers, headers_text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kvant"))
            .arg("register")
            .arg(&gguf)
            .args(["--name", "az-gpt:q8_0", "--ollama", &proxy.url])
            .arg("--ca-file")
            .arg(dir.path().join("ca.pem"))
            .arg("--headers-file")
            .arg(&headers)
            .env("RUST_LOG", log)
            .output()
            .unwrap()
    };
    let ok = register(&format!("Authorization: Bearer {token}\n"), "trace");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
    );
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stdout.contains("registered az-gpt:q8_0 on https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains(token) && !stderr.contains(token));
    let listed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(kvant::ollama::Client::new(&emu.url).tags())
        .unwrap();
    assert!(
        listed.iter().any(|m| m["name"] == "az-gpt:q8_0"),
        "{listed:?}"
    );

    let wrong = register("Authorization: Bearer not-the-token\n", "warn");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("401") && lines[0].contains("unauthorized"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-token"), "{stderr}");

    // Without the CA file the proxy's certificate is not trusted.
    let untrusted = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .arg("register")
        .arg(&gguf)
        .args(["--name", "az-gpt:q8_0", "--ollama", &proxy.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
