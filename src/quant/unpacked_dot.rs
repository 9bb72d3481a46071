//! The fast engine of every quantized dot product: a weight row decoded
//! once to i16 levels ([`Unpacked`]), activation rows decoded once to i16
//! ([`ActRow`]), and one kernel that multiplies a weight row with up to
//! [`TOKENS`] activation rows at a time, so each loaded weight vector is
//! reused for several tokens.
//!
//! Integer sums are exact, so any grouping of them gives ggml's. The float
//! steps are the pinned llama.cpp's own, in its order, so the products
//! are bit for bit what its CPU backend computes on an AVX2 build:
//!
//! * 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): eight float lanes,
//!   lane `i` taking each block's integer sum of elements `4i..4i+3`
//!   times `dw · da` with one FMA, the lanes summed as `hsum_float_8` does
//!   at the end; Q4_1/Q5_1's `m · s` terms in a scalar FMA chain added
//!   last. That is `ggml_vec_dot_q*_q8_*` and llamafile's
//!   `tinyBLAS_Q0_AVX` (one FMA per block and lane, the same `hsum`), so
//!   it holds for one token and for batches alike.
//! * 256-element super-blocks (the K-quants): per super-block the whole
//!   integer sum `s1` (levels already carry their group scale) and
//!   `s2 = Σ bsums · min`, then `r = d · s1`, `r = r − dmin · s2` (one
//!   FMA) and `acc = r · da + acc` (one FMA): ggml-cpu's tiled K-quant
//!   kernel (`tiled/tiled-kernel.cpp`), which `mul_mat` runs from 8
//!   tokens on. With fewer tokens ggml runs `vec_dot_q*_K_q8_K`, whose
//!   float grouping differs; there the two agree to float reassociation.
//!
//! The kernels are chosen at run time (`is_x86_feature_detected!`): AVX2,
//! and where the CPU has them AVX-512 VNNI ones (`vpdpbusd` on the i8
//! levels of the 32-element blocks, two weight rows per register, the
//! activations biased by 128 so that they are the unsigned operand;
//! `vpdpwssd` for the K-quants' sums); the portable one performs the same
//! float operations on the same integers, so all give the same bits. With
//! VNNI, K-quant products of 8 or more tokens take `kquants_vnni.rs`
//! instead (sixteen tokens per register, the same bits).

use super::activation::{Q8_0_SIZE, Q8_1_SIZE, Q8_K_SIZE, QK8, QK_K};
use super::fp16::f16_bits_to_f32;

/// Tokens one kernel call handles together.
pub const TOKENS: usize = 4;

/// A weight row as levels and per-block factors.
#[derive(Debug, Clone, Default)]
pub struct Unpacked {
    /// One i16 level per element (times the group scale for K-quants).
    pub q: Vec<i16>,
    /// The same levels as i8, for the 32-element blocks (where they fit):
    /// the VNNI kernel's signed operand. Empty for the K-quants.
    pub q8: Vec<i8>,
    /// Per four consecutive levels: `−128 · Σ level`, the start of each
    /// VNNI lane, which takes the activations biased by 128 (see
    /// [`ActRow::biased`]). Empty with [`Unpacked::q8`].
    pub quad_bias: Vec<i32>,
    /// Per block: the weight scale `d`.
    pub d: Vec<f32>,
    /// Per block: `m` (Q4_1/Q5_1) or `dmin` (K-quants), else 0.
    pub m: Vec<f32>,
    /// Per 16-element group of a K-quant super-block: the integer minimum
    /// that multiplies the activation's block sums (empty for legacy).
    pub mins: Vec<i16>,
}

impl Unpacked {
    /// Sizes the buffers for `n` elements in `blocks` blocks, zeroed.
    pub fn reset(&mut self, n: usize, blocks: usize) {
        self.q.clear();
        self.q.resize(n, 0);
        self.d.clear();
        self.d.resize(blocks, 0.0);
        self.m.clear();
        self.m.resize(blocks, 0.0);
        self.mins.clear();
        self.q8.clear();
        self.quad_bias.clear();
        if blocks > 0 && n / blocks == QK_K {
            self.mins.resize(16 * blocks, 0);
        }
    }

