//! Dot products of the K-quant weight blocks (Q2_K … Q6_K) with Q8_K
//! activations.
//!
//! Every K-quant super-block is 256 levels in 16 groups of 16, each group
//! with an integer scale (Q4_K/Q5_K share one per two groups), plus for
//! Q2_K/Q4_K/Q5_K an integer minimum per group that multiplies the
//! activation block sums (`bsums`). [`levels`] decodes one super-block to
//! that form; both versions below start from it:
//!
//! * [`vec_dot_ref`] mirrors `ggml_vec_dot_q*_K_q8_K_generic` in
//!   ggml-cpu's `quants.c`: exact integer sums, then ggml's float steps in
//!   ggml's order (the eight-lane `sums[l]` of Q3_K…Q6_K, Q2_K's single
//!   `dall · isum − dmin · summs`).
//! * [`unpack`] folds each group's scale into its levels (|level·scale|
//!   is at most 4096, so i16 holds it and the SIMD pair sums cannot
//!   overflow i32) for the fast engine in `unpacked_dot.rs`, whose integer
//!   super-block sums are therefore exactly the reference's.

use super::activation::{Q8_K_SIZE, QK_K};
use super::kquants::{get_f16, get_scale_min_k4, q3k_scales};
use super::unpacked_dot::Unpacked;

/// The K-quant weight types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuant {
    /// Q2_K, 84 bytes.
    Q2K,
    /// Q3_K, 110 bytes.
    Q3K,
    /// Q4_K, 144 bytes.
    Q4K,
    /// Q5_K, 176 bytes.
    Q5K,
    /// Q6_K, 210 bytes.
    Q6K,
}

impl KQuant {
    /// Bytes per super-block.
    pub const fn size(self) -> usize {
        match self {
            KQuant::Q2K => 84,
            KQuant::Q3K => 110,
            KQuant::Q4K => 144,
            KQuant::Q5K => 176,
            KQuant::Q6K => 210,
        }
    }

    /// Whether the type has per-group minimums (Q2_K, Q4_K, Q5_K), and so
    /// the tiled kernel's minimum step.
    pub const fn has_min(self) -> bool {
        matches!(self, KQuant::Q2K | KQuant::Q4K | KQuant::Q5K)
    }
}

/// One decoded super-block: levels in element order, the integer scale
/// and minimum of each 16-element group, and the block's `d` and `dmin`.
pub struct Levels {
    /// Signed levels (offsets such as Q6_K's −32 applied).
    pub q: [i8; QK_K],
    /// Integer scale per group of 16.
    pub scale: [i16; 16],
    /// Integer minimum per group of 16 (0 for Q3_K/Q6_K).
    pub min: [i16; 16],
    /// Super-block scale.
    pub d: f32,
    /// Super-block minimum scale (0 for Q3_K/Q6_K).
    pub dmin: f32,
}

/// `s` as an array (its length is the array's: the callers slice it so).
#[inline(always)]
fn fixed<const N: usize>(s: &[u8]) -> &[u8; N] {
    s.try_into().expect("a slice of the array's length")
}

/// `s` as a mutable array.
#[inline(always)]
fn fixed_mut<const N: usize>(s: &mut [i8]) -> &mut [i8; N] {
    s.try_into().expect("a slice of the array's length")
}

