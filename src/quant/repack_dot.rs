//! The matrix product of ggml-cpu's repacked Q4_0 and Q4_K weights, bit
//! for bit as the pinned llama.cpp computes it.
//!
//! On an AVX2 build, ggml-cpu's `ggml_repack_get_optimal_repack_type`
//! (`repack.cpp`) stores every Q4_0 weight with a multiple of 8 rows as
//! `q4_0_8x8` and every such Q4_K weight as `q4_K_8x8`: eight rows
//! interleaved, so that one AVX2 register holds one float per row. Their
//! `MUL_MAT`s then run through `forward_mul_mat` instead of `vec_dot`:
//!
//! * the activation tokens are quantized in groups of four with
//!   `ggml_quantize_mat_q8_0_4x8` / `ggml_quantize_mat_q8_K_4x8`, the last
//!   `n_tokens % 4` one by one with the row quantizer (`from_float`);
//! * the groups go through `ggml_gemm_*_8x8`, the leftover tokens through
//!   `ggml_gemv_*_8x8`, each eight output rows at a time.
//!
//! Threads only split the output rows at multiples of eight, and every
//! output is computed by one kernel call on its own, so the result does
//! not depend on the thread count.
//!
//! What decides the bits (read from `arch/x86/repack.cpp`, AVX2
//! branches), per output row and token, with `isum` an exact integer:
//!
//! * Q4_0, gemm and gemv alike: `acc = fma(isum_b, d_w · d_a, acc)` over
//!   the 32-element blocks `b`.
//! * Q4_K, gemv: per 256-element super-block `acc = fma(isum_b, d_w · d_a,
//!   acc)` and `acc_min = fma(imin_b, dmin_w · d_a, acc_min)`, the result
//!   `acc − acc_min`; gemm does the same per *pair of sub-blocks* (four
//!   fused multiply-adds per super-block instead of one).
//! * Q8_0 activations are the same bytes either way (`127 / amax`, ties to
//!   even). Q8_K's `quantize_mat` picks the scale's sign from whether
//!   `+amax` occurs anywhere in the block, where the row quantizer takes
//!   the sign of the first element of largest magnitude: the two differ
//!   for a block holding both `+amax` and `−amax`, `−amax` first. (The
//!   flip negates every quant and `d` of the block, so the products come
//!   out the same; it is kept so that the quants are ggml's.)
//!
//! Integer sums are exact whatever their order, so they are computed here
//! from the weights in GGUF layout, decoded eight rows at a time; only the
//! float steps follow ggml's order. AVX2 with FMA is chosen at run time;
//! the portable version gives the same bits (`f32::mul_add` where ggml
//! has `_mm256_fmadd_ps`).
//!
//! Like `dot.rs`, this module knows nothing of files or tensors' names.

use rayon::prelude::*;

use super::activation::{
    abs_max, cvtps_epi32, quantize_q8_0_block, quantize_q8_k_block, saturate_i8, Q8_0_SIZE,
    Q8_K_SIZE, QK8, QK_K,
};
use super::kquants::{get_f16, get_scale_min_k4};
use super::{GgmlType, QuantError};

/// Rows ggml interleaves into one repacked block.
const COLS: usize = 8;
/// Tokens per `quantize_mat` group (and per gemm tile).
const GROUP: usize = 4;
/// 32-element sub-blocks per Q4_K super-block.
const SUBS: usize = QK_K / QK8;
/// `block_q4_0`: f16 `d`, 16 bytes of nibbles.
const Q4_0_SIZE: usize = 18;
/// `block_q4_K`: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales, 128 of
/// nibbles.
const Q4_K_SIZE: usize = 144;

/// Whether the pinned llama.cpp's CPU backend repacks a weight of this
/// type and shape (Q4_0/Q4_K with `n_out % 8 == 0`, on its AVX2 build), so
/// that its products go through the 8x8 interleaved kernels.
///
/// `n_in` plays no part in ggml's choice: every valid Q4_0/Q4_K row is a
/// multiple of 32 elements, which is all the repacking needs.
pub fn is_repacked(ty: GgmlType, n_out: usize, n_in: usize) -> bool {
    let _ = n_in;
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4K) && n_out.is_multiple_of(COLS)
}

/// The two repacked weight types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4_0,
    Q4K,
}

impl Kind {
    /// Elements per weight (and activation) block.
    fn block(self) -> usize {
        match self {
            Kind::Q4_0 => QK8,
            Kind::Q4K => QK_K,
        }
    }
}