    /// Copies the levels into [`Unpacked::q8`] and sets
    /// [`Unpacked::quad_bias`] (32-element blocks only: their levels are
    /// −128..=127), as `legacy_dot::unpack_i8` lays a row out.
    #[cfg(test)]
    pub fn fill_i8(&mut self) {
        self.q8.clear();
        self.q8.extend(self.q.iter().map(|&v| v as i8));
        self.quad_bias.clear();
        self.quad_bias.resize(self.q8.len() / 4, 0);
        quad_biases(&self.q8, &mut self.quad_bias);
    }
}

/// `bias[k] = −128 · Σ q[4k..4k + 4]`: where each VNNI lane starts.
pub fn quad_biases(q: &[i8], bias: &mut [i32]) {
    for (b, quad) in bias.iter_mut().zip(q.chunks_exact(4)) {
        let sum = i32::from(quad[0]) + i32::from(quad[1]) + i32::from(quad[2]) + i32::from(quad[3]);
        *b = -128 * sum;
    }
}

/// An activation row (Q8_0, Q8_1 or Q8_K bytes) decoded for the kernel.
#[derive(Debug, Clone, Default)]
pub struct ActRow {
    /// The quants, widened.
    pub q: Vec<i16>,
    /// The quants plus 128, as u8 (Q8_0/Q8_1 only): the VNNI kernel's
    /// unsigned operand. `Σ (a + 128) · w − 128 · Σ w = Σ a · w` exactly.
    pub biased: Vec<u8>,
    /// Per block: `d`.
    pub d: Vec<f32>,
    /// Per block: Q8_1's `s` (empty otherwise).
    pub s: Vec<f32>,
    /// Per 16 elements: Q8_K's `bsums` (empty otherwise).
    pub bsums: Vec<i16>,
}

/// How the activation row is encoded, and so how blocks are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// Q8_0: 32 per block, `d`.
    Q8_0,
    /// Q8_1: 32 per block, `d` and `s`.
    Q8_1,
    /// Q8_K: 256 per block, f32 `d` and `bsums`.
    Q8K,
}

impl ActRow {
    /// Decodes `n` elements of activation bytes, the quants widened to
    /// i16 ([`ActRow::q`]): the AVX2 and portable kernels' form.
    pub fn decode(kind: ActKind, n: usize, bytes: &[u8]) -> ActRow {
        Self::decode_as(kind, n, bytes, false)
    }

    /// Decodes `n` elements of Q8_0/Q8_1 bytes with the quants biased
    /// ([`ActRow::biased`], `q` left empty): [`dot_rows_vnni`]'s form.
    pub fn decode_biased(kind: ActKind, n: usize, bytes: &[u8]) -> ActRow {
        debug_assert!(kind != ActKind::Q8K, "Q8_K rows have no biased form");
        Self::decode_as(kind, n, bytes, true)
    }

    fn decode_as(kind: ActKind, n: usize, bytes: &[u8], biased: bool) -> ActRow {
        let mut r = ActRow::default();
        let f16_at = |b: &[u8], at: usize| f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]));
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                let (size, qs) = if kind == ActKind::Q8_0 {
                    (Q8_0_SIZE, 2)
                } else {
                    (Q8_1_SIZE, 4)
                };
                if biased {
                    r.biased.reserve(n);
                } else {
                    r.q.reserve(n);
                }
                for b in bytes.chunks_exact(size).take(n / QK8) {
                    r.d.push(f16_at(b, 0));
                    if kind == ActKind::Q8_1 {
                        r.s.push(f16_at(b, 2));
                    }
                    let quants: &[u8; QK8] = b[qs..qs + QK8].try_into().expect("a block's quants");
                    if biased {
                        r.biased.extend(quants.map(|v| v ^ 0x80));
                    } else {
                        r.q.extend(quants.map(|v| i16::from(v as i8)));
                    }
                }
            }
            ActKind::Q8K => {
                r.q.reserve(n);
                for b in bytes.chunks_exact(Q8_K_SIZE).take(n / QK_K) {
                    r.d.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    r.q.extend(b[4..4 + QK_K].iter().map(|&v| i16::from(v as i8)));
                    r.bsums.extend(
                        b[4 + QK_K..Q8_K_SIZE]
                            .chunks_exact(2)
                            .map(|s| i16::from_le_bytes([s[0], s[1]])),
                    );
                }
            }
        }
        r
    }
}

