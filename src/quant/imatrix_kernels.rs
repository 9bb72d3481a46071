//! Quantization with an importance matrix: ggml's `quantize_row_*_impl`
//! with `quant_weights` (one importance per column, shared by all rows).
//! Each works on one whole row, because the legacy types weigh by the
//! row's mean square (`sigma2`).

use super::kquants::{
    k_requantize, pack_2bit, pack_q4k, pack_q5k, put_f16, q3_requantize_and_pack, BlockQ6K, QK_K,
};
use super::search::{make_qkx3_quants, make_qp_quants, make_qx_quants, nearest_int};
use super::GgmlType;

/// True when ggml's quantizer for `ty` uses an importance matrix (Q8_0 and
/// the float types ignore it).
pub fn uses_imatrix(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Quantizes one row `x` of `ty` into `out` with importances `qw`.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8], qw: &[f32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            legacy_row(ty, x, out, qw)
        }
        GgmlType::Q2K => {
            for (i, (xb, ob)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(84))
                .enumerate()
            {
                q2_k(xb, ob, &qw[QK_K * i..]);
            }
        }
        GgmlType::Q3K => {
            for (i, (xb, ob)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(110))
                .enumerate()
            {
                q3_k(xb, ob, &qw[QK_K * i..]);
            }
        }
        GgmlType::Q4K => {
            for (i, (xb, ob)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(144))
                .enumerate()
            {
                q45_k(xb, ob, &qw[QK_K * i..], 15);
            }
        }
        GgmlType::Q5K => {
            for (i, (xb, ob)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(176))
                .enumerate()
            {
                q45_k(xb, ob, &qw[QK_K * i..], 31);
            }
        }
        GgmlType::Q6K => {
            for (i, (xb, ob)) in x
                .chunks_exact(QK_K)
                .zip(out.chunks_exact_mut(210))
                .enumerate()
            {
                BlockQ6K::quantize_with(xb, ob, Some(&qw[QK_K * i..]));
            }
        }
        _ => {}
    }
}

/// `quantize_row_q4_0_impl` … `quantize_row_q5_1_impl`.
fn legacy_row(ty: GgmlType, x: &[f32], out: &mut [u8], qw: &[f32]) {
    let sigma2 = sum_sq(x) / x.len() as f32;
    let ts = ty.type_size();
    let mut weight = [0f32; 32];
    for (ib, (xb, y)) in x.chunks_exact(32).zip(out.chunks_exact_mut(ts)).enumerate() {
        let q = &qw[32 * ib..32 * ib + 32];
        for j in 0..32 {
            weight[j] = q[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let nmax = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                let mut l = [0i8; 32];
                let d = make_qx_quants(32, nmax, xb, &mut l, Some(&weight));
                put_f16(y, 0, d);
                let lu = l.map(|v| v as u8);
                if ty == GgmlType::Q4_0 {
                    for j in 0..16 {
                        y[2 + j] = lu[j] | (lu[j + 16] << 4);
                    }
                } else {
                    let (qh, qs) = y[2..22].split_at_mut(4);
                    pack5(&lu, qh, qs);
                }
            }
            _ => {
                let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
                let mut l = [0u8; 32];
                let mut laux = [0u8; 32];
                let (d, the_min) = make_qkx3_quants(
                    32,
                    nmax,
                    xb,
                    Some(&weight),
                    &mut l,
                    &mut laux,
                    -0.9,
                    0.05,
                    36,
                );
                put_f16(y, 0, d);
                put_f16(y, 2, -the_min);
                if ty == GgmlType::Q4_1 {
                    for j in 0..16 {
                        y[4 + j] = l[j] | (l[j + 16] << 4);
                    }
                } else {
                    let (qh, qs) = y[4..24].split_at_mut(4);
                    pack5(&l, qh, qs);
                }
            }
        }
    }
}

