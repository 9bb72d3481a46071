//! kvant's importance-matrix loader: both file forms written here (with
//! raw sums and counts), loaded, and compared with mean(x²) computed from
//! what was written; damaged files give errors, never panics; and the
//! loaded matrices drive the real `llama_model_quantize` as llama-quantize
//! would (same bytes from both forms, size rules as llama.cpp's).

#[allow(dead_code)]
#[path = "support/quantize.rs"]
mod quantize;

use std::path::Path;

use kvant::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter, Metadata, TensorInfo};
use kvant::quant::{FileType, GgmlType, Imatrix, ImatrixError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use quantize::{build, quantize_with, QuantizeOptions, Spec};

/// One imatrix entry as llama-imatrix collects it: Σx² per column for
/// each of `counts.len()` matrices (experts), and the rows each saw.
#[derive(Debug, Clone)]
struct RawEntry {
    name: String,
    sums: Vec<f32>,
    counts: Vec<f32>,
}

/// Writes the GGUF form (`save_imatrix`): `<name>.in_sum2` {ne0, nmat},
/// `<name>.counts` {1, nmat} and the `imatrix.*` keys.
fn write_gguf_imatrix(path: &Path, entries: &[RawEntry], with_in_sum: bool) {
    let mut md = Metadata::new();
    md.set("general.type", "imatrix");
    md.set(
        "imatrix.datasets",
        GgufValue::Array(GgufArray::String(vec!["test.txt".into()])),
    );
    md.set("imatrix.chunk_count", GgufValue::U32(7));
    md.set("imatrix.chunk_size", GgufValue::U32(512));
    let mut infos = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for e in entries {
        let nmat = e.counts.len() as u64;
        let ne0 = e.sums.len() as u64 / nmat;
        if with_in_sum {
            infos.push(TensorInfo::new(
                format!("{}.in_sum", e.name),
                vec![ne0, nmat],
                GgmlType::F32,
            ));
            data.push(bytes(&vec![0.5; e.sums.len()]));
        }
        infos.push(TensorInfo::new(
            format!("{}.in_sum2", e.name),
            vec![ne0, nmat],
            GgmlType::F32,
        ));
        data.push(bytes(&e.sums));
        infos.push(TensorInfo::new(
            format!("{}.counts", e.name),
            vec![1, nmat],
            GgmlType::F32,
        ));
        data.push(bytes(&e.counts));
    }
    let mut w = GgufWriter::create(path, &md, infos.clone()).unwrap();
    for (i, d) in infos.iter().zip(&data) {
        w.write_tensor(&i.name, d).unwrap();
    }
    w.finish().unwrap();
}

/// Writes the legacy `.dat` form (`save_imatrix_legacy`): per entry name,
/// ncall and values = mean × ncall; then the optional trailer.
fn legacy_bytes(entries: &[(String, i32, Vec<f32>)], trailer: Option<(i32, &str)>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((entries.len() as i32).to_le_bytes());
    for (name, ncall, vals) in entries {
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(ncall.to_le_bytes());
        b.extend((vals.len() as i32).to_le_bytes());
        for v in vals {
            b.extend(v.to_le_bytes());
        }
    }
    if let Some((chunks, dataset)) = trailer {
        b.extend(chunks.to_le_bytes());
        b.extend((dataset.len() as i32).to_le_bytes());
        b.extend(dataset.as_bytes());
    }
    b
}

fn random_entries(rng: &mut StdRng) -> Vec<RawEntry> {
    let mut out = Vec::new();
    for (name, ne0, nmat) in [
        ("blk.0.attn_qkv.weight", 64usize, 1usize),
        ("blk.0.ffn_down.weight", 256, 1),
        ("blk.1.ffn_up_exps.weight", 32, 4),
    ] {
        let sums = (0..ne0 * nmat)
            .map(|_| rng.random_range(0.0f32..50.0))
            .collect();
        // integral counts, one that llama.cpp rounds, and an expert that saw no rows
        let counts = (0..nmat)
            .map(|j| match j {
                1 => 37.6,
                2 => 0.0,
                _ => rng.random_range(1..2000) as f32,
            })
            .collect();
        out.push(RawEntry {
            name: name.into(),
            sums,
            counts,
        });
    }
    out
}

/// mean(x²) as llama-quantize derives it from a GGUF imatrix: each
/// matrix's sums divided by its row count (rounded to an integer when
/// loaded), 1 for a matrix that saw no rows.
fn expected_mean(e: &RawEntry) -> Vec<f32> {
    let ne0 = e.sums.len() / e.counts.len();
    let mut out = Vec::new();
    for (j, &c) in e.counts.iter().enumerate() {
        let c = c.round();
        for i in 0..ne0 {
            out.push(if c > 0.0 {
                e.sums[j * ne0 + i] / c
            } else {
                1.0
            });
        }
    }
    out
}

#[test]
fn gguf_imatrix_gives_mean_of_squares_per_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let entries = random_entries(&mut rng);
    for with_in_sum in [false, true] {
        let path = dir.path().join(format!("m-{with_in_sum}.gguf"));
        write_gguf_imatrix(&path, &entries, with_in_sum);
        let m = Imatrix::load(&path).unwrap();
        assert!(!m.is_legacy);
        assert_eq!(m.len(), entries.len());
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["test.txt".to_string()]);
        for e in &entries {
            let want = expected_mean(e);
            let got = m.get(&e.name, want.len()).unwrap().unwrap();
            assert_eq!(got, want.as_slice(), "{}", e.name);
        }
        // the rounded count and the empty expert really are in the data
        let moe = m.get("blk.1.ffn_up_exps.weight", 128).unwrap().unwrap();
        assert_eq!(moe[32], entries[2].sums[32] / 38.0);
        assert!(moe[64..96].iter().all(|&v| v == 1.0));
    }
}

