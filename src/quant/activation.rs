//! The activation blocks of ggml-cpu's quantized dot products: Q8_0,
//! Q8_1 and Q8_K, each as ggml-cpu's `from_float` computes it on x86.
//!
//! Before a matrix product with quantized weights, ggml-cpu quantizes each
//! activation row to the weight type's partner (`vec_dot_type`). The bytes
//! must be exactly ggml's, because every later integer sum depends on
//! them, and on x86 they are *not* the `quantize_row_q8_*_ref` bytes:
//!
//! * Q8_0 and Q8_1 (`arch/x86/quants.c`, the `__AVX2__ || __AVX__`
//!   branch, which the pinned llama.cpp build compiles with
//!   `-mavx2 -mfma -mf16c`) scale by `id = 127 / amax` rather than the
//!   reference's `1 / d`, and round with `_mm256_round_ps(…, NEAREST)`
//!   (ties to even) rather than `roundf` (ties away). Q8_1's `s` is
//!   `fp16(d · Σq)` over the rounded integers, where the reference sums
//!   `x·id` in float.
//! * Q8_K's `quantize_row_q8_K` calls `quantize_row_q8_K_ref` on every
//!   target.
//!
//! Out-of-range inputs follow the instructions too: when `127 / amax`
//! overflows (a block whose largest |x| is subnormal), `cvtps_epi32` turns
//! the infinite and NaN products into `INT_MIN`, which the saturating packs
//! make −128, and Q8_1's sum wraps as the 32-bit adds do. These functions
//! are the one version both the reference and the fast path use; only
//! Q8_0/Q8_1's rounding and the Q8_K block have AVX2 twins (tested equal
//! to the scalar ones), because their scalar max-and-round chains cost
//! 3 % of a Q8_0 and 2.5 % of a Q4_K_M evaluation.

use super::fp16::f32_to_f16_bits;
use super::search::nearest_int;

/// Elements per Q8_0/Q8_1 block.
pub const QK8: usize = 32;
/// Elements per Q8_K block.
pub const QK_K: usize = 256;

/// `block_q8_0 { ggml_half d; int8_t qs[32]; }` — 34 bytes.
pub const Q8_0_SIZE: usize = 34;
/// `block_q8_1 { ggml_half d; ggml_half s; int8_t qs[32]; }` — 36 bytes.
pub const Q8_1_SIZE: usize = 36;
/// `block_q8_K { float d; int8_t qs[256]; int16_t bsums[16]; }` — 292.
pub const Q8_K_SIZE: usize = 292;

/// The largest |x| of a block, as the AVX `max_ps` reduction finds it.
pub(super) fn abs_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// `_mm256_cvtps_epi32` on an already rounded value: `INT_MIN` for
/// anything out of range or NaN.
pub(super) fn cvtps_epi32(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// The rounded 32-bit integers of one Q8_0/Q8_1 block and its `d`.
fn round_block(x: &[f32]) -> (f32, [i32; QK8]) {
    #[cfg(target_arch = "x86_64")]
    {
        let x: &[f32; QK8] = x.try_into().expect("a block of 32 activations");
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { round_block_avx2(x) };
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has SSE4.1 (checked just above).
            return unsafe { round_block_sse41(x) };
        }
    }
    round_block_any(x)
}

/// [`round_block_any`] eight lanes at a time, as ggml's AVX2 code runs
/// it. The largest |x| is the same whichever order finds it: `max_ps(a,
/// m)` keeps `m` where `a` is NaN, as the scalar fold skips NaNs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_block_avx2(x: &[f32; QK8]) -> (f32, [i32; QK8]) {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for v in v {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let max = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let d = max / 127.0;
    let id = _mm256_set1_ps(if max != 0.0 { 127.0 / max } else { 0.0 });
    let mut q = [0i32; QK8];
    for (i, v) in v.into_iter().enumerate() {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, id),
        );
        // Out of range or NaN gives INT_MIN, as `cvtps_epi32` says.
        _mm256_storeu_si256(q.as_mut_ptr().add(8 * i).cast(), _mm256_cvtps_epi32(r));
    }
    (d, q)
}

/// [`round_block_any`] with `roundss` for the rounding instead of a libm
/// `rintf` call (the same ties-to-even result).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn round_block_sse41(x: &[f32]) -> (f32, [i32; QK8]) {
    round_block_any(x)
}

#[inline(always)]
fn round_block_any(x: &[f32]) -> (f32, [i32; QK8]) {
    let max = abs_max(x);
    let d = max / 127.0;
    let id = if max != 0.0 { 127.0 / max } else { 0.0 };
    let mut q = [0i32; QK8];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = cvtps_epi32((v * id).round_ties_even());
    }
    (d, q)
}

/// `packs_epi32` then `packs_epi16`: saturate to i8.
pub(super) fn saturate_i8(v: i32) -> u8 {
    v.clamp(-128, 127) as i8 as u8
}

