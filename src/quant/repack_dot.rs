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
//! from the weights in GGUF layout, decoded eight rows at a time into a
//! small buffer (never the whole weight), up to four tokens per pass; only
//! the float steps follow ggml's order. AVX2 with FMA is chosen at run time;
//! the portable version gives the same bits (`f32::mul_add` where ggml
//! has `_mm256_fmadd_ps`).
//!
//! One known divergence, outside real data: an activation block whose
//! largest |x| is below ~3.7e-37 overflows `127 / amax`, and every quant
//! becomes −128. ggml's Q4_0 gemv then flips that sign with
//! `_mm256_sign_epi8`, which wraps −128 to itself; the integer sums here
//! stay exact (terms of order 1e-37 either way).
//!
//! `tests/quant_repack.rs` proves the product against ggml's own
//! `forward_mul_mat` (the weight in its `CPU_REPACK` buffer, repacked by
//! ggml), and [`is_repacked`] against the traits ggml attaches.
//!
//! Like `dot.rs`, this module knows nothing of files or tensors' names.

use rayon::prelude::*;

use super::activation::{
    abs_max, cvtps_epi32, quantize_q8_0_block, quantize_q8_k_block, saturate_i8, Q8_0_SIZE,
    Q8_K_SIZE, QK8, QK_K,
};
use super::{f16_bits_to_f32, GgmlType, QuantError};

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
/// multiple of 32 elements, which is all the repacking needs. Read from
/// `ggml_repack_get_optimal_repack_type` (Q2_K needs AVX-512, IQ4_NL and
/// MXFP4 are not kvant types); `tests/quant_repack.rs` checks it against
/// the `tensor->extra` ggml's `CPU_REPACK` buffer sets, for every type.
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
    // With VNNI, Q4_K's gemm tiles take two groups (sixteen rows) at once.
    let vnni = kind == Kind::Q4K && super::unpacked_dot::has_vnni();
    let groups_per_task = if vnni { 2 } else { 1 };
    super::row_blocks::par_row_blocks(out, n_out, groups_per_task * COLS)
        .zip(w.par_chunks(groups_per_task * COLS * row_bytes))
        .for_each_init(
            || [Group::default(), Group::default()],
            |groups, (mut o, wt)| {
                let n_groups = wt.len() / (COLS * row_bytes);
                for (g, wg) in groups.iter_mut().zip(wt.chunks_exact(COLS * row_bytes)) {
                    g.decode(kind, wg, n_in, kernel);
                }
                let mut t0 = 0;
                while t0 < n_tokens {
                    let n = GROUP.min(n_tokens - t0);
                    let tile = Tile {
                        t0,
                        n,
                        gemm: t0 < acts.n_gemm,
                    };
                    #[cfg(target_arch = "x86_64")]
                    if vnni && n_groups == 2 && tile.gemm {
                        let mut res = [[0f32; 2 * COLS]; GROUP];
                        // SAFETY: `has_vnni` found AVX-512 F/BW/VNNI, AVX2
                        // and FMA; both groups hold rows of `n_in`, and a
                        // gemm tile is a whole group of tokens.
                        unsafe { avx512::q4_k_pair(&groups[0], &groups[1], &acts, t0, &mut res) };
                        for (j, line) in res.iter().enumerate() {
                            o.set_rows(0, t0 + j, line);
                        }
                        t0 += n;
                        continue;
                    }
                    for (gi, group) in groups.iter().take(n_groups).enumerate() {
                        // res[t][r] for the tile's tokens and the group's rows.
                        let mut res = [0f32; GROUP * COLS];
                        kernel.run(kind, group, &acts, tile, &mut res[..n * COLS]);
                        for (j, line) in res.chunks_exact(COLS).take(n).enumerate() {
                            o.set_rows(gi * COLS, t0 + j, line);
                        }
                    }
                    t0 += n;
                }
            },
        );
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
    f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        if let (Ok(x), Ok(q)) = (x.try_into(), q.try_into()) {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { q8_k_mat_block_avx2(x, q) };
        }
    }
    q8_k_mat_block_any(x, q)
}

