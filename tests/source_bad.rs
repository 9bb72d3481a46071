//! Hostile and damaged inputs: every file in the fixtures' `bad/` folder,
//! plus archives built here to reach each refusal path. Each must give one
//! clear line naming the file and the cause; none may run code or panic.

mod support;

use std::path::{Path, PathBuf};

use kvant::source::{self, SourceError};
use support::fixtures;

fn err_of(path: &Path) -> SourceError {
    match source::open(path) {
        Ok(c) => panic!("{} opened with {} tensors", path.display(), c.tensors.len()),
        Err(e) => e,
    }
}

/// Opens a bad fixture, checks the message is one line naming the file,
/// and returns the message.
fn refusal(rel: &str) -> String {
    let p = fixtures::path(rel);
    let msg = err_of(&p).to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    let file = p.file_name().expect("name").to_string_lossy().into_owned();
    assert!(msg.contains(&file), "message does not name {file}: {msg}");
    msg
}

#[test]
fn every_bad_fixture_is_refused() {
    let dir = fixtures::path("bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("bad dir") {
        let p = entry.expect("entry").path();
        let e = err_of(&p);
        assert!(!e.to_string().is_empty());
        n += 1;
    }
    assert!(n >= 8, "only {n} bad fixtures found");
}

#[test]
fn evil_pickle_is_refused_by_name_and_never_runs() {
    let marker = Path::new("/tmp/kvant-evil-marker");
    let _ = std::fs::remove_file(marker);
    assert!(!marker.exists(), "stale marker cannot be removed");
    let p = fixtures::path("bad/evil-pickle.pt");
    match err_of(&p) {
        SourceError::ForbiddenGlobal { global, .. } => assert_eq!(global, "posix.system"),
        other => panic!("wrong error: {other}"),
    }
    let msg = refusal("bad/evil-pickle.pt");
    assert!(
        msg.contains("posix.system") && msg.contains("nothing was executed"),
        "{msg}"
    );
    assert!(!marker.exists(), "the pickle's command ran");
}

#[test]
fn bad_fixtures_name_their_cause() {
    let cases = [
        ("bad/truncated.pt", "truncated"),
        ("bad/random-bytes.pt", "not a PyTorch checkpoint"),
        ("bad/empty.pt", "empty"),
        ("bad/path-traversal.pt", "path traversal"),
        ("bad/path-traversal.pt", "../../escape.txt"),
        (
            "bad/complex-dtype.pt",
            "complex tensors (ComplexFloatStorage) are not supported",
        ),
        ("bad/lying-header.safetensors", "not fully covered"),
        ("bad/huge-header-len.safetensors", "header too large"),
    ];
    for (rel, words) in cases {
        let msg = refusal(rel);
        eprintln!("{msg}");
        assert!(msg.contains(words), "{rel}: expected '{words}' in: {msg}");
    }
}

#[test]
fn a_folder_without_config_json_is_not_opened() {
    // nanogpt-az holds ckpt.pt and a tokenizer: discovery picks the file.
    let p = fixtures::path("nanogpt-az");
    match err_of(&p) {
        SourceError::Unsupported { reason, .. } => {
            assert!(
                reason.contains("config.json") && reason.contains("name the checkpoint file"),
                "{reason}"
            )
        }
        other => panic!("wrong error: {other}"),
    }
}

// ---- archives built here, one defect each ----

