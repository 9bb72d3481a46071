//! The fast engine of every quantized dot product: a weight row decoded
//! once to i16 levels ([`Unpacked`]), activation rows decoded once to i16
//! ([`ActRow`]), and one kernel that multiplies a weight row with up to
//! [`TOKENS`] activation rows at a time, so each loaded weight vector is
//! reused for several tokens.
//!
//! The integer sum of every block (32 elements for the legacy types, a
//! 256-element super-block for the K-quants, where each level already
//! carries its group's scale) is exact, so it equals the reference's and
//! ggml's. Per block the kernel then adds `(dw · da) · isum` into eight
//! float lanes with FMA, as ggml's AVX2 kernels do, and the minimum terms
//! (`m · s` for Q4_1/Q5_1, `dmin · da · Σ bsums · min` for the K-quants)
//! into a scalar; the lanes are summed at the end. Compared with ggml's
//! generic C only the float summation order differs, which is what the
//! tests' tolerance allows for.
//!
//! The AVX2 kernel is chosen at run time (`is_x86_feature_detected!`); the
//! portable one computes the same integer sums with plain loops.

use super::activation::{Q8_0_SIZE, Q8_1_SIZE, Q8_K_SIZE, QK8, QK_K};
use super::fp16::f16_bits_to_f32;

/// Tokens one kernel call handles together.
pub const TOKENS: usize = 4;

/// A weight row as levels and per-block factors.
#[derive(Debug, Clone, Default)]
pub struct Unpacked {
    /// One i16 level per element (times the group scale for K-quants).
    pub q: Vec<i16>,
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
        if blocks > 0 && n / blocks == QK_K {
            self.mins.resize(16 * blocks, 0);
        }
    }
}

/// An activation row (Q8_0, Q8_1 or Q8_K bytes) decoded for the kernel.
#[derive(Debug, Clone, Default)]
pub struct ActRow {
    /// The quants, widened.
    pub q: Vec<i16>,
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
    /// Decodes `n` elements of activation bytes.
    pub fn decode(kind: ActKind, n: usize, bytes: &[u8]) -> ActRow {
        let mut r = ActRow {
            q: Vec::with_capacity(n),
            ..ActRow::default()
        };
        let f16_at = |b: &[u8], at: usize| f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]));
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                let (size, qs) = if kind == ActKind::Q8_0 {
                    (Q8_0_SIZE, 2)
                } else {
                    (Q8_1_SIZE, 4)
                };
                for b in bytes.chunks_exact(size).take(n / QK8) {
                    r.d.push(f16_at(b, 0));
                    if kind == ActKind::Q8_1 {
                        r.s.push(f16_at(b, 2));
                    }
                    r.q.extend(b[qs..qs + QK8].iter().map(|&v| i16::from(v as i8)));
                }
            }
            ActKind::Q8K => {
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
pub fn dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
    debug_assert!(acts.len() <= TOKENS && out.len() >= acts.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::dot_tokens(w, acts, block, out) };
            return;
        }
    }
    portable_dot_tokens(w, acts, block, out);
}

/// The minimum terms of block `b` for one token: legacy `m · s`, or the
/// K-quants' `−(dmin · da) · Σ bsums · min`.
#[inline(always)]
fn min_term(w: &Unpacked, a: &ActRow, b: usize) -> f32 {
    if !w.mins.is_empty() {
        if w.m[b] == 0.0 {
            return 0.0;
        }
        let summs: i32 = (0..16)
            .map(|g| i32::from(a.bsums[16 * b + g]) * i32::from(w.mins[16 * b + g]))
            .sum();
        -(w.m[b] * a.d[b]) * summs as f32
    } else if !a.s.is_empty() {
        w.m[b] * a.s[b]
    } else {
        0.0
    }
}

/// The kernel in plain Rust, for CPUs without AVX2.
pub fn portable_dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(acts) {
        let mut acc = 0f32;
        let mut extra = 0f32;
        for (b, (wq, aq)) in
            w.q.chunks_exact(block)
                .zip(a.q.chunks_exact(block))
                .enumerate()
        {
            let isum: i32 = wq
                .iter()
                .zip(aq)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            acc += (w.d[b] * a.d[b]) * isum as f32;
            extra += min_term(w, a, b);
        }
        *o = acc + extra;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Horizontal sum of eight floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_tokens(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
        match acts.len() {
            4 => dot_n::<4>(w, acts, block, out),
            3 => dot_n::<3>(w, acts, block, out),
            2 => dot_n::<2>(w, acts, block, out),
            1 => dot_n::<1>(w, acts, block, out),
            _ => {}
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_n<const T: usize>(w: &Unpacked, acts: &[&ActRow], block: usize, out: &mut [f32]) {
        let mut acc = [_mm256_setzero_ps(); T];
        let mut extra = [0f32; T];
        let nb = w.d.len();
        let wq = w.q.as_ptr();
        for b in 0..nb {
            let base = b * block;
            let mut isum = [_mm256_setzero_si256(); T];
            let mut k = 0;
            while k < block {
                let wv = _mm256_loadu_si256(wq.add(base + k).cast());
                let wv2 = _mm256_loadu_si256(wq.add(base + k + 16).cast());
                for t in 0..T {
                    let ap = acts[t].q.as_ptr().add(base + k);
                    let p = _mm256_madd_epi16(wv, _mm256_loadu_si256(ap.cast()));
                    let p2 = _mm256_madd_epi16(wv2, _mm256_loadu_si256(ap.add(16).cast()));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p, p2));
                }
                k += 32;
            }
            for t in 0..T {
                let a = acts[t];
                let scale = _mm256_set1_ps(w.d[b] * a.d[b]);
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum[t]), acc[t]);
                extra[t] += min_term(w, a, b);
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]) + extra[t];
        }
    }
}