#[test]
fn legacy_imatrix_divides_by_ncall() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let raw: Vec<(String, i32, Vec<f32>)> = vec![
        (
            "blk.0.attn_qkv.weight".into(),
            12,
            (0..64).map(|_| rng.random_range(0.0f32..9.0)).collect(),
        ),
        (
            "blk.0.ffn_down.weight".into(),
            1,
            (0..256).map(|_| rng.random_range(0.0f32..9.0)).collect(),
        ),
        (
            "output.weight".into(),
            0,
            (0..64).map(|_| rng.random_range(0.0f32..9.0)).collect(),
        ),
    ];
    for trailer in [None, Some((5, "calib.txt"))] {
        let path = dir.path().join("m.dat");
        std::fs::write(&path, legacy_bytes(&raw, trailer)).unwrap();
        let m = Imatrix::load(&path).unwrap();
        assert!(m.is_legacy);
        assert_eq!(m.len(), 3);
        for (name, ncall, vals) in &raw {
            let want: Vec<f32> = if *ncall > 0 {
                vals.iter().map(|v| v / *ncall as f32).collect()
            } else {
                vals.clone()
            };
            assert_eq!(
                m.get(name, vals.len()).unwrap().unwrap(),
                want.as_slice(),
                "{name}"
            );
        }
        match trailer {
            Some((n, d)) => {
                assert_eq!(m.chunk_count, n as u32);
                assert_eq!(m.datasets, vec![d.to_string()]);
            }
            None => assert!(m.datasets.is_empty()),
        }
    }
}

#[test]
fn sizes_are_checked_as_llama_cpp_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.dat");
    let raw = vec![
        ("token_embd.weight".to_string(), 1, vec![1.0f32; 10]),
        ("blk.0.attn_qkv.weight".to_string(), 1, vec![1.0f32; 10]),
    ];
    std::fs::write(&path, legacy_bytes(&raw, None)).unwrap();
    let m = Imatrix::load(&path).unwrap();
    assert_eq!(
        m.get("token_embd.weight", 10).unwrap().map(<[f32]>::len),
        Some(10)
    );
    // a token embedding of the wrong size just gets no imatrix
    assert_eq!(m.get("token_embd.weight", 12).unwrap(), None);
    // any other tensor of the wrong size is an error
    let err = m.get("blk.0.attn_qkv.weight", 12).unwrap_err();
    assert!(
        matches!(
            err,
            ImatrixError::SizeMismatch {
                len: 10,
                expected: 12,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("blk.0.attn_qkv.weight"), "{err}");
    assert_eq!(m.get("blk.9.ffn_up.weight", 10).unwrap(), None);
}

#[test]
fn non_finite_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.dat");
    let raw = vec![(
        "blk.0.ffn_up.weight".to_string(),
        1,
        vec![1.0, f32::NAN, 2.0],
    )];
    std::fs::write(&path, legacy_bytes(&raw, None)).unwrap();
    let err = Imatrix::load(&path).unwrap_err();
    assert!(matches!(err, ImatrixError::NonFinite { .. }), "{err}");

    let path = dir.path().join("m.gguf");
    let e = RawEntry {
        name: "blk.0.ffn_up.weight".into(),
        sums: vec![1.0, f32::INFINITY],
        counts: vec![3.0],
    };
    write_gguf_imatrix(&path, &[e], false);
    let err = Imatrix::load(&path).unwrap_err();
    assert!(matches!(err, ImatrixError::NonFinite { .. }), "{err}");
}

