//! Matrix-vector and matrix-matrix products as ggml-cpu computes them, so
//! a pure-Rust forward pass reproduces llama.cpp's logits.
//!
//! For a weight of type `W`, ggml-cpu first converts each activation row
//! to `W`'s partner, [`vec_dot_type`]: F32, F16 and BF16 meet themselves
//! (so F16 weights multiply activations *rounded to f16*), Q4_0/Q5_0/Q8_0
//! meet Q8_0, Q4_1/Q5_1 meet Q8_1 and the K-quants meet Q8_K
//! (`type_traits_cpu` in `ggml-cpu.c`). It never dequantizes a quantized
//! weight: every block product is an exact integer sum scaled by the two
//! blocks' factors. [`quantize_activation_row`] produces the partner bytes
//! exactly as ggml-cpu's x86 `from_float` does (see `activation.rs` for
//! where that differs from the `_ref` quantizers), [`vec_dot`] is one row
//! product, [`matmul`] the whole product.
//!
//! Two versions of every kernel sit side by side: [`reference`] mirrors
//! ggml's generic C, the public functions here run the fast paths
//! (`unpacked_dot.rs` for the quantized types, `dense_dot.rs` for the
//! dense ones, AVX2 chosen at run time). Both form the same exact integer
//! block sums; the fast paths also perform the float steps of the pinned
//! llama.cpp's CPU backend (AVX2 build) in its order, so a forward pass
//! reproduces its logits bit for bit:
//!
//! * dense weights: ggml's `vec_dot_f16`/`_bf16`/`_f32` order for one
//!   token, llamafile's `tinyBLAS` tiles for two or more;
//! * 32-element blocks: `vec_dot_q*` and `tinyBLAS_Q0_AVX` (the same
//!   float steps);
//! * K-quants: the tiled kernel ggml-cpu runs from 8 tokens on
//!   (`tiled/tiled-kernel.cpp`); with fewer tokens ggml's `vec_dot_q*_K`
//!   groups the floats differently and the results agree to float
//!   reassociation.
//!
//! On AVX2, ggml repacks Q4_0 and Q4_K weights with a multiple of 8 rows
//! into 8×8 interleaved blocks (`GGML_CPU_REPACK`) and runs their products
//! through `gemm`/`gemv` kernels with their own order: `repack_dot.rs`
//! mirrors those, and the forward pass (`eval::forward::matmul`) picks
//! between the two as ggml's `mul_mat` does.
//!
//! This module knows nothing of files or tensors' names: rows of bytes in,
//! floats out.

use rayon::prelude::*;

use super::activation::{
    quantize_q8_0_block, quantize_q8_1_block, quantize_q8_k_block, Q8_0_SIZE, Q8_1_SIZE, Q8_K_SIZE,
    QK8, QK_K,
};
use super::dense_dot::{self, Dense};
use super::kquants_dot::{self, KQuant};
use super::kquants_vnni;
use super::legacy_dot::{self, Legacy};
use super::row_blocks::RowBlock;
use super::unpacked_dot::{
    dot_rows_vnni, dot_tokens, has_vnni, ActKind, ActRow, Unpacked, TOKENS, VNNI_TOKENS,
};
use super::{GgmlType, QuantError};

/// The family a weight type's kernels belong to.
#[derive(Debug, Clone, Copy)]
enum Family {
    Dense(Dense),
    Legacy(Legacy),
    K(KQuant),
}

fn family(weight: GgmlType) -> Option<Family> {
    Some(match weight {
        GgmlType::F32 => Family::Dense(Dense::F32),
        GgmlType::F16 => Family::Dense(Dense::F16),
        GgmlType::BF16 => Family::Dense(Dense::BF16),
        GgmlType::Q4_0 => Family::Legacy(Legacy::Q4_0),
        GgmlType::Q4_1 => Family::Legacy(Legacy::Q4_1),
        GgmlType::Q5_0 => Family::Legacy(Legacy::Q5_0),
        GgmlType::Q5_1 => Family::Legacy(Legacy::Q5_1),
        GgmlType::Q8_0 => Family::Legacy(Legacy::Q8_0),
        GgmlType::Q2K => Family::K(KQuant::Q2K),
        GgmlType::Q3K => Family::K(KQuant::Q3K),
        GgmlType::Q4K => Family::K(KQuant::Q4K),
        GgmlType::Q5K => Family::K(KQuant::Q5K),
        GgmlType::Q6K => Family::K(KQuant::Q6K),
        _ => return None,
    })
}

/// Every weight type with a dot product here, in ggml id order (F32,
/// F16, BF16 first).
pub const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
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
];