/// `out[t] = w · acts[t]` for every activation row given (at most
/// [`TOKENS`]); `block` is 32 (legacy) or 256 (K-quants).
///
/// On CPUs with AVX-512BW the K-quants' integer sums are formed 32 lanes
/// at a time: integer sums are exact, so both give the same bits.
pub fn dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
    debug_assert!(acts.len() <= TOKENS && out.len() >= acts.len());
    #[cfg(target_arch = "x86_64")]
    {
        match simd_level() {
            // SAFETY: the CPU has AVX-512F/BW, AVX2 and FMA (simd_level).
            Simd::Avx512 => return unsafe { avx512::dot_tokens(w, acts, block, out) },
            // SAFETY: the CPU has AVX2 and FMA (simd_level).
            Simd::Avx2 => return unsafe { avx2::dot_tokens(w, acts, block, out) },
            Simd::None => {}
        }
    }
    portable_dot_tokens(w, acts, block, out);
}

/// The widest kernel the CPU runs.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    None,
}

#[cfg(target_arch = "x86_64")]
fn simd_level() -> Simd {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        Simd::None
    } else if has!("avx512f") && has!("avx512bw") {
        Simd::Avx512
    } else {
        Simd::Avx2
    }
}

/// The AVX2 kernel alone, for the test that the AVX-512 one equals it.
#[cfg(all(test, target_arch = "x86_64"))]
fn dot_tokens_avx2(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
    assert_ne!(simd_level(), Simd::None);
    // SAFETY: the CPU has AVX2 and FMA (asserted above).
    unsafe { avx2::dot_tokens(w, acts, block, out) }
}

/// `Σ bsums · min` of super-block `b`: the K-quants' minimum sum `s2`.
#[inline(always)]
fn min_sum(w: &Unpacked, a: &ActRow, b: usize) -> i32 {
    (0..16)
        .map(|g| i32::from(a.bsums[16 * b + g]) * i32::from(w.mins[16 * b + g]))
        .sum()
}

/// `hsum_float_8`'s order: lanes `l` and `l + 4`, then the pairs.
#[inline(always)]
fn hsum8(l: [f32; 8]) -> f32 {
    let h = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// One super-block's float steps in the tiled kernel's order; `s2` is
/// `None` for the types without minimums (Q3_K, Q6_K), whose kernel has
/// no minimum step.
#[inline(always)]
fn kquant_step(acc: f32, d: f32, dmin: f32, s1: i32, s2: Option<i32>, da: f32) -> f32 {
    let r = d * s1 as f32;
    let r = match s2 {
        Some(s2) => (-dmin).mul_add(s2 as f32, r),
        None => r,
    };
    r.mul_add(da, acc)
}

/// The kernel in plain Rust, for CPUs without AVX2: the same float
/// operations as the SIMD kernels.
pub fn portable_dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(acts) {
        let blocks = w.q.chunks_exact(block).zip(a.q.chunks_exact(block));
        if block == QK8 {
            let mut lanes = [0f32; 8];
            let mut summs = 0f32;
            for (b, (wq, aq)) in blocks.enumerate() {
                let scale = w.d[b] * a.d[b];
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let q: i32 = (4 * i..4 * i + 4)
                        .map(|j| i32::from(wq[j]) * i32::from(aq[j]))
                        .sum();
                    *lane = scale.mul_add(q as f32, *lane);
                }
                if !a.s.is_empty() {
                    summs = w.m[b].mul_add(a.s[b], summs);
                }
            }
            *o = if a.s.is_empty() {
                hsum8(lanes)
            } else {
                hsum8(lanes) + summs
            };
        } else {
            let mut acc = 0f32;
            for (b, (wq, aq)) in blocks.enumerate() {
                let s1: i32 = wq
                    .iter()
                    .zip(aq)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                let s2 = (!w.mins.is_empty()).then(|| min_sum(w, a, b));
                acc = kquant_step(acc, w.d[b], w.m[b], s1, s2, a.d[b]);
            }
            *o = acc;
        }
    }
}