#[test]
fn damaged_legacy_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.dat");
    let raw = vec![
        ("blk.0.ffn_up.weight".to_string(), 3, vec![1.5f32; 40]),
        ("blk.1.ffn_up.weight".to_string(), 3, vec![2.5f32; 40]),
    ];
    let good = legacy_bytes(&raw, None);
    // every truncation inside the entries fails
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        assert!(
            Imatrix::load(&path).is_err(),
            "truncated to {len} bytes loaded"
        );
    }
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("zero entries", 0i32.to_le_bytes().to_vec()));
    cases.push(("negative entries", (-3i32).to_le_bytes().to_vec()));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&(-1i32).to_le_bytes());
    cases.push(("negative name length", b));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    cases.push(("huge name length", b));
    let nval_at = 4 + 4 + raw[0].0.len() + 4;
    let mut b = good.clone();
    b[nval_at..nval_at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
    cases.push(("huge value count", b));
    let mut b = good.clone();
    b[nval_at..nval_at + 4].copy_from_slice(&0i32.to_le_bytes());
    cases.push(("zero value count", b));
    let mut b = good.clone();
    b[0..4].copy_from_slice(&1_000_000i32.to_le_bytes());
    cases.push(("more entries than data", b));
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = Imatrix::load(&path).unwrap_err();
        assert!(
            matches!(err, ImatrixError::Malformed { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("m.dat"), "{what}: {err}");
    }
    // random garbage never panics
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let n = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        std::fs::write(&path, &bytes).unwrap();
        let _ = Imatrix::load(&path);
    }
    // a missing file is an I/O error
    let err = Imatrix::load(&dir.path().join("nope.dat")).unwrap_err();
    assert!(matches!(err, ImatrixError::Io { .. }), "{err}");
}

#[test]
fn damaged_gguf_imatrices_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let entry = RawEntry {
        name: "blk.0.ffn_up.weight".into(),
        sums: vec![4.0; 64],
        counts: vec![2.0],
    };
    write_gguf_imatrix(&path, std::slice::from_ref(&entry), false);
    let good = std::fs::read(&path).unwrap();
    // (cuts into the header, the tables and the last tensor's data)
    for len in [5, 20, 64, good.len() - 40] {
        std::fs::write(&path, &good[..len]).unwrap();
        assert!(
            Imatrix::load(&path).is_err(),
            "truncated to {len} bytes loaded"
        );
    }
    let write = |md: Metadata, tensors: Vec<(String, GgmlType, Vec<u64>)>| {
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|(n, t, ne)| TensorInfo::new(n.clone(), ne.clone(), *t))
            .collect();
        let mut w = GgufWriter::create(&path, &md, infos.clone()).unwrap();
        for i in &infos {
            w.write_tensor(&i.name, &vec![0u8; i.nbytes().unwrap() as usize])
                .unwrap();
        }
        w.finish().unwrap();
    };
    let full_md = || {
        let mut md = Metadata::new();
        md.set(
            "imatrix.datasets",
            GgufValue::Array(GgufArray::String(vec![])),
        );
        md.set("imatrix.chunk_count", GgufValue::U32(1));
        md.set("imatrix.chunk_size", GgufValue::U32(1));
        md
    };
    let sums = |t| ("x.weight.in_sum2".to_string(), t, vec![8u64, 1]);
    let counts = |t| ("x.weight.counts".to_string(), t, vec![1u64, 1]);
    // no metadata
    write(
        Metadata::new(),
        vec![sums(GgmlType::F32), counts(GgmlType::F32)],
    );
    let err = Imatrix::load(&path).unwrap_err();
    assert!(
        err.to_string().contains("missing imatrix metadata"),
        "{err}"
    );
    // counts without sums, sums without counts
    write(full_md(), vec![counts(GgmlType::F32)]);
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("mismatched"));
    write(full_md(), vec![sums(GgmlType::F32)]);
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("mismatched"));
    // wrong types
    write(full_md(), vec![sums(GgmlType::F16), counts(GgmlType::F32)]);
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("must be F32"));
    // in_sum of another size
    write(
        full_md(),
        vec![
            ("x.weight.in_sum".into(), GgmlType::F32, vec![4, 1]),
            sums(GgmlType::F32),
            counts(GgmlType::F32),
        ],
    );
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("mismatched"));
    // chunk_count of the wrong type
    let mut md = full_md();
    md.set("imatrix.chunk_count", GgufValue::I32(1));
    write(md, vec![sums(GgmlType::F32), counts(GgmlType::F32)]);
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("chunk_count"));
    // no tensors at all
    write(full_md(), vec![]);
    assert!(Imatrix::load(&path)
        .unwrap_err()
        .to_string()
        .contains("no data"));
    // and the well-formed version loads (zero counts: weight 1)
    write(full_md(), vec![sums(GgmlType::F32), counts(GgmlType::F32)]);
    let m = Imatrix::load(&path).unwrap();
    assert_eq!(m.get("x.weight", 8).unwrap().unwrap(), &[1.0f32; 8]);
}

