//! An Ollama behind an https reverse proxy that requires a bearer token
//! (`tests/support/tls_proxy.py`: its own CA, given to kvant as a CA file,
//! nothing added to the system's roots): registration works through it, a
//! wrong token fails with one clear line, and the token is never printed.

mod support;

use kvant::quant::FileType;

use support::cli::{names, register, text};
use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;
use support::py_server::PyServer;

#[test]
fn registers_through_an_https_proxy_with_a_bearer_token_never_shown() {
    let token = "kv-s3cret-t0ken-4242";
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = PyServer::start(
        "tls_proxy.py",
        &["--upstream", &emu.url, "--token", token],
        &dir.path().join("tls"),
    );
    let url = format!("https://127.0.0.1:{}", proxy.port);
    let (gguf, _) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::Q8_0,
        dir.path(),
        None,
    );
    let headers = dir.path().join("box.headers");
    let ca = proxy.dir.join("ca.pem");
    let with_token = |headers_text: &str, log: &str| {
        std::fs::write(&headers, headers_text).unwrap();
        let extra = [
            "--ca-file",
            ca.to_str().unwrap(),
            "--headers-file",
            headers.to_str().unwrap(),
        ];
        register(&gguf, "az-gpt:q8_0", &url, &extra, &[("RUST_LOG", log)])
    };
    let ok = with_token(&format!("Authorization: Bearer {token}\n"), "trace");
    let (stdout, stderr) = text(&ok);
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stdout.contains("registered az-gpt:q8_0 on https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains(token) && !stderr.contains(token));
    assert!(
        names(&emu.url).iter().any(|n| n == "az-gpt:q8_0"),
        "not registered"
    );

    let wrong = with_token("Authorization: Bearer not-the-token\n", "warn");
    let (_, stderr) = text(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("401") && lines[0].contains("unauthorized"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-token"), "{stderr}");

    // Without the CA file the proxy's certificate is not trusted.
    let untrusted = register(&gguf, "az-gpt:q8_0", &url, &[], &[("RUST_LOG", "warn")]);
    let (_, stderr) = text(&untrusted);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
