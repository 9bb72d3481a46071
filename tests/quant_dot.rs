//! kvant's dot products against ggml-cpu's own kernels from the pinned
//! llama.cpp (`from_float` and `vec_dot` of `ggml_get_type_traits_cpu`,
//! the AVX2 build that llama.cpp runs on this machine).
//!
//! * Activation bytes (`quantize_activation_row`) are identical to ggml's
//!   `from_float`, on random, real and edge rows.
//! * Dense (F32/F16/BF16) dots are bit-identical to ggml's.
//! * Quantized dots, fast and reference, are within `1e-5 · Σ|w_i·a_i|`
//!   of ggml's. Why that bound: both sides compute every block's integer
//!   sum exactly and turn it into one float term with one or two
//!   roundings; they differ only in the order the (at most 128, for 4096
//!   wide rows of 32-blocks) terms are added. Each addition's error is at
//!   most 2⁻²⁴ of a partial sum, itself at most Σ|terms| ≤ Σ|w_i·a_i|, so
//!   the total is below 128 · 6e-8 ≈ 7.6e-6 of Σ|w_i·a_i|. A wrong
//!   rounding of a single activation quant, or a wrong level, costs a
//!   whole `|w_i · d_a|`, orders of magnitude more on these rows.

mod support;

use kvant::quant::dot::{self, reference, WEIGHT_TYPES};
use kvant::quant::{dequantize, f16_bits_to_f32, quantize, GgmlType};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use support::ggml_cpu;

const PARTNERS: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q8K,
];

/// A seeded generator so failures reproduce.
struct Rng(StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }
    /// Roughly normal (a sum of four uniforms), scaled.
    fn normal(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.0.random::<f32>()).sum();
        (s - 2.0) * scale
    }
    fn row(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal(scale)).collect()
    }
}

/// Rows that break naive ports: zero, constant, huge, tiny (including
/// blocks whose `127 / amax` overflows to infinity), rounding ties.
fn edge_rows(n: usize) -> Vec<(String, Vec<f32>)> {
    let mut one = vec![0.0; n];
    one[n / 3] = 3.25;
    vec![
        ("zeros".into(), vec![0.0; n]),
        ("constant".into(), vec![0.37; n]),
        ("negative constant".into(), vec![-2.5; n]),
        (
            "huge".into(),
            (0..n)
                .map(|i| if i % 3 == 0 { 1e30 } else { -3e29 })
                .collect(),
        ),
        (
            "tiny".into(),
            (0..n).map(|i| (i as f32 - 128.0) * 1e-30).collect(),
        ),
        (
            "subnormal".into(),
            (0..n).map(|i| (i % 7) as f32 * 1e-40).collect(),
        ),
        (
            "ties".into(),
            (0..n).map(|i| (i % 16) as f32 * 0.5 - 4.0).collect(),
        ),
        (
            "127 ties".into(),
            (0..n)
                .map(|i| {
                    if i % 32 == 0 {
                        127.0
                    } else {
                        (i % 9) as f32 - 3.5
                    }
                })
                .collect(),
        ),
        ("one non-zero".into(), one),
    ]
}

/// Random rows of 256, 768 and 4096, scaled like activations.
fn random_rows() -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let mut rows = Vec::new();
    for n in [256, 768, 4096] {
        for k in 0..3 {
            rows.push((format!("random {n} #{k}"), rng.row(n, 1.5)));
        }
    }
    rows
}

/// Rows of the real trained nanogpt-k256 weights (widths 256 and 1024).
fn real_rows() -> Vec<(String, Vec<f32>)> {
    let path = support::fixtures::path("nanogpt-k256/ckpt.pt");
    let ck = kvant::source::open(&path).expect("fixture opens");
    let mut rows = Vec::new();
    for t in ck
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.shape[1] % 256 == 0)
        .take(6)
    {
        let data = t.to_f32().expect("fixture tensor decodes");
        let n = t.shape[1];
        for r in [0, t.shape[0] / 2, t.shape[0] - 1] {
            rows.push((
                format!("{} row {r}", t.name),
                data[r * n..(r + 1) * n].to_vec(),
            ));
        }
    }
    assert!(rows.len() >= 12, "only {} real rows", rows.len());
    rows
}