/// [`q8_k_mat_block_any`] eight values at a time (it was 6 % of a
/// Q4_K_M evaluation): the same `amax` (NaN ignored, as the scalar
/// `>` does), the same scale, `roundps` ties-to-even, `cvtps2dq` and
/// saturation, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q8_k_mat_block_avx2(x: &[f32; QK_K], q: &mut [i8; QK_K]) -> f32 {
    use std::arch::x86_64::*;
    let amax = super::activation::abs_max_avx2(x);
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let target = _mm256_set1_ps(amax);
    let mut hit = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        let v = _mm256_loadu_ps(c.as_ptr());
        hit = _mm256_or_ps(hit, _mm256_cmp_ps::<_CMP_EQ_OQ>(v, target));
    }
    let iscale = if _mm256_movemask_ps(hit) != 0 {
        -127.0 / amax
    } else {
        127.0 / amax
    };
    let mul = _mm256_set1_ps(iscale);
    let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    let int = |v: &[f32]| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(_mm256_loadu_ps(v.as_ptr()), mul),
        );
        _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(r), lo), hi)
    };
    // packs interleaves 128-bit lanes; the permutation puts the 32 bytes
    // back in element order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (v, out) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
        let ab = _mm256_packs_epi32(int(&v[..8]), int(&v[8..16]));
        let cd = _mm256_packs_epi32(int(&v[16..24]), int(&v[24..]));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes);
    }
    1.0 / iscale
}