/// The 32-element-block kernel (AVX2): per block and token, the eight
/// quad sums into eight float lanes with one FMA each; Q4_1/Q5_1's
/// `m · s` in a scalar FMA chain.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn legacy_n<const T: usize>(w: &Unpacked, acts: &[&ActRow], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let wq = w.q.as_ptr();
    let with_min = !acts[0].s.is_empty();
    // Tokens side by side: T independent accumulator chains (one alone
    // would wait on its FMA's latency every block).
    let mut acc = [_mm256_setzero_ps(); T];
    let mut summs = [0f32; T];
    for b in 0..w.d.len() {
        let at = b * QK8;
        let (w0, w1) = (
            _mm256_loadu_si256(wq.add(at).cast()),
            _mm256_loadu_si256(wq.add(at + 16).cast()),
        );
        for t in 0..T {
            let a = acts[t];
            let aq = a.q.as_ptr().add(at);
            let p0 = _mm256_madd_epi16(w0, _mm256_loadu_si256(aq.cast()));
            let p1 = _mm256_madd_epi16(w1, _mm256_loadu_si256(aq.add(16).cast()));
            // hadd gives the quads as [0, 1, 4, 5, 2, 3, 6, 7]; the
            // permute puts quad i in lane i, as ggml's lanes are.
            let quads = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(p0, p1));
            let scale = _mm256_set1_ps(w.d[b] * a.d[b]);
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[t]);
            if with_min {
                summs[t] = w.m[b].mul_add(a.s[b], summs[t]);
            }
        }
    }
    for t in 0..T {
        let sum = avx2::hsum(acc[t]);
        out[t] = if with_min { sum + summs[t] } else { sum };
    }
}

/// Tokens [`dot_rows_vnni`] takes per pass over the rows.
pub const VNNI_TOKENS: usize = 8;

/// `out[j · rows.len() + r] = rows[r] · acts[j]` for every weight row and
/// each of the (at most [`VNNI_TOKENS`]) activation rows, token-major as
/// the product's output: 32-element blocks with AVX-512 VNNI.
///
/// Two rows share each 512-bit register (lanes 0–7 the first, 8–15 the
/// second; an odd last row is paired with itself), so every lane performs
/// exactly [`legacy_n`]'s operations for its row and the results are its
/// bits, with half the float instructions. One call covers a whole task's
/// rows, so the cost of a call is paid once per group of tokens.
///
/// The rows come from `legacy_dot::unpack_i8`, the activations from
/// [`ActRow::decode_biased`].
///
/// # Panics
/// Without AVX-512 VNNI ([`has_vnni`]), or when the rows, activations and
/// `out` do not have matching sizes: a programming error.
pub fn dot_rows_vnni(rows: &[Unpacked], acts: &[&ActRow], out: &mut [f32]) {
    let n = rows.first().map_or(0, |w| w.q8.len());
    assert!(
        has_vnni()
            && !acts.is_empty()
            && acts.len() <= VNNI_TOKENS
            && out.len() == rows.len() * acts.len()
            && rows.iter().all(|w| {
                w.q8.len() == n
                    && w.quad_bias.len() == n / 4
                    && w.d.len() == n / QK8
                    && w.m.len() == n / QK8
            })
            && acts.iter().all(|a| {
                a.biased.len() == n
                    && a.d.len() == n / QK8
                    && (a.s.is_empty() || a.s.len() == n / QK8)
            }),
        "dot_rows_vnni: rows and activations do not match"
    );
    // SAFETY: the CPU has AVX-512 F/VL/VNNI/DQ/BW, AVX2 and FMA
    // (`has_vnni`, asserted above), and every row and activation holds
    // `n` levels and `n / 32` block factors (asserted above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match acts.len() {
            8 => rows_vnni::<8>(rows, acts, out),
            7 => rows_vnni::<7>(rows, acts, out),
            6 => rows_vnni::<6>(rows, acts, out),
            5 => rows_vnni::<5>(rows, acts, out),
            4 => rows_vnni::<4>(rows, acts, out),
            3 => rows_vnni::<3>(rows, acts, out),
            2 => rows_vnni::<2>(rows, acts, out),
            _ => rows_vnni::<1>(rows, acts, out),
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = out;
}

