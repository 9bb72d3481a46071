//! The element-wise and row-wise operations of the graphs, each computed
//! as ggml's CPU backend computes it (`ggml-cpu/ops.cpp`, `vec.h`), on
//! row-major `n_rows × n` activations.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::eval::EvalError;
use crate::quant::{f16_bits_to_f32, f32_to_f16_bits};

/// Rows per parallel task for the cheap row-wise operations.
const ROWS_PER_TASK: usize = 16;

/// `ggml_norm` then `ggml_mul` by `w` and `ggml_add` of `b`: LayerNorm
/// with the mean and variance summed in double (`ggml_vec_sum_f32`,
/// `ggml_vec_cvar_f32`).
pub fn layer_norm(x: &[f32], out: &mut [f32], n: usize, eps: f32, w: &[f32], b: &[f32]) {
    out.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(x.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(o, x)| {
            for (y, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
                let mean = (sum as f32) / n as f32;
                let variance = centred_variance(x, y, mean);
                let scale = 1.0 / (variance + eps).sqrt();
                for ((y, &w), &b) in y.iter_mut().zip(w).zip(b) {
                    *y = *y * scale * w + b;
                }
            }
        });
}

/// `ggml_vec_cvar_f32` (AVX2 + FMA build): `y = x − mean`, and the mean
/// of the squares, summed eight at a time in f32 (the 128-bit horizontal
/// add's order) and those partial sums in double; the tail one by one.
fn centred_variance(x: &[f32], y: &mut [f32], mean: f32) -> f32 {
    let n8 = x.len() / 8 * 8;
    let mut sum = 0f64;
    for (y, x) in y[..n8].chunks_exact_mut(8).zip(x[..n8].chunks_exact(8)) {
        let mut sq = [0f32; 8];
        for ((y, &x), s) in y.iter_mut().zip(x).zip(&mut sq) {
            *y = x - mean;
            *s = *y * *y;
        }
        let h = [sq[0] + sq[4], sq[1] + sq[5], sq[2] + sq[6], sq[3] + sq[7]];
        sum += f64::from((h[0] + h[2]) + (h[1] + h[3]));
    }
    for (y, &x) in y[n8..].iter_mut().zip(&x[n8..]) {
        *y = x - mean;
        sum += f64::from(*y * *y);
    }
    (sum / x.len() as f64) as f32
}

/// `ggml_rms_norm` then `ggml_mul` by `w`, over rows of `n` (which may be
/// single heads, as Qwen3's q/k norms are). The squares are summed in
/// double, as ggml does.
pub fn rms_norm(x: &mut [f32], n: usize, eps: f32, w: &[f32]) {
    x.par_chunks_mut(n * ROWS_PER_TASK).for_each(|rows| {
        for y in rows.chunks_exact_mut(n) {
            let sum: f64 = y.iter().map(|&v| f64::from(v * v)).sum();
            let mean = (sum / n as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for (y, &w) in y.iter_mut().zip(w) {
                *y = *y * scale * w;
            }
        }
    });
}

/// `ggml_add` of a bias broadcast over rows of `b.len()`.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    x.par_chunks_mut(b.len() * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_exact_mut(b.len()) {
            for (y, &b) in row.iter_mut().zip(b) {
                *y += b;
            }
        }
    });
}

/// `x += y` (the residual connections).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| {
            for (x, &y) in x.iter_mut().zip(y) {
                *x += y;
            }
        });
}

/// ggml's `ggml_gelu_f32`: the tanh approximation, in f32, as GCC
/// compiles it with `-mfma` (GNU C contracts `1 + a·x·x` into one fused
/// multiply-add; a separate multiply and add differ in 11 of 204 800 table
/// lookups of one nanoGPT layer).
fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// `ggml_table_gelu_f16`: GELU of every half-precision value, rounded to
/// half precision. ggml's CPU backend (built with `GGML_GELU_FP16`)
/// computes GELU by rounding the input to f16 and looking it up here.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f32_to_f16_bits(gelu_f32(f16_bits_to_f32(h))))
            .collect()
    })
}

/// `ggml_vec_gelu_f32` with `GGML_GELU_FP16`, in place.
pub fn gelu(x: &mut [f32]) {
    let table = gelu_table();
    x.par_chunks_mut(4096).for_each(|x| {
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            // SAFETY: the CPU has AVX2 and F16C (has_f16c).
            return unsafe { gelu_f16c(x, table) };
        }
        x.iter_mut().for_each(|v| *v = gelu_one(*v, table));
    });
}