#[inline(always)]
fn q8_k_mat_block_any(x: &[f32], q: &mut [i8]) -> f32 {
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

/// Eight weight rows decoded once per task, laid out for one AVX2
/// register per row-interleaved chunk: the levels of 4-element chunk `c`
/// of all eight rows side by side (`q[c * 32 + r * 4 + e % 4]`), the
/// per-block factors with the row as the fastest index.
#[derive(Default)]
struct Group {
    n_in: usize,
    /// Unsigned levels (0..=15), interleaved as above.
    q: Vec<u8>,
    /// `d[b * 8 + r]`.
    d: Vec<f32>,
    /// Q4_K: `dmin[b * 8 + r]`.
    dmin: Vec<f32>,
    /// Q4_K: `scale[(b * 8 + s) * 8 + r]` of sub-block `s`.
    scale: Vec<u8>,
    /// Q4_K: `min[(b * 8 + s) * 8 + r]`.
    min: Vec<u8>,
}

/// The two steps of decoding that have an AVX2 version: f16 factors to
/// f32 and nibbles to interleaved levels.
trait Decoder {
    /// The f16 at byte `at` of each row, to f32.
    ///
    /// # Safety
    /// The CPU has the implementation's features.
    unsafe fn widen(rows: &[&[u8]; COLS], at: usize, out: &mut [f32]);
    /// See [`put_levels`] (each row's run at `rows[r][at..at + run]`).
    ///
    /// # Safety
    /// As above.
    unsafe fn levels(rows: &[&[u8]; COLS], at: usize, run: usize, dst: &mut [u8]);
}

/// The plain Rust decoder.
struct PortableDecoder;

impl Decoder for PortableDecoder {
    unsafe fn widen(rows: &[&[u8]; COLS], at: usize, out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(rows) {
            *o = f16_bits_to_f32(u16::from_le_bytes([row[at], row[at + 1]]));
        }
    }
    unsafe fn levels(rows: &[&[u8]; COLS], at: usize, run: usize, dst: &mut [u8]) {
        put_levels(rows, at, run, dst)
    }
}

impl Group {
    fn decode(&mut self, kind: Kind, w: &[u8], n_in: usize, kernel: Kernel) {
        match kernel {
            // SAFETY: the portable decoder needs no CPU feature.
            Kernel::Portable => unsafe { self.decode_with::<PortableDecoder>(kind, w, n_in) },
            // SAFETY: `detect` saw AVX2 and F16C on this CPU.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::decode(self, kind, w, n_in) },
        }
    }

    /// # Safety
    /// The CPU has `D`'s features.
    #[inline(always)]
    unsafe fn decode_with<D: Decoder>(&mut self, kind: Kind, w: &[u8], n_in: usize) {
        let nb = n_in / kind.block();
        self.n_in = n_in;
        self.q.resize(COLS * n_in, 0);
        self.d.resize(COLS * nb, 0.0);
        let row_bytes = w.len() / COLS;
        let rows: [&[u8]; COLS] = std::array::from_fn(|r| &w[r * row_bytes..(r + 1) * row_bytes]);
        let size = match kind {
            Kind::Q4_0 => Q4_0_SIZE,
            Kind::Q4K => Q4_K_SIZE,
        };
        if kind == Kind::Q4K {
            self.dmin.resize(COLS * nb, 0.0);
            self.scale.resize(COLS * SUBS * nb, 0);
            self.min.resize(COLS * SUBS * nb, 0);
        }
        for b in 0..nb {
            let at = b * size;
            D::widen(&rows, at, &mut self.d[b * COLS..(b + 1) * COLS]);
            if kind == Kind::Q4K {
                D::widen(&rows, at + 2, &mut self.dmin[b * COLS..(b + 1) * COLS]);
                for (r, row) in rows.iter().enumerate() {
                    let (sc, m) = scales_and_mins(&row[at + 4..at + 16]);
                    for s in 0..SUBS {
                        self.scale[(b * SUBS + s) * COLS + r] = sc[s];
                        self.min[(b * SUBS + s) * COLS + r] = m[s];
                    }
                }
            }
            // Nibbles: Q4_0 one run of 16 bytes (low nibbles the first 16
            // elements), Q4_K four runs of 32 (each 64 elements).
            let (first, run) = match kind {
                Kind::Q4_0 => (2, 16),
                Kind::Q4K => (16, 32),
            };
            for j in 0..(size - first) / run {
                let e0 = b * kind.block() + 2 * run * j;
                let dst = &mut self.q[e0 * COLS..(e0 + 2 * run) * COLS];
                D::levels(&rows, at + first + j * run, run, dst);
            }
        }
    }

    /// Row `r`'s level of element `e`.
    fn level(&self, r: usize, e: usize) -> i32 {
        i32::from(self.q[(e / 4) * 4 * COLS + 4 * r + e % 4])
    }
}

/// The eight 6-bit scales and minimums of a Q4_K super-block from its 12
/// packed bytes (ggml's `utmp` unpacking, `get_scale_min_k4` for all
/// eight at once).
#[inline(always)]
fn scales_and_mins(q: &[u8]) -> ([u8; SUBS], [u8; SUBS]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let m_lo = u1 & KMASK1;
    let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let join = |lo: u32, hi: u32| (u64::from(lo) | u64::from(hi) << 32).to_le_bytes();
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}

/// Eight rows' nibble runs (`rows[r][at..at + n]`) into the interleaved
/// levels of the `2n` elements they hold (low nibbles first).
fn put_levels(rows: &[&[u8]; COLS], at: usize, n: usize, dst: &mut [u8]) {
    for (r, row) in rows.iter().enumerate() {
        for (half, shift) in [0u32, 4].into_iter().enumerate() {
            for (c, chunk) in row[at..at + n].chunks_exact(4).enumerate() {
                let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                let to = (half * n / 4 + c) * 4 * COLS + 4 * r;
                let levels = (v >> shift) & 0x0F0F_0F0F;
                dst[to..to + 4].copy_from_slice(&levels.to_le_bytes());
            }
        }
    }
}

/// Which implementation of the kernels runs.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// Tokens `t0..t0 + n` (`n` ≤ 4, all in the gemm's groups or all
/// leftovers), whose eight outputs each go to `out[k * 8..]`.
#[derive(Debug, Clone, Copy)]
struct Tile {
    t0: usize,
    n: usize,
    gemm: bool,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// The outputs of `group` for the tokens of `tile`.
    fn run(self, kind: Kind, group: &Group, acts: &Acts, tile: Tile, out: &mut [f32]) {
        match self {
            Kernel::Portable => {
                for (k, out) in out.chunks_exact_mut(COLS).take(tile.n).enumerate() {
                    match kind {
                        Kind::Q4_0 => portable::q4_0(group, acts, tile.t0 + k, out),
                        Kind::Q4K => portable::q4_k(group, acts, tile.t0 + k, tile.gemm, out),
                    }
                }
            }
            // SAFETY: `detect` saw AVX2, FMA and F16C on this CPU.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::run(kind, group, acts, tile, out) },
        }
    }
}

/// The kernels in plain Rust: the same integers, the same float steps.
mod portable {
    use super::{Acts, Group, COLS, QK8, QK_K, SUBS};

    /// `Σ level·a` of row `r` over elements `e0..e0 + 32`.
    fn dot32(g: &Group, r: usize, e0: usize, a: &[i8]) -> i32 {
        (e0..e0 + QK8)
            .map(|e| g.level(r, e) * i32::from(a[e]))
            .sum()
    }

    pub fn q4_0(g: &Group, acts: &Acts, t: usize, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK8);
        let a = &acts.qs[t * n..(t + 1) * n];
        let mut acc = [0f32; COLS];
        for b in 0..nb {
            let da = acts.d[t * nb + b];
            let asum = acts.sums[t * nb + b];
            for (r, acc) in acc.iter_mut().enumerate() {
                // Levels are q − 8: Σ(q − 8)·a = Σq·a − 8·Σa.
                let isum = dot32(g, r, b * QK8, a) - 8 * asum;
                *acc = (isum as f32).mul_add(g.d[b * COLS + r] * da, *acc);
            }
        }
        out.copy_from_slice(&acc);
    }

    pub fn q4_k(g: &Group, acts: &Acts, t: usize, gemm: bool, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK_K);
        let a = &acts.qs[t * n..(t + 1) * n];
        let sums = &acts.sums[t * (n / QK8)..(t + 1) * (n / QK8)];
        let (mut acc, mut acc_min) = ([0f32; COLS], [0f32; COLS]);
        for b in 0..nb {
            let da = acts.d[t * nb + b];
            for r in 0..COLS {
                let dd = g.d[b * COLS + r] * da;
                let dm = g.dmin[b * COLS + r] * da;
                let (mut isum, mut imin) = (0i32, 0i32);
                for s in 0..SUBS {
                    let scale = i32::from(g.scale[(b * SUBS + s) * COLS + r]);
                    let min = i32::from(g.min[(b * SUBS + s) * COLS + r]);
                    isum += scale * dot32(g, r, b * QK_K + s * QK8, a);
                    imin += min * sums[b * SUBS + s];
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

/// The kernels with AVX2: one lane per weight row, as ggml's registers,
/// up to four tokens per pass over the weights.
///
/// Integer bounds: a level is at most 15 and a quant at most 128 in
/// magnitude, so `maddubs`'s pair sums (≤ 3840) never saturate, and the
/// 16-bit lanes that add eight of them over a 32-element sub-block hold at
/// most 30720.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Acts, Decoder, Group, Kind, Tile, COLS, QK8, QK_K, SUBS};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(kind: Kind, g: &Group, acts: &Acts, tile: Tile, out: &mut [f32]) {
        match (kind, tile.n) {
            (Kind::Q4_0, 1) => q4_0::<1>(g, acts, tile, out),
            (Kind::Q4_0, 2) => q4_0::<2>(g, acts, tile, out),
            (Kind::Q4_0, 3) => q4_0::<3>(g, acts, tile, out),
            (Kind::Q4_0, _) => q4_0::<4>(g, acts, tile, out),
            (Kind::Q4K, 1) => q4_k::<1>(g, acts, tile, out),
            (Kind::Q4K, 2) => q4_k::<2>(g, acts, tile, out),
            (Kind::Q4K, 3) => q4_k::<3>(g, acts, tile, out),
            (Kind::Q4K, _) => q4_k::<4>(g, acts, tile, out),
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn decode(g: &mut Group, kind: Kind, w: &[u8], n_in: usize) {
        g.decode_with::<Avx2Decoder>(kind, w, n_in)
    }

    struct Avx2Decoder;

    impl Decoder for Avx2Decoder {
        #[inline(always)]
        unsafe fn widen(rows: &[&[u8]; COLS], at: usize, out: &mut [f32]) {
            widen_halves(rows, at, out)
        }
        #[inline(always)]
        unsafe fn levels(rows: &[&[u8]; COLS], at: usize, run: usize, dst: &mut [u8]) {
            put_levels(rows, at, run, dst)
        }
    }

    /// `_mm256_cvtph_ps`, which rounds nothing: f16 → f32 is exact. The
    /// halves are gathered in a register (eight 2-byte stores read back as
    /// one 16-byte load would stall store forwarding).
    #[inline(always)]
    unsafe fn widen_halves(rows: &[&[u8]; COLS], at: usize, out: &mut [f32]) {
        let h: [i16; COLS] =
            std::array::from_fn(|r| i16::from_le_bytes([rows[r][at], rows[r][at + 1]]));
        let v = _mm_set_epi16(h[7], h[6], h[5], h[4], h[3], h[2], h[1], h[0]);
        _mm256_storeu_ps(out[..COLS].as_mut_ptr(), _mm256_cvtph_ps(v));
    }

    /// [`super::put_levels`]: each row's run as 32-bit chunks, low
    /// nibbles then high, then an 8×8 transpose of the chunks so that
    /// each store holds one chunk of all eight rows.
    #[inline(always)]
    unsafe fn put_levels(rows: &[&[u8]; COLS], at: usize, n: usize, dst: &mut [u8]) {
        assert!(rows.iter().all(|s| s.len() >= at + n) && dst.len() == 2 * n * COLS);
        let m4 = _mm256_set1_epi8(0x0F);
        // 16 source bytes (one half of a row's run) at a time: 32 levels,
        // 8 chunks per row.
        for h in 0..n / 16 {
            let rows: [__m256i; COLS] = std::array::from_fn(|r| {
                let v = _mm_loadu_si128(rows[r].as_ptr().add(at + 16 * h).cast());
                _mm256_castsi128_si256(v)
            });
            let low: [__m256i; COLS] = std::array::from_fn(|r| _mm256_and_si256(rows[r], m4));
            let high: [__m256i; COLS] =
                std::array::from_fn(|r| _mm256_and_si256(_mm256_srli_epi16(rows[r], 4), m4));
            // Chunks 0-3 of each row in its low lane.
            for (half, v) in [low, high].iter().enumerate() {
                let t = transpose4(v);
                // Chunk c of this quarter: 4 chunks, rows 0-7.
                let base = (half * n / 4 + 4 * h) * 4 * COLS;
                for (c, t) in t.iter().enumerate() {
                    _mm256_storeu_si256(dst.as_mut_ptr().add(base + 32 * c).cast(), *t);
                }
            }
        }
    }

    /// From eight rows whose low 128-bit lanes hold chunks 0-3 (32 bits
    /// each), the four vectors of chunk `c` for rows 0-7.
    #[inline(always)]
    unsafe fn transpose4(v: &[__m256i; COLS]) -> [__m256i; 4] {
        // Rows 0-3 in the low lanes, rows 4-7 in the high lanes.
        let x: [__m256i; 4] =
            std::array::from_fn(|r| _mm256_permute2x128_si256(v[r], v[r + 4], 0x20));
        let a0 = _mm256_unpacklo_epi32(x[0], x[1]); // r0c0 r1c0 r0c1 r1c1
        let a1 = _mm256_unpackhi_epi32(x[0], x[1]); // r0c2 r1c2 r0c3 r1c3
        let a2 = _mm256_unpacklo_epi32(x[2], x[3]);
        let a3 = _mm256_unpackhi_epi32(x[2], x[3]);
        [
            _mm256_unpacklo_epi64(a0, a2), // c0: r0 r1 r2 r3 | r4 r5 r6 r7
            _mm256_unpackhi_epi64(a0, a2),
            _mm256_unpacklo_epi64(a1, a3),
            _mm256_unpackhi_epi64(a1, a3),
        ]
    }

    // The helpers carry no `target_feature` of their own so that they can
    // be `inline(always)`: inlined into the kernels below, their
    // intrinsics compile to single instructions.

    /// Lane `r` (row `r`) = its two 16-bit pair sums of `Σ level·a` over
    /// 32 elements, the levels interleaved at `w`, each token's quants at
    /// `a[k]`.
    #[inline(always)]
    unsafe fn sums16<const K: usize>(w: *const u8, a: &[*const i8; K]) -> [__m256i; K] {
        let mut s = [_mm256_setzero_si256(); K];
        for c in 0..QK8 / 4 {
            let wc = _mm256_loadu_si256(w.add(32 * c).cast());
            for k in 0..K {
                let ac = _mm256_set1_epi32(a[k].add(4 * c).cast::<i32>().read_unaligned());
                s[k] = _mm256_add_epi16(s[k], _mm256_maddubs_epi16(wc, ac));
            }
        }
        s
    }

    /// Each token's quants, checked to hold `n` elements.
    #[inline(always)]
    fn tokens<const K: usize>(acts: &Acts, n: usize, t0: usize) -> [*const i8; K] {
        std::array::from_fn(|k| acts.qs[(t0 + k) * n..(t0 + k + 1) * n].as_ptr())
    }

    #[inline(always)]
    unsafe fn store<const K: usize>(v: [__m256; K], out: &mut [f32]) {
        for (k, v) in v.into_iter().enumerate() {
            _mm256_storeu_ps(out[k * COLS..(k + 1) * COLS].as_mut_ptr(), v);
        }
    }

    #[inline(always)]
    unsafe fn q4_0<const K: usize>(g: &Group, acts: &Acts, tile: Tile, out: &mut [f32]) {
        let (n, nb) = (g.n_in, g.n_in / QK8);
        let a = tokens::<K>(acts, n, tile.t0);
        assert!(g.q.len() == COLS * n && g.d.len() == COLS * nb);
        let d = &acts.d[tile.t0 * nb..(tile.t0 + K) * nb];
        let sums = &acts.sums[tile.t0 * nb..(tile.t0 + K) * nb];
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); K];
        for b in 0..nb {
            let ab = a.map(|p| p.add(b * QK8));
            let s = sums16(g.q.as_ptr().add(b * QK8 * COLS), &ab);
            let dw = _mm256_loadu_ps(g.d.as_ptr().add(b * COLS));
            for k in 0..K {
                // Levels are q − 8: Σ(q − 8)·a = Σq·a − 8·Σa.
                let q8 = _mm256_set1_epi32(8 * *sums.get_unchecked(k * nb + b));
                let isum = _mm256_sub_epi32(_mm256_madd_epi16(s[k], ones), q8);
                let da = _mm256_set1_ps(*d.get_unchecked(k * nb + b));
                acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, da), acc[k]);
            }
        }
        store(acc, out);
    }

    /// Eight bytes (one per row) widened to 32-bit lanes.
    #[inline(always)]
    unsafe fn bytes8(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))
    }

    #[inline(always)]
    unsafe fn q4_k<const K: usize>(g: &Group, acts: &Acts, tile: Tile, out: &mut [f32]) {
        let (n, nb, ns) = (g.n_in, g.n_in / QK_K, g.n_in / QK8);
        let a = tokens::<K>(acts, n, tile.t0);
        assert!(g.q.len() == COLS * n && g.d.len() == COLS * nb && g.dmin.len() == COLS * nb);
        assert!(g.scale.len() == COLS * ns && g.min.len() == COLS * ns);
        let d = &acts.d[tile.t0 * nb..(tile.t0 + K) * nb];
        let sums = &acts.sums[tile.t0 * ns..(tile.t0 + K) * ns];
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); K];
        let mut acc_min = [_mm256_setzero_ps(); K];
        for b in 0..nb {
            let dw = _mm256_loadu_ps(g.d.as_ptr().add(b * COLS));
            let dmw = _mm256_loadu_ps(g.dmin.as_ptr().add(b * COLS));
            let da: [__m256; K] =
                std::array::from_fn(|k| _mm256_set1_ps(*d.get_unchecked(k * nb + b)));
            let (mut isum, mut imin) = ([zero; K], [zero; K]);
            for p in 0..SUBS / 2 {
                let s0 = b * SUBS + 2 * p;
                let mut mins = [zero; 2];
                for (j, min) in mins.iter_mut().enumerate() {
                    let e0 = (s0 + j) * QK8;
                    let s16 = sums16(g.q.as_ptr().add(e0 * COLS), &a.map(|p| p.add(e0)));
                    // Each row's scale in both halves of its lane.
                    let sc = bytes8(g.scale.as_ptr().add((s0 + j) * COLS));
                    let sc = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
                    for k in 0..K {
                        isum[k] = _mm256_add_epi32(isum[k], _mm256_madd_epi16(s16[k], sc));
                    }
                    *min = bytes8(g.min.as_ptr().add((s0 + j) * COLS));
                }
                // (min of 2p, min of 2p+1) against (Σa of 2p, Σa of 2p+1).
                let mn = _mm256_or_si256(mins[0], _mm256_slli_epi32(mins[1], 16));
                for (k, imin) in imin.iter_mut().enumerate() {
                    let lo = *sums.get_unchecked(k * ns + s0) as u16 as u32;
                    let hi = *sums.get_unchecked(k * ns + s0 + 1) as u16 as u32;
                    let pair = _mm256_set1_epi32((lo | hi << 16) as i32);
                    *imin = _mm256_add_epi32(*imin, _mm256_madd_epi16(mn, pair));
                }
                // The gemm adds each pair of sub-blocks on its own.
                if tile.gemm {
                    for k in 0..K {
                        let (dd, dm) = (_mm256_mul_ps(dw, da[k]), _mm256_mul_ps(dmw, da[k]));
                        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), dd, acc[k]);
                        acc_min[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[k]), dm, acc_min[k]);
                    }
                    (isum, imin) = ([zero; K], [zero; K]);
                }
            }
            if !tile.gemm {
                for k in 0..K {
                    let (dd, dm) = (_mm256_mul_ps(dw, da[k]), _mm256_mul_ps(dmw, da[k]));
                    acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[k]), dd, acc[k]);
                    acc_min[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[k]), dm, acc_min[k]);
                }
            }
        }
        let v: [__m256; K] = std::array::from_fn(|k| _mm256_sub_ps(acc[k], acc_min[k]));
        store(v, out);
    }
}

