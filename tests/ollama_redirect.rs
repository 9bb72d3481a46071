//! An Ollama behind a reverse proxy that answers with redirects
//! (`tests/support/redirect_front.py`, recording which requests came with
//! the host's secret headers and how many body bytes): the real
//! `kvant register`, with `Authorization` and a custom secret header from
//! a headers file.

mod support;

use std::path::{Path, PathBuf};

use kvant::quant::FileType;
use serde_json::Value;

use support::cli::{names, register, text};
use support::emulator::Emulator;
use support::fixtures;
use support::logits::convert_to;
use support::py_server::PyServer;

const TOKEN: &str = "kv-redirect-t0ken";
const SECRET: &str = "kv-custom-s3cret";

/// A converted model and a headers file with both secrets.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let (gguf, _) = convert_to(
        &fixtures::path("nanogpt-az/ckpt.pt"),
        FileType::Q8_0,
        dir,
        None,
    );
    let headers = dir.join("box.headers");
    std::fs::write(
        &headers,
        format!("Authorization: Bearer {TOKEN}\nX-Kvant-Secret: {SECRET}\n"),
    )
    .unwrap();
    (gguf, headers)
}

fn front(dir: &Path, name: &str, upstream: &str, extra: &[&str]) -> PyServer {
    let mut args = vec!["--upstream", upstream];
    args.extend_from_slice(extra);
    PyServer::start("redirect_front.py", &args, &dir.join(name))
}

/// A front answering every request with `status` to `to`'s origin.
fn redirecting(dir: &Path, upstream: &str, to: &PyServer, status: &str) -> PyServer {
    let target = format!("={}", url(to));
    let extra = ["--redirect", target.as_str(), "--status", status];
    front(dir, &format!("old-{status}"), upstream, &extra)
}

fn url(server: &PyServer) -> String {
    format!("http://127.0.0.1:{}", server.port)
}

/// `kvant register` of `gguf` at `front` with the secrets' headers file.
fn register_at(
    gguf: &Path,
    front: &str,
    headers: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let extra = ["--headers-file", headers.to_str().unwrap()];
    register(gguf, "az-gpt:q8_0", front, &extra, env)
}

/// The recorded request `method` to a path starting with `path`.
fn find<'a>(seen: &'a [Value], method: &str, path: &str) -> Option<&'a Value> {
    seen.iter()
        .find(|r| r["method"] == method && r["path"].as_str().unwrap_or("").starts_with(path))
}

fn assert_no_secret_leaked(out: &std::process::Output) {
    let (stdout, stderr) = text(out);
    for s in [TOKEN, SECRET] {
        assert!(!stdout.contains(s) && !stderr.contains(s), "{s} shown");
    }
}

/// A 307 or 308 to another origin: every request, uploads included, is
/// sent again there with its method and its whole body — but without the
/// host's headers, which stay with the configured origin.
#[test]
fn uploads_follow_307_and_308_and_secrets_stay_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, headers) = inputs(dir.path());
    let gguf_len = std::fs::metadata(&gguf).unwrap().len();
    for status in ["307", "308"] {
        let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
        let new = front(dir.path(), &format!("new-{status}"), &emu.url, &[]);
        let old = redirecting(dir.path(), &emu.url, &new, status);
        let out = register_at(&gguf, &url(&old), &headers, &[]);
        assert!(out.status.success(), "{status}: {}", text(&out).1);
        assert_no_secret_leaked(&out);
        assert!(names(&emu.url).iter().any(|n| n == "az-gpt:q8_0"));

        let (asked, served) = (old.requests(), new.requests());
        assert!(
            !asked.is_empty()
                && asked
                    .iter()
                    .all(|r| r["status"] == status.parse::<u16>().unwrap())
        );
        assert!(
            asked
                .iter()
                .all(|r| r["authorization"] == true && r["secret"] == true),
            "the configured origin gets the headers: {asked:?}"
        );
        assert!(
            served
                .iter()
                .all(|r| r["authorization"] == false && r["secret"] == false),
            "{status}: secrets forwarded to another origin: {served:?}"
        );
        let upload = find(&served, "POST", "/api/blobs/sha256:").expect("the upload arrived");
        assert_eq!(
            upload["body_bytes"], gguf_len,
            "{status}: the whole file again"
        );
        assert_eq!(upload["status"], 201);
        let create = find(&served, "POST", "/api/create").expect("create arrived");
        assert_eq!(create["status"], 200);
        assert!(find(&served, "GET", "/api/version").is_some());
    }
}

/// A 301, 302 or 303 would turn an upload into a GET without its body:
/// refused in one line naming the host and the Location; the reads before
/// it (version, blob check) were followed.
#[test]
fn a_301_302_or_303_on_an_upload_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, headers) = inputs(dir.path());
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let new = front(dir.path(), "new", &emu.url, &[]);
    for status in ["301", "302", "303"] {
        new.clear_requests();
        let old = redirecting(dir.path(), &emu.url, &new, status);
        let out = register_at(&gguf, &url(&old), &headers, &[("RUST_LOG", "warn")]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{status}: {stderr}");
        assert_no_secret_leaked(&out);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let location = format!("{}/api/blobs/sha256:", url(&new));
        assert!(
            lines[0].contains(status)
                && lines[0].contains(&url(&old))
                && lines[0].contains(&location)
                && lines[0].contains("POST"),
            "{stderr}"
        );
        let served = new.requests();
        assert!(find(&served, "GET", "/api/version").is_some(), "{served:?}");
        assert!(find(&served, "HEAD", "/api/blobs/").is_some(), "{served:?}");
        assert!(
            served.iter().all(|r| r["method"] != "POST"),
            "{status}: an upload reached the target: {served:?}"
        );
        assert!(names(&emu.url).is_empty());
    }
}

/// `http://box/old` moved to `http://box/new` (same origin): followed,
/// and the headers still go there.
#[test]
fn a_path_moved_on_the_same_origin_keeps_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, headers) = inputs(dir.path());
    let emu = Emulator::start(&["--emulate-version", "0.12.6"]);
    let front = front(
        dir.path(),
        "front",
        &emu.url,
        &[
            "--redirect",
            "/old=/new",
            "--status",
            "308",
            "--strip",
            "/new",
        ],
    );
    let base = format!("{}/old", url(&front));
    let out = register_at(&gguf, &base, &headers, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_no_secret_leaked(&out);
    assert!(names(&emu.url).iter().any(|n| n == "az-gpt:q8_0"));
    let seen = front.requests();
    let moved = find(&seen, "POST", "/new/api/blobs/sha256:").expect("upload at the new path");
    assert_eq!(moved["authorization"], true);
    assert_eq!(moved["secret"], true);
    assert!(find(&seen, "POST", "/old/api/create").is_some_and(|r| r["status"] == 308));
}