/// ggml-cpu's `quantize_row_q8_0` (AVX2) for one block.
pub fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    let (d, q) = round_block(x);
    out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
    for (o, &v) in out[2..2 + QK8].iter_mut().zip(&q) {
        *o = saturate_i8(v);
    }
}

/// ggml-cpu's `quantize_row_q8_1` (AVX2) for one block.
pub fn quantize_q8_1_block(x: &[f32], out: &mut [u8]) {
    let (d, q) = round_block(x);
    // hsum_i32_8 over 32-bit lanes: wrapping, as the vector adds are.
    let sum = q.iter().fold(0i32, |s, &v| s.wrapping_add(v));
    out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
    out[2..4].copy_from_slice(&f32_to_f16_bits(d * sum as f32).to_le_bytes());
    for (o, &v) in out[4..4 + QK8].iter_mut().zip(&q) {
        *o = saturate_i8(v);
    }
}

/// `quantize_row_q8_K_ref` for one block.
pub fn quantize_q8_k_block(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        if let (Ok(x), Some(Ok(out))) = (
            x.try_into(),
            out.get_mut(..Q8_K_SIZE).map(TryInto::try_into),
        ) {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { quantize_q8_k_block_avx2(x, out) };
            return;
        }
    }
    quantize_q8_k_block_scalar(x, out);
}

/// [`quantize_q8_k_block`] element by element.
fn quantize_q8_k_block_scalar(x: &[f32], out: &mut [u8]) {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out[..Q8_K_SIZE].fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let qs = &mut out[4..4 + QK_K];
    for (q, &v) in qs.iter_mut().zip(x) {
        // `y.qs[j] = MIN(127, v)` stores an int into an int8_t: the low
        // byte, as `as i8` keeps it.
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    let mut bsums = [0i16; QK_K / 16];
    for (s, chunk) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
        *s = chunk.iter().map(|&q| i32::from(q as i8)).sum::<i32>() as i16;
    }
    out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (o, s) in out[4 + QK_K..Q8_K_SIZE].chunks_exact_mut(2).zip(bsums) {
        o.copy_from_slice(&s.to_le_bytes());
    }
}

/// [`abs_max`] of a Q8_K block eight lanes at a time: each lane keeps
/// its largest |x| by the scalar `>` (NaN never wins), then the lanes are
/// folded the same way, so the same value.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn abs_max_avx2(x: &[f32; QK_K]) -> f32 {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr()));
        m = _mm256_blendv_ps(m, a, _mm256_cmp_ps::<_CMP_GT_OQ>(a, m));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    abs_max(&lanes)
}