/// A stored zip with the given entries, like torch.save writes (without
/// alignment padding, which readers must not rely on).
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let header = |sig: &[u8], central: bool| {
            let mut h = sig.to_vec();
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend([0u8; 4]); // time, date
            h.extend(0u32.to_le_bytes()); // crc (torch may write none)
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend([0u8; 6]); // comment len, disk, internal attrs
                h.extend(0u32.to_le_bytes()); // external attrs
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(b"PK\x03\x04", false));
        out.extend(*data);
        central.extend(header(b"PK\x01\x02", true));
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// A pickle of `{'w': tensor}` where the tensor is a view described by
/// `offset`, `size`, `stride` into FloatStorage '0' of `numel` elements.
fn tensor_pickle(global: &str, numel: u8, offset: u8, size: u8, stride: u8) -> Vec<u8> {
    let mut p = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n".to_vec();
    p.extend(global.as_bytes());
    p.extend(b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    p.push(numel);
    p.extend(b"tQK");
    p.push(offset);
    p.push(b'K');
    p.push(size);
    p.extend(b"\x85K");
    p.push(stride);
    p.extend(b"\x85\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

struct Temp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(name: &str, bytes: &[u8]) -> Temp {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    Temp { _dir: dir, path }
}

fn message(bytes: &[u8]) -> String {
    let t = write("m.pt", bytes);
    let msg = err_of(&t.path).to_string();
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn a_built_archive_reads_so_the_defects_below_are_real() {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let pkl = tensor_pickle("FloatStorage", 4, 1, 2, 2);
    let t = write(
        "ok.pt",
        &zip(&[
            ("m/data.pkl", &pkl),
            ("m/byteorder", b"little"),
            ("m/data/0", &data),
        ]),
    );
    let ck = source::open(&t.path).expect("valid archive");
    let w = ck.tensor("w").expect("w");
    assert_eq!(w.shape, vec![2]);
    assert_eq!(
        w.to_f32().expect("f32"),
        vec![2.0, 4.0],
        "offset 1, stride 2"
    );
}

#[test]
fn archive_defects_are_refused_with_reasons() {
    let data: Vec<u8> = [0u8; 16].to_vec();
    let good = tensor_pickle("FloatStorage", 4, 0, 4, 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            zip(&[
                ("m/data.pkl", &good),
                ("m/constants.pkl", b""),
                ("m/data/0", &data),
            ]),
            "TorchScript",
        ),
        (
            zip(&[
                ("m/data.pkl", &good),
                ("m/byteorder", b"big"),
                ("m/data/0", &data),
            ]),
            "big-endian",
        ),
        (zip(&[("m/version", b"3"), ("m/data/0", &data)]), "data.pkl"),
        (zip(&[("flat.pkl", &good)]), "not in a folder"),
        (zip(&[("m/data.pkl", &good)]), "missing from the archive"),
        (
            zip(&[("m/data.pkl", &good), ("m/data/0", &data[..12])]),
            "elements were promised",
        ),
        (
            zip(&[
                ("m/data.pkl", &tensor_pickle("FloatStorage", 4, 2, 3, 1)),
                ("m/data/0", &data),
            ]),
            "exceeds its storage",
        ),
        (
            zip(&[
                (
                    "m/data.pkl",
                    &tensor_pickle("ComplexDoubleStorage", 4, 0, 4, 1),
                ),
                ("m/data/0", &data),
            ]),
            "ComplexDoubleStorage",
        ),
        (
            zip(&[
                ("m/data.pkl", b"\x80\x02cos\nsystem\n."),
                ("m/data/0", &data),
            ]),
            "os.system",
        ),
        (
            // protocol-4 STACK_GLOBAL reaches the same allowlist
            zip(&[
                ("m/data.pkl", b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93."),
                ("m/data/0", &data),
            ]),
            "builtins.eval",
        ),
        (
            zip(&[("m/data.pkl", b"\x80\x02X\xff\xff\xff\x7fab.")]),
            "ends inside an operand",
        ),
        (
            zip(&[("m/data.pkl", b"\x80\x02(((((((((.")]),
            "pops past a mark",
        ),
        (
            zip(&[("m/data.pkl", b"\x80\x02I1\n.")]),
            "unsupported pickle opcode",
        ),
        (zip(&[("m/data.pkl", b"\x80\x02]q\x00.")]), "not a dict"),
    ];
    for (bytes, words) in cases {
        let msg = message(&bytes);
        assert!(msg.contains(words), "expected '{words}' in: {msg}");
    }
}

#[test]
fn legacy_torch_format_gets_a_resave_hint() {
    let mut bytes = vec![0x80, 0x02, 0x8a, 0x0a];
    bytes.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    bytes.extend(b".\x80\x02M\xe9\x03.");
    let msg = message(&bytes);
    assert!(
        msg.contains("legacy (pre-1.6)") && msg.contains("save it again with torch.save"),
        "{msg}"
    );
}

#[test]
fn zip_that_lies_about_offsets_is_refused() {
    let pkl = tensor_pickle("FloatStorage", 4, 0, 4, 1);
    let mut bytes = zip(&[("m/data.pkl", &pkl), ("m/data/0", &[0u8; 16])]);
    // Point the central directory past the end of the file.
    let n = bytes.len();
    bytes[n - 6..n - 2].copy_from_slice(&u32::MAX.to_le_bytes());
    let msg = message(&bytes);
    assert!(
        msg.contains("ZIP64") || msg.contains("past the end"),
        "{msg}"
    );
}