/// One value of [`gelu`].
#[inline]
fn gelu_one(v: f32, table: &[u16]) -> f32 {
    if v <= -10.0 {
        0.0
    } else if v >= 10.0 {
        v
    } else {
        f16_bits_to_f32(table[usize::from(f32_to_f16_bits(v))])
    }
}

/// [`gelu`] eight values at a time: the conversions to and from half
/// precision with F16C (the instructions `half` itself uses, so the same
/// bits), the table looked up one value at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn gelu_f16c(x: &mut [f32], table: &[u16]) {
    use std::arch::x86_64::*;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = _mm256_loadu_ps(c.as_ptr());
        let mut h = [0u16; 8];
        _mm_storeu_si128(
            h.as_mut_ptr().cast(),
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
        );
        let g = h.map(|h| table[usize::from(h)]);
        let g = _mm256_cvtph_ps(_mm_loadu_si128(g.as_ptr().cast()));
        // v ≥ 10 keeps v, v ≤ −10 gives 0 (NaN is neither: the table's).
        let r = _mm256_blendv_ps(g, v, _mm256_cmp_ps::<_CMP_GE_OQ>(v, hi));
        let r = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(v, lo), r);
        _mm256_storeu_ps(c.as_mut_ptr(), r);
    }
    for v in chunks.into_remainder() {
        *v = gelu_one(*v, table);
    }
}

/// Whether the CPU converts half precision with F16C (and has AVX2).
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx2")
}

/// `ggml_swiglu_split(gate, up)`: `silu(gate) * up`, into `gate`, row by
/// row of `n` as `ggml_vec_swiglu_f32` (AVX2 build) computes it: eight at
/// a time with ggml's vectorized `expf`, the tail with libm's.
pub fn swiglu(gate: &mut [f32], up: &[f32], n: usize) {
    gate.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(up.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(g, u)| {
            for (g, u) in g.chunks_exact_mut(n).zip(u.chunks_exact(n)) {
                let n8 = n / 8 * 8;
                swiglu8(&mut g[..n8], &u[..n8]);
                for (x, &u) in g[n8..].iter_mut().zip(&u[n8..]) {
                    *x = *x / (1.0 + (-*x).exp()) * u;
                }
            }
        });
}

/// `x / (1 + expf(−x)) · u` over whole groups of eight, with ggml's
/// vectorized `expf`: eight lanes at once where the CPU has AVX2 and FMA,
/// else lane by lane (the same bits).
fn swiglu8(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above); both
        // slices hold whole groups of eight.
        unsafe { swiglu8_fma(g, u) };
        return;
    }
    for (x, &u) in g.iter_mut().zip(u) {
        *x = *x / (1.0 + v_expf(0.0 - *x)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu8_fma(g: &mut [f32], u: &[f32]) {
    use std::arch::x86_64::*;
    for (g, u) in g.chunks_exact_mut(8).zip(u.chunks_exact(8)) {
        let x = _mm256_loadu_ps(g.as_ptr());
        let e = v_expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let y = _mm256_mul_ps(
            _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e)),
            _mm256_loadu_ps(u.as_ptr()),
        );
        _mm256_storeu_ps(g.as_mut_ptr(), y);
    }
}

/// ggml's `ggml_v_expf` (the AVX2 variant), one lane: a range reduction
/// and a polynomial, accurate to ~1.5 ulp but not libm's `expf`.
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let r = c(0x4b40_0000);
    let z = x.mul_add(c(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = c(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = c(g.wrapping_add(0x7f00_0000));
    let s2 = c(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// [`v_expf`] on eight lanes (AVX2 + FMA), each lane the scalar
/// version's operations and so its bits: every path is computed and the
/// lanes pick theirs, as ggml's vector code does.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn v_expf8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let r = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_set1_epi32(1f32.to_bits() as i32),
    ));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    // The scalar version's `!(|n| <= 126)` (true for NaN, as there).
    let special = _mm256_cmp_ps::<_CMP_NLE_UQ>(abs_n, _mm256_set1_ps(126.0));
    if _mm256_movemask_ps(special) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let far = _mm256_blendv_ps(
        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
        _mm256_mul_ps(s1, s1),
        huge,
    );
    _mm256_blendv_ps(normal, far, special)
}

/// The value half precision stores for `x` (the F16 KV cache).
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16_bits_to_f32(f32_to_f16_bits(x))
}