/// ggml-cpu's `vec_dot_type` of a weight type: the type activations are
/// converted to before the product. Types without a product (integers,
/// F64, the activation types themselves) map to themselves.
pub fn vec_dot_type(weight: GgmlType) -> GgmlType {
    match weight {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            GgmlType::Q8K
        }
        other => other,
    }
}

/// A one-block activation quantizer.
type BlockQuantizer = fn(&[f32], &mut [u8]);

/// One activation row (`x.len()` a multiple of the block size) in the
/// partner type's bytes (`out` holds `dot_type.row_size(x.len())`),
/// exactly as ggml-cpu's `from_float` on x86 writes them.
///
/// # Panics
/// If `dot_type` is not F32, F16, BF16, Q8_0, Q8_1 or Q8_K, or the
/// lengths do not fit: a programming error, never input data.
pub fn quantize_activation_row(dot_type: GgmlType, x: &[f32], out: &mut [u8]) {
    let (block, size, f): (usize, usize, BlockQuantizer) = match dot_type {
        GgmlType::Q8_0 => (QK8, Q8_0_SIZE, quantize_q8_0_block),
        GgmlType::Q8_1 => (QK8, Q8_1_SIZE, quantize_q8_1_block),
        GgmlType::Q8K => (QK_K, Q8_K_SIZE, quantize_q8_k_block),
        GgmlType::F32 => return Dense::F32.encode(x, out),
        GgmlType::F16 => return Dense::F16.encode(x, out),
        GgmlType::BF16 => return Dense::BF16.encode(x, out),
        other => panic!("{other} is not an activation type of a dot product"),
    };
    assert!(x.len().is_multiple_of(block) && out.len() >= x.len() / block * size);
    for (xb, ob) in x.chunks_exact(block).zip(out.chunks_exact_mut(size)) {
        f(xb, ob);
    }
}

fn act_kind(l: Legacy) -> ActKind {
    if l.has_min() {
        ActKind::Q8_1
    } else {
        ActKind::Q8_0
    }
}

/// `Σ w·a` over one row of `n` elements: weight row bytes against the
/// activation row in the partner's bytes, as ggml-cpu's `vec_dot` (fast
/// path; see [`reference::vec_dot`] for ggml's generic C).
///
/// # Panics
/// If `weight` has no dot product or the rows are shorter than `n`
/// elements: a programming error, never input data.
pub fn vec_dot(weight: GgmlType, n: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
    let mut u = Unpacked::default();
    match family(weight) {
        Some(Family::Dense(d)) => {
            let (mut w, mut a) = (Vec::new(), Vec::new());
            d.widen(&w_row[..n * d.size()], &mut w);
            d.widen(&act_row[..n * d.size()], &mut a);
            dense_dot::vec_dot(d, &w, &a)
        }
        Some(Family::Legacy(l)) => {
            legacy_dot::unpack(l, n, w_row, &mut u);
            let a = ActRow::decode(act_kind(l), n, act_row);
            let mut out = [0f32; 1];
            dot_tokens(&u, &[&a], QK8, &mut out);
            out[0]
        }
        Some(Family::K(k)) => {
            kquants_dot::unpack(k, n, w_row, &mut u);
            let a = ActRow::decode(ActKind::Q8K, n, act_row);
            let mut out = [0f32; 1];
            dot_tokens(&u, &[&a], QK_K, &mut out);
            out[0]
        }
        None => panic!("{weight} has no dot product"),
    }
}

/// Weight rows per parallel task: their unpacked form (2 bytes an element,
/// ≤ 192 KiB for rows of 3072) stays in L2 while every token streams past
/// them; more rows per task means fewer passes over the activations.
const ROWS_PER_TASK: usize = 32;

/// `out[t * n_out + r] = dot(weight row r, activation row t)`: `w` holds
/// `n_out` rows of `n_in` elements of `weight`, `x` is `n_tokens × n_in`
/// f32 row-major. The activations are converted once, then weight rows
/// run in parallel (rayon), each task decoding its rows once and sweeping
/// the tokens [`TOKENS`] at a time ([`VNNI_TOKENS`] over all of the
/// task's rows in one call where the 32-element blocks take VNNI).
///
/// # Errors
/// [`QuantError::Unsupported`] for a weight type without a product,
/// [`QuantError::BadRowLength`] when `n_in` is not a multiple of the
/// block or a buffer does not have the size the shape implies.
pub fn matmul(
    weight: GgmlType,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let fam = family(weight).ok_or(QuantError::Unsupported(weight))?;
    let bad = || QuantError::BadRowLength {
        ty: weight,
        block: weight.block_size(),
        n_per_row: n_in,
    };
    let row_bytes = weight.row_size(n_in).ok_or_else(bad)?;
    if w.len() != row_bytes * n_out || x.len() != n_in * n_tokens || out.len() != n_out * n_tokens {
        return Err(bad());
    }
    if n_out == 0 || n_tokens == 0 {
        return Ok(());
    }
    if let Family::K(k) = fam {
        if kquants_vnni::applies(n_tokens) {
            kquants_vnni::matmul(k, w, n_out, n_in, x, out);
            return Ok(());
        }
    }
    unpacked_matmul(weight, fam, w, row_bytes, n_in, x, out)
}