/// Decodes super-block `b` of type `ty` (fixed-length loops, so that the
/// compiler vectorizes them: this runs once per weight block and product).
pub fn levels(ty: KQuant, b: &[u8]) -> Levels {
    let mut l = Levels {
        q: [0; QK_K],
        scale: [0; 16],
        min: [0; 16],
        d: 0.0,
        dmin: 0.0,
    };
    match ty {
        KQuant::Q2K => {
            let qs: &[u8; 64] = fixed(&b[16..80]);
            for k in 0..2 {
                for s in 0..4 {
                    let q: &mut [i8; 32] = fixed_mut(&mut l.q[128 * k + 32 * s..][..32]);
                    let src: &[u8; 32] = fixed(&qs[32 * k..32 * k + 32]);
                    for (q, &v) in q.iter_mut().zip(src) {
                        *q = ((v >> (2 * s)) & 3) as i8;
                    }
                }
            }
            for (g, &sc) in b[..16].iter().enumerate() {
                l.scale[g] = i16::from(sc & 0xF);
                l.min[g] = i16::from(sc >> 4);
            }
            (l.d, l.dmin) = (get_f16(b, 80), get_f16(b, 82));
        }
        KQuant::Q3K => {
            let hmask: &[u8; 32] = fixed(&b[..32]);
            for k in 0..2 {
                let qs: &[u8; 32] = fixed(&b[32 + 32 * k..64 + 32 * k]);
                for s in 0..4 {
                    let q: &mut [i8; 32] = fixed_mut(&mut l.q[128 * k + 32 * s..][..32]);
                    let bit = 4 * k + s;
                    for ((q, &v), &h) in q.iter_mut().zip(qs).zip(hmask) {
                        let low = ((v >> (2 * s)) & 3) as i8;
                        // 4 is subtracted where the high bit is clear.
                        *q = low - 4 + 4 * ((h >> bit) & 1) as i8;
                    }
                }
            }
            for (s, v) in l.scale.iter_mut().zip(q3k_scales(&b[96..108])) {
                *s = i16::from(v);
            }
            l.d = get_f16(b, 108);
        }
        KQuant::Q4K | KQuant::Q5K => {
            let (qs, qh) = if ty == KQuant::Q4K {
                (&b[16..144], None)
            } else {
                (&b[48..176], Some(&b[16..48]))
            };
            for j in 0..4 {
                let src: &[u8; 32] = fixed(&qs[32 * j..32 * j + 32]);
                let (lo, hi) = l.q[64 * j..64 * j + 64].split_at_mut(32);
                let (lo, hi): (&mut [i8; 32], &mut [i8; 32]) = (fixed_mut(lo), fixed_mut(hi));
                for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(src) {
                    *l = (v & 0xF) as i8;
                    *h = (v >> 4) as i8;
                }
                if let Some(qh) = qh {
                    let qh: &[u8; 32] = fixed(qh);
                    for ((l, h), &m) in lo.iter_mut().zip(hi.iter_mut()).zip(qh) {
                        *l += 16 * ((m >> (2 * j)) & 1) as i8;
                        *h += 16 * ((m >> (2 * j + 1)) & 1) as i8;
                    }
                }
            }
            for g in 0..16 {
                let (sc, m) = get_scale_min_k4(g / 2, &b[4..16]);
                l.scale[g] = i16::from(sc);
                l.min[g] = i16::from(m);
            }
            (l.d, l.dmin) = (get_f16(b, 0), get_f16(b, 2));
        }
        KQuant::Q6K => {
            for k in 0..2 {
                let qh: &[u8; 32] = fixed(&b[128 + 32 * k..160 + 32 * k]);
                for s in 0..4 {
                    let ql: &[u8; 32] = fixed(&b[64 * k + 32 * (s % 2)..][..32]);
                    let shift = 4 * (s / 2);
                    let q: &mut [i8; 32] = fixed_mut(&mut l.q[128 * k + 32 * s..][..32]);
                    for ((q, &lo), &h) in q.iter_mut().zip(ql).zip(qh) {
                        let low = (lo >> shift) & 0xF;
                        let high = (h >> (2 * s)) & 3;
                        *q = (low | (high << 4)) as i8 - 32;
                    }
                }
            }
            for g in 0..16 {
                l.scale[g] = i16::from(b[192 + g] as i8);
            }
            l.d = get_f16(b, 208);
        }
    }
    l
}

/// The parts of one Q8_K activation block.
#[inline]
pub(super) fn q8k_parts(a: &[u8]) -> (f32, &[u8], [i16; 16]) {
    let d = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
    let mut bsums = [0i16; 16];
    for (s, b) in bsums.iter_mut().zip(a[4 + QK_K..Q8_K_SIZE].chunks_exact(2)) {
        *s = i16::from_le_bytes([b[0], b[1]]);
    }
    (d, &a[4..4 + QK_K], bsums)
}

