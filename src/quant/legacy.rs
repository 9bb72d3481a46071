//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, each a
//! block struct with ggml's field names and its reference quantizer
//! (`quantize_row_*_ref` in `ggml-quants.c`), byte for byte.

use super::fp16::{f16_bits_to_f32, f32_to_f16_bits};

/// Elements per block.
pub const QK: usize = 32;

/// The largest |x| and the signed value that has it (first wins), as the
/// symmetric legacy quantizers pick their scale.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `block_q4_0 { ggml_half d; uint8_t qs[16]; }` — 18 bytes.
pub struct BlockQ4_0;
/// `block_q4_1 { ggml_half d, m; uint8_t qs[16]; }` — 20 bytes.
pub struct BlockQ4_1;
/// `block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }` — 22 bytes.
pub struct BlockQ5_0;
/// `block_q5_1 { ggml_half d, m; uint8_t qh[4]; uint8_t qs[16]; }` — 24.
pub struct BlockQ5_1;
/// `block_q8_0 { ggml_half d; int8_t qs[32]; }` — 34 bytes.
pub struct BlockQ8_0;

impl BlockQ4_0 {
    /// Bytes per block.
    pub const SIZE: usize = 18;

    /// `quantize_row_q4_0_ref` for one block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let max = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            // `(int8_t)` truncates toward zero; MIN(15, ·).
            let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
            let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
            out[2 + j] = xi0 | (xi1 << 4);
        }
    }

    /// `dequantize_row_q4_0` for one block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        for j in 0..QK / 2 {
            let q = b[2 + j];
            y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
            y[j + QK / 2] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// Bytes per block.
    pub const SIZE: usize = 20;

    /// `quantize_row_q4_1_ref` for one block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        out[2..4].copy_from_slice(&f32_to_f16_bits(min).to_le_bytes());
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
            let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
            out[4 + j] = xi0 | (xi1 << 4);
        }
    }

    /// `dequantize_row_q4_1` for one block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let m = f16_bits_to_f32(u16::from_le_bytes([b[2], b[3]]));
        for j in 0..QK / 2 {
            let q = b[4 + j];
            y[j] = f32::from(q & 0x0F) * d + m;
            y[j + QK / 2] = f32::from(q >> 4) * d + m;
        }
    }
}

fn pack5(xi0: u8, xi1: u8, j: usize, qh: &mut u32) -> u8 {
    *qh |= u32::from((xi0 & 0x10) >> 4) << j;
    *qh |= u32::from((xi1 & 0x10) >> 4) << (j + QK / 2);
    (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
}

impl BlockQ5_0 {
    /// Bytes per block.
    pub const SIZE: usize = 22;

    /// `quantize_row_q5_0_ref` for one block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let max = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
            let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
            out[6 + j] = pack5(xi0, xi1, j, &mut qh);
        }
        out[2..6].copy_from_slice(&qh.to_le_bytes());
    }

    /// `dequantize_row_q5_0` for one block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[6 + j];
            y[j] = (i32::from((q & 0x0F) | xh0) - 16) as f32 * d;
            y[j + QK / 2] = (i32::from((q >> 4) | xh1) - 16) as f32 * d;
        }
    }
}

impl BlockQ5_1 {
    /// Bytes per block.
    pub const SIZE: usize = 24;

