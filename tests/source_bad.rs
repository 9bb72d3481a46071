//! Hostile and damaged inputs: every file in the fixtures' `bad/` folder,
//! plus archives built here to reach each refusal path. Each must give one
//! clear line naming the file and the cause; none may run code or panic.

mod support;

use std::path::{Path, PathBuf};

use kvant::source::{self, SourceError};
use support::archive::{legacy_stream, stored_zip as zip};
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
fn a_legacy_file_cut_after_its_header_names_the_missing_part() {
    let mut bytes = support::archive::LEGACY_MAGIC.to_vec();
    bytes.extend(b"\x80\x02M\xe9\x03.");
    let msg = message(&bytes);
    assert!(msg.contains("sys_info") && msg.contains("ends"), "{msg}");
}

/// `tensor_pickle` with the legacy persistent id: a sixth field, the
/// storage view, `None` or `view`.
fn legacy_tensor_pickle(numel: u8, size: u8, view: Option<&[u8]>) -> Vec<u8> {
    let zip_form = tensor_pickle("FloatStorage", numel, 0, size, 1);
    let at = zip_form
        .windows(3)
        .position(|w| w == b"tQK")
        .expect("persistent id");
    let mut p = zip_form[..at].to_vec();
    p.extend(view.unwrap_or(b"N"));
    p.extend(&zip_form[at..]);
    p
}

#[test]
fn a_built_legacy_file_reads_and_its_storage_defects_are_refused() {
    let pkl = legacy_tensor_pickle(4, 4, None);
    let floats: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let t = write("m.pt", &legacy_stream(&pkl, &[("0", 4, &floats)]));
    let ck = source::open(&t.path).expect("a well-formed legacy file opens");
    assert_eq!(ck.tensors.len(), 1);
    assert_eq!(
        ck.tensors[0].to_f32().expect("data"),
        vec![1.0, 2.0, 3.0, 4.0]
    );

    // A view into the storage: 2 elements from element 1.
    let view = legacy_tensor_pickle(4, 2, Some(b"X\x01\x00\x00\x00vK\x01K\x02\x87"));
    let t = write("m.pt", &legacy_stream(&view, &[("0", 4, &floats)]));
    let ck = source::open(&t.path).expect("a storage view opens");
    assert_eq!(ck.tensors[0].to_f32().expect("data"), vec![2.0, 3.0]);

    let mut longer = floats.clone();
    longer.extend([0u8; 4]);
    let outside = legacy_tensor_pickle(4, 4, Some(b"X\x01\x00\x00\x00vK\x02K\x04\x87"));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            legacy_stream(&pkl, &[("0", 5, &longer)]),
            "holds 5 elements, but 4 were promised",
        ),
        (
            legacy_stream(&pkl, &[("0", 4, &floats[..12])]),
            "runs past the end",
        ),
        (
            legacy_stream(&pkl, &[("0", 4, &longer)]),
            "4 unexpected bytes after the last storage",
        ),
        (legacy_stream(&pkl, &[]), "used but its data is missing"),
        (
            legacy_stream(&pkl, &[("0", 4, &floats), ("1", 0, &[])]),
            "storage 1 is listed but never used",
        ),
        (
            legacy_stream(&pkl, &[("0", 4, &floats), ("0", 4, &floats)]),
            "listed twice",
        ),
        (
            legacy_stream(&outside, &[("0", 4, &floats)]),
            "storage view",
        ),
    ];
    for (bytes, words) in cases {
        let msg = message(&bytes);
        assert!(msg.contains(words), "expected '{words}' in: {msg}");
    }
}

#[test]
fn metadata_that_shares_one_value_2_to_the_64_times_is_cut_to_a_budget() {
    // model_args = x64, where x0 = () and x(i+1) = (x(i), x(i)): 200 bytes
    // of pickle (memo references) describing 2^64 nodes of JSON.
    // Each step memoizes and pops its tuple; the last is fetched back.
    let mut dag = b")q\x000".to_vec();
    for i in 0u8..64 {
        dag.extend([b'h', i, b'h', i, 0x86, b'q', i + 1, b'0']);
    }
    dag.extend([b'h', 64]);
    let weights = tensor_pickle("FloatStorage", 4, 0, 4, 1);
    let mut pkl = b"\x80\x02}X\x05\x00\x00\x00model".to_vec();
    pkl.extend(&weights[2..weights.len() - 1]);
    pkl.extend(b"sX\x0a\x00\x00\x00model_args");
    pkl.extend(&dag);
    pkl.extend(b"s.");
    let t = write(
        "m.pt",
        &zip(&[("m/data.pkl", &pkl), ("m/data/0", &[0u8; 16])]),
    );
    let ck = source::open(&t.path).expect("opens");
    assert_eq!(ck.tensors.len(), 1);
    let config = ck.config.expect("model_args");
    assert!(config.is_array(), "{config}");
    // The budget's edge is visible as nulls where expansion stopped.
    assert!(config.to_string().contains("null"));
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