/// [`matmul`]'s K-quant product without the VNNI kernel: the tiled
/// kernel's order on i16 levels, the yardstick `kquants_vnni`'s test
/// compares with.
#[cfg(test)]
pub(super) fn matmul_tiled_without_vnni(
    weight: GgmlType,
    w: &[u8],
    n_in: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let fam = family(weight).expect("a quantized type");
    let row_bytes = weight.row_size(n_in).expect("whole blocks");
    assert_eq!(out.len(), w.len() / row_bytes * (x.len() / n_in));
    unpacked_matmul(weight, fam, w, row_bytes, n_in, x, out).expect("valid sizes");
}

/// [`matmul`] through the unpacked rows of `unpacked_dot.rs` (sizes
/// already checked).
fn unpacked_matmul(
    weight: GgmlType,
    fam: Family,
    w: &[u8],
    row_bytes: usize,
    n_in: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let n_out = w.len() / row_bytes;
    let bad = || QuantError::BadRowLength {
        ty: weight,
        block: weight.block_size(),
        n_per_row: n_in,
    };
    let blocks = super::row_blocks::par_row_blocks(out, n_out, ROWS_PER_TASK);
    let weight_blocks = w.par_chunks(ROWS_PER_TASK * row_bytes);
    match fam {
        Family::Dense(d) => {
            let acts: Vec<f32> = x.iter().map(|&v| d.round(v)).collect();
            blocks
                .zip(weight_blocks)
                .for_each(|(mut o, wb)| dense_rows(d, wb, row_bytes, &acts, n_in, &mut o));
        }
        Family::Legacy(_) | Family::K(_) => {
            let dot_type = vec_dot_type(weight);
            let (kind, block) = match fam {
                Family::Legacy(l) => (act_kind(l), QK8),
                _ => (ActKind::Q8K, QK_K),
            };
            let act_bytes = dot_type.row_size(n_in).ok_or_else(bad)?;
            // 32-element blocks take the VNNI kernel where the CPU has it,
            // with its own layouts of the weights and activations.
            let vnni = block == QK8 && has_vnni();
            let acts: Vec<ActRow> = x
                .par_chunks(n_in)
                .map_init(
                    || vec![0u8; act_bytes],
                    |b, row| {
                        quantize_activation_row(dot_type, row, b);
                        if vnni {
                            ActRow::decode_biased(kind, n_in, b)
                        } else {
                            ActRow::decode(kind, n_in, b)
                        }
                    },
                )
                .collect();
            let layout = RowLayout {
                fam,
                block,
                vnni,
                row_bytes,
                n_in,
            };
            blocks
                .zip(weight_blocks)
                .for_each_init(Vec::new, |rows, (mut o, wb)| {
                    quant_rows(layout, wb, &acts, rows, &mut o)
                });
        }
    }
    Ok(())
}

/// The F32/F16/BF16 product as ggml-cpu runs it for two or more tokens
/// (llamafile's `tinyBLAS`, taken when `n_in` is a multiple of 8): same
/// layout as [`matmul`], but each output is one eight-lane accumulator
/// over the row summed as tinyBLAS's `hsum` (see
/// `dense_dot::tinyblas_matmul`), not `vec_dot`'s four accumulators. The
/// order shows at the 1e-3 level of a model's logits.
///
/// # Errors
/// [`QuantError::Unsupported`] for a weight type that is not F32, F16 or
/// BF16, [`QuantError::BadRowLength`] when `n_in` is not a multiple of 8
/// or a buffer does not have the size the shape implies.
pub fn matmul_tinyblas(
    weight: GgmlType,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let Some(Family::Dense(d)) = family(weight) else {
        return Err(QuantError::Unsupported(weight));
    };
    if n_in == 0
        || !n_in.is_multiple_of(8)
        || w.len() != n_out * n_in * d.size()
        || x.len() != n_in * n_tokens
        || out.len() != n_out * n_tokens
    {
        return Err(QuantError::BadRowLength {
            ty: weight,
            block: 8,
            n_per_row: n_in,
        });
    }
    dense_dot::tinyblas_matmul(d, w, n_in, n_out, x, out);
    Ok(())
}

