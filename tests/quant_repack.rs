//! kvant's product of repacked Q4_0/Q4_K weights against the pinned
//! llama.cpp's own: the weight allocated in ggml-cpu's `CPU_REPACK`
//! buffer (repacked by ggml), the `MUL_MAT` run by the CPU backend, so
//! ggml's `forward_mul_mat` quantizes the activations (`quantize_mat` in
//! groups of four, `from_float` for the rest) and calls its AVX2 gemm and
//! gemv kernels exactly as in llama.cpp's forward pass (see
//! `support/ggml_repack.rs`).
//!
//! * `matmul_repacked` equals ggml bit for bit on real trained weights,
//!   for token counts on both sides of every group-of-four boundary, with
//!   activation blocks that hold both `+amax` and `−amax` (where the
//!   group quantizer and the row quantizer pick opposite scale signs).
//! * ggml's result does not depend on its thread count (1 vs 2).
//! * `is_repacked` is ggml's choice, read back from `tensor->extra`.

mod support;

use kvant::quant::{dot, is_repacked, matmul_repacked, GgmlType};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use support::{ggml, ggml_repack};

const TOKEN_COUNTS: [usize; 9] = [1, 2, 3, 4, 5, 7, 8, 13, 40];
const REPACKED: [GgmlType; 2] = [GgmlType::Q4_0, GgmlType::Q4K];

/// Real weights of nanogpt-k256: one 256 wide and one 1024 wide matrix
/// (name, rows, columns, values).
fn real_weights() -> Vec<(String, usize, usize, Vec<f32>)> {
    let path = support::fixtures::path("nanogpt-k256/ckpt.pt");
    let ck = kvant::source::open(&path).expect("fixture opens");
    let mut picked = Vec::new();
    for width in [256, 1024] {
        let t = ck
            .tensors
            .iter()
            .find(|t| t.shape.len() == 2 && t.shape[1] == width && t.shape[0] % 8 == 0)
            .unwrap_or_else(|| panic!("nanogpt-k256 has no {width}-wide matrix"));
        let data = t.to_f32().expect("fixture tensor decodes");
        picked.push((t.name.clone(), t.shape[0], width, data));
    }
    picked
}

/// `n_tokens` activation rows: roughly normal, every third one with a
/// `−amax` then a `+amax` in each 256-element block, every fifth (from
/// the fifth) with its first 256 elements zero (blocks whose scale is 0).
fn activations(n_in: usize, n_tokens: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n_in * n_tokens);
    for t in 0..n_tokens {
        let scale = [0.3f32, 1.0, 4.0][t % 3];
        let row: Vec<f32> = (0..n_in)
            .map(|_| (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0)
            .map(|v| v * scale)
            .collect();
        x.extend(row);
        let row = &mut x[t * n_in..];
        if t % 3 == 0 {
            for b in (0..n_in).step_by(256) {
                row[b + 5] = -3.0 * scale;
                row[b + 200] = 3.0 * scale;
            }
        }
        if t % 5 == 4 {
            row[..256].fill(0.0);
        }
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn first_difference(ours: &[f32], theirs: &[f32], n_out: usize) -> String {
    let i = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a.to_bits() != b.to_bits())
        .unwrap_or(0);
    format!(
        "first at token {} row {}: {} vs ggml {}",
        i / n_out,
        i % n_out,
        ours[i],
        theirs[i]
    )
}

#[test]
fn matmul_repacked_equals_ggml_forward_mul_mat_bit_for_bit() {
    for (name, n_out, n_in, data) in real_weights() {
        for ty in REPACKED {
            let w = ggml::quantize_chunk(ty, &data, n_in, None);
            for n_tokens in TOKEN_COUNTS {
                let x = activations(n_in, n_tokens, n_tokens as u64);
                let theirs = ggml_repack::mul_mat(ty, &w, n_out, n_in, &x, n_tokens, 2);
                let mut ours = vec![0f32; n_out * n_tokens];
                matmul_repacked(ty, &w, n_out, n_in, &x, n_tokens, &mut ours).expect("runs");
                assert!(
                    bits(&ours) == bits(&theirs),
                    "{ty} {name} ({n_out}x{n_in}), {n_tokens} tokens: {}",
                    first_difference(&ours, &theirs, n_out)
                );
            }
        }
    }
}

/// One real weight quantized to `ty`, `n_tokens` activation rows, and
/// ggml's repacked product of the two on `threads` threads.
fn ggml_case(ty: GgmlType, which: usize, n_tokens: usize, threads: i32) -> Case {
    let (name, n_out, n_in, data) = real_weights().swap_remove(which);
    let w = ggml::quantize_chunk(ty, &data, n_in, None);
    let x = activations(n_in, n_tokens, 99);
    let out = ggml_repack::mul_mat(ty, &w, n_out, n_in, &x, n_tokens, threads);
    Case {
        name,
        n_out,
        n_in,
        w,
        x,
        out,
    }
}

struct Case {
    name: String,
    n_out: usize,
    n_in: usize,
    w: Vec<u8>,
    x: Vec<f32>,
    out: Vec<f32>,
}

#[test]
fn ggml_repacked_product_does_not_depend_on_thread_count() {
    for ty in REPACKED {
        let c = ggml_case(ty, 0, 13, 1);
        let two = ggml_repack::mul_mat(ty, &c.w, c.n_out, c.n_in, &c.x, 13, 2);
        assert!(
            bits(&c.out) == bits(&two),
            "{ty} {}: 1 vs 2 threads",
            c.name
        );
    }
}

/// The comparison above is sharp: the repacked kernels' float order is
/// not `vec_dot`'s, and shows in the bits.
#[test]
fn repacked_order_differs_from_vec_dot_order() {
    for ty in REPACKED {
        let c = ggml_case(ty, 1, 8, 2);
        let mut row_by_row = vec![0f32; c.n_out * 8];
        dot::matmul(ty, &c.w, c.n_out, c.n_in, &c.x, 8, &mut row_by_row).expect("runs");
        let differ = bits(&row_by_row)
            .iter()
            .zip(bits(&c.out))
            .filter(|(a, b)| **a != *b)
            .count();
        assert!(
            differ > 0,
            "{ty} {}: vec_dot order gave the repacked bits",
            c.name
        );
    }
}

#[test]
fn is_repacked_matches_ggml_choice() {
    let mut checked = 0;
    for ty in GgmlType::ALL {
        for n_out in [1, 4, 8, 12, 16, 20, 256, 260, 768] {
            let n_in = 512;
            let ggml_says = ggml_repack::repacks(ty, n_out, n_in);
            assert_eq!(
                is_repacked(ty, n_out, n_in),
                ggml_says,
                "{ty} with {n_out} rows of {n_in}"
            );
            checked += usize::from(ggml_says);
        }
    }
    // Q4_0 and Q4_K at 8, 16, 256 and 768 rows.
    assert_eq!(checked, 8);
}

#[test]
fn matmul_repacked_refuses_what_ggml_does_not_repack() {
    let w = vec![0u8; 12 * 18 * 8];
    let x = vec![0f32; 256];
    let mut out = vec![0f32; 12];
    assert!(matmul_repacked(GgmlType::Q4_0, &w[..12 * 18 * 8], 12, 256, &x, 1, &mut out).is_err());
    let mut out = vec![0f32; 8];
    assert!(matmul_repacked(GgmlType::Q8_0, &w, 8, 256, &x, 1, &mut out).is_err());
    assert!(matmul_repacked(GgmlType::Q4_0, &w[1..], 8, 256, &x, 1, &mut out).is_err());
}
