//! Dot products of the 32-element weight blocks (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) with their Q8_0/Q8_1 activation partners.
//!
//! Two versions of each, side by side:
//!
//! * `*_ref` mirror `ggml_vec_dot_*_generic` in ggml-cpu's `quants.c`
//!   statement for statement: exact integer block sums, then
//!   `sumf += sumi · (dx · dy)` (and `+ m · s` for the `_1` types) in
//!   ggml's order and grouping.
//! * [`unpack`] turns a weight row into i16 levels plus per-block
//!   factors for the fast engine (`unpacked_dot.rs`), which forms the same
//!   exact integer block sums with SIMD and accumulates the block terms in
//!   lanes, as ggml's AVX2 kernels do. Only the float summation order
//!   differs from the reference.

use super::activation::{Q8_0_SIZE, Q8_1_SIZE, QK8};
use super::fp16::f16_bits_to_f32;
use super::unpacked_dot::{quad_biases, Unpacked};

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline]
fn qh_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 32 signed levels of one weight block, in element order, and its
/// `d` and `m` (0 for the symmetric types).
fn block_levels(ty: Legacy, b: &[u8], q: &mut [i16]) -> (f32, f32) {
    let half = QK8 / 2;
    match ty {
        Legacy::Q4_0 => {
            for j in 0..half {
                q[j] = i16::from(b[2 + j] & 0x0F) - 8;
                q[j + half] = i16::from(b[2 + j] >> 4) - 8;
            }
            (f16_at(b, 0), 0.0)
        }
        Legacy::Q4_1 => {
            for j in 0..half {
                q[j] = i16::from(b[4 + j] & 0x0F);
                q[j + half] = i16::from(b[4 + j] >> 4);
            }
            (f16_at(b, 0), f16_at(b, 2))
        }
        Legacy::Q5_0 => {
            let qh = qh_at(b, 2);
            for j in 0..half {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = i16::from((b[6 + j] & 0x0F) | h0) - 16;
                q[j + half] = i16::from((b[6 + j] >> 4) | h1) - 16;
            }
            (f16_at(b, 0), 0.0)
        }
        Legacy::Q5_1 => {
            let qh = qh_at(b, 4);
            for j in 0..half {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = i16::from((b[8 + j] & 0x0F) | h0);
                q[j + half] = i16::from((b[8 + j] >> 4) | h1);
            }
            (f16_at(b, 0), f16_at(b, 2))
        }
        Legacy::Q8_0 => {
            for j in 0..QK8 {
                q[j] = i16::from(b[2 + j] as i8);
            }
            (f16_at(b, 0), 0.0)
        }
    }
}

/// The legacy weight types, with their block sizes and partners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// Q4_0 × Q8_0.
    Q4_0,
    /// Q4_1 × Q8_1.
    Q4_1,
    /// Q5_0 × Q8_0.
    Q5_0,
    /// Q5_1 × Q8_1.
    Q5_1,
    /// Q8_0 × Q8_0.
    Q8_0,
}

impl Legacy {
    /// Bytes per weight block.
    pub const fn size(self) -> usize {
        match self {
            Legacy::Q4_0 => 18,
            Legacy::Q4_1 => 20,
            Legacy::Q5_0 => 22,
            Legacy::Q5_1 => 24,
            Legacy::Q8_0 => 34,
        }
    }

    /// True when the partner is Q8_1 (the types with a minimum).
    pub const fn has_min(self) -> bool {
        matches!(self, Legacy::Q4_1 | Legacy::Q5_1)
    }

    /// Bytes per activation block of the partner.
    pub const fn act_size(self) -> usize {
        if self.has_min() {
            Q8_1_SIZE
        } else {
            Q8_0_SIZE
        }
    }
}

/// `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0_generic` and
/// `ggml_vec_dot_{q4_1,q5_1}_q8_1_generic`: weight row `w` (`n` elements)
/// against activation row `a` in the partner's bytes.
pub fn vec_dot_ref(ty: Legacy, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0i16; QK8];
    let qs_at = if ty.has_min() { 4 } else { 2 };
    for ib in 0..n / QK8 {
        let wb = &w[ib * ty.size()..];
        let ab = &a[ib * ty.act_size()..];
        let (dx, mx) = block_levels(ty, wb, &mut q);
        // sumi0 over the low nibbles, sumi1 over the high ones: integer
        // sums, so their split does not change the total.
        let mut sumi = 0i32;
        for (j, &l) in q.iter().enumerate() {
            sumi += i32::from(l) * i32::from(ab[qs_at + j] as i8);
        }
        let dy = f16_at(ab, 0);
        match ty {
            // Q8_0: `sumi*(dx*dy)`; Q4_0 `sumi*dx*dy` (left to right).
            Legacy::Q4_0 => sumf += sumi as f32 * dx * dy,
            Legacy::Q5_0 | Legacy::Q8_0 => sumf += (dx * dy) * sumi as f32,
            Legacy::Q4_1 | Legacy::Q5_1 => {
                sumf += (dx * dy) * sumi as f32 + mx * f16_at(ab, 2);
            }
        }
    }
    sumf
}