/// [`quantize_q8_k_block_scalar`] eight values at a time (it was 2.5 %
/// of a Q4_K_M evaluation): the largest |x| with NaN ignored, the
/// signed value where it first occurs, `nearest_int`'s add-and-mask
/// rounding after an unfused multiply, `MIN(127, ·)` and the low byte,
/// so the same bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_q8_k_block_avx2(x: &[f32; QK_K], out: &mut [u8; Q8_K_SIZE]) {
    use std::arch::x86_64::*;
    let amax = abs_max_avx2(x);
    let Some(&max) = x.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
        out.fill(0);
        return;
    };
    let iscale = -127.0 / max;
    let mul = _mm256_set1_ps(iscale);
    let magic = _mm256_set1_ps(12_582_912.0);
    let (mantissa, half) = (
        _mm256_set1_epi32(0x007f_ffff),
        _mm256_set1_epi32(0x0040_0000),
    );
    let (top, low_byte) = (_mm256_set1_epi32(127), _mm256_set1_epi32(0xff));
    let byte = |v: &[f32]| {
        let val = _mm256_add_ps(_mm256_mul_ps(mul, _mm256_loadu_ps(v.as_ptr())), magic);
        let i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(val), mantissa), half);
        _mm256_and_si256(_mm256_min_epi32(i, top), low_byte)
    };
    // packus interleaves 128-bit lanes; the permutation puts the 32 bytes
    // back in element order (every value is 0..=255, so nothing saturates).
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let qs = &mut out[4..4 + QK_K];
    for (v, o) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)) {
        let ab = _mm256_packus_epi32(byte(&v[..8]), byte(&v[8..16]));
        let cd = _mm256_packus_epi32(byte(&v[16..24]), byte(&v[24..]));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        _mm256_storeu_si256(o.as_mut_ptr().cast(), bytes);
    }
    let mut bsums = [0i16; QK_K / 16];
    for (s, chunk) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
        *s = chunk.iter().map(|&q| i32::from(q as i8)).sum::<i32>() as i16;
    }
    out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (o, s) in out[4 + QK_K..].chunks_exact_mut(2).zip(bsums) {
        o.copy_from_slice(&s.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::f16_bits_to_f32;

    /// The AVX2 Q8_K block writes the scalar block's bytes: ordinary
    /// values, ties, the largest |x| negative or positive or repeated
    /// with both signs, NaN, infinities, zeros, a subnormal maximum.
    #[test]
    fn q8_k_vector_block_equals_the_scalar_one() {
        let base: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 7919) % 1013) as f32 / 37.0 - 13.0)
            .collect();
        let mut cases = vec![base.clone(), vec![0.0; QK_K], vec![-0.0; QK_K]];
        cases.push((0..QK_K).map(|i| (i as f32 - 128.0) * 0.5).collect());
        cases.push((0..QK_K).map(|i| (i as f32 - 100.0) * 1e-40).collect());
        for edits in [
            &[(5, 40.0)][..],
            &[(9, -40.0)],
            &[(9, -40.0), (3, 40.0)],
            &[(3, 40.0), (9, -40.0)],
            &[(17, f32::NAN)],
            &[(31, f32::INFINITY)],
            &[(200, f32::NEG_INFINITY)],
        ] {
            let mut c = base.clone();
            for &(at, v) in edits {
                c[at] = v;
            }
            cases.push(c);
        }
        for (i, x) in cases.iter().enumerate() {
            let (mut fast, mut slow) = ([0u8; Q8_K_SIZE], [1u8; Q8_K_SIZE]);
            quantize_q8_k_block(x, &mut fast);
            quantize_q8_k_block_scalar(x, &mut slow);
            assert_eq!(fast, slow, "case {i}");
        }
        #[cfg(target_arch = "x86_64")]
        assert!(
            std::arch::is_x86_feature_detected!("avx2"),
            "the test machines have AVX2: the vector block ran"
        );
    }

    #[test]
    fn q8_0_rounds_ties_to_even_with_127_over_amax() {
        // amax 127 makes id exactly 1: 2.5 → 2 (even), not roundf's 3.
        let mut x = [0f32; QK8];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let mut out = [0u8; Q8_0_SIZE];
        quantize_q8_0_block(&x, &mut out);
        assert_eq!(f16_bits_to_f32(u16::from_le_bytes([out[0], out[1]])), 1.0);
        assert_eq!(out[2..5], [127, 2, (-4i8) as u8]);
    }

    /// The AVX2 rounding gives the scalar one's `d` and integers, also for
    /// NaN, infinite, subnormal and all-zero blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_rounding_equals_the_scalar_rounding() {
        assert!(
            std::arch::is_x86_feature_detected!("avx2"),
            "the test machines have AVX2"
        );
        let mut blocks: Vec<[f32; QK8]> = (0..200u32)
            .map(|b| {
                std::array::from_fn(|i| {
                    let h = ((b * 32 + i as u32) ^ 0x9e37).wrapping_mul(2_654_435_761);
                    (h >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
                })
            })
            .collect();
        blocks[0] = [0.0; QK8];
        blocks[1][5] = f32::NAN;
        blocks[2][31] = f32::INFINITY;
        blocks[3] = [1e-40; QK8];
        blocks[3][7] = -3e-40;
        blocks[4][0] = -0.0;
        blocks[5] = [f32::NAN; QK8];
        for (i, x) in blocks.iter().enumerate() {
            // SAFETY: the CPU has AVX2 (asserted above).
            let (d, q) = unsafe { round_block_avx2(x) };
            let (want_d, want_q) = round_block_any(x);
            assert_eq!(d.to_bits(), want_d.to_bits(), "block {i}: d");
            assert_eq!(q, want_q, "block {i}");
        }
    }

    #[test]
    fn q8_1_sum_is_d_times_integer_sum() {
        let x: Vec<f32> = (0..QK8).map(|i| i as f32 - 10.0).collect();
        let mut out = [0u8; Q8_1_SIZE];
        quantize_q8_1_block(&x, &mut out);
        let d = f16_bits_to_f32(u16::from_le_bytes([out[0], out[1]]));
        let s = f16_bits_to_f32(u16::from_le_bytes([out[2], out[3]]));
        let q: i32 = out[4..].iter().map(|&b| i32::from(b as i8)).sum();
        let want = f16_bits_to_f32(f32_to_f16_bits((21.0f32 / 127.0) * q as f32));
        assert!(d > 0.0);
        assert_eq!(s, want);
    }

    #[test]
    fn q8_k_block_sums_are_the_quant_sums() {
        let x: Vec<f32> = (0..QK_K).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let mut out = [0u8; Q8_K_SIZE];
        quantize_q8_k_block(&x, &mut out);
        for j in 0..16 {
            let want: i32 = out[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&b| i32::from(b as i8))
                .sum();
            let at = 4 + QK_K + 2 * j;
            assert_eq!(i32::from(i16::from_le_bytes([out[at], out[at + 1]])), want);
        }
        let mut zero = [1u8; Q8_K_SIZE];
        quantize_q8_k_block(&[0.0; QK_K], &mut zero);
        assert!(zero.iter().all(|&b| b == 0));
    }
}
