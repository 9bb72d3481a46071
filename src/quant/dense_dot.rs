//! Dot products of F32, F16 and BF16 weight rows with activations of the
//! same type (ggml-cpu's `vec_dot_type` of each is itself: F16 weights
//! meet activations rounded to f16, BF16 weights activations rounded to
//! bf16).
//!
//! * [`vec_dot_ref`] is ggml's scalar `vec.cpp` code: float products
//!   summed in double.
//! * [`vec_dot`] reproduces the order ggml-cpu's AVX2 build executes
//!   (`ggml_vec_dot_f32`/`_f16` through `GGML_F32_VEC`: four FMA
//!   accumulators of eight lanes over 32-element steps, reduced pairwise
//!   and by `hadd`; `ggml_vec_dot_bf16`: four accumulators whose
//!   `mul`+`add` GCC fuses into FMA (`vfmadd231ps` in the pinned build's
//!   object code), reduced `(c1+c3)+(c2+c4)`, then `movehl`/`movehdup`),
//!   with the same tails (F32 in float with a fused multiply-add, F16 and
//!   BF16 in double). Every operation is the same IEEE operation in the
//!   same order, so the result is bit for bit ggml's; the AVX2 and the
//!   portable versions of it differ only in speed.
//!
//! The weight and activation rows arrive as f32 values (F16/BF16 already
//! widened, which is exact): the caller widens a weight row once and uses
//! it for every token.

use std::borrow::Cow;

use super::fp16::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use super::row_blocks::RowBlock;

/// The dense element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dense {
    /// f32 × f32.
    F32,
    /// f16 × f16.
    F16,
    /// bf16 × bf16.
    BF16,
}

impl Dense {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dense::F32 => 4,
            Dense::F16 | Dense::BF16 => 2,
        }
    }

    /// Little-endian elements widened to f32 (exact).
    pub fn widen(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.clear();
        match self {
            Dense::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dense::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            Dense::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
        }
    }

    /// ggml-cpu's `from_float` into this type's little-endian bytes
    /// (`ggml_cpu_fp32_to_fp16`: `cvtps_ph` round-to-nearest-even;
    /// `ggml_cpu_fp32_to_bf16`: `GGML_FP32_TO_BF16`).
    pub fn encode(self, x: &[f32], out: &mut [u8]) {
        match self {
            Dense::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            Dense::F16 => {
                for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
                }
            }
            Dense::BF16 => {
                for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
                }
            }
        }
    }

    /// f32 values rounded to this type and widened back, as the
    /// activations of a product are.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Dense::F32 => x,
            Dense::F16 => f16_bits_to_f32(f32_to_f16_bits(x)),
            Dense::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(x)),
        }
    }
}

/// ggml's scalar dot (`#else` branches of `vec.cpp`): products in float,
/// summed in double.
pub fn vec_dot_ref(w: &[f32], a: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (&x, &y) in w.iter().zip(a) {
        sum += f64::from(x * y);
    }
    sum as f32
}

/// Elements per main-loop step.
const STEP: usize = 32;

/// ggml-cpu's AVX2 dot of `ty` on widened rows, bit for bit.
pub fn vec_dot(ty: Dense, w: &[f32], a: &[f32]) -> f32 {
    let n = w.len().min(a.len());
    let np = n & !(STEP - 1);
    #[cfg(target_arch = "x86_64")]
    let main = if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA are present (checked just above).
        unsafe { avx2::main_loop(ty, &w[..np], &a[..np]) }
    } else {
        portable_main_loop(ty, &w[..np], &a[..np])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let main = portable_main_loop(ty, &w[..np], &a[..np]);
    tail(ty, main, &w[np..n], &a[np..n])
}

/// The leftovers after the 32-element steps, as each ggml function adds
/// them.
fn tail(ty: Dense, main: f32, w: &[f32], a: &[f32]) -> f32 {
    match ty {
        // `float sumf; … sumf += x[i]*y[i]`, contracted to vfmadd231ss.
        Dense::F32 => w.iter().zip(a).fold(main, |s, (&x, &y)| x.mul_add(y, s)),
        // `ggml_float sumf` (double); products in float.
        Dense::F16 | Dense::BF16 => {
            let s = w
                .iter()
                .zip(a)
                .fold(f64::from(main), |s, (&x, &y)| s + f64::from(x * y));
            s as f32
        }
    }
}