/// One task of dense rows: widen each weight row once, two tokens per
/// kernel call.
fn dense_rows(d: Dense, wb: &[u8], row_bytes: usize, acts: &[f32], n_in: usize, o: &mut RowBlock) {
    let n_tokens = acts.len() / n_in;
    let rows: Vec<Vec<f32>> = wb
        .chunks_exact(row_bytes)
        .map(|r| {
            let mut v = Vec::with_capacity(n_in);
            d.widen(r, &mut v);
            v
        })
        .collect();
    let mut t = 0;
    while t < n_tokens {
        let a0 = &acts[t * n_in..(t + 1) * n_in];
        for (r, wr) in rows.iter().enumerate() {
            if t + 1 < n_tokens {
                let a1 = &acts[(t + 1) * n_in..(t + 2) * n_in];
                let [s0, s1] = dense_dot::vec_dot2(d, wr, a0, a1);
                o.set(r, t, s0);
                o.set(r, t + 1, s1);
            } else {
                o.set(r, t, dense_dot::vec_dot(d, wr, a0));
            }
        }
        t += 2;
    }
}

/// How a product's quantized weight rows are laid out and multiplied.
#[derive(Clone, Copy)]
struct RowLayout {
    fam: Family,
    /// 32 (legacy) or 256 (K-quants) elements a block.
    block: usize,
    /// Whether the rows take [`dot_rows_vnni`] (the activations were
    /// decoded biased for it).
    vnni: bool,
    row_bytes: usize,
    n_in: usize,
}

/// One task of quantized rows: unpack each weight row once (into `rows`,
/// the worker's buffers, reused from task to task), then sweep the tokens
/// a group at a time over all of the task's rows, so a group of
/// activation rows stays in L1 while it meets every weight row.
fn quant_rows(
    l: RowLayout,
    wb: &[u8],
    acts: &[ActRow],
    rows: &mut Vec<Unpacked>,
    o: &mut RowBlock,
) {
    let n_rows = wb.len() / l.row_bytes;
    rows.resize_with(n_rows.max(rows.len()), Unpacked::default);
    for (r, u) in wb.chunks_exact(l.row_bytes).zip(rows.iter_mut()) {
        match l.fam {
            Family::Legacy(ty) if l.vnni => legacy_dot::unpack_i8(ty, l.n_in, r, u),
            Family::Legacy(ty) => legacy_dot::unpack(ty, l.n_in, r, u),
            Family::K(k) => kquants_dot::unpack(k, l.n_in, r, u),
            Family::Dense(_) => unreachable!("dense rows take dense_rows"),
        }
    }
    let rows = &rows[..n_rows];
    if l.vnni {
        let mut res = [0f32; VNNI_TOKENS * ROWS_PER_TASK];
        for (g, group) in acts.chunks(VNNI_TOKENS).enumerate() {
            let refs = refs_of::<VNNI_TOKENS>(group);
            let res = &mut res[..group.len() * n_rows];
            dot_rows_vnni(rows, &refs[..group.len()], res);
            for (j, vs) in res.chunks_exact(n_rows).enumerate() {
                o.set_rows(0, g * VNNI_TOKENS + j, vs);
            }
        }
        return;
    }
    let mut res = [0f32; TOKENS];
    for (t0, group) in acts.chunks(TOKENS).enumerate() {
        let refs = refs_of::<TOKENS>(group);
        for (r, w) in rows.iter().enumerate() {
            dot_tokens(w, &refs[..group.len()], l.block, &mut res);
            for (j, &v) in res.iter().take(group.len()).enumerate() {
                o.set(r, t0 * TOKENS + j, v);
            }
        }
    }
}

/// The rows of a group of at most `N` activation rows, by reference (the
/// slots past the group repeat its first row).
fn refs_of<const N: usize>(group: &[ActRow]) -> [&ActRow; N] {
    let mut refs = [&group[0]; N];
    for (slot, a) in refs.iter_mut().zip(group) {
        *slot = a;
    }
    refs
}

/// The scalar versions, written to mirror ggml's generic C
/// (`ggml-cpu/quants.c` `*_generic`, `vec.cpp`'s scalar branches): the
/// yardstick the fast paths are tested against.
pub mod reference {
    use super::*;