fn all_rows() -> Vec<(String, Vec<f32>)> {
    let mut rows = random_rows();
    rows.extend(real_rows());
    for n in [256, 768] {
        rows.extend(edge_rows(n));
    }
    rows
}

/// The weight bytes kvant writes (identical to ggml's quantizers, which
/// tests/quant_kernels.rs proves) for one row.
fn weight_row(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    quantize(ty, x, x.len(), None).expect("quantizes")
}

/// The values an activation row stands for (the partner decoded), for the
/// tolerance's scale.
fn act_values(dt: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let f16 = |b: &[u8]| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    match dt {
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let (size, qs) = if dt == GgmlType::Q8_0 {
                (34, 2)
            } else {
                (36, 4)
            };
            b.chunks_exact(size)
                .flat_map(|blk| {
                    let d = f16(blk);
                    blk[qs..qs + 32]
                        .iter()
                        .map(move |&q| f32::from(q as i8) * d)
                })
                .collect()
        }
        GgmlType::Q8K => b
            .chunks_exact(292)
            .flat_map(|blk| {
                let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                blk[4..260].iter().map(move |&q| f32::from(q as i8) * d)
            })
            .collect(),
        _ => dequantize(dt, b, n).expect("dense decodes"),
    }
}

#[test]
fn partners_are_ggml_cpus() {
    for ty in WEIGHT_TYPES {
        assert_eq!(
            dot::vec_dot_type(ty).id(),
            ggml_cpu::vec_dot_type_id(ty),
            "{ty}"
        );
    }
}

#[test]
fn activation_bytes_equal_ggml_from_float() {
    let mut checked = 0;
    for (what, x) in all_rows() {
        for dt in PARTNERS {
            if !x.len().is_multiple_of(dt.block_size()) {
                continue;
            }
            let theirs = ggml_cpu::from_float(dt, &x);
            let mut ours = vec![0u8; theirs.len()];
            dot::quantize_activation_row(dt, &x, &mut ours);
            let mut refs = vec![0u8; theirs.len()];
            reference::quantize_activation_row(dt, &x, &mut refs);
            if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
                panic!(
                    "{dt} {what}: byte {at} (block {}, offset {}) is {} where ggml wrote {}",
                    at / dt.type_size(),
                    at % dt.type_size(),
                    ours[at],
                    theirs[at]
                );
            }
            assert_eq!(refs, theirs, "{dt} {what}: reference bytes");
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} rows checked");
}

/// Same float class when ggml's result is not finite; otherwise within
/// `tol` (0 demands equality).
fn assert_close(ty: GgmlType, what: &str, which: &str, ours: f32, theirs: f32, tol: f64) {
    if !theirs.is_finite() {
        let same = (theirs.is_nan() && ours.is_nan()) || ours == theirs;
        assert!(
            same,
            "{ty} {what} ({which}): {ours} where ggml gives {theirs}"
        );
        return;
    }
    let diff = f64::from((ours - theirs).abs());
    assert!(
        diff <= tol,
        "{ty} {what} ({which}): {ours} vs ggml {theirs} (diff {diff:e}, allowed {tol:e})"
    );
}