/// The 32-element steps in plain Rust, same operations as the AVX2 ones.
fn portable_main_loop(ty: Dense, w: &[f32], a: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    for (ws, as_) in w.chunks_exact(STEP).zip(a.chunks_exact(STEP)) {
        for (lanes, (wj, aj)) in acc
            .iter_mut()
            .zip(ws.chunks_exact(8).zip(as_.chunks_exact(8)))
        {
            for (s, (&x, &y)) in lanes.iter_mut().zip(wj.iter().zip(aj)) {
                *s = x.mul_add(y, *s);
            }
        }
    }
    let add = |x: [f32; 8], y: [f32; 8]| -> [f32; 8] { std::array::from_fn(|l| x[l] + y[l]) };
    match ty {
        Dense::F32 | Dense::F16 => {
            // x0 += x2, x1 += x3; x0 += x1; halves; two hadds.
            let x = add(add(acc[0], acc[2]), add(acc[1], acc[3]));
            let t: [f32; 4] = std::array::from_fn(|l| x[l] + x[l + 4]);
            (t[0] + t[1]) + (t[2] + t[3])
        }
        Dense::BF16 => {
            // c1 = (c1 + c3) + (c2 + c4); g = hi + lo; g + movehl; + movehdup.
            let c = add(add(acc[0], acc[2]), add(acc[1], acc[3]));
            let g: [f32; 4] = std::array::from_fn(|l| c[l + 4] + c[l]);
            let g0 = g[0] + g[2];
            let g1 = g[1] + g[3];
            g0 + g1
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::{Dense, STEP};
    use std::arch::x86_64::*;

    /// The 32-element steps of ggml's AVX2 dot (`w.len()` a multiple of
    /// 32).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn main_loop(ty: Dense, w: &[f32], a: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut i = 0;
        while i + STEP <= w.len() {
            for (j, s) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(wp.add(i + 8 * j));
                let y = _mm256_loadu_ps(ap.add(i + 8 * j));
                *s = _mm256_fmadd_ps(x, y, *s);
            }
            i += STEP;
        }
        reduce(ty, acc)
    }

    /// ggml's reduction of the four accumulators.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn reduce(ty: Dense, acc: [__m256; 4]) -> f32 {
        let x = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        match ty {
            Dense::F32 | Dense::F16 => {
                let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
                let t1 = _mm_hadd_ps(t0, t0);
                _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
            }
            Dense::BF16 => {
                let g = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
                let g = _mm_add_ps(g, _mm_movehl_ps(g, g));
                let g = _mm_add_ss(g, _mm_movehdup_ps(g));
                _mm_cvtss_f32(g)
            }
        }
    }

    /// Two tokens against one weight row at once (each weight vector
    /// loaded once), every (row, token) pair in ggml's own order.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn main_loop2(ty: Dense, w: &[f32], a0: &[f32], a1: &[f32]) -> [f32; 2] {
        let mut acc0 = [_mm256_setzero_ps(); 4];
        let mut acc1 = [_mm256_setzero_ps(); 4];
        let (wp, p0, p1) = (w.as_ptr(), a0.as_ptr(), a1.as_ptr());
        let mut i = 0;
        while i + STEP <= w.len() {
            for j in 0..4 {
                let x = _mm256_loadu_ps(wp.add(i + 8 * j));
                acc0[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(p0.add(i + 8 * j)), acc0[j]);
                acc1[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(p1.add(i + 8 * j)), acc1[j]);
            }
            i += STEP;
        }
        [reduce(ty, acc0), reduce(ty, acc1)]
    }
}