/// [`dot_rows_vnni`] for `T` tokens: the rows two at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni,avx512dq,avx512bw")]
unsafe fn rows_vnni<const T: usize>(rows: &[Unpacked], acts: &[&ActRow], out: &mut [f32]) {
    let n_rows = rows.len();
    let acts: &[&ActRow; T] = acts.try_into().expect("T activation rows");
    for r in (0..n_rows).step_by(2) {
        let r1 = (r + 1).min(n_rows - 1);
        let (s0, s1) = legacy_vnni_pair::<T>(&rows[r], &rows[r1], acts);
        for t in 0..T {
            out[t * n_rows + r] = s0[t];
            out[t * n_rows + r1] = s1[t];
        }
    }
}

/// Two weight rows against `T` tokens: `(w0 · acts[t], w1 · acts[t])`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni,avx512dq,avx512bw")]
#[inline]
unsafe fn legacy_vnni_pair<const T: usize>(
    w0: &Unpacked,
    w1: &Unpacked,
    acts: &[&ActRow; T],
) -> ([f32; T], [f32; T]) {
    use std::arch::x86_64::*;
    let (q0, q1) = (w0.q8.as_ptr(), w1.q8.as_ptr());
    let (b0, b1) = (w0.quad_bias.as_ptr(), w1.quad_bias.as_ptr());
    let (d0, d1) = (w0.d.as_ptr(), w1.d.as_ptr());
    let aq: [*const u8; T] = std::array::from_fn(|t| acts[t].biased.as_ptr());
    let ad: [*const f32; T] = std::array::from_fn(|t| acts[t].d.as_ptr());
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..w0.d.len() {
        let at = b * QK8;
        let wv = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(q0.add(at).cast())),
            _mm256_loadu_si256(q1.add(at).cast()),
        );
        // Each lane starts at −128 · Σ w of its quad, so adding
        // Σ (a + 128) · w leaves the exact quad sum Σ a · w.
        let bias = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(b0.add(at / 4).cast())),
            _mm256_loadu_si256(b1.add(at / 4).cast()),
        );
        let dw = _mm512_insertf32x8::<1>(_mm512_set1_ps(*d0.add(b)), _mm256_set1_ps(*d1.add(b)));
        for t in 0..T {
            let av = _mm512_broadcast_i64x4(_mm256_loadu_si256(aq[t].add(at).cast()));
            let quads = _mm512_dpbusd_epi32(bias, av, wv);
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*ad[t].add(b)));
            acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(quads), acc[t]);
        }
    }
    let mut out = ([0f32; T], [0f32; T]);
    for t in 0..T {
        let lo = _mm512_castps512_ps256(acc[t]);
        let hi = _mm512_extractf32x8_ps::<1>(acc[t]);
        let (s0, s1) = (avx2::hsum(lo), avx2::hsum(hi));
        let a = acts[t];
        if a.s.is_empty() {
            out.0[t] = s0;
            out.1[t] = s1;
        } else {
            let m = |w: &Unpacked| (0..w.d.len()).fold(0f32, |s, b| w.m[b].mul_add(a.s[b], s));
            out.0[t] = s0 + m(w0);
            out.1[t] = s1 + m(w1);
        }
    }
    out
}

/// Whether the CPU has AVX-512 VNNI with the BW/DQ/VL forms, AVX2 and
/// FMA, which every VNNI kernel of `quant/` may use (checked once).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_vnni() -> bool {
    use std::sync::OnceLock;
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx2")
            && has!("fma")
    })
}

/// No VNNI off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn has_vnni() -> bool {
    false
}