/// Q4_K's gemm with AVX-512 VNNI: two groups of eight rows side by side
/// (lanes 0–7 the first group's rows, 8–15 the second's), so every lane
/// performs [`avx2`]'s gemm float steps for its row and token, on the same
/// exact integers: `vpdpbusd` forms each sub-block's `Σ level·a` in i32
/// (levels 0..=15 unsigned, quants signed), which the sub-block's scale
/// then multiplies.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Acts, Group, COLS, GROUP, QK8, QK_K, SUBS};

    /// Both groups' eight values at `at` in one register.
    #[inline(always)]
    unsafe fn join_ps(a: &[f32], b: &[f32], at: usize) -> __m512 {
        let lo = _mm256_loadu_ps(a[at..at + COLS].as_ptr());
        let hi = _mm256_loadu_ps(b[at..at + COLS].as_ptr());
        _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi)
    }

    /// Both groups' eight bytes at `at`, widened to 32-bit lanes.
    #[inline(always)]
    unsafe fn join_bytes(a: &[u8], b: &[u8], at: usize) -> __m512i {
        let lo = _mm_loadl_epi64(a[at..at + COLS].as_ptr().cast());
        let hi = _mm_loadl_epi64(b[at..at + COLS].as_ptr().cast());
        _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(lo, hi))
    }

    /// `res[k][lane]` for the gemm tile of tokens `t0..t0 + GROUP`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI/DQ, AVX2 and FMA; `g0` and `g1` are decoded Q4_K
    /// groups of the same `n_in`, and `t0 + GROUP ≤ acts.n_gemm`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma")]
    pub unsafe fn q4_k_pair(
        g0: &Group,
        g1: &Group,
        acts: &Acts,
        t0: usize,
        res: &mut [[f32; 2 * COLS]; GROUP],
    ) {
        const K: usize = GROUP;
        let (n, nb, ns) = (g0.n_in, g0.n_in / QK_K, g0.n_in / QK8);
        for g in [g0, g1] {
            assert!(g.n_in == n && g.q.len() == COLS * n && g.d.len() == COLS * nb);
            assert!(g.dmin.len() == COLS * nb && g.scale.len() == COLS * ns);
            assert!(g.min.len() == COLS * ns);
        }
        assert!(t0 + K <= acts.n_gemm);
        let a: [*const i8; K] = std::array::from_fn(|k| acts.qs[(t0 + k) * n..][..n].as_ptr());
        let d = &acts.d[t0 * nb..(t0 + K) * nb];
        let sums = &acts.sums[t0 * ns..(t0 + K) * ns];
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); K];
        let mut acc_min = [_mm512_setzero_ps(); K];
        for b in 0..nb {
            let dw = join_ps(&g0.d, &g1.d, b * COLS);
            let dmw = join_ps(&g0.dmin, &g1.dmin, b * COLS);
            let da: [__m512; K] = std::array::from_fn(|k| _mm512_set1_ps(d[k * nb + b]));
            for p in 0..SUBS / 2 {
                let s0 = b * SUBS + 2 * p;
                let mut isum = [zero; K];
                let mut mins = [zero; 2];
                for (j, min) in mins.iter_mut().enumerate() {
                    let e0 = (s0 + j) * QK8;
                    let (w0, w1) = (g0.q.as_ptr().add(e0 * COLS), g1.q.as_ptr().add(e0 * COLS));
                    let mut raw = [zero; K];
                    for c in 0..QK8 / 4 {
                        let w = _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_loadu_si256(w0.add(32 * c).cast())),
                            _mm256_loadu_si256(w1.add(32 * c).cast()),
                        );
                        for (k, r) in raw.iter_mut().enumerate() {
                            let four = a[k].add(e0 + 4 * c).cast::<i32>().read_unaligned();
                            *r = _mm512_dpbusd_epi32(*r, w, _mm512_set1_epi32(four));
                        }
                    }
                    let sc = join_bytes(&g0.scale, &g1.scale, (s0 + j) * COLS);
                    for (s, &r) in isum.iter_mut().zip(&raw) {
                        *s = _mm512_add_epi32(*s, _mm512_mullo_epi32(r, sc));
                    }
                    *min = join_bytes(&g0.min, &g1.min, (s0 + j) * COLS);
                }
                // (min of 2p, min of 2p+1) against (Σa of 2p, Σa of 2p+1).
                let mn = _mm512_or_si512(mins[0], _mm512_slli_epi32::<16>(mins[1]));
                for k in 0..K {
                    let lo = sums[k * ns + s0] as u16 as u32;
                    let hi = sums[k * ns + s0 + 1] as u16 as u32;
                    let imin = _mm512_madd_epi16(mn, _mm512_set1_epi32((lo | hi << 16) as i32));
                    // The gemm adds each pair of sub-blocks on its own.
                    let (dd, dm) = (_mm512_mul_ps(dw, da[k]), _mm512_mul_ps(dmw, da[k]));
                    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), dd, acc[k]);
                    acc_min[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), dm, acc_min[k]);
                }
            }
        }
        for ((line, a), m) in res.iter_mut().zip(acc).zip(acc_min) {
            _mm512_storeu_ps(line.as_mut_ptr(), _mm512_sub_ps(a, m));
        }
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

    /// The AVX2 block gives the scalar block's bits: ordinary values,
    /// ties, +amax and −amax, NaN and infinities, all zeros, values that
    /// round past ±127.
    #[test]
    fn mat_q8_k_vector_block_equals_the_scalar_one() {
        let base: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 7919) % 1013) as f32 / 37.0 - 13.0)
            .collect();
        let mut cases = vec![base.clone(), vec![0.0; QK_K], vec![-0.0; QK_K]];
        let mut halves = base.clone();
        for (i, v) in halves.iter_mut().enumerate() {
            *v = (i as f32 - 128.0) * 0.5;
        }
        cases.push(halves);
        for (at, v) in [
            (5, 40.0),
            (9, -40.0),
            (17, f32::NAN),
            (31, f32::INFINITY),
            (200, f32::NEG_INFINITY),
            (255, 1e-30),
        ] {
            let mut c = base.clone();
            c[at] = v;
            cases.push(c);
        }
        for (i, x) in cases.iter().enumerate() {
            let (mut fast, mut slow) = ([0i8; QK_K], [0i8; QK_K]);
            let d_fast = q8_k_mat_block(x, &mut fast);
            let d_slow = q8_k_mat_block_any(x, &mut slow);
            assert_eq!(d_fast.to_bits(), d_slow.to_bits(), "case {i}");
            assert_eq!(fast, slow, "case {i}");
        }
        #[cfg(target_arch = "x86_64")]
        assert!(
            std::arch::is_x86_feature_detected!("avx2"),
            "the test machines have AVX2: the vector block ran"
        );
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

    /// A weight of an odd number of groups comes out of `matmul_repacked`
    /// as group by group on the AVX2 kernel, bit for bit: with VNNI the
    /// first two groups take the pair kernel in its gemm tiles and the
    /// last one, alone, the AVX2 kernel; without, every group takes it.
    /// Where the CPU has VNNI, the pair kernel alone gives both groups'
    /// bits too.
    #[test]
    fn vnni_pair_kernel_equals_the_avx2_kernel() {
        let (n_out, n_in, n_tokens) = (24, 512, 10);
        let w: Vec<f32> = (0..n_out * n_in)
            .map(|i| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0)
            .collect();
        let wq = crate::quant::quantize(GgmlType::Q4K, &w, n_in, None).expect("quantizes");
        let x: Vec<f32> = (0..n_tokens * n_in)
            .map(|i| ((i * 104_729) % 997) as f32 / 498.0 - 1.0)
            .collect();
        let acts = Acts::quantize(Kind::Q4K, &x, n_in, n_tokens);
        let row_bytes = wq.len() / n_out;
        let groups: Vec<Group> = wq
            .chunks_exact(COLS * row_bytes)
            .map(|wg| {
                let mut g = Group::default();
                g.decode(Kind::Q4K, wg, n_in, Kernel::detect());
                g
            })
            .collect();
        // Group by group with the AVX2 (or portable) kernel: want[t][r].
        let mut want = vec![0f32; n_tokens * n_out];
        for (gi, g) in groups.iter().enumerate() {
            for t0 in (0..n_tokens).step_by(GROUP) {
                let n = GROUP.min(n_tokens - t0);
                let tile = Tile {
                    t0,
                    n,
                    gemm: t0 < acts.n_gemm,
                };
                let mut res = [0f32; GROUP * COLS];
                Kernel::detect().run(Kind::Q4K, g, &acts, tile, &mut res[..n * COLS]);
                for (j, line) in res.chunks_exact(COLS).take(n).enumerate() {
                    want[(t0 + j) * n_out + gi * COLS..][..COLS].copy_from_slice(line);
                }
            }
        }
        let mut got = vec![f32::NAN; n_tokens * n_out];
        matmul_repacked(GgmlType::Q4K, &wq, n_out, n_in, &x, n_tokens, &mut got).expect("runs");
        assert_eq!(bits(&got), bits(&want));
        #[cfg(target_arch = "x86_64")]
        if crate::quant::unpacked_dot::has_vnni() {
            let mut pair = [[0f32; 2 * COLS]; GROUP];
            // SAFETY: the CPU has VNNI (checked above); tokens 0..4 are a
            // gemm tile.
            unsafe { avx512::q4_k_pair(&groups[0], &groups[1], &acts, 0, &mut pair) };
            for (t, line) in pair.iter().enumerate() {
                assert_eq!(
                    line.map(f32::to_bits).to_vec(),
                    bits(&want[t * n_out..t * n_out + 2 * COLS]),
                    "token {t}"
                );
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
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
            let (mut group, mut plain) = (Group::default(), Group::default());
            group.decode(kind, &wq[..COLS * row_bytes], n_in, Kernel::detect());
            plain.decode(kind, &wq[..COLS * row_bytes], n_in, Kernel::Portable);
            assert!(group.q == plain.q, "{ty}: the two decoders differ");
            for (t0, n) in [(0, 4), (4, 2), (4, 1)] {
                let tile = Tile {
                    t0,
                    n,
                    gemm: t0 < acts.n_gemm,
                };
                let (mut p, mut f) = ([0f32; 4 * COLS], [0f32; 4 * COLS]);
                Kernel::Portable.run(kind, &plain, &acts, tile, &mut p);
                Kernel::detect().run(kind, &group, &acts, tile, &mut f);
                assert_eq!(p.map(f32::to_bits), f.map(f32::to_bits), "{ty} {tile:?}");
            }
        }
    }
}