/// Two tokens' dots with one weight row: the same results as two
/// [`vec_dot`] calls, with each weight vector loaded once.
pub fn vec_dot2(ty: Dense, w: &[f32], a0: &[f32], a1: &[f32]) -> [f32; 2] {
    #[cfg(target_arch = "x86_64")]
    {
        let n = w.len();
        let np = n & !(STEP - 1);
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && a0.len() == n
            && a1.len() == n
        {
            // SAFETY: AVX2 and FMA are present (checked just above).
            let m = unsafe { avx2::main_loop2(ty, &w[..np], &a0[..np], &a1[..np]) };
            return [
                tail(ty, m[0], &w[np..], &a0[np..]),
                tail(ty, m[1], &w[np..], &a1[np..]),
            ];
        }
    }
    [vec_dot(ty, w, a0), vec_dot(ty, w, a1)]
}

/// Weight rows per parallel task of [`tinyblas_matmul`]: their widened
/// f32 form (≤ 576 KiB for rows of 3072) stays in L2 while every token
/// streams past; a multiple of the AVX-512 tile's rows.
const TINYBLAS_ROWS_PER_TASK: usize = 48;

/// llamafile's `tinyBLAS` order for one output (what ggml-cpu runs for F32,
/// F16 and BF16 weights and two or more tokens, rows a multiple of 8): one
/// eight-lane multiply-add accumulator over the row, the lanes summed as
/// its `hsum`, `(a0+a4, a1+a5, a2+a6, a3+a7)` then `(t0+t2)+(t1+t3)`. The
/// scalar yardstick of [`tinyblas_matmul`].
pub fn tinyblas_dot_ref(w: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (w, a) in w.chunks_exact(8).zip(a.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = w[l].mul_add(a[l], acc[l]);
        }
    }
    let t = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// `out[t·n_out + r] = W[r] · round(x[t])` in tinyBLAS's order
/// ([`tinyblas_dot_ref`] for every output, bit for bit): `w` holds `n_out`
/// little-endian rows of `n_in` elements of `ty` (`n_in` a multiple of 8),
/// `x` is `n_tokens × n_in` f32. The activations are rounded to `ty` once;
/// weight rows run in parallel tasks of [`TINYBLAS_ROWS_PER_TASK`], each
/// widening its rows once and sweeping them with the best tile kernel the
/// CPU has, writing its outputs straight into `out`.
///
/// # Panics
/// If the buffers do not have the sizes the shape implies: a programming
/// error, never input data.
pub fn tinyblas_matmul(ty: Dense, w: &[u8], n_in: usize, n_out: usize, x: &[f32], out: &mut [f32]) {
    use rayon::prelude::*;
    assert!(n_in.is_multiple_of(8) && n_in > 0, "rows of {n_in}");
    assert_eq!(w.len(), n_out * n_in * ty.size());
    let n_tokens = x.len() / n_in;
    assert_eq!(out.len(), n_tokens * n_out);
    if n_out == 0 || n_tokens == 0 {
        return;
    }
    let rounded: Cow<[f32]> = match ty {
        Dense::F32 => Cow::Borrowed(x),
        _ => Cow::Owned(x.par_iter().map(|&v| ty.round(v)).collect()),
    };
    let kernel = TinyblasKernel::detect();
    let acts = kernel.lay_out(rounded, n_in);
    let row_bytes = n_in * ty.size();
    super::row_blocks::par_row_blocks(out, n_out, TINYBLAS_ROWS_PER_TASK)
        .zip(w.par_chunks(TINYBLAS_ROWS_PER_TASK * row_bytes))
        .for_each_init(Vec::new, |buf, (mut o, wb)| {
            let rows = task_rows(ty, kernel, wb, n_in, buf);
            tinyblas_block(kernel, rows, &acts, n_in, &mut o);
        });
}

/// A task's weight rows as f32, in whole tiles of the kernel: F32 rows
/// read where they lie (a GGUF aligns its tensors) when they fill whole
/// tiles, other rows widened into `buf` and padded with zero rows.
fn task_rows<'a>(
    ty: Dense,
    kernel: TinyblasKernel,
    wb: &'a [u8],
    n_in: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let n_rows = wb.len() / (n_in * ty.size());
    let tile = kernel.tile_rows();
    if ty == Dense::F32 && cfg!(target_endian = "little") && n_rows.is_multiple_of(tile) {
        // SAFETY: every bit pattern is an f32, and `align_to` only yields
        // the aligned middle.
        let (head, rows, tail) = unsafe { wb.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return rows;
        }
    }
    ty.widen(wb, buf);
    buf.resize(n_rows.next_multiple_of(tile) * n_in, 0.0);
    buf
}

