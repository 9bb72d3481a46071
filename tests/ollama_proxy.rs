//! Ollama reached through the proxy a user's environment names
//! (`tests/support/forward_proxy.py`, a forward proxy that records what it
//! forwards and requires credentials): the real `kvant register` with the
//! proxy variables set on its process only. The Ollama is addressed by a
//! made-up name that no resolver knows (under `.internal`, a name Ollama
//! accepts in `Host`) and the proxy connects to the emulator, so a
//! registration that succeeds went through the proxy.

mod support;

use std::path::PathBuf;

use kvant::quant::FileType;

use support::cli::{names, register, text};
use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;
use support::py_server::PyServer;

const USER: &str = "kvant";
const PASSWORD: &str = "pr0xy-s3cret-77";
const NAME: &str = "ollama.kvant.internal";

fn gguf(dir: &std::path::Path) -> PathBuf {
    convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::Q8_0,
        dir,
        None,
    )
    .0
}

fn proxy_url(proxy: &PyServer, password: &str) -> String {
    format!("http://{USER}:{password}@127.0.0.1:{}", proxy.port)
}

/// The targets the proxy saw, and whether each carried the credentials.
fn seen(proxy: &PyServer) -> Vec<(String, String, bool)> {
    proxy
        .requests()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_owned(),
                r["target"].as_str().unwrap_or("").to_owned(),
                r["auth_ok"] == true,
            )
        })
        .collect()
}

#[test]
fn http_proxy_carries_registration_with_credentials_never_shown() {
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = PyServer::start(
        "forward_proxy.py",
        &["--auth", &format!("{USER}:{PASSWORD}")],
        &dir.path().join("proxy"),
    );
    let gguf = gguf(dir.path());
    let port = emu.url.rsplit(':').next().unwrap();
    let url = format!("http://{NAME}:{port}");
    let via = proxy_url(&proxy, PASSWORD);

    let ok = register(&gguf, "az-gpt:q8_0", &url, &[], &[("HTTP_PROXY", &via)]);
    let (stdout, stderr) = text(&ok);
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("registered az-gpt:q8_0 on {url}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    assert!(names(&emu.url).iter().any(|n| n == "az-gpt:q8_0"));
    let first = seen(&proxy);
    for (method, path) in [
        ("GET", "/api/version"),
        ("POST", "/api/blobs/sha256:"),
        ("POST", "/api/create"),
    ] {
        let target = format!("{url}{path}");
        assert!(
            first
                .iter()
                .any(|(m, t, auth)| m == method && t.starts_with(&target) && *auth),
            "{method} {target} not proxied with credentials: {first:?}"
        );
    }

    // Lower-case names work too; wrong credentials are the proxy's 407 in
    // one line, the password still unshown.
    proxy.clear_requests();
    let bad = register(
        &gguf,
        "az-gpt:q8_0",
        &url,
        &[],
        &[("http_proxy", &proxy_url(&proxy, "wrong-pa55"))],
    );
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(last.contains("407"), "{stderr}");
    assert!(!stderr.contains("wrong-pa55"), "{stderr}");
    assert!(seen(&proxy).iter().all(|(_, _, auth)| !auth));
}

#[test]
fn no_proxy_and_loopback_go_direct() {
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = PyServer::start("forward_proxy.py", &[], &dir.path().join("proxy"));
    let gguf = gguf(dir.path());
    let via = proxy_url(&proxy, PASSWORD);
    let port = emu.url.rsplit(':').next().unwrap();

    // The made-up name matched by NO_PROXY (as a domain suffix) is not
    // proxied: connecting to it directly fails, and the proxy saw nothing.
    let url = format!("http://{NAME}:{port}");
    for no_proxy in [
        "kvant.internal",
        ".kvant.internal",
        "localhost, ollama.kvant.internal",
        "*",
    ] {
        let out = register(
            &gguf,
            "az-gpt:q8_0",
            &url,
            &[],
            &[("HTTP_PROXY", &via), ("NO_PROXY", no_proxy)],
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "NO_PROXY={no_proxy}: {stderr}");
        assert!(
            stderr.contains("cannot reach"),
            "NO_PROXY={no_proxy}: {stderr}"
        );
        assert_eq!(seen(&proxy), vec![], "NO_PROXY={no_proxy}");
    }
    // An entry for another port does not exempt it.
    let out = register(
        &gguf,
        "az-gpt:q8_0",
        &url,
        &[],
        &[
            ("HTTP_PROXY", &via),
            ("no_proxy", "ollama.kvant.internal:1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(!seen(&proxy).is_empty());

    // A loopback host is reached directly with a proxy set (as Go's
    // net/http, and so the `ollama` CLI, does).
    proxy.clear_requests();
    let out = register(
        &gguf,
        "az-gpt:loopback",
        &emu.url,
        &[],
        &[("HTTP_PROXY", &via), ("ALL_PROXY", &via)],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(names(&emu.url).iter().any(|n| n == "az-gpt:loopback"));
    assert_eq!(seen(&proxy), vec![]);
}

/// An https Ollama (the TLS proxy with its own CA and a bearer token)
/// through HTTPS_PROXY: one authenticated CONNECT tunnel, no request
/// visible to the proxy.
#[test]
fn https_goes_through_an_authenticated_connect_tunnel() {
    let token = "kv-bearer-9191";
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let dir = tempfile::tempdir().unwrap();
    let tls = PyServer::start(
        "tls_proxy.py",
        &["--upstream", &emu.url, "--token", token, "--name", NAME],
        &dir.path().join("tls"),
    );
    let proxy = PyServer::start(
        "forward_proxy.py",
        &["--auth", &format!("{USER}:{PASSWORD}")],
        &dir.path().join("proxy"),
    );
    let gguf = gguf(dir.path());
    let headers = dir.path().join("box.headers");
    std::fs::write(&headers, format!("Authorization: Bearer {token}\n")).unwrap();
    let url = format!("https://{NAME}:{}", tls.port);
    let ca = tls.dir.join("ca.pem");
    let out = register(
        &gguf,
        "az-gpt:q8_0",
        &url,
        &[
            "--ca-file",
            ca.to_str().unwrap(),
            "--headers-file",
            headers.to_str().unwrap(),
        ],
        &[
            ("https_proxy", &proxy_url(&proxy, PASSWORD)),
            ("HTTP_PROXY", "http://127.0.0.1:9"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for secret in [PASSWORD, token] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
    assert!(names(&emu.url).iter().any(|n| n == "az-gpt:q8_0"));
    let tunnels = seen(&proxy);
    let wrong = register(
        &gguf,
        "az-gpt:q8_0",
        &url,
        &["--ca-file", ca.to_str().unwrap()],
        &[
            ("HTTPS_PROXY", &proxy_url(&proxy, "wrong-pa55")),
            ("RUST_LOG", "warn"),
        ],
    );
    let (_, stderr) = text(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&url) && lines[0].contains("proxy authorization required"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-pa55"), "{stderr}");
    let tunnel = format!("{NAME}:{}", tls.port);
    assert!(!tunnels.is_empty());
    assert!(
        tunnels
            .iter()
            .all(|(m, t, auth)| m == "CONNECT" && *t == tunnel && *auth),
        "{tunnels:?}"
    );
}