fn random_raw_for(model: &kvant::quant::PolicyModel, seed: u64) -> Vec<RawEntry> {
    let mut rng = StdRng::seed_from_u64(seed);
    model
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.name.ends_with(".weight") && t.ne.len() == 2)
        .map(|t| RawEntry {
            name: t.name.clone(),
            sums: (0..t.ne[0])
                .map(|_| rng.random_range(0.1f32..500.0))
                .collect(),
            counts: vec![rng.random_range(16..4096) as f32],
        })
        .collect()
}

fn spec() -> Spec {
    Spec {
        arch: "gpt2",
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 512,
        n_vocab: 300,
        n_ctx: 32,
        n_expert: 0,
        output: false,
        shuffle: false,
    }
}

#[test]
fn loaded_imatrices_drive_llama_model_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    let model = build(&spec(), &input, 9);
    let raw = random_raw_for(&model, 10);
    // the same statistics in both forms (legacy values = mean × ncall)
    let gguf_path = dir.path().join("m.gguf");
    write_gguf_imatrix(&gguf_path, &raw, false);
    let legacy: Vec<(String, i32, Vec<f32>)> = raw
        .iter()
        .map(|e| {
            let m = expected_mean(e);
            (e.name.clone(), 1, m)
        })
        .collect();
    let dat_path = dir.path().join("m.dat");
    std::fs::write(&dat_path, legacy_bytes(&legacy, Some((1, "x")))).unwrap();

    let run = |imatrix: Vec<(String, Vec<f32>)>, name: &str| {
        let out = dir.path().join(name);
        quantize_with(
            &input,
            &out,
            FileType::Q4_K_M,
            &QuantizeOptions {
                imatrix,
                ..Default::default()
            },
        )
        .map(|()| std::fs::read(&out).unwrap())
    };
    let from_gguf = run(quantize::imatrix_entries(&gguf_path), "a.gguf").unwrap();
    let from_dat = run(quantize::imatrix_entries(&dat_path), "b.gguf").unwrap();
    let without = run(Vec::new(), "c.gguf").unwrap();
    assert!(
        from_gguf == from_dat,
        "both forms must give llama.cpp the same weights"
    );
    assert!(from_gguf != without, "the imatrix changed nothing");
    let f = GgufFile::open(&dir.path().join("a.gguf")).unwrap();
    assert_eq!(f.tensors.len(), model.tensors.len());

    // A wrong-sized entry: llama.cpp ignores it for token_embd and aborts
    // for anything else, as Imatrix::get reports.
    let mut bad = quantize::imatrix_entries(&gguf_path);
    bad.push(("token_embd.weight".into(), vec![1.0; 7]));
    let dat = dir.path().join("bad.dat");
    let as_legacy: Vec<(String, i32, Vec<f32>)> =
        bad.iter().map(|(n, v)| (n.clone(), 1, v.clone())).collect();
    std::fs::write(&dat, legacy_bytes(&as_legacy, None)).unwrap();
    let m = Imatrix::load(&dat).unwrap();
    assert_eq!(m.get("token_embd.weight", 256).unwrap(), None);
    assert!(run(bad.clone(), "d.gguf").is_ok());
    bad[0].1.pop();
    let name = bad[0].0.clone();
    assert!(
        run(bad.clone(), "e.gguf").is_err(),
        "llama.cpp accepted a short entry"
    );
    let as_legacy: Vec<(String, i32, Vec<f32>)> =
        bad.iter().map(|(n, v)| (n.clone(), 1, v.clone())).collect();
    std::fs::write(&dat, legacy_bytes(&as_legacy, None)).unwrap();
    let m = Imatrix::load(&dat).unwrap();
    assert!(m.get(&name, 256).is_err());
}
