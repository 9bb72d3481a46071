//! The 256-element super-block formats Q2_K … Q6_K and their reference
//! quantizers (`quantize_row_q{2..6}_K_ref` in `ggml-quants.c`), byte for
//! byte. Field offsets follow ggml's structs (`ggml-common.h`).

use super::fp16::{f16_bits_to_f32, f32_to_f16_bits};
use super::lockstep::{from_lanes, make_qkx2_quants_lanes, make_qx_quants_lanes, to_lanes};
use super::search::{make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int, GROUP_MAX_EPS};

/// Elements per super-block.
pub const QK_K: usize = 256;

#[inline]
pub(super) fn put_f16(out: &mut [u8], at: usize, v: f32) -> f32 {
    let h = f32_to_f16_bits(v);
    out[at..at + 2].copy_from_slice(&h.to_le_bytes());
    f16_bits_to_f32(h)
}

#[inline]
pub(super) fn get_f16(b: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Packs 2-bit values as Q2_K/Q3_K do: 4 per byte, strided by 32.
pub(super) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// Q3_K's sixteen 6-bit scales (minus 32) from its 12 packed bytes.
pub(super) fn q3k_scales(sc: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, s) in s.iter_mut().enumerate() {
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        *s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
    }
    s
}

/// The 6-bit scale/min pair of sub-block `j` (`get_scale_min_k4`).
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn set_scale_min_k4(j: usize, ls: u8, lm: u8, scales: &mut [u8]) {
    if j < 4 {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        scales[j - 4] |= (ls >> 4) << 6;
        scales[j] |= (lm >> 4) << 6;
    }
}

/// `block_q2_K { u8 scales[16]; u8 qs[64]; half d; half dmin; }` — 84.
pub struct BlockQ2K;

impl BlockQ2K {
    /// Bytes per block.
    pub const SIZE: usize = 84;