/// [`round_f16`] of every value, in place and in parallel (F16C eight at
/// a time where the CPU has it: the same round-to-nearest-even).
pub fn round_f16_all(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(|x| {
        #[cfg(target_arch = "x86_64")]
        if has_f16c() {
            // SAFETY: the CPU has AVX2 and F16C (has_f16c).
            return unsafe { round_f16_f16c(x) };
        }
        x.iter_mut().for_each(|v| *v = round_f16(*v));
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round_f16_f16c(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
    }
    for v in chunks.into_remainder() {
        *v = round_f16(*v);
    }
}

/// `EvalError::NonFinite` naming `tensor` when `x` holds a NaN or an
/// infinity. Each task tests a whole chunk without branching, which
/// vectorizes; an element-wise parallel search cost 4 % of an
/// evaluation.
pub fn check_finite(x: &[f32], tensor: &str) -> Result<(), EvalError> {
    let finite = |c: &[f32]| {
        // All exponent bits set: an infinity or a NaN.
        !c.iter().fold(false, |bad, v| {
            bad | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
        })
    };
    if x.par_chunks(1 << 14).all(finite) {
        Ok(())
    } else {
        Err(EvalError::NonFinite {
            tensor: tensor.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The F16C paths give the scalar paths' bits, tails included, for
    /// ordinary values, both clamps, NaN, infinities and f16's extremes.
    #[test]
    fn vector_half_precision_equals_the_scalar_one() {
        let mut x: Vec<f32> = (0..5003u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 30.0
            })
            .collect();
        x[..8].copy_from_slice(&[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -10.0,
            10.0,
            65520.0,
            1e-8,
            -0.0,
        ]);
        let table = gelu_table();
        let want_gelu: Vec<u32> = x.iter().map(|&v| gelu_one(v, table).to_bits()).collect();
        let want_round: Vec<u32> = x.iter().map(|&v| round_f16(v).to_bits()).collect();
        let mut g = x.clone();
        gelu(&mut g);
        assert_eq!(g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want_gelu);
        let mut r = x.clone();
        round_f16_all(&mut r);
        assert_eq!(
            r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want_round
        );
        #[cfg(target_arch = "x86_64")]
        assert!(
            has_f16c(),
            "the test machines have F16C: the vector paths ran"
        );
    }

    #[test]
    fn check_finite_finds_any_nan_or_infinity() {
        let mut x = vec![1.0f32; 100_000];
        assert!(check_finite(&x, "t").is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            x[77_777] = bad;
            match check_finite(&x, "blk.3.ffn_up.weight") {
                Err(EvalError::NonFinite { tensor }) => assert_eq!(tensor, "blk.3.ffn_up.weight"),
                other => panic!("{bad} not found: {other:?}"),
            }
            x[77_777] = f32::MAX;
        }
        assert!(check_finite(&x, "t").is_ok());
    }

    #[test]
    fn gelu_goes_through_half_precision() {
        let mut x = vec![-11.0, -1.0, 0.0, 0.5, 3.0, 12.0];
        gelu(&mut x);
        assert_eq!(x[0], 0.0);
        assert_eq!(x[2], 0.0);
        assert_eq!(x[5], 12.0);
        // 0.5 is exact in f16; GELU(0.5) = 0.34571 rounds to f16.
        assert_eq!(x[3], round_f16(gelu_f32(0.5)));
        assert!((x[1] + 0.158_808).abs() < 1e-3);
    }

    /// The eight-lane `expf` gives the scalar version's bits everywhere:
    /// ordinary arguments, the far ends (overflow, underflow, −∞) and NaN.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_expf_equals_the_scalar_one() {
        use std::arch::x86_64::*;
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.1).collect();
        xs.extend([
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -87.5,
            88.9,
            -103.9,
            0.0,
            -0.0,
        ]);
        while !xs.len().is_multiple_of(8) {
            xs.push(1.0);
        }
        for c in xs.chunks_exact(8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2 and FMA checked above.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), v_expf8(_mm256_loadu_ps(c.as_ptr()))) };
            for (&x, g) in c.iter().zip(got) {
                let want = v_expf(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "expf({x}): {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = [0.0; 4];
        layer_norm(&x, &mut y, 4, 0.0, &[1.0; 4], &[0.5; 4]);
        let s = 1.0 / 1.25f32.sqrt();
        for (got, want) in y.iter().zip([-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s]) {
            assert!((got - (want + 0.5)).abs() < 1e-6);
        }
    }
}