/// `out[t * n_out + r] = W[r] · x[t]` exactly as ggml's repacked `mul_mat`
/// computes it (same activation quantization, same integer sums, the same
/// float operations in the same order). `w` is the weight in its GGUF
/// (un-repacked) layout, `n_out` rows of `n_in` elements; `x` is
/// `n_tokens` rows of `n_in` f32.
///
/// # Errors
/// [`QuantError::Unsupported`] when [`is_repacked`] is false for the type
/// and shape, [`QuantError::BadRowLength`] when `n_in` is not a multiple
/// of the block or a buffer does not have the size the shape implies.
pub fn matmul_repacked(
    ty: GgmlType,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let kind = match ty {
        GgmlType::Q4_0 if is_repacked(ty, n_out, n_in) => Kind::Q4_0,
        GgmlType::Q4K if is_repacked(ty, n_out, n_in) => Kind::Q4K,
        _ => return Err(QuantError::Unsupported(ty)),
    };
    let bad = || QuantError::BadRowLength {
        ty,
        block: kind.block(),
        n_per_row: n_in,
    };
    let row_bytes = ty.row_size(n_in).ok_or_else(bad)?;
    if n_in == 0
        || w.len() != row_bytes * n_out
        || x.len() != n_in * n_tokens
        || out.len() != n_out * n_tokens
    {
        return Err(bad());
    }
    if n_out == 0 || n_tokens == 0 {
        return Ok(());
    }
    let acts = Acts::quantize(kind, x, n_in, n_tokens);
    let kernel = Kernel::detect();
    // by_group[g][t][r]: each task writes one contiguous slice.
    let mut by_group = vec![0f32; n_out * n_tokens];
    by_group
        .par_chunks_mut(COLS * n_tokens)
        .zip(w.par_chunks(COLS * row_bytes))
        .for_each_init(Group::default, |group, (o, wg)| {
            group.decode(kind, wg, n_in);
            for (t, o) in o.chunks_exact_mut(COLS).enumerate() {
                kernel.run(kind, group, &acts, t, o);
            }
        });
    for (t, o) in out.chunks_exact_mut(n_out).enumerate() {
        for (g, o) in o.chunks_exact_mut(COLS).enumerate() {
            let at = (g * n_tokens + t) * COLS;
            o.copy_from_slice(&by_group[at..at + COLS]);
        }
    }
    Ok(())
}

/// Every token's activation quants, as ggml's `forward_mul_mat` produces
/// them.
struct Acts {
    /// `n_tokens × n_in` quants.
    qs: Vec<i8>,
    /// The scale of each token's blocks (`n_in / block` per token).
    d: Vec<f32>,
    /// Σ quants of each token's 32-element groups (`n_in / 32` per token).
    sums: Vec<i32>,
    /// Tokens `[0, n_gemm)` went through `quantize_mat` and the gemm.
    n_gemm: usize,
}

impl Acts {
    fn quantize(kind: Kind, x: &[f32], n_in: usize, n_tokens: usize) -> Acts {
        let block = kind.block();
        let n_gemm = n_tokens - n_tokens % GROUP;
        let mut acts = Acts {
            qs: vec![0; n_tokens * n_in],
            d: vec![0.0; n_tokens * (n_in / block)],
            sums: vec![0; n_tokens * (n_in / QK8)],
            n_gemm,
        };
        acts.qs
            .par_chunks_mut(n_in)
            .zip(acts.d.par_chunks_mut(n_in / block))
            .zip(acts.sums.par_chunks_mut(n_in / QK8))
            .zip(x.par_chunks(n_in))
            .enumerate()
            .for_each(|(t, (((qs, d), sums), x))| {
                let in_group = t < n_gemm;
                for ((q, d), x) in qs
                    .chunks_exact_mut(block)
                    .zip(d.iter_mut())
                    .zip(x.chunks_exact(block))
                {
                    *d = match kind {
                        Kind::Q4_0 => q8_0_block(x, q),
                        Kind::Q4K if in_group => q8_k_mat_block(x, q),
                        Kind::Q4K => q8_k_row_block(x, q),
                    };
                }
                for (s, q) in sums.iter_mut().zip(qs.chunks_exact(QK8)) {
                    *s = q.iter().map(|&v| i32::from(v)).sum();
                }
            });
        acts
    }
}

/// One Q8_0 block, as both `quantize_row_q8_0` and
/// `ggml_quantize_mat_q8_0_4x8` (AVX2) write it: same `amax` reduction,
/// same `127 / amax`, same rounding and saturation.
fn q8_0_block(x: &[f32], q: &mut [i8]) -> f32 {
    let mut b = [0u8; Q8_0_SIZE];
    quantize_q8_0_block(x, &mut b);
    for (q, &v) in q.iter_mut().zip(&b[2..]) {
        *q = v as i8;
    }
    get_f16(&b, 0)
}

