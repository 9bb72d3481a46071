//! Every kvant kernel against ggml's own (`ggml_quantize_chunk`) from the
//! pinned llama.cpp: identical bytes on random rows, on real trained
//! weights, and on the edge cases that break naive ports; with and without
//! an importance matrix.

mod support;

use kvant::quant::{dequantize, quantize, GgmlType, QuantError};
use support::ggml;

const TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::F16,
    GgmlType::BF16,
];

/// A deterministic generator (xorshift) so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal (sum of uniforms), scaled.
    fn normal(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (s - 2.0) * scale
    }
}

fn assert_same(ty: GgmlType, src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, what: &str) {
    let ours = quantize(ty, src, n_per_row, imatrix).unwrap();
    let theirs = ggml::quantize_chunk(ty, src, n_per_row, imatrix);
    if ours != theirs {
        let bs = ty.type_size();
        let first = ours.iter().zip(&theirs).position(|(a, b)| a != b).unwrap();
        panic!(
            "{ty} {what}: bytes differ first at byte {first} (block {}, offset {})",
            first / bs,
            first % bs
        );
    }
}

fn row_lengths(ty: GgmlType) -> Vec<usize> {
    if ty.block_size() == 256 {
        vec![256, 768, 4096]
    } else {
        vec![32, 128, 768]
    }
}

#[test]
fn random_rows_match_ggml() {
    for ty in TYPES {
        for (seed, n_per_row) in row_lengths(ty).into_iter().enumerate() {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed as u64 + 1) * 7919);
            let src: Vec<f32> = (0..n_per_row * 6).map(|_| rng.normal(0.05)).collect();
            assert_same(
                ty,
                &src,
                n_per_row,
                None,
                &format!("random rows of {n_per_row}"),
            );
        }
    }
}

#[test]
fn real_trained_weights_match_ggml() {
    let path = support::fixtures::path("nanogpt-k256/ckpt.pt");
    let ck = kvant::source::open(&path).unwrap();
    let mut checked = 0;
    for t in ck
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.shape[1] % 256 == 0)
    {
        let data = t.to_f32().unwrap();
        for ty in TYPES {
            assert_same(ty, &data, t.shape[1], None, &t.name);
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} tensors checked");
}

#[test]
fn edge_rows_match_ggml() {
    let n = 256;
    let mut rows: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; n]),
        ("constant", vec![0.37; n]),
        ("negative constant", vec![-2.5; n]),
        (
            "huge",
            (0..n)
                .map(|i| if i % 3 == 0 { 1e30 } else { -3e29 })
                .collect(),
        ),
        ("tiny", (0..n).map(|i| (i as f32 - 128.0) * 1e-30).collect()),
        (
            "alternating",
            (0..n)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect(),
        ),
        ("ramp", (0..n).map(|i| i as f32 / 17.0).collect()),
        (
            "ties",
            (0..n).map(|i| (i % 16) as f32 * 0.5 - 4.0).collect(),
        ),
    ];
    let mut one = vec![0.0; n];
    one[77] = 3.25;
    rows.push(("one non-zero", one));
    for (what, row) in &rows {
        for ty in TYPES {
            assert_same(ty, row, n, None, what);
        }
    }
}

#[test]
fn importance_matrix_rows_match_ggml() {
    for ty in TYPES {
        for n_per_row in row_lengths(ty) {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ n_per_row as u64);
            let src: Vec<f32> = (0..n_per_row * 4).map(|_| rng.normal(0.05)).collect();
            let imatrix: Vec<f32> = (0..n_per_row)
                .map(|_| rng.normal(1.0).abs() + 0.01)
                .collect();
            assert_same(
                ty,
                &src,
                n_per_row,
                Some(&imatrix),
                &format!("imatrix rows of {n_per_row}"),
            );
        }
    }
}

#[test]
fn dequantize_matches_ggml() {
    let mut rng = Rng(42);
    for ty in TYPES {
        let n = 1024;
        let src: Vec<f32> = (0..n).map(|_| rng.normal(0.1)).collect();
        let bytes = ggml::quantize_chunk(ty, &src, n, None);
        assert_eq!(
            dequantize(ty, &bytes, n).unwrap(),
            ggml::dequantize(ty, &bytes, n),
            "{ty}"
        );
    }
}

#[test]
fn non_finite_weights_are_an_error_naming_the_place() {
    let mut row = vec![0.5f32; 64];
    row[40] = f32::NAN;
    for ty in [GgmlType::Q8_0, GgmlType::Q4K, GgmlType::F16] {
        let n = if ty == GgmlType::Q4K { 256 } else { 32 };
        let mut src = vec![0.1f32; n * 2];
        src[n + 5] = f32::INFINITY;
        match quantize(ty, &src, n, None) {
            Err(QuantError::NonFinite { row: 1, col: 5, .. }) => {}
            other => panic!("{ty}: {other:?}"),
        }
    }
    assert!(matches!(
        quantize(GgmlType::Q8_0, &row, 32, None),
        Err(QuantError::NonFinite { row: 1, col: 8, .. })
    ));
}