/// `ggml_vec_dot_q*_K_q8_K_generic`: weight row `w` (`n` elements)
/// against Q8_K activation row `a`.
pub fn vec_dot_ref(ty: KQuant, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut sums = [0f32; 8];
    for i in 0..n / QK_K {
        let l = levels(ty, &w[i * ty.size()..]);
        let (yd, q8, bsums) = q8k_parts(&a[i * Q8_K_SIZE..]);
        // Lane k sums the elements e ≡ k (mod 8), as aux32[k] does.
        let mut aux32 = [0i32; 8];
        for e in 0..QK_K {
            let prod = i32::from(q8[e] as i8) * i32::from(l.q[e]);
            aux32[e % 8] += i32::from(l.scale[e / 16]) * prod;
        }
        let summs: i32 = (0..16)
            .map(|g| i32::from(bsums[g]) * i32::from(l.min[g]))
            .sum();
        match ty {
            KQuant::Q2K => {
                let isum: i32 = aux32.iter().sum();
                let dall = yd * l.d;
                let dmin = yd * l.dmin;
                sumf += dall * isum as f32 - dmin * summs as f32;
            }
            _ => {
                let d = l.d * yd;
                for (s, &v) in sums.iter_mut().zip(&aux32) {
                    *s += d * v as f32;
                }
                if matches!(ty, KQuant::Q4K | KQuant::Q5K) {
                    let dmin = l.dmin * yd;
                    sumf -= dmin * summs as f32;
                }
            }
        }
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Weight row `w` (`n` elements) as scaled i16 levels and per-super-block
/// factors for the fast engine.
pub fn unpack(ty: KQuant, n: usize, w: &[u8], out: &mut Unpacked) {
    out.reset(n, n / QK_K);
    for (i, (wb, q)) in w
        .chunks_exact(ty.size())
        .zip(out.q.chunks_exact_mut(QK_K))
        .take(n / QK_K)
        .enumerate()
    {
        let l = levels(ty, wb);
        for (e, q) in q.iter_mut().enumerate() {
            *q = i16::from(l.q[e]) * l.scale[e / 16];
        }
        out.d[i] = l.d;
        out.m[i] = l.dmin;
        out.mins[16 * i..16 * i + 16].copy_from_slice(&l.min);
    }
    if !ty.has_min() {
        // No minimums: the kernels then take no minimum step, as ggml's
        // tiled kernel has none for these types.
        out.mins.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, GgmlType};

    /// The decoded levels reproduce the block decoders' values, so the
    /// layout each dot product assumes is the one ggml writes.
    #[test]
    fn levels_dequantize_as_the_block_decoders() {
        let cases = [
            (KQuant::Q2K, GgmlType::Q2K),
            (KQuant::Q3K, GgmlType::Q3K),
            (KQuant::Q4K, GgmlType::Q4K),
            (KQuant::Q5K, GgmlType::Q5K),
            (KQuant::Q6K, GgmlType::Q6K),
        ];
        for (ty, g) in cases {
            let mut b: Vec<u8> = (0..ty.size()).map(|i| (i * 131 + 7) as u8).collect();
            // Small finite f16 scales wherever this type keeps them.
            let f16_at: &[usize] = match ty {
                KQuant::Q2K => &[80, 82],
                KQuant::Q3K => &[108],
                KQuant::Q4K | KQuant::Q5K => &[0, 2],
                KQuant::Q6K => &[208],
            };
            for &at in f16_at {
                b[at] = 0x55;
                b[at + 1] = 0x2c;
            }
            let want = dequantize(g, &b, QK_K).expect("decodes");
            let l = levels(ty, &b);
            for (e, &w) in want.iter().enumerate() {
                let dl = l.d * f32::from(l.scale[e / 16]);
                let ml = l.dmin * f32::from(l.min[e / 16]);
                let got = dl * f32::from(l.q[e]) - ml;
                assert_eq!(got, w, "{ty:?} element {e}");
            }
        }
    }
}