/// One Q8_K block of a leftover token: ggml's `from_float`,
/// `quantize_row_q8_K_ref`.
fn q8_k_row_block(x: &[f32], q: &mut [i8]) -> f32 {
    let mut b = [0u8; Q8_K_SIZE];
    quantize_q8_k_block(x, &mut b);
    for (q, &v) in q.iter_mut().zip(&b[4..4 + QK_K]) {
        *q = v as i8;
    }
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// One Q8_K block of a token in a group of four, as
/// `ggml_quantize_mat_q8_K_4x8` (AVX2) writes it: the scale is negative
/// when `+amax` occurs in the block, the quants are `x · iscale` rounded
/// ties-to-even and saturated, `d = 1 / iscale`.
fn q8_k_mat_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = if x.contains(&amax) {
        -127.0 / amax
    } else {
        127.0 / amax
    };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = saturate_i8(cvtps_epi32((v * iscale).round_ties_even())) as i8;
    }
    1.0 / iscale
}

/// Eight weight rows decoded once per task: levels in element order and
/// the per-block factors laid out with the row as the fastest index, so
/// that one AVX2 register holds one value per row.
#[derive(Default)]
struct Group {
    n_in: usize,
    /// Row `r`'s unsigned levels (0..=15) at `r * n_in`.
    q: Vec<u8>,
    /// `d[b * 8 + r]`.
    d: Vec<f32>,
    /// Q4_K: `dmin[b * 8 + r]`.
    dmin: Vec<f32>,
    /// Q4_K: `scale[(b * 8 + s) * 8 + r]` of sub-block `s`.
    scale: Vec<i32>,
    /// Q4_K: `min[(b * 8 + s) * 8 + r]`.
    min: Vec<i32>,
}

impl Group {
    fn decode(&mut self, kind: Kind, w: &[u8], n_in: usize) {
        let nb = n_in / kind.block();
        self.n_in = n_in;
        self.q.resize(COLS * n_in, 0);
        self.d.resize(COLS * nb, 0.0);
        let row_bytes = w.len() / COLS;
        match kind {
            Kind::Q4_0 => {
                for (r, row) in w.chunks_exact(row_bytes).enumerate() {
                    let q = &mut self.q[r * n_in..(r + 1) * n_in];
                    for (b, (blk, q)) in row
                        .chunks_exact(Q4_0_SIZE)
                        .zip(q.chunks_exact_mut(QK8))
                        .enumerate()
                    {
                        self.d[b * COLS + r] = get_f16(blk, 0);
                        split_nibbles(&blk[2..], q);
                    }
                }
            }
            Kind::Q4K => {
                self.dmin.resize(COLS * nb, 0.0);
                self.scale.resize(COLS * SUBS * nb, 0);
                self.min.resize(COLS * SUBS * nb, 0);
                for (r, row) in w.chunks_exact(row_bytes).enumerate() {
                    let q = &mut self.q[r * n_in..(r + 1) * n_in];
                    for (b, (blk, q)) in row
                        .chunks_exact(Q4_K_SIZE)
                        .zip(q.chunks_exact_mut(QK_K))
                        .enumerate()
                    {
                        self.d[b * COLS + r] = get_f16(blk, 0);
                        self.dmin[b * COLS + r] = get_f16(blk, 2);
                        for s in 0..SUBS {
                            let (sc, m) = get_scale_min_k4(s, &blk[4..16]);
                            self.scale[(b * SUBS + s) * COLS + r] = i32::from(sc);
                            self.min[(b * SUBS + s) * COLS + r] = i32::from(m);
                        }
                        // 32 bytes per 64 elements: low nibbles first.
                        for (src, q) in blk[16..].chunks_exact(32).zip(q.chunks_exact_mut(64)) {
                            split_nibbles(src, q);
                        }
                    }
                }
            }
        }
    }
}

/// `src`'s low nibbles into the first half of `q`, high into the second.
fn split_nibbles(src: &[u8], q: &mut [u8]) {
    let (lo, hi) = q.split_at_mut(src.len());
    for ((&b, l), h) in src.iter().zip(lo).zip(hi) {
        *l = b & 0x0F;
        *h = b >> 4;
    }
}