#[test]
fn vec_dot_matches_ggml_for_every_type() {
    let rows = all_rows();
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for ty in WEIGHT_TYPES {
        let dt = dot::vec_dot_type(ty);
        for (what, wx) in &rows {
            let n = wx.len();
            if !n.is_multiple_of(ty.block_size()) {
                continue;
            }
            let w = weight_row(ty, wx);
            // The activation: a fresh random row, and the weight row itself
            // (real rows against real rows, edge rows against themselves).
            for (aname, ax) in [("random act", rng.row(n, 2.0)), ("same row", wx.clone())] {
                let a = ggml_cpu::from_float(dt, &ax);
                let theirs = ggml_cpu::vec_dot(ty, n, &w, &a);
                let fast = dot::vec_dot(ty, n, &w, &a);
                let slow = reference::vec_dot(ty, n, &w, &a);
                let what = format!("{what} × {aname}");
                if ty.is_quantized() {
                    let wv = dequantize(ty, &w, n).expect("decodes");
                    let av = act_values(dt, &a, n);
                    let scale: f64 = wv
                        .iter()
                        .zip(&av)
                        .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
                        .sum();
                    let tol = 1e-5 * scale + 1e-30;
                    // The 32-element blocks' fast path is ggml's AVX2 order
                    // (eight FMA lanes, `hsum_float_8`), bit for bit.
                    let fast_tol = if ty.block_size() == 32 { 0.0 } else { tol };
                    assert_close(ty, &what, "fast", fast, theirs, fast_tol);
                    assert_close(ty, &what, "reference", slow, theirs, tol);
                } else {
                    // The dense fast path is ggml's AVX2 order, bit for bit.
                    assert_close(ty, &what, "fast", fast, theirs, 0.0);
                    let scale: f64 = (0..n)
                        .map(|i| f64::from(wx[i]).abs() * f64::from(ax[i]).abs())
                        .sum();
                    assert_close(ty, &what, "reference", slow, theirs, 1e-5 * scale + 1e-30);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} products checked");
}

/// `matmul` over real weights equals ggml's `vec_dot` row by row: the
/// dense and 32-element-block types exactly, the K-quants (whose batched
/// kernel is ggml's tiled one, not `vec_dot`) within the bound above.
#[test]
fn matmul_matches_ggml_vec_dot_on_real_weights() {
    let path = support::fixtures::path("nanogpt-k256/ckpt.pt");
    let ck = kvant::source::open(&path).expect("fixture opens");
    let t = ck
        .tensors
        .iter()
        .find(|t| t.shape.len() == 2 && t.shape[1] == 256 && t.shape[0] >= 256)
        .expect("a 2-D tensor 256 wide");
    let data = t.to_f32().expect("decodes");
    let (n_out, n_in, n_tokens) = (t.shape[0].min(96), 256, 9);
    let weights = &data[..n_out * n_in];
    let mut rng = Rng::new(7);
    let x = rng.row(n_tokens * n_in, 1.0);
    for ty in WEIGHT_TYPES {
        let w = quantize(ty, weights, n_in, None).expect("quantizes");
        let row = ty.row_size(n_in).expect("fits");
        let mut out = vec![0f32; n_out * n_tokens];
        dot::matmul(ty, &w, n_out, n_in, &x, n_tokens, &mut out).expect("runs");
        let dt = dot::vec_dot_type(ty);
        for tk in 0..n_tokens {
            let a = ggml_cpu::from_float(dt, &x[tk * n_in..(tk + 1) * n_in]);
            let av = act_values(dt, &a, n_in);
            for r in 0..n_out {
                let wr = &w[r * row..(r + 1) * row];
                let theirs = ggml_cpu::vec_dot(ty, n_in, wr, &a);
                let tol = if ty.is_quantized() && ty.block_size() != 32 {
                    let wv = dequantize(ty, wr, n_in).expect("decodes");
                    let s: f64 = wv
                        .iter()
                        .zip(&av)
                        .map(|(p, q)| (f64::from(*p) * f64::from(*q)).abs())
                        .sum();
                    1e-5 * s
                } else {
                    0.0
                };
                let what = format!("{} row {r} token {tk}", t.name);
                assert_close(ty, &what, "matmul", out[tk * n_out + r], theirs, tol);
            }
        }
    }
}