/// Weight row `w` (`n` elements) as i16 levels and per-block factors.
pub fn unpack(ty: Legacy, n: usize, w: &[u8], out: &mut Unpacked) {
    out.reset(n, n / QK8);
    for (ib, (wb, q)) in w
        .chunks_exact(ty.size())
        .zip(out.q.chunks_exact_mut(QK8))
        .take(n / QK8)
        .enumerate()
    {
        let (d, m) = block_levels(ty, wb, q);
        out.d[ib] = d;
        out.m[ib] = m;
    }
}

/// Weight row `w` (`n` elements) as i8 levels, each quad's VNNI bias and
/// the per-block factors: the form `dot_rows_vnni` takes (`q` left
/// empty). Q8_0's levels are its bytes.
pub fn unpack_i8(ty: Legacy, n: usize, w: &[u8], out: &mut Unpacked) {
    let nb = n / QK8;
    out.q.clear();
    out.mins.clear();
    out.q8.resize(n, 0);
    out.quad_bias.resize(n / 4, 0);
    out.d.resize(nb, 0.0);
    out.m.resize(nb, 0.0);
    let mut levels = [0i16; QK8];
    for (ib, (wb, q8)) in w
        .chunks_exact(ty.size())
        .zip(out.q8.chunks_exact_mut(QK8))
        .take(nb)
        .enumerate()
    {
        let (d, m) = if ty == Legacy::Q8_0 {
            for (l, &b) in q8.iter_mut().zip(&wb[2..2 + QK8]) {
                *l = b as i8;
            }
            (f16_at(wb, 0), 0.0)
        } else {
            let dm = block_levels(ty, wb, &mut levels);
            for (l, &v) in q8.iter_mut().zip(&levels) {
                // Legacy levels are −16..=15 (Q8_0's −128..=127 above).
                *l = v as i8;
            }
            dm
        };
        out.d[ib] = d;
        out.m[ib] = m;
    }
    quad_biases(&out.q8, &mut out.quad_bias);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;
    use crate::quant::GgmlType;

    /// The unpacked levels times d (plus m) are ggml's dequantized values.
    #[test]
    fn unpacked_levels_dequantize_as_the_block_decoders() {
        let cases = [
            (Legacy::Q4_0, GgmlType::Q4_0),
            (Legacy::Q4_1, GgmlType::Q4_1),
            (Legacy::Q5_0, GgmlType::Q5_0),
            (Legacy::Q5_1, GgmlType::Q5_1),
            (Legacy::Q8_0, GgmlType::Q8_0),
        ];
        let n = 128;
        for (ty, g) in cases {
            let bytes: Vec<u8> = (0..n / QK8 * ty.size())
                .map(|i| (i * 97 + 13) as u8)
                .collect();
            // Keep the f16 scales small and finite.
            let mut bytes = bytes;
            for b in bytes.chunks_exact_mut(ty.size()) {
                b[1] = 0x30;
                if ty.has_min() {
                    b[3] = 0x2c;
                }
            }
            let want = dequantize(g, &bytes, n).expect("decodes");
            let mut u = Unpacked::default();
            unpack(ty, n, &bytes, &mut u);
            for (i, &w) in want.iter().enumerate() {
                let got = f32::from(u.q[i]) * u.d[i / QK8] + u.m[i / QK8];
                assert_eq!(got, w, "{ty:?} element {i}");
            }
            // The VNNI form: the same levels as i8, each quad's bias
            // −128 · Σ levels, the same factors, no i16 levels.
            let mut v = Unpacked::default();
            unpack_i8(ty, n, &bytes, &mut v);
            assert!(v.q.is_empty(), "{ty:?}");
            assert_eq!(
                v.q8,
                u.q.iter().map(|&l| l as i8).collect::<Vec<_>>(),
                "{ty:?}"
            );
            let bias: Vec<i32> =
                u.q.chunks_exact(4)
                    .map(|q| -128 * q.iter().map(|&l| i32::from(l)).sum::<i32>())
                    .collect();
            assert_eq!(v.quad_bias, bias, "{ty:?}");
            assert_eq!((&v.d, &v.m), (&u.d, &u.m), "{ty:?}");
        }
    }
}