/// Which implementation of the per-token kernels runs.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// The eight outputs of `group` for token `t`.
    fn run(self, kind: Kind, group: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        match (self, kind) {
            (Kernel::Portable, Kind::Q4_0) => portable::q4_0(group, acts, t, out),
            (Kernel::Portable, Kind::Q4K) => portable::q4_k(group, acts, t, out),
            // SAFETY: `detect` saw AVX2 and FMA on this CPU.
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Kind::Q4_0) => unsafe { avx2::q4_0(group, acts, t, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2, Kind::Q4K) => unsafe { avx2::q4_k(group, acts, t, out) },
        }
    }
}

/// The kernels in plain Rust: the same integers, the same float steps.
mod portable {
    use super::{Acts, Group, COLS, QK8, QK_K, SUBS};

    /// `Σ q·a` of one 32-element run.
    fn dot32(q: &[u8], a: &[i8]) -> i32 {
        q.iter()
            .zip(a)
            .map(|(&q, &a)| i32::from(q) * i32::from(a))
            .sum()
    }

    pub fn q4_0(g: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK8);
        let a = &acts.qs[t * n..(t + 1) * n];
        let mut acc = [0f32; COLS];
        for b in 0..nb {
            let da = acts.d[t * nb + b];
            let asum = acts.sums[t * nb + b];
            let ab = &a[b * QK8..(b + 1) * QK8];
            for (r, acc) in acc.iter_mut().enumerate() {
                // Levels are q − 8: Σ(q − 8)·a = Σq·a − 8·Σa.
                let isum = dot32(&g.q[r * n + b * QK8..][..QK8], ab) - 8 * asum;
                *acc = (isum as f32).mul_add(g.d[b * COLS + r] * da, *acc);
            }
        }
        out.copy_from_slice(&acc);
    }

    pub fn q4_k(g: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK_K);
        let a = &acts.qs[t * n..(t + 1) * n];
        let gemm = t < acts.n_gemm;
        let (mut acc, mut acc_min) = ([0f32; COLS], [0f32; COLS]);
        for b in 0..nb {
            let da = acts.d[t * nb + b];
            for r in 0..COLS {
                let dd = g.d[b * COLS + r] * da;
                let dm = g.dmin[b * COLS + r] * da;
                let (mut isum, mut imin) = (0i32, 0i32);
                for s in 0..SUBS {
                    let at = b * QK_K + s * QK8;
                    let k = (b * SUBS + s) * COLS + r;
                    isum += g.scale[k] * dot32(&g.q[r * n + at..][..QK8], &a[at..at + QK8]);
                    imin += g.min[k] * acts.sums[t * (n / QK8) + b * SUBS + s];
                    // The gemm adds each pair of sub-blocks on its own.
                    if gemm && s % 2 == 1 {
                        acc[r] = (isum as f32).mul_add(dd, acc[r]);
                        acc_min[r] = (imin as f32).mul_add(dm, acc_min[r]);
                        (isum, imin) = (0, 0);
                    }
                }
                if !gemm {
                    acc[r] = (isum as f32).mul_add(dd, acc[r]);
                    acc_min[r] = (imin as f32).mul_add(dm, acc_min[r]);
                }
            }
        }
        for ((o, a), m) in out.iter_mut().zip(acc).zip(acc_min) {
            *o = a - m;
        }
    }
}