    /// `quantize_row_q2_K_ref` for one super-block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..16 {
            for i in 0..16 {
                weights[i] = x[16 * j + i].abs();
            }
            let (s, m) = make_qkx2_quants(
                16,
                3,
                &x[16 * j..],
                &weights,
                &mut l[16 * j..],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let (sc, rest) = out.split_at_mut(16);
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(rest, 64, max_scale / 15.0);
        } else {
            sc.fill(0);
            put_f16(rest, 64, 0.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                let v = nearest_int(iscale * mins[j]);
                sc[j] |= (v << 4) as u8;
            }
            put_f16(rest, 66, max_min / 15.0);
        } else {
            put_f16(rest, 66, 0.0);
        }
        let d_all = get_f16(rest, 64);
        let dmin_all = get_f16(rest, 66);
        for j in 0..16 {
            let d = d_all * f32::from(sc[j] & 0xF);
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * f32::from(sc[j] >> 4);
            for i in 0..16 {
                let v = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3);
                l[16 * j + i] = v as u8;
            }
        }
        pack_2bit(&l, &mut rest[..64]);
    }

    /// `dequantize_row_q2_K` for one super-block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = get_f16(b, 80);
        let min = get_f16(b, 82);
        let mut is = 0;
        let mut o = 0;
        for n in (0..QK_K).step_by(128) {
            let q = &b[16 + n / 4..];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = b[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0xF);
                    let ml = min * f32::from(sc >> 4);
                    for i in 0..16 {
                        y[o] = dl * f32::from((q[i + 16 * half] >> shift) & 3) - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

/// The end of both Q3_K quantizers: levels requantized with the 6-bit
/// scales actually stored (kept where a scale is zero), the high bits into
/// `hmask`, the low two bits packed into `qs`.
pub(super) fn q3_requantize_and_pack(
    x: &[f32],
    d_all: f32,
    sc: &[u8],
    l: &mut [i8; QK_K],
    hmask: &mut [u8],
    qs: &mut [u8],
) {
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
        let d = d_all * f32::from(s);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let v = nearest_int(x[16 * j + i] / d).clamp(-4, 3);
            l[16 * j + i] = (v + 4) as i8;
        }
    }
    hmask.fill(0);
    let mut lu = [0u8; QK_K];
    let mut m = 0;
    let mut hm = 1u8;
    for j in 0..QK_K {
        let mut v = l[j] as u8;
        if v > 3 {
            hmask[m] |= hm;
            v -= 4;
        }
        lu[j] = v;
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit(&lu, qs);
}

/// `block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d; }` — 110.
pub struct BlockQ3K;

impl BlockQ3K {
    /// Bytes per block.
    pub const SIZE: usize = 110;

    /// `quantize_row_q3_K_ref` for one super-block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(16, 4, &x[16 * j..], &mut l[16 * j..]);
            let s = scales[j].abs();
            if s > amax {
                amax = s;
                max_scale = scales[j];
            }
        }
        let (hmask, rest) = out.split_at_mut(32);
        let (qs, rest) = rest.split_at_mut(64);
        let (sc, dpart) = rest.split_at_mut(12);
        sc.fill(0);
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                // `int8_t l = nearest_int(...)` wraps to 8 bits, then clamps.
                let v = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                let v = v as u8;
                if j < 8 {
                    sc[j] = v & 0xF;
                } else {
                    sc[j - 8] |= (v & 0xF) << 4;
                }
                sc[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
            }
            put_f16(dpart, 0, 1.0 / iscale);
        } else {
            put_f16(dpart, 0, 0.0);
        }
        let d_all = get_f16(dpart, 0);
        q3_requantize_and_pack(x, d_all, sc, &mut l, hmask, qs);
    }

    /// `dequantize_row_q3_K` for one super-block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let hmask = &b[..32];
        let d_all = get_f16(b, 108);
        let sc = &b[96..108];
        let scales = q3k_scales(sc);
        let mut is = 0;
        let mut m = 1u8;
        let mut o = 0;
        for n in (0..QK_K).step_by(128) {
            let q = &b[32 + n / 4..];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * f32::from(scales[is]);
                    is += 1;
                    for i in 0..16 {
                        let k = i + 16 * half;
                        let hi = if hmask[k] & m != 0 { 0 } else { 4 };
                        y[o] = dl * f32::from(((q[k] >> shift) & 3) as i8 - hi);
                        o += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// Shared by Q4_K and Q5_K: per 32-element sub-block scales and mins
/// (`make_qkx2_quants` with av_x + |x| weights), packed 6-bit, then the
/// requantized levels.
fn k_scales_mins(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    out_scales: &mut [u8],
    l: &mut [u8; QK_K],
) -> (f32, f32) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for i in 0..32 {
            weights[i] = av_x + xs[i].abs();
        }
        let (s, m) = make_qkx2_quants(
            32,
            nmax,
            xs,
            &weights,
            &mut l[32 * j..],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    out_scales.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        set_scale_min_k4(j, ls, lm, out_scales);
    }
    (max_scale / 63.0, max_min / 63.0)
}

pub(super) fn k_requantize(
    x: &[f32],
    d_all: f32,
    dmin_all: f32,
    scales: &[u8],
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for i in 0..32 {
            let v = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax);
            l[32 * j + i] = v as u8;
        }
    }
}

/// [`k_scales_mins`] with the eight sub-block searches run in lock step
/// (see `lockstep`): the same scales, mins and levels.
#[inline(always)]
fn k_scales_mins_fast(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    out_scales: &mut [u8],
    l: &mut [u8; QK_K],
) -> (f32, f32) {
    let xt = to_lanes::<32, 8>(x);
    let mut sum_x2 = [0f32; 8];
    for row in &xt {
        for j in 0..8 {
            sum_x2[j] += row[j] * row[j];
        }
    }
    let mut av_x = [0f32; 8];
    for j in 0..8 {
        av_x[j] = (sum_x2[j] / 32.0).sqrt();
    }
    let mut weights = [[0f32; 8]; 32];
    for (w, row) in weights.iter_mut().zip(&xt) {
        for j in 0..8 {
            w[j] = av_x[j] + row[j].abs();
        }
    }
    let mut lt = [[0u8; 8]; 32];
    let (scales, mins) =
        make_qkx2_quants_lanes::<32, 8, false>(&xt, &weights, nmax, rmin, 0.1, nstep, &mut lt);
    from_lanes(&lt, l);
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    out_scales.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        set_scale_min_k4(j, ls, lm, out_scales);
    }
    (max_scale / 63.0, max_min / 63.0)
}