/// The super-block kernel, instantiated once per instruction set: `$step`
/// adds 32 elements' exact pair sums into the integer lanes, `$fold`
/// brings them to eight lanes, and the tokens' eight-lane sums are
/// reduced together ([`avx2::reduce_tokens`]) to each token's `s1`; the
/// float steps are [`kquant_step`].
#[cfg(target_arch = "x86_64")]
macro_rules! kquant_kernel {
    ($features:literal, $zero:ident, $step:ident, $fold:ident) => {
        #[target_feature(enable = $features)]
        unsafe fn dot_n<const T: usize>(
            w: &Unpacked,
            acts: &[&ActRow],
            block: usize,
            out: &mut [f32],
        ) {
            let mut acc = [0f32; T];
            let wq = w.q.as_ptr();
            let aq: [*const i16; T] = std::array::from_fn(|t| acts[t].q.as_ptr());
            let with_min = !w.mins.is_empty();
            for b in 0..w.d.len() {
                let base = b * block;
                let mut isum = [$zero(); T];
                for k in (0..block).step_by(32) {
                    for (t, s) in isum.iter_mut().enumerate() {
                        $step(s, wq.add(base + k), aq[t].add(base + k));
                    }
                }
                let s1 =
                    super::avx2::reduce_tokens(std::array::from_fn::<_, T, _>(|t| $fold(isum[t])));
                for t in 0..T {
                    let a = acts[t];
                    let s2 = if with_min {
                        Some(super::avx2::min_sum_simd(w, a, b))
                    } else {
                        None
                    };
                    acc[t] = kquant_step(acc[t], w.d[b], w.m[b], s1[t], s2, a.d[b]);
                }
            }
            out[..T].copy_from_slice(&acc);
        }
    };
}

/// `dot_tokens` of one instruction set: the legacy or the K-quant kernel,
/// instantiated for the number of tokens.
#[cfg(target_arch = "x86_64")]
macro_rules! token_dispatch {
    ($features:literal) => {
        #[target_feature(enable = $features)]
        pub unsafe fn dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
            match (block == QK8, acts.len()) {
                (true, 4) => super::legacy_n::<4>(w, acts, out),
                (true, 3) => super::legacy_n::<3>(w, acts, out),
                (true, 2) => super::legacy_n::<2>(w, acts, out),
                (true, 1) => super::legacy_n::<1>(w, acts, out),
                (false, 4) => dot_n::<4>(w, acts, block, out),
                (false, 3) => dot_n::<3>(w, acts, block, out),
                (false, 2) => dot_n::<2>(w, acts, block, out),
                (false, 1) => dot_n::<1>(w, acts, block, out),
                _ => {}
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Horizontal sum of eight floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// [`min_sum`] with the sixteen `bsums · min` products in one `madd`
    /// (an exact integer sum, so the same value).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn min_sum_simd(w: &Unpacked, a: &ActRow, b: usize) -> i32 {
        let bs = _mm256_loadu_si256(a.bsums[16 * b..16 * b + 16].as_ptr().cast());
        let mn = _mm256_loadu_si256(w.mins[16 * b..16 * b + 16].as_ptr().cast());
        reduce8(_mm256_madd_epi16(bs, mn))
    }

    /// The sum of eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn reduce8(p: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// The sums of up to four tokens' eight i32 lanes at once: two rounds
    /// of `hadd` and one add of the halves (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn reduce_tokens<const T: usize>(v: [__m256i; T]) -> [i32; T] {
        let z = _mm256_setzero_si256();
        let at = |t: usize| if t < T { v[t] } else { z };
        let h = _mm256_hadd_epi32(
            _mm256_hadd_epi32(at(0), at(1)),
            _mm256_hadd_epi32(at(2), at(3)),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        let mut all = [0i32; 4];
        _mm_storeu_si128(all.as_mut_ptr().cast(), s);
        std::array::from_fn(|t| all[t])
    }

    /// The eight lanes as they are.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fold8(v: __m256i) -> __m256i {
        v
    }

    token_dispatch!("avx2,fma");

    /// Eight i32 lanes of a K-quant super-block's integer sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn isum_zero() -> __m256i {
        _mm256_setzero_si256()
    }

    /// 32 elements' pair sums into the eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn isum_step(isum: &mut __m256i, w: *const i16, a: *const i16) {
        let p = _mm256_madd_epi16(_mm256_loadu_si256(w.cast()), _mm256_loadu_si256(a.cast()));
        let p2 = _mm256_madd_epi16(
            _mm256_loadu_si256(w.add(16).cast()),
            _mm256_loadu_si256(a.add(16).cast()),
        );
        *isum = _mm256_add_epi32(*isum, _mm256_add_epi32(p, p2));
    }

    kquant_kernel!("avx2,fma", isum_zero, isum_step, fold8);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// The K-quants through VNNI's `vpdpwssd` where the CPU has it, else
    /// with 512-bit `madd`; the 32-element blocks one row at a time on the
    /// AVX2 kernel (products with VNNI take [`dot_rows_vnni`] instead).
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
        if block != QK8 && has_vnni() {
            super::avx512_vnni::kquant_tokens(w, acts, block, out)
        } else {
            token_dispatched(w, acts, block, out)
        }
    }

    mod dispatched {
        use super::*;
        token_dispatch!("avx512f,avx512bw,avx2,fma");
    }
    use dispatched::dot_tokens as token_dispatched;

    /// The K-quant kernel's integer sums in sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn isum_zero() -> __m512i {
        _mm512_setzero_si512()
    }

    /// 32 elements' pair sums with one 512-bit `madd`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn isum_step(isum: &mut __m512i, w: *const i16, a: *const i16) {
        let p = _mm512_madd_epi16(_mm512_loadu_si512(w.cast()), _mm512_loadu_si512(a.cast()));
        *isum = _mm512_add_epi32(*isum, p);
    }

    /// Lane `l` plus lane `l + 8` (exact).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn fold16(isum: __m512i) -> __m256i {
        _mm256_add_epi32(
            _mm512_castsi512_si256(isum),
            _mm512_extracti64x4_epi64::<1>(isum),
        )
    }

    kquant_kernel!("avx512f,avx512bw,avx2,fma", isum_zero, isum_step, fold16);
}