    /// `quantize_row_q5_1_ref` for one block (note: no clamp to 31, as in
    /// ggml).
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        out[2..4].copy_from_slice(&f32_to_f16_bits(min).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            let xi0 = (x0 + 0.5) as u8;
            let xi1 = (x1 + 0.5) as u8;
            out[8 + j] = pack5(xi0, xi1, j, &mut qh);
        }
        out[4..8].copy_from_slice(&qh.to_le_bytes());
    }

    /// `dequantize_row_q5_1` for one block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let m = f16_bits_to_f32(u16::from_le_bytes([b[2], b[3]]));
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[8 + j];
            y[j] = f32::from((q & 0x0F) | xh0) * d + m;
            y[j + QK / 2] = f32::from((q >> 4) | xh1) * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// Bytes per block.
    pub const SIZE: usize = 34;

    /// `quantize_row_q8_0_ref` for one block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let mut amax = 0f32;
        for &v in x {
            amax = amax.max(v.abs());
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for j in 0..QK {
            // roundf: half away from zero, like f32::round.
            out[2 + j] = ((x[j] * id).round() as i8) as u8;
        }
    }

    /// [`BlockQ8_0::quantize`] written to vectorize: the same bytes.
    /// The largest |x| is found eight lanes at a time; `max` is exact and,
    /// on the finite values the caller guarantees, order-independent (|x|
    /// is never -0), so it equals the reference's sequential maximum.
    #[inline(always)]
    pub fn quantize_fast(x: &[f32], out: &mut [u8]) {
        let (Some(x), Some(out)) = (
            x.first_chunk::<QK>(),
            out.first_chunk_mut::<{ BlockQ8_0::SIZE }>(),
        ) else {
            return Self::quantize(x, out);
        };
        let mut lanes = [0f32; 8];
        for c in x.chunks_exact(8) {
            for j in 0..8 {
                lanes[j] = lanes[j].max(c[j].abs());
            }
        }
        let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (dh, qs) = out.split_at_mut(2);
        dh.copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for (q, &v) in qs.iter_mut().zip(x) {
            // The reference's saturating `as i8`, spelled so that it
            // compiles to vector instructions: NaN (0 · ∞ when 1/d
            // overflows) to 0, the rest clamped to i8's range, where the
            // rounded value converts exactly.
            let r = (v * id).round();
            let r = if r.is_nan() {
                0.0
            } else {
                r.clamp(-128.0, 127.0)
            };
            // SAFETY: r is an integer in [-128, 127], so it fits an i32.
            *q = unsafe { r.to_int_unchecked::<i32>() } as i8 as u8;
        }
    }

    /// `dequantize_row_q8_0` for one block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
        for j in 0..QK {
            y[j] = f32::from(b[2 + j] as i8) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize, GgmlType};

    /// The vectorizing Q8_0, called directly and through `quantize` (the
    /// AVX2 build where the CPU has it), against the reference.
    fn check(what: &str, x: &[f32]) {
        let n = x.len() / QK;
        let mut want = vec![0u8; n * BlockQ8_0::SIZE];
        let mut got = vec![0xA5u8; want.len()];
        for ((b, w), g) in x
            .chunks_exact(QK)
            .zip(want.chunks_exact_mut(BlockQ8_0::SIZE))
            .zip(got.chunks_exact_mut(BlockQ8_0::SIZE))
        {
            BlockQ8_0::quantize(b, w);
            BlockQ8_0::quantize_fast(b, g);
        }
        assert!(want == got, "Q8_0 fast {what}");
        let dispatched = quantize(GgmlType::Q8_0, x, QK, None).expect("finite");
        assert!(want == dispatched, "Q8_0 dispatched {what}");
    }

    #[test]
    fn fast_q8_0_matches_the_reference() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for scale in [0.05f32, 1.0, 1e4, 1e-30] {
            let x: Vec<f32> = (0..QK * 4000).map(|_| next() * scale).collect();
            check(&format!("random x{scale}"), &x);
        }
        let edges: Vec<(&str, Vec<f32>)> = vec![
            ("zeros", vec![0.0; QK]),
            ("negative zeros", vec![-0.0; QK]),
            ("constant", vec![0.37; QK]),
            ("1e30", vec![1e30; QK]),
            ("-3e38", vec![-3e38; QK]),
            // d is subnormal and 1/d overflows: the levels saturate.
            (
                "subnormal",
                (0..QK).map(|i| f32::from_bits(i as u32 * 7)).collect(),
            ),
            (
                "one non-zero",
                (0..QK).map(|i| if i == 5 { -2.0 } else { 0.0 }).collect(),
            ),
            (
                "halves",
                (0..QK).map(|i| (i as f32 - 16.0) * 127.0 / 32.0).collect(),
            ),
            (
                "alternating",
                (0..QK)
                    .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
        ];
        for (what, x) in &edges {
            check(what, x);
        }
    }
}