/// [`k_requantize`] over fixed-size sub-blocks, so it vectorizes.
#[inline(always)]
fn k_requantize_fast(
    x: &[f32; QK_K],
    d_all: f32,
    dmin_all: f32,
    scales: &[u8; 12],
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for (j, (lj, xj)) in l.chunks_exact_mut(32).zip(x.chunks_exact(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for (o, &v) in lj.iter_mut().zip(xj) {
            *o = nearest_int((v + dm) / d).max(0).min(nmax) as u8;
        }
    }
}

/// Q4_K's nibble packing: per 64 levels, `l[i] | l[i+32] << 4`.
/// The Q4_K/Q5_K super-block as ggml's reference writes it: scales and
/// mins per sub-block, `d`/`dmin` as f16, the 12 packed scale bytes, then
/// the levels re-derived from the rounded scales and packed by `pack`.
fn k_quantize(
    x: &[f32],
    out: &mut [u8],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    pack: fn(&[u8; QK_K], &mut [u8]),
) {
    let mut l = [0u8; QK_K];
    let (d, dmin) = k_scales_mins(x, nmax, rmin, nstep, &mut out[4..16], &mut l);
    let d = put_f16(out, 0, d);
    let dmin = put_f16(out, 2, dmin);
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&out[4..16]);
    k_requantize(x, d, dmin, &scales, nmax, &mut l);
    pack(&l, &mut out[16..]);
}

/// [`k_quantize`] with lock-step searches: scales and mins
/// found for the 8 sub-blocks at once, `d`/`dmin` as f16, the 12 packed
/// scale bytes, then the levels re-derived from the rounded scales and
/// packed by `pack` (Q4_K: nibbles; Q5_K: nibbles plus high bits).
#[inline(always)]
fn k_quantize_fast<const SIZE: usize>(
    x: &[f32; QK_K],
    out: &mut [u8; SIZE],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    pack: fn(&[u8; QK_K], &mut [u8]),
) {
    let mut l = [0u8; QK_K];
    let mut scales = [0u8; 12];
    let (d, dmin) = k_scales_mins_fast(x, nmax, rmin, nstep, &mut scales, &mut l);
    let d = put_f16(out, 0, d);
    let dmin = put_f16(out, 2, dmin);
    out[4..16].copy_from_slice(&scales);
    k_requantize_fast(x, d, dmin, &scales, nmax, &mut l);
    pack(&l, &mut out[16..]);
}