/// The K-quant kernel with AVX-512 VNNI's `vpdpwssd`: the pair products
/// and their sums in one instruction (the same exact integers).
#[cfg(target_arch = "x86_64")]
mod avx512_vnni {
    use super::avx512::fold16;
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    unsafe fn isum_zero() -> __m512i {
        _mm512_setzero_si512()
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    unsafe fn isum_step(isum: &mut __m512i, w: *const i16, a: *const i16) {
        let (wv, av) = (_mm512_loadu_si512(w.cast()), _mm512_loadu_si512(a.cast()));
        *isum = _mm512_dpwssd_epi32(*isum, wv, av);
    }

    kquant_kernel!(
        "avx512f,avx512bw,avx512vnni,avx2,fma",
        isum_zero,
        isum_step,
        fold16
    );

    /// [`dot_n`] for one to [`TOKENS`] tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn kquant_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
        match acts.len() {
            4 => dot_n::<4>(w, acts, block, out),
            3 => dot_n::<3>(w, acts, block, out),
            2 => dot_n::<2>(w, acts, block, out),
            _ => dot_n::<1>(w, acts, block, out),
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn row(n: usize, seed: u32, max: i16) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 16;
                (h % (2 * max as u32 + 1)) as i16 - max
            })
            .collect()
    }

    /// The AVX-512 kernels (VNNI for the 32-element blocks, one row or two
    /// side by side, where the CPU has them), the AVX2 kernel and the
    /// portable kernel give the same bits, for legacy and K-quant layouts.
    #[test]
    fn wide_kernels_equal_the_avx2_kernel() {
        for (block, with_mins, with_s) in
            [(32, false, false), (32, false, true), (256, true, false)]
        {
            let n = if block == QK8 { 20 * block } else { 4 * block };
            let nb = n / block;
            let mut w = Unpacked::default();
            w.reset(n, nb);
            // The 32-element blocks' levels fit i8 (the VNNI operand).
            w.q = row(n, 1, if block == QK8 { 127 } else { 4000 });
            if block == QK8 {
                w.fill_i8();
            }
            w.d = (0..nb).map(|b| 0.01 + b as f32 * 1e-3).collect();
            w.m = (0..nb).map(|b| if b == 1 { 0.0 } else { 0.02 }).collect();
            if with_mins {
                w.mins = row(16 * nb, 2, 63);
            }
            let acts: Vec<ActRow> = (0..TOKENS as u32)
                .map(|t| ActRow {
                    q: row(n, 10 + t, 127),
                    biased: if block == QK8 {
                        row(n, 10 + t, 127)
                            .iter()
                            .map(|&v| (v as u8) ^ 0x80)
                            .collect()
                    } else {
                        Vec::new()
                    },
                    d: (0..nb).map(|b| 0.03 - b as f32 * 1e-3).collect(),
                    s: if with_s { vec![0.5; nb] } else { Vec::new() },
                    bsums: if with_mins {
                        row(16 * nb, 20 + t, 2000)
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            for k in 1..=TOKENS {
                let refs: Vec<&ActRow> = acts[..k].iter().collect();
                let (mut fast, mut avx2, mut portable) =
                    ([0f32; TOKENS], [0f32; TOKENS], [0f32; TOKENS]);
                dot_tokens(&w, &refs, block, &mut fast);
                dot_tokens_avx2(&w, &refs, block, &mut avx2);
                portable_dot_tokens(&w, &refs, block, &mut portable);
                for t in 0..k {
                    assert_eq!(fast[t].to_bits(), avx2[t].to_bits(), "block {block} t {t}");
                    assert_eq!(
                        avx2[t].to_bits(),
                        portable[t].to_bits(),
                        "block {block} t {t}: {} vs {}",
                        avx2[t],
                        portable[t]
                    );
                }
            }
        }
    }

    /// The VNNI rows kernel gives each row the bits of the AVX2 kernel,
    /// for every token count it takes, even and odd row counts (the odd
    /// last row paired with itself) and Q8_1's `m · s` terms.
    #[test]
    fn vnni_rows_equal_the_avx2_kernel_row_by_row() {
        let n = 24 * QK8;
        let nb = n / QK8;
        for with_s in [false, true] {
            let rows: Vec<Unpacked> = (0..5u32)
                .map(|r| {
                    let mut w = Unpacked::default();
                    w.reset(n, nb);
                    w.q = row(n, 1 + r, 127);
                    w.fill_i8();
                    w.d = (0..nb)
                        .map(|b| 0.01 + (b as f32 + r as f32) * 1e-3)
                        .collect();
                    w.m = (0..nb)
                        .map(|b| if with_s { 0.02 - b as f32 * 1e-4 } else { 0.0 })
                        .collect();
                    w
                })
                .collect();
            let acts: Vec<ActRow> = (0..VNNI_TOKENS as u32)
                .map(|t| ActRow {
                    q: row(n, 10 + t, 127),
                    biased: row(n, 10 + t, 127)
                        .iter()
                        .map(|&v| (v as u8) ^ 0x80)
                        .collect(),
                    d: (0..nb).map(|b| 0.03 - b as f32 * 1e-3).collect(),
                    s: if with_s {
                        (0..nb).map(|b| 0.5 + b as f32 * 0.01).collect()
                    } else {
                        Vec::new()
                    },
                    bsums: Vec::new(),
                })
                .collect();
            if !has_vnni() {
                // Then the products take the AVX2 kernel (compared with the
                // portable one above), and this kernel refuses to run.
                let refs: Vec<&ActRow> = acts.iter().collect();
                let mut out = vec![0f32; rows.len() * refs.len()];
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    dot_rows_vnni(&rows, &refs, &mut out)
                }));
                assert!(ran.is_err(), "dot_rows_vnni ran without VNNI");
                return;
            }
            for n_rows in [4, 5] {
                let rows = &rows[..n_rows];
                for k in 1..=VNNI_TOKENS {
                    let refs: Vec<&ActRow> = acts[..k].iter().collect();
                    let mut out = vec![f32::NAN; n_rows * k];
                    dot_rows_vnni(rows, &refs, &mut out);
                    for (r, w) in rows.iter().enumerate() {
                        for (t, a) in refs.iter().enumerate() {
                            let mut want = [0f32; 1];
                            dot_tokens_avx2(w, &[a], QK8, &mut want);
                            assert_eq!(
                                out[t * n_rows + r].to_bits(),
                                want[0].to_bits(),
                                "row {r} of {n_rows}, token {t} of {k}, with s {with_s}"
                            );
                        }
                    }
                }
            }
        }
    }
}