/// Which tile kernel runs the tinyBLAS-order product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TinyblasKernel {
    /// Two tokens' eight-lane accumulators side by side in one 512-bit
    /// register (activations laid out by [`pair_tokens`]).
    Avx512,
    Avx2,
    Portable,
}

impl TinyblasKernel {
    fn detect() -> TinyblasKernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                return if has!("avx512f") {
                    TinyblasKernel::Avx512
                } else {
                    TinyblasKernel::Avx2
                };
            }
        }
        TinyblasKernel::Portable
    }

    /// The rows of one tile: a task's rows are padded to a multiple.
    fn tile_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            TinyblasKernel::Avx512 => tiles512::RM,
            _ => 1,
        }
    }

    /// The activations (`n_tokens × n_in`) in the layout this kernel reads
    /// (the row-major ones as they are, unless the kernel pairs tokens).
    fn lay_out(self, acts: Cow<'_, [f32]>, n_in: usize) -> Cow<'_, [f32]> {
        match self {
            #[cfg(target_arch = "x86_64")]
            TinyblasKernel::Avx512 => Cow::Owned(pair_tokens(&acts, n_in, tiles512::RP)),
            _ => acts,
        }
    }
}

/// Tokens interleaved in pairs for the AVX-512 kernel: pair `p`'s
/// `c`-th 16 values are token `2p`'s elements `8c..8c+8` then token
/// `2p+1`'s, and zeros past the last token up to a multiple of
/// `pairs_per_tile` pairs, so that every tile is a whole one.
fn pair_tokens(acts: &[f32], n_in: usize, pairs_per_tile: usize) -> Vec<f32> {
    let n_tokens = acts.len() / n_in;
    let n_pairs = n_tokens.div_ceil(2).next_multiple_of(pairs_per_tile);
    let mut out = vec![0f32; n_pairs * 2 * n_in];
    for (t, a) in acts.chunks_exact(n_in).enumerate() {
        let pair = &mut out[(t / 2) * 2 * n_in..][..2 * n_in];
        for (c, chunk) in a.chunks_exact(8).enumerate() {
            pair[16 * c + 8 * (t % 2)..][..8].copy_from_slice(chunk);
        }
    }
    out
}