pub(super) fn pack_q4k(l: &[u8; QK_K], q: &mut [u8]) {
    for (k, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            q[32 * k + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// Q5_K's packing: the fifth bits into `qh`, nibbles into `qs`
/// (`out` = `qh[32] ++ qs[128]`).
pub(super) fn pack_q5k(l: &[u8; QK_K], out: &mut [u8]) {
    let (qh, ql) = out.split_at_mut(32);
    qh.fill(0);
    let mut m1 = 1u8;
    let mut m2 = 2u8;
    for (k, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * k + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// `block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }` — 144.
pub struct BlockQ4K;

impl BlockQ4K {
    /// Bytes per block.
    pub const SIZE: usize = 144;

    /// `quantize_row_q4_K_ref` for one super-block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        k_quantize(x, &mut out[..Self::SIZE], 15, -1.0, 20, pack_q4k);
    }

    /// [`BlockQ4K::quantize`] with the sub-block searches in lock step:
    /// the same bytes, several times faster once vectorized.
    #[inline(always)]
    pub fn quantize_fast(x: &[f32], out: &mut [u8]) {
        match (
            x.first_chunk::<QK_K>(),
            out.first_chunk_mut::<{ BlockQ4K::SIZE }>(),
        ) {
            (Some(x), Some(out)) => k_quantize_fast(x, out, 15, -1.0, 20, pack_q4k),
            _ => Self::quantize(x, out),
        }
    }

    /// `dequantize_row_q4_K` for one super-block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = get_f16(b, 0);
        let min = get_f16(b, 2);
        let scales = &b[4..16];
        let mut o = 0;
        for (k, is) in (0..8).step_by(2).enumerate() {
            let q = &b[16 + 32 * k..];
            let (sc, m) = get_scale_min_k4(is, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let (sc, m) = get_scale_min_k4(is + 1, scales);
            let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
            for i in 0..32 {
                y[o + i] = d1 * f32::from(q[i] & 0xF) - m1;
                y[o + 32 + i] = d2 * f32::from(q[i] >> 4) - m2;
            }
            o += 64;
        }
    }
}

/// `block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }`
/// — 176.
pub struct BlockQ5K;

impl BlockQ5K {
    /// Bytes per block.
    pub const SIZE: usize = 176;

    /// `quantize_row_q5_K_ref` for one super-block.
    pub fn quantize(x: &[f32], out: &mut [u8]) {
        k_quantize(x, &mut out[..Self::SIZE], 31, -0.5, 15, pack_q5k);
    }

    /// [`BlockQ5K::quantize`] with the sub-block searches in lock step:
    /// the same bytes.
    #[inline(always)]
    pub fn quantize_fast(x: &[f32], out: &mut [u8]) {
        match (
            x.first_chunk::<QK_K>(),
            out.first_chunk_mut::<{ BlockQ5K::SIZE }>(),
        ) {
            (Some(x), Some(out)) => k_quantize_fast(x, out, 31, -0.5, 15, pack_q5k),
            _ => Self::quantize(x, out),
        }
    }

    /// `dequantize_row_q5_K` for one super-block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = get_f16(b, 0);
        let min = get_f16(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let mut u1 = 1u8;
        let mut u2 = 2u8;
        let mut o = 0;
        for (k, is) in (0..8).step_by(2).enumerate() {
            let ql = &b[48 + 32 * k..];
            let (sc, m) = get_scale_min_k4(is, scales);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            let (sc, m) = get_scale_min_k4(is + 1, scales);
            let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
            for i in 0..32 {
                let h1 = if qh[i] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[i] & u2 != 0 { 16 } else { 0 };
                y[o + i] = d1 * f32::from((ql[i] & 0xF) + h1) - m1;
                y[o + 32 + i] = d2 * f32::from((ql[i] >> 4) + h2) - m2;
            }
            o += 64;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; }` — 210.
pub struct BlockQ6K;

impl BlockQ6K {
    /// Bytes per block.
    pub const SIZE: usize = 210;

    /// `quantize_row_q6_K_ref` for one super-block (`qw`: the imatrix
    /// variant's raw weights, `None` for the reference).
    pub fn quantize_with(x: &[f32], out: &mut [u8], qw: Option<&[f32]>) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let s = make_qx_quants(
                16,
                32,
                &x[16 * ib..],
                &mut l[16 * ib..],
                qw.map(|q| &q[16 * ib..]),
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out[..Self::SIZE].fill(0);
            return;
        }
        let iscale = -128.0 / max_scale;
        let d_all = put_f16(out, 208, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            out[192 + ib] = sc[ib] as u8;
        }
        for j in 0..16 {
            let d = d_all * f32::from(sc[j]);
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                let v = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
                l[16 * j + i] = (v + 32) as i8;
            }
        }
        let lu: Vec<u8> = l.iter().map(|&v| v as u8).collect();
        let (ql, rest) = out.split_at_mut(128);
        let qh = &mut rest[..64];
        for (k, j) in (0..QK_K).step_by(128).enumerate() {
            for i in 0..32 {
                let q1 = lu[j + i] & 0xF;
                let q2 = lu[j + i + 32] & 0xF;
                let q3 = lu[j + i + 64] & 0xF;
                let q4 = lu[j + i + 96] & 0xF;
                ql[64 * k + i] = q1 | (q3 << 4);
                ql[64 * k + i + 32] = q2 | (q4 << 4);
                qh[32 * k + i] = (lu[j + i] >> 4)
                    | ((lu[j + i + 32] >> 4) << 2)
                    | ((lu[j + i + 64] >> 4) << 4)
                    | ((lu[j + i + 96] >> 4) << 6);
            }
        }
    }

    /// [`BlockQ6K::quantize_with`]`(x, out, None)` with the sixteen
    /// sub-block searches in lock step: the same bytes.
    #[inline(always)]
    pub fn quantize_fast(x: &[f32], out: &mut [u8]) {
        let (Some(x), Some(out)) = (
            x.first_chunk::<QK_K>(),
            out.first_chunk_mut::<{ BlockQ6K::SIZE }>(),
        ) else {
            return Self::quantize_with(x, out, None);
        };
        let xt = to_lanes::<16, 16>(x);
        let mut lt = [[0i8; 16]; 16];
        let scales = make_qx_quants_lanes::<16, 16>(&xt, 32, &mut lt);
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for &s in &scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.fill(0);
            return;
        }
        let iscale = -128.0 / max_scale;
        let d_all = put_f16(out, 208, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            out[192 + ib] = sc[ib] as u8;
        }
        let mut l = [0i8; QK_K];
        from_lanes(&lt, &mut l);
        for (j, (lj, xj)) in l.chunks_exact_mut(16).zip(x.chunks_exact(16)).enumerate() {
            let d = d_all * f32::from(sc[j]);
            if d == 0.0 {
                continue;
            }
            for (o, &v) in lj.iter_mut().zip(xj) {
                *o = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let (ql, qh) = out.split_at_mut(128);
        for k in 0..2 {
            let lk = &l[128 * k..128 * k + 128];
            let qlk = &mut ql[64 * k..64 * k + 64];
            let qhk = &mut qh[32 * k..32 * k + 32];
            for i in 0..32 {
                let (a, b, c, e) = (
                    lk[i] as u8,
                    lk[i + 32] as u8,
                    lk[i + 64] as u8,
                    lk[i + 96] as u8,
                );
                qlk[i] = (a & 0xF) | ((c & 0xF) << 4);
                qlk[i + 32] = (b & 0xF) | ((e & 0xF) << 4);
                qhk[i] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
    }

    /// `dequantize_row_q6_K` for one super-block.
    pub fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = get_f16(b, 208);
        let sc = &b[192..208];
        for (k, n) in (0..QK_K).step_by(128).enumerate() {
            let ql = &b[64 * k..];
            let qh = &b[128 + 32 * k..];
            let s = &sc[8 * k..];
            for i in 0..32 {
                let is = i / 16;
                let q1 = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i8 - 32;
                y[n + i] = d * f32::from(s[is] as i8) * f32::from(q1);
                y[n + i + 32] = d * f32::from(s[is + 2] as i8) * f32::from(q2);
                y[n + i + 64] = d * f32::from(s[is + 4] as i8) * f32::from(q3);
                y[n + i + 96] = d * f32::from(s[is + 6] as i8) * f32::from(q4);
            }
        }
    }
}

/// The lock-step kernels against the reference kernels beside them: the
/// same bytes on thousands of random blocks and on the edge blocks that
/// exercise every branch a lane can take differently from its
/// neighbours. (tests/quant_kernels.rs checks the references, and the
/// dispatched fast kernels, against ggml itself.)
#[cfg(test)]
mod fast_tests {
    use super::*;
    use crate::quant::{quantize, GgmlType};

    type Kernel = fn(&[f32], &mut [u8]);
    const KERNELS: [(GgmlType, Kernel, Kernel); 3] = [
        (GgmlType::Q4K, BlockQ4K::quantize, BlockQ4K::quantize_fast),
        (GgmlType::Q5K, BlockQ5K::quantize, BlockQ5K::quantize_fast),
        (
            GgmlType::Q6K,
            |x, out| BlockQ6K::quantize_with(x, out, None),
            BlockQ6K::quantize_fast,
        ),
    ];

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn normal(&mut self, scale: f32) -> f32 {
            let s: f32 = (0..4).map(|_| self.uniform()).sum();
            (s - 2.0) * scale
        }
    }

    /// Every kernel on `blocks` (whole super-blocks): the fast kernel
    /// called directly, and through `quantize` (the AVX2 build where the
    /// CPU has it), must give the reference's bytes.
    fn check(what: &str, blocks: &[f32]) {
        assert_eq!(blocks.len() % QK_K, 0);
        for (ty, reference, fast) in KERNELS {
            let ts = ty.type_size();
            let mut want = vec![0u8; blocks.len() / QK_K * ts];
            let mut got = vec![0xA5u8; want.len()];
            for ((x, w), g) in blocks
                .chunks_exact(QK_K)
                .zip(want.chunks_exact_mut(ts))
                .zip(got.chunks_exact_mut(ts))
            {
                reference(x, w);
                fast(x, g);
            }
            let dispatched = quantize(ty, blocks, QK_K, None).expect("finite blocks");
            for (how, got) in [("fast", &got), ("dispatched", &dispatched)] {
                if let Some(i) = want.iter().zip(got.iter()).position(|(a, b)| a != b) {
                    panic!(
                        "{ty} {how} {what}: block {} differs at byte {}",
                        i / ts,
                        i % ts
                    );
                }
            }
        }
    }

    #[test]
    fn random_blocks_match_the_reference() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for (scale, n_blocks) in [(0.02f32, 2000), (1.0, 1000), (300.0, 500), (1e-6, 500)] {
            let x: Vec<f32> = (0..n_blocks * QK_K).map(|_| rng.normal(scale)).collect();
            check(&format!("normal({scale})"), &x);
        }
        // Non-negative and non-positive blocks (min clamps to 0, or not).
        let pos: Vec<f32> = (0..500 * QK_K).map(|_| rng.uniform()).collect();
        check("uniform [0, 1)", &pos);
        let neg: Vec<f32> = pos.iter().map(|v| -v).collect();
        check("uniform (-1, 0]", &neg);
        // Heavy tails: an outlier now and then dominates its sub-block.
        let tails: Vec<f32> = (0..1000 * QK_K)
            .map(|_| {
                let v = rng.normal(0.02);
                if rng.next().is_multiple_of(97) {
                    v * 400.0
                } else {
                    v
                }
            })
            .collect();
        check("heavy tails", &tails);
        // Few distinct values: many exact ties between candidate scales.
        let coarse: Vec<f32> = (0..500 * QK_K)
            .map(|_| (rng.next() % 9) as f32 * 0.25 - 1.0)
            .collect();
        check("nine levels", &coarse);
    }

    #[test]
    fn edge_blocks_match_the_reference() {
        let n = QK_K;
        let mut blocks: Vec<(&str, Vec<f32>)> = vec![
            ("zeros", vec![0.0; n]),
            ("constant", vec![0.37; n]),
            ("negative constant", vec![-2.5; n]),
            ("1e30", vec![1e30; n]),
            (
                "huge mixed",
                (0..n)
                    .map(|i| if i % 3 == 0 { 1e30 } else { -3e29 })
                    .collect(),
            ),
            ("tiny", (0..n).map(|i| (i as f32 - 128.0) * 1e-30).collect()),
            ("1e-30", vec![1e-30; n]),
            (
                "subnormal",
                (0..n).map(|i| f32::from_bits(i as u32 + 1)).collect(),
            ),
            (
                "alternating",
                (0..n)
                    .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
            ("ramp", (0..n).map(|i| i as f32 / 17.0).collect()),
            (
                "ties",
                (0..n).map(|i| (i % 16) as f32 * 0.5 - 4.0).collect(),
            ),
        ];
        for at in [0, 1, 77, 255] {
            let mut one = vec![0.0; n];
            one[at] = 3.25;
            blocks.push(("one non-zero", one.clone()));
            one[at] = -3.25;
            blocks.push(("one negative", one));
        }
        // Lanes that diverge: some sub-blocks flat (zero, or a negative
        // constant, whose min stays), tiny or huge, beside ordinary ones.
        let mut rng = Rng(7);
        for pattern in 0..64u32 {
            let x: Vec<f32> = (0..n)
                .map(|i| match (pattern >> (i / 32 % 6)) & 3 {
                    0 => 0.0,
                    1 => -0.75,
                    2 => rng.normal(if i % 16 < 8 { 1e-20 } else { 0.1 }),
                    _ => rng.normal(1e3),
                })
                .collect();
            blocks.push(("mixed sub-blocks", x));
        }
        for (what, x) in &blocks {
            check(what, x);
        }
    }
}