fn pack5(l: &[u8; 32], qh_out: &mut [u8], qs: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (l[j], l[j + 16]);
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= u32::from((a & 0x10) >> 4) << j;
        qh |= u32::from((b & 0x10) >> 4) << (j + 16);
    }
    qh_out.copy_from_slice(&qh.to_le_bytes());
}

/// `quantize_row_q2_K_impl` for one super-block.
fn q2_k(x: &[f32], out: &mut [u8], qw: &[f32]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weight = [0f32; 16];
    let sigma2 = sum_sq(x) / QK_K as f32;
    for j in 0..16 {
        for i in 0..16 {
            weight[i] = qw[16 * j + i] * (sigma2 + x[16 * j + i] * x[16 * j + i]).sqrt();
        }
        for w in &weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx3_quants(
            16,
            3,
            &x[16 * j..],
            Some(&weight),
            &mut l[16 * j..],
            &mut laux,
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(16, 15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(16, 15, &mins, &mut lm, &sw);
    let dm = put_f16(out, 80, dm);
    let mm = put_f16(out, 82, mm);
    for j in 0..16 {
        out[j] = ls[j] | (lm[j] << 4);
    }
    for j in 0..16 {
        let d = dm * f32::from(out[j] & 0xF);
        if d == 0.0 {
            continue;
        }
        let m = mm * f32::from(out[j] >> 4);
        for i in 0..16 {
            l[16 * j + i] = nearest_int((x[16 * j + i] + m) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut out[16..80]);
}

/// `quantize_row_q3_K_impl` for one super-block.
fn q3_k(x: &[f32], out: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut weight = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..16 {
        for i in 0..16 {
            weight[i] = qw[16 * j + i] * (sigma2 + x[16 * j + i] * x[16 * j + i]).sqrt();
        }
        let mut sumw = 0f32;
        for w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(16, 4, &x[16 * j..], &mut l[16 * j..], Some(&weight));
    }
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dpart) = rest.split_at_mut(12);
    sc.fill(0);
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(16, 32, &scales, &mut ls, Some(&sw));
    for j in 0..16 {
        let v = ls[j] as u8;
        if j < 8 {
            sc[j] = v & 0xF;
        } else {
            sc[j - 8] |= (v & 0xF) << 4;
        }
        sc[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
    }
    let d_all = put_f16(dpart, 0, d_block);
    q3_requantize_and_pack(x, d_all, sc, &mut l, hmask, qs);
}

/// `quantize_row_q4_K_impl` (nmax 15) and `quantize_row_q5_K_impl` (31).
fn q45_k(x: &[f32], out: &mut [u8], qw: &[f32], nmax: i32) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut sw = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..8 {
        for i in 0..32 {
            weights[i] = qw[32 * j + i] * (sigma2 + x[32 * j + i] * x[32 * j + i]).sqrt();
        }
        let mut sumw = 0f32;
        for w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(
            32,
            nmax,
            &x[32 * j..],
            Some(&weights),
            &mut l[32 * j..],
            &mut laux,
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(8, 63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(8, 63, &mins, &mut lm, &sw);
    let sc = &mut out[4..16];
    sc.fill(0);
    for j in 0..8 {
        let (s, m) = if nmax == 31 {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        if j < 4 {
            sc[j] = s;
            sc[j + 4] = m;
        } else {
            sc[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            sc[j - 4] |= (s >> 4) << 6;
            sc[j] |= (m >> 4) << 6;
        }
    }
    let d_all = put_f16(out, 0, d_block);
    let dmin_all = put_f16(out, 2, m_block);
    let mut scales_b = [0u8; 12];
    scales_b.copy_from_slice(&out[4..16]);
    k_requantize(x, d_all, dmin_all, &scales_b, nmax, &mut l);
    if nmax == 15 {
        pack_q4k(&l, &mut out[16..144]);
    } else {
        pack_q5k(&l, &mut out[16..176]);
    }
}