/// One task: row `r` of `o` for token `t` is `rows[r] · acts[t]` (`acts`
/// laid out for `kernel`, `rows` whole tiles of it, [`task_rows`]).
fn tinyblas_block(
    kernel: TinyblasKernel,
    rows: &[f32],
    acts: &[f32],
    n_in: usize,
    o: &mut RowBlock,
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        TinyblasKernel::Avx512 => {
            assert!((rows.len() / n_in).is_multiple_of(tiles512::RM));
            // SAFETY: `detect` found AVX-512F, AVX2 and FMA; `rows` and
            // `acts` hold whole tiles (asserted, `pair_tokens`).
            return unsafe { tiles512::block(rows, acts, n_in, o) };
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` found AVX2 and FMA.
        TinyblasKernel::Avx2 => return unsafe { tiles::block(rows, acts, n_in, o) },
        _ => {}
    }
    for (r, wr) in rows.chunks_exact(n_in).enumerate() {
        for (t, at) in acts.chunks_exact(n_in).enumerate() {
            o.set(r, t, tinyblas_dot_ref(wr, at));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::RowBlock;
    use std::arch::x86_64::*;

    /// Rows and tokens of the largest tile: 12 accumulators plus four
    /// weight vectors fit the 16 ymm registers.
    const RM: usize = 4;
    const RN: usize = 3;

    /// [`super::tinyblas_block`] with AVX2: tiles of up to RM rows × RN
    /// tokens, each output its own eight-lane accumulator.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(rows: &[f32], acts: &[f32], n_in: usize, o: &mut RowBlock) {
        let n_rows = rows.len() / n_in;
        let n_tokens = acts.len() / n_in;
        let mut t0 = 0;
        while t0 < n_tokens {
            let nt = (n_tokens - t0).min(RN);
            let mut r0 = 0;
            while r0 < n_rows {
                let nr = (n_rows - r0).min(RM);
                let w = rows.as_ptr().add(r0 * n_in);
                let a = acts.as_ptr().add(t0 * n_in);
                let mut res = [[0f32; RN]; RM];
                match (nr, nt) {
                    (4, 3) => tile::<4, 3>(w, a, n_in, &mut res),
                    (4, 2) => tile::<4, 2>(w, a, n_in, &mut res),
                    (4, 1) => tile::<4, 1>(w, a, n_in, &mut res),
                    (3, 3) => tile::<3, 3>(w, a, n_in, &mut res),
                    (3, 2) => tile::<3, 2>(w, a, n_in, &mut res),
                    (3, 1) => tile::<3, 1>(w, a, n_in, &mut res),
                    (2, 3) => tile::<2, 3>(w, a, n_in, &mut res),
                    (2, 2) => tile::<2, 2>(w, a, n_in, &mut res),
                    (2, 1) => tile::<2, 1>(w, a, n_in, &mut res),
                    (1, 3) => tile::<1, 3>(w, a, n_in, &mut res),
                    (1, 2) => tile::<1, 2>(w, a, n_in, &mut res),
                    _ => tile::<1, 1>(w, a, n_in, &mut res),
                }
                for (i, line) in res.iter().enumerate().take(nr) {
                    for (j, &v) in line.iter().enumerate().take(nt) {
                        o.set(r0 + i, t0 + j, v);
                    }
                }
                r0 += nr;
            }
            t0 += nt;
        }
    }

    /// M rows (stride `n`) against N tokens (stride `n`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const M: usize, const N: usize>(
        w: *const f32,
        a: *const f32,
        n: usize,
        res: &mut [[f32; RN]; RM],
    ) {
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let mut k = 0;
        while k < n {
            let mut av = [_mm256_setzero_ps(); N];
            for (j, v) in av.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(a.add(j * n + k));
            }
            for (i, line) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(w.add(i * n + k));
                for (s, &x) in line.iter_mut().zip(&av) {
                    *s = _mm256_fmadd_ps(wv, x, *s);
                }
            }
            k += 8;
        }
        for (line, out) in acc.iter().zip(res.iter_mut()) {
            for (&s, o) in line.iter().zip(out.iter_mut()) {
                *o = hsum(s);
            }
        }
    }

    /// tinyBLAS's `hsum`: `(a0+a4, …, a3+a7)`, then `(t0+t2) + (t1+t3)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
        _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
    }
}

#[cfg(target_arch = "x86_64")]
mod tiles512 {
    use super::tiles::hsum;
    use super::RowBlock;
    use std::arch::x86_64::*;

    /// Rows and token pairs of a tile: 24 accumulators (48 outputs), four
    /// activation registers and one weight register of the 32.
    pub const RM: usize = 6;
    pub const RP: usize = 4;

    /// Elements of the row per sweep over the task's tiles: the tile's
    /// activations for one sweep (16 KiB) stay in L1 while the weight rows
    /// stream past from L2. Pausing an accumulator between sweeps and
    /// resuming it leaves its sum unchanged.
    const SWEEP: usize = 512;

    /// The accumulators of one tile.
    type Acc = [[__m512; RP]; RM];