/// The kernels with AVX2: one lane per weight row, as ggml's registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Acts, Group, COLS, QK8, QK_K, SUBS};

    /// Lane `r` = the sum of `v[r]`'s eight lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
        let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
        _mm256_add_epi32(lo, hi)
    }

    /// Lane `r` = `Σ q_r·a` over 32 elements, row `r`'s levels (0..=15)
    /// at `q[r * n + at..]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dots8(q: &[u8], n: usize, at: usize, a: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let mut v = [_mm256_setzero_si256(); 8];
        for (r, v) in v.iter_mut().enumerate() {
            let w = &q[r * n + at..r * n + at + QK8];
            let w = _mm256_loadu_si256(w.as_ptr().cast());
            // Unsigned levels ≤ 15 times |a| ≤ 128: the pair sums fit i16.
            *v = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
        }
        reduce8(&v)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_act(a: &[i8]) -> __m256i {
        _mm256_loadu_si256(a[..QK8].as_ptr().cast())
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_0(g: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK8);
        let a = &acts.qs[t * n..(t + 1) * n];
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let da = _mm256_set1_ps(acts.d[t * nb + b]);
            let dw = _mm256_loadu_ps(g.d[b * COLS..(b + 1) * COLS].as_ptr());
            let qa = dots8(&g.q, n, b * QK8, load_act(&a[b * QK8..]));
            // Levels are q − 8: Σ(q − 8)·a = Σq·a − 8·Σa.
            let isum = _mm256_sub_epi32(qa, _mm256_set1_epi32(8 * acts.sums[t * nb + b]));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, da), acc);
        }
        _mm256_storeu_ps(out[..COLS].as_mut_ptr(), acc);
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_k(g: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK_K);
        let a = &acts.qs[t * n..(t + 1) * n];
        let sums = &acts.sums[t * (n / QK8)..(t + 1) * (n / QK8)];
        let gemm = t < acts.n_gemm;
        let mut acc = _mm256_setzero_ps();
        let mut acc_min = _mm256_setzero_ps();
        for b in 0..nb {
            let da = _mm256_set1_ps(acts.d[t * nb + b]);
            let dd = _mm256_mul_ps(_mm256_loadu_ps(g.d[b * COLS..].as_ptr()), da);
            let dm = _mm256_mul_ps(_mm256_loadu_ps(g.dmin[b * COLS..].as_ptr()), da);
            let mut isum = _mm256_setzero_si256();
            let mut imin = _mm256_setzero_si256();
            for s in 0..SUBS {
                let at = b * QK_K + s * QK8;
                let k = (b * SUBS + s) * COLS;
                let sc = _mm256_loadu_si256(g.scale[k..k + COLS].as_ptr().cast());
                let mn = _mm256_loadu_si256(g.min[k..k + COLS].as_ptr().cast());
                let dot = dots8(&g.q, n, at, load_act(&a[at..]));
                isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(dot, sc));
                let bsum = _mm256_set1_epi32(sums[b * SUBS + s]);
                imin = _mm256_add_epi32(imin, _mm256_mullo_epi32(mn, bsum));
                // The gemm adds each pair of sub-blocks on its own.
                if gemm && s % 2 == 1 {
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc);
                    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dm, acc_min);
                    isum = _mm256_setzero_si256();
                    imin = _mm256_setzero_si256();
                }
            }
            if !gemm {
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc);
                acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dm, acc_min);
            }
        }
        _mm256_storeu_ps(out[..COLS].as_mut_ptr(), _mm256_sub_ps(acc, acc_min));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_q4_0_and_q4_k_with_rows_in_eights_are_repacked() {
        assert!(is_repacked(GgmlType::Q4_0, 768, 256));
        assert!(is_repacked(GgmlType::Q4K, 8, 256));
        assert!(!is_repacked(GgmlType::Q4K, 12, 256));
        assert!(!is_repacked(GgmlType::Q8_0, 768, 256));
        assert!(!is_repacked(GgmlType::Q5K, 768, 256));
    }

    #[test]
    fn mat_q8_k_takes_the_sign_of_plus_amax_anywhere() {
        let mut x = [0.5f32; QK_K];
        x[3] = -2.0;
        x[200] = 2.0;
        let (mut mat, mut row) = ([0i8; QK_K], [0i8; QK_K]);
        let d_mat = q8_k_mat_block(&x, &mut mat);
        let d_row = q8_k_row_block(&x, &mut row);
        assert_eq!(d_mat, -d_row);
        assert_eq!(mat[3], 127);
        assert_eq!(row[3], -127);
    }

    #[test]
    fn portable_and_avx2_kernels_agree_bit_for_bit() {
        let (n_out, n_in) = (16, 512);
        for (ty, kind) in [(GgmlType::Q4_0, Kind::Q4_0), (GgmlType::Q4K, Kind::Q4K)] {
            let w: Vec<f32> = (0..n_out * n_in)
                .map(|i| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0)
                .collect();
            let wq = crate::quant::quantize(ty, &w, n_in, None).expect("quantizes");
            let x: Vec<f32> = (0..6 * n_in)
                .map(|i| ((i * 104_729) % 997) as f32 / 498.0 - 1.0)
                .collect();
            let acts = Acts::quantize(kind, &x, n_in, 6);
            let row_bytes = wq.len() / n_out;
            let mut group = Group::default();
            group.decode(kind, &wq[..COLS * row_bytes], n_in);
            for t in 0..6 {
                let (mut p, mut f) = ([0f32; COLS], [0f32; COLS]);
                Kernel::Portable.run(kind, &group, &acts, t, &mut p);
                Kernel::detect().run(kind, &group, &acts, t, &mut f);
                assert_eq!(p.map(f32::to_bits), f.map(f32::to_bits), "{ty} token {t}");
            }
        }
    }
}