    /// The activation bytes, as [`super::quantize_activation_row`]: the
    /// scalar form of ggml-cpu's x86 `from_float` is the only version (it
    /// is already exact, and cheap beside the product), and it is *not*
    /// `quantize_row_q8_0_ref` (see `activation.rs`).
    pub fn quantize_activation_row(dot_type: GgmlType, x: &[f32], out: &mut [u8]) {
        super::quantize_activation_row(dot_type, x, out);
    }

    /// `Σ w·a` as ggml's generic C computes it.
    ///
    /// # Panics
    /// If `weight` has no dot product or the rows are short.
    pub fn vec_dot(weight: GgmlType, n: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
        match family(weight) {
            Some(Family::Dense(d)) => {
                let (mut w, mut a) = (Vec::new(), Vec::new());
                d.widen(&w_row[..n * d.size()], &mut w);
                d.widen(&act_row[..n * d.size()], &mut a);
                dense_dot::vec_dot_ref(&w, &a)
            }
            Some(Family::Legacy(l)) => legacy_dot::vec_dot_ref(l, n, w_row, act_row),
            Some(Family::K(k)) => kquants_dot::vec_dot_ref(k, n, w_row, act_row),
            None => panic!("{weight} has no dot product"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    fn weight_bytes(ty: GgmlType, x: &[f32], n_per_row: usize) -> Vec<u8> {
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let d = match ty {
                    GgmlType::F32 => Dense::F32,
                    GgmlType::F16 => Dense::F16,
                    _ => Dense::BF16,
                };
                let mut b = vec![0u8; x.len() * d.size()];
                d.encode(x, &mut b);
                b
            }
            _ => quantize(ty, x, n_per_row, None).expect("quantizes"),
        }
    }

    /// The fast `vec_dot` stays within float-reordering distance of the
    /// reference for every type; the quantized fast path's error bound is
    /// one rounding per block term (the integer parts are exact).
    #[test]
    fn fast_vec_dot_matches_the_reference() {
        for ty in WEIGHT_TYPES {
            for n in [256, 768] {
                let w = weight_bytes(ty, &values(n, 1), n);
                let x = values(n, 2);
                let dt = vec_dot_type(ty);
                let mut a = vec![0u8; dt.row_size(n).expect("fits")];
                quantize_activation_row(dt, &x, &mut a);
                let fast = vec_dot(ty, n, &w, &a);
                let slow = reference::vec_dot(ty, n, &w, &a);
                let tol = 1e-5 * (n as f32).sqrt() * slow.abs().max(1.0);
                assert!((fast - slow).abs() <= tol, "{ty}: {fast} vs {slow}");
            }
        }
    }

    /// `matmul` gives, at every position, the fast `vec_dot` of that row
    /// and token, for token counts that do and do not fill the groups.
    #[test]
    fn matmul_places_every_row_token_dot() {
        let (n_out, n_in) = (11, 256);
        for ty in WEIGHT_TYPES {
            let w = weight_bytes(ty, &values(n_out * n_in, 3), n_in);
            let row = ty.row_size(n_in).expect("fits");
            for n_tokens in [1, 5] {
                let x = values(n_tokens * n_in, 4);
                let mut out = vec![0f32; n_out * n_tokens];
                matmul(ty, &w, n_out, n_in, &x, n_tokens, &mut out).expect("runs");
                let dt = vec_dot_type(ty);
                for t in 0..n_tokens {
                    let mut a = vec![0u8; dt.row_size(n_in).expect("fits")];
                    quantize_activation_row(dt, &x[t * n_in..(t + 1) * n_in], &mut a);
                    for r in 0..n_out {
                        let want = vec_dot(ty, n_in, &w[r * row..(r + 1) * row], &a);
                        assert_eq!(out[t * n_out + r], want, "{ty} r={r} t={t}");
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_refuses_bad_shapes_and_types() {
        let mut out = vec![0f32; 2];
        let err = matmul(
            GgmlType::Q4K,
            &[0u8; 144],
            1,
            100,
            &[0.0; 100],
            1,
            &mut out[..1],
        );
        assert!(matches!(err, Err(QuantError::BadRowLength { .. })));
        let err = matmul(GgmlType::I32, &[0u8; 8], 1, 2, &[0.0; 2], 1, &mut out[..1]);
        assert!(matches!(err, Err(QuantError::Unsupported(GgmlType::I32))));
        let err = matmul(GgmlType::F32, &[0u8; 8], 1, 2, &[0.0; 2], 1, &mut out);
        assert!(matches!(err, Err(QuantError::BadRowLength { .. })));
    }
}