    /// [`super::tinyblas_block`] with AVX-512: every output keeps its own
    /// eight lanes (half a register), so the sums are the AVX2 kernel's.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA; `rows` holds a multiple of [`RM`] rows and
    /// `pairs` a multiple of [`RP`] pairs of `n_in` elements (a multiple
    /// of 8).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn block(rows: &[f32], pairs: &[f32], n_in: usize, o: &mut RowBlock) {
        let n_tiles = rows.len() / n_in / RM;
        let n_groups = pairs.len() / (2 * n_in) / RP;
        let mut accs: Vec<Acc> = vec![[[_mm512_setzero_ps(); RP]; RM]; n_tiles];
        for g in 0..n_groups {
            let a = pairs.as_ptr().add(g * RP * 2 * n_in);
            accs.fill([[_mm512_setzero_ps(); RP]; RM]);
            let mut k0 = 0;
            while k0 < n_in {
                let k1 = (k0 + SWEEP).min(n_in);
                for (ti, acc) in accs.iter_mut().enumerate() {
                    let w = rows.as_ptr().add(ti * RM * n_in);
                    tile(w, a, n_in, k0, k1, acc);
                }
                k0 = k1;
            }
            for (ti, acc) in accs.iter().enumerate() {
                for (i, line) in acc.iter().enumerate() {
                    let r = ti * RM + i;
                    if r >= o.n_rows() {
                        break;
                    }
                    for (j, &s) in line.iter().enumerate() {
                        let t = 2 * (g * RP + j);
                        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
                        if t < o.n_tokens() {
                            o.set(r, t, hsum(_mm512_castps512_ps256(s)));
                        }
                        if t + 1 < o.n_tokens() {
                            o.set(r, t + 1, hsum(hi));
                        }
                    }
                }
            }
        }
    }

    /// Elements `k0..k1` of [`RM`] rows (stride `n`) against [`RP`] token
    /// pairs (stride `2n`), added to `acc`: each weight vector broadcast to
    /// both halves, each pair's two tokens in one load.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile(w: *const f32, a: *const f32, n: usize, k0: usize, k1: usize, acc: &mut Acc) {
        let mut s = *acc;
        let mut k = k0;
        while k < k1 {
            let mut av = [_mm512_setzero_ps(); RP];
            for (j, v) in av.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(a.add(j * 2 * n + 2 * k));
            }
            for (i, line) in s.iter_mut().enumerate() {
                let wv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                    w.add(i * n + k).cast(),
                )));
                for (x, &y) in line.iter_mut().zip(&av) {
                    *x = _mm512_fmadd_ps(wv, y, *x);
                }
            }
            k += 8;
        }
        *acc = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761);
                (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every tile kernel this CPU can run, the portable one included.
    fn kernels() -> Vec<TinyblasKernel> {
        let best = TinyblasKernel::detect();
        [
            TinyblasKernel::Avx512,
            TinyblasKernel::Avx2,
            TinyblasKernel::Portable,
        ]
        .into_iter()
        .filter(|k| match best {
            TinyblasKernel::Avx512 => true,
            TinyblasKernel::Avx2 => *k != TinyblasKernel::Avx512,
            TinyblasKernel::Portable => *k == TinyblasKernel::Portable,
        })
        .collect()
    }

    /// F32 rows that fill whole tiles are read where they lie; others are
    /// widened and padded to whole tiles with zero rows.
    #[test]
    fn f32_rows_are_read_in_place_when_they_fill_whole_tiles() {
        let n_in = 16;
        for kernel in kernels() {
            let tile = kernel.tile_rows();
            for n_rows in [tile, 2 * tile, 2 * tile + 1] {
                let w = row(n_rows * n_in, 3);
                // SAFETY: viewing f32s as their bytes.
                let (_, bytes, _) = unsafe { w.align_to::<u8>() };
                let mut buf = Vec::new();
                let rows = task_rows(Dense::F32, kernel, bytes, n_in, &mut buf);
                let in_place = n_rows.is_multiple_of(tile);
                assert_eq!(rows.as_ptr() == w.as_ptr(), in_place, "{kernel:?} {n_rows}");
                assert_eq!(rows.len(), n_rows.next_multiple_of(tile) * n_in);
                assert_eq!(&rows[..w.len()], &w[..]);
                assert!(rows[w.len()..].iter().all(|&v| v == 0.0));
                // Half-precision rows are always widened.
                let mut half = vec![0u8; w.len() * 2];
                Dense::F16.encode(&w, &mut half);
                let mut buf = Vec::new();
                let rows = task_rows(Dense::F16, kernel, &half, n_in, &mut buf);
                assert_eq!(rows.len(), n_rows.next_multiple_of(tile) * n_in);
            }
        }
    }

    /// The tiled tinyBLAS product equals the scalar tinyBLAS order bit for
    /// bit at every position, for shapes that do and do not fill the
    /// tiles and the tasks, and stays near the double-summed reference.
    #[test]
    fn tinyblas_matmul_equals_the_scalar_order() {
        for ty in [Dense::F32, Dense::F16, Dense::BF16] {
            for (n_in, n_out, n_tokens) in [
                (8, 1, 2),
                (64, 7, 5),
                (768, 70, 13),
                (40, 130, 4),
                (64, 96, 9),
            ] {
                let wf = row(n_in * n_out, 5);
                let mut w = vec![0u8; wf.len() * ty.size()];
                ty.encode(&wf, &mut w);
                let mut wide = Vec::new();
                ty.widen(&w, &mut wide);
                let x = row(n_in * n_tokens, 6);
                let mut out = vec![0f32; n_out * n_tokens];
                tinyblas_matmul(ty, &w, n_in, n_out, &x, &mut out);
                let acts: Vec<f32> = x.iter().map(|&v| ty.round(v)).collect();
                for kernel in kernels() {
                    // One block of every row, so each kernel's tails show.
                    let layout = kernel.lay_out(Cow::Borrowed(&acts), n_in);
                    let mut direct = vec![f32::NAN; n_out * n_tokens];
                    let mut buf = Vec::new();
                    let rows = task_rows(ty, kernel, &w, n_in, &mut buf);
                    let mut blocks: Vec<_> = rayon::iter::ParallelIterator::collect(
                        crate::quant::row_blocks::par_row_blocks(&mut direct, n_out, n_out),
                    );
                    tinyblas_block(kernel, rows, &layout, n_in, &mut blocks[0]);
                    drop(blocks);
                    assert_eq!(direct, out, "{kernel:?} {ty:?} {n_in}x{n_out}");
                }
                for t in 0..n_tokens {
                    let a: Vec<f32> = x[t * n_in..][..n_in].iter().map(|&v| ty.round(v)).collect();
                    for r in 0..n_out {
                        let wr = &wide[r * n_in..][..n_in];
                        let want = tinyblas_dot_ref(wr, &a);
                        let got = out[t * n_out + r];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty:?} {n_in}x{n_out} r={r} t={t}"
                        );
                        let scale: f64 = wr
                            .iter()
                            .zip(&a)
                            .map(|(p, q)| f64::from((p * q).abs()))
                            .sum();
                        assert!(f64::from((got - vec_dot_ref(wr, &a)).abs()) <= 1e-6 * scale);
                    }
                }
            }
        }
    }

    /// The AVX2 and portable versions agree bit for bit, the two-token
    /// kernel equals single calls, and all stay near the double-summed
    /// reference.
    #[test]
    fn fast_versions_agree_and_stay_near_the_reference() {
        for ty in [Dense::F32, Dense::F16, Dense::BF16] {
            for n in [32, 64, 100, 768, 4096 + 7] {
                let w: Vec<f32> = row(n, 1).into_iter().map(|v| ty.round(v)).collect();
                let a: Vec<f32> = row(n, 2).into_iter().map(|v| ty.round(v)).collect();
                let b: Vec<f32> = row(n, 3).into_iter().map(|v| ty.round(v)).collect();
                let fast = vec_dot(ty, &w, &a);
                let np = n & !(STEP - 1);
                let portable = tail(
                    ty,
                    portable_main_loop(ty, &w[..np], &a[..np]),
                    &w[np..],
                    &a[np..],
                );
                assert_eq!(fast.to_bits(), portable.to_bits(), "{ty:?} n={n}");
                let two = vec_dot2(ty, &w, &a, &b);
                assert_eq!(two[0].to_bits(), fast.to_bits());
                assert_eq!(two[1].to_bits(), vec_dot(ty, &w, &b).to_bits());
                let scale: f64 = w
                    .iter()
                    .zip(&a)
                    .map(|(x, y)| f64::from((x * y).abs()))
                    .sum();
                let r = vec_dot_ref(&w, &a);
                assert!(f64::from((fast - r).abs()) <= 1e-6 * scale, "{ty:?} n={n}");
            }
        }
    }
}
