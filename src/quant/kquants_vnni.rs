//! The K-quant product (Q2_K … Q6_K weights, Q8_K activations) on CPUs
//! with AVX-512 VNNI: sixteen tokens side by side in each register.
//!
//! It computes what `unpacked_dot.rs`'s super-block kernel computes, bit
//! for bit: per super-block the exact integer sums
//! `s1 = Σ_g scale_g · Σ_{i∈g} q_i·a_i` and `s2 = Σ_g min_g · bsum_g`,
//! then ggml-cpu's tiled-kernel float steps `r = d·s1`, `r −= dmin·s2`
//! (one FMA, only for the types with minimums) and `acc = r·da + acc`.
//! Only the way the integers are formed differs, and integer sums are
//! exact in any order:
//!
//! * the weight levels are kept as bytes, biased to be non-negative
//!   (`q + bias`, bias 4 for Q3_K and 32 for Q6_K, 0 otherwise), and the
//!   activations are interleaved so that one 64-byte load holds the same
//!   four elements of sixteen tokens;
//! * one `vpdpbusd` multiplies four levels of one row (broadcast) with
//!   those four elements of the sixteen tokens, so each group of 16
//!   elements takes four instructions per row for sixteen tokens;
//! * each group's raw sum, less `bias · bsum` (the bias times the
//!   activations' sum over the group, which Q8_K carries), is multiplied by
//!   the group's scale and added to `s1`.
//!
//! This is the layout of ggml-cpu's own VNNI micro-kernel for the tiled
//! K-quant product (tokens in the lanes, each weight row's four bytes
//! broadcast). Rows are taken eight at a time (a band), each task decodes
//! its rows once and sweeps every group of sixteen tokens past them.

use rayon::prelude::*;

use super::activation::{Q8_K_SIZE, QK_K};
use super::dot::quantize_activation_row;
use super::kquants_dot::{levels, KQuant};
use super::row_blocks::{par_row_blocks, RowBlock};
use super::unpacked_dot::has_vnni;
use super::GgmlType;

/// Tokens per register: the lanes of a 512-bit register of i32 sums.
const LANES: usize = 16;
/// Weight rows per kernel call: 8 raw sums, 8 `s1` and 8 float
/// accumulators stay in registers.
const BAND: usize = 8;
/// Weight rows per parallel task (a multiple of [`BAND`]): their bytes
/// (≤ 96 KiB for rows of 3072) stay in L2 while the tokens stream past.
const ROWS_PER_TASK: usize = 32;
/// Groups of 16 elements per super-block.
const GROUPS: usize = QK_K / 16;
/// The fewest tokens for which this kernel is worth its interleaving
/// (ggml-cpu's tiled kernel starts at the same count).
const MIN_TOKENS: usize = 8;

/// Whether this CPU runs the kernel and a product of `n_tokens` tokens
/// takes it.
pub(super) fn applies(n_tokens: usize) -> bool {
    n_tokens >= MIN_TOKENS && has_vnni()
}

/// The bias that makes a type's levels non-negative bytes.
fn bias(k: KQuant) -> i32 {
    match k {
        KQuant::Q3K => 4,
        KQuant::Q6K => 32,
        KQuant::Q2K | KQuant::Q4K | KQuant::Q5K => 0,
    }
}

/// `out[t·n_out + r] = W[r] · x[t]` for K-quant weights `w` (`n_out` rows
/// of `n_in` elements, `n_in` a multiple of 256 — the caller checked the
/// sizes) and f32 activations `x`, quantized to Q8_K here. Call only where
/// [`applies`] is true.
pub(super) fn matmul(k: KQuant, w: &[u8], n_out: usize, n_in: usize, x: &[f32], out: &mut [f32]) {
    let n_tokens = x.len() / n_in;
    let groups: Vec<TokenGroup> = (0..n_tokens.div_ceil(LANES))
        .into_par_iter()
        .map(|g| {
            let end = ((g + 1) * LANES).min(n_tokens);
            TokenGroup::quantize(&x[g * LANES * n_in..end * n_in], n_in)
        })
        .collect();
    let row_bytes = n_in / QK_K * k.size();
    par_row_blocks(out, n_out, ROWS_PER_TASK)
        .zip(w.par_chunks(ROWS_PER_TASK * row_bytes))
        .for_each_init(Rows::default, |rows, (mut o, wb)| {
            rows.decode(k, wb, n_in);
            for (g, group) in groups.iter().enumerate() {
                for r0 in (0..rows.n_rows).step_by(BAND) {
                    let mut res = [[0f32; LANES]; BAND];
                    // SAFETY: `applies` found AVX-512F/BW/VNNI, AVX2 and FMA
                    // (the only caller's condition); `rows` holds whole
                    // bands and `group` whole lanes of `n_in` elements.
                    unsafe { avx512::band(rows, r0, group, bias(k), k.has_min(), &mut res) };
                    store(&res, r0, g * LANES, &mut o);
                }
            }
        });
}

/// A band's results into the task's rows, leaving out padding rows and
/// tokens.
fn store(res: &[[f32; LANES]; BAND], r0: usize, t0: usize, o: &mut RowBlock) {
    for (i, line) in res.iter().enumerate() {
        if r0 + i >= o.n_rows() {
            break;
        }
        for (j, &v) in line.iter().enumerate() {
            if t0 + j < o.n_tokens() {
                o.set(r0 + i, t0 + j, v);
            }
        }
    }
}

/// Up to sixteen tokens' Q8_K activations, interleaved (lanes past the
/// last token are zeros).
struct TokenGroup {
    /// `[super-block][quad][lane][4]`: element `4·quad..4·quad+4` of the
    /// super-block for each lane, 64 bytes per quad.
    q: Vec<i8>,
    /// `[super-block][group][lane]`: Q8_K's `bsums`.
    bsums: Vec<i32>,
    /// `[super-block][lane]`: Q8_K's `d`.
    d: Vec<f32>,
}

impl TokenGroup {
    /// `x` holds up to [`LANES`] tokens of `n_in` f32 values.
    fn quantize(x: &[f32], n_in: usize) -> TokenGroup {
        let nb = n_in / QK_K;
        let mut g = TokenGroup {
            q: vec![0; nb * QK_K * LANES],
            bsums: vec![0; nb * GROUPS * LANES],
            d: vec![0.0; nb * LANES],
        };
        let mut bytes = vec![0u8; nb * Q8_K_SIZE];
        for (lane, row) in x.chunks_exact(n_in).enumerate() {
            quantize_activation_row(GgmlType::Q8K, row, &mut bytes);
            for (b, blk) in bytes.chunks_exact(Q8_K_SIZE).enumerate() {
                g.d[b * LANES + lane] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                for (quad, qs) in blk[4..4 + QK_K].chunks_exact(4).enumerate() {
                    let at = ((b * QK_K / 4 + quad) * LANES + lane) * 4;
                    for (dst, &v) in g.q[at..at + 4].iter_mut().zip(qs) {
                        *dst = v as i8;
                    }
                }
                for (grp, s) in blk[4 + QK_K..].chunks_exact(2).enumerate() {
                    g.bsums[(b * GROUPS + grp) * LANES + lane] =
                        i32::from(i16::from_le_bytes([s[0], s[1]]));
                }
            }
        }
        g
    }
}

/// One task's weight rows, decoded once, padded with zero rows to whole
/// bands.
#[derive(Default)]
struct Rows {
    /// Rows (padding included).
    n_rows: usize,
    /// Elements per row.
    n: usize,
    /// `[row][element]`: level plus the type's bias.
    q: Vec<u8>,
    /// `[row][super-block][group]`: the group's integer scale.
    scale: Vec<i32>,
    /// `[row][super-block][group]`: the group's integer minimum.
    min: Vec<i32>,
    /// `[row][super-block]`: `d`.
    d: Vec<f32>,
    /// `[row][super-block]`: `dmin`.
    dmin: Vec<f32>,
}

impl Rows {
    fn decode(&mut self, k: KQuant, w: &[u8], n: usize) {
        let nb = n / QK_K;
        let row_bytes = nb * k.size();
        let real = w.len() / row_bytes;
        self.n_rows = real.next_multiple_of(BAND);
        self.n = n;
        let bias = bias(k);
        for v in [&mut self.scale, &mut self.min] {
            v.clear();
            v.resize(self.n_rows * nb * GROUPS, 0);
        }
        self.q.clear();
        self.q.resize(self.n_rows * n, 0);
        for v in [&mut self.d, &mut self.dmin] {
            v.clear();
            v.resize(self.n_rows * nb, 0.0);
        }
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            for (b, blk) in row.chunks_exact(k.size()).enumerate() {
                let l = levels(k, blk);
                let at = r * n + b * QK_K;
                for (dst, &v) in self.q[at..at + QK_K].iter_mut().zip(&l.q) {
                    // Levels plus the bias are 0..=63 for every type.
                    *dst = (i32::from(v) + bias) as u8;
                }
                let g0 = (r * nb + b) * GROUPS;
                for g in 0..GROUPS {
                    self.scale[g0 + g] = i32::from(l.scale[g]);
                    self.min[g0 + g] = i32::from(l.min[g]);
                }
                self.d[r * nb + b] = l.d;
                self.dmin[r * nb + b] = l.dmin;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Rows, TokenGroup, BAND, GROUPS, LANES};
    use crate::quant::activation::QK_K;
    use std::arch::x86_64::*;

    /// Rows `r0..r0 + BAND` of `rows` against the sixteen tokens of `g`:
    /// `res[i][lane]`.
    ///
    /// # Safety
    /// AVX-512F/BW/VNNI and FMA; `rows` has `r0 + BAND` rows and `g` the
    /// same number of super-blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn band(
        rows: &Rows,
        r0: usize,
        g: &TokenGroup,
        bias: i32,
        has_min: bool,
        res: &mut [[f32; LANES]; BAND],
    ) {
        let n = rows.n;
        let nb = n / QK_K;
        debug_assert!(rows.q.len() >= (r0 + BAND) * n && g.d.len() == nb * LANES);
        let wq: [*const u8; BAND] = std::array::from_fn(|i| rows.q.as_ptr().add((r0 + i) * n));
        let mut acc = [_mm512_setzero_ps(); BAND];
        for b in 0..nb {
            let mut s1 = [_mm512_setzero_si512(); BAND];
            for grp in 0..GROUPS {
                let bsum =
                    _mm512_loadu_si512(g.bsums.as_ptr().add((b * GROUPS + grp) * LANES).cast());
                let mut raw = [_mm512_setzero_si512(); BAND];
                for quad in 0..4 {
                    let at = b * QK_K + grp * 16 + quad * 4;
                    let codes = _mm512_loadu_si512(g.q.as_ptr().add(at * LANES).cast());
                    for (i, s) in raw.iter_mut().enumerate() {
                        let four = wq[i].add(at).cast::<i32>().read_unaligned();
                        *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(four), codes);
                    }
                }
                // Σ (q + bias)·a − bias·Σ a = Σ q·a, exactly.
                let unbias = _mm512_mullo_epi32(bsum, _mm512_set1_epi32(bias));
                for (i, (s, &r)) in s1.iter_mut().zip(&raw).enumerate() {
                    let scale = *rows.scale.get_unchecked(((r0 + i) * nb + b) * GROUPS + grp);
                    let exact = _mm512_sub_epi32(r, unbias);
                    *s = _mm512_add_epi32(*s, _mm512_mullo_epi32(exact, _mm512_set1_epi32(scale)));
                }
            }
            let da = _mm512_loadu_ps(g.d.as_ptr().add(b * LANES));
            for (i, (a, &s)) in acc.iter_mut().zip(&s1).enumerate() {
                let rb = (r0 + i) * nb + b;
                let mut r = _mm512_mul_ps(
                    _mm512_set1_ps(*rows.d.get_unchecked(rb)),
                    _mm512_cvtepi32_ps(s),
                );
                if has_min {
                    let mut s2 = _mm512_setzero_si512();
                    for grp in 0..GROUPS {
                        let bsum = _mm512_loadu_si512(
                            g.bsums.as_ptr().add((b * GROUPS + grp) * LANES).cast(),
                        );
                        let min = _mm512_set1_epi32(*rows.min.get_unchecked(rb * GROUPS + grp));
                        s2 = _mm512_add_epi32(s2, _mm512_mullo_epi32(bsum, min));
                    }
                    let dmin = _mm512_set1_ps(*rows.dmin.get_unchecked(rb));
                    r = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(s2), r);
                }
                *a = _mm512_fmadd_ps(r, da, *a);
            }
        }
        for (line, a) in res.iter_mut().zip(&acc) {
            _mm512_storeu_ps(line.as_mut_ptr(), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dot;

    /// Bytes of `n_out` rows of type `k` with random levels and small
    /// finite scales.
    fn weights(k: KQuant, n_out: usize, n_in: usize) -> Vec<u8> {
        let f16_at: &[usize] = match k {
            KQuant::Q2K => &[80, 82],
            KQuant::Q3K => &[108],
            KQuant::Q4K | KQuant::Q5K => &[0, 2],
            KQuant::Q6K => &[208],
        };
        let mut w = Vec::new();
        for b in 0..n_out * n_in / QK_K {
            let mut blk: Vec<u8> = (0..k.size())
                .map(|i| ((b * 131 + i * 7919 + 17) % 251) as u8)
                .collect();
            for &at in f16_at {
                blk[at] = (b % 97) as u8;
                blk[at + 1] = 0x1c + (b % 5) as u8;
            }
            w.extend(blk);
        }
        w
    }

    /// The VNNI kernel gives the tiled kernel's bits (`dot::matmul`'s
    /// K-quant path without it) for every K-quant, for row counts that
    /// do and do not fill bands and tasks and token counts that do and do
    /// not fill the lanes.
    #[test]
    fn equals_the_tiled_kernel_bit_for_bit() {
        if !has_vnni() {
            // Nothing to compare: the product must then take the tiled
            // kernel for any batch.
            assert!(!applies(1 << 20));
            eprintln!("this CPU has no AVX-512 VNNI: the kernel was not run");
            return;
        }
        let ks = [
            (KQuant::Q2K, GgmlType::Q2K),
            (KQuant::Q3K, GgmlType::Q3K),
            (KQuant::Q4K, GgmlType::Q4K),
            (KQuant::Q5K, GgmlType::Q5K),
            (KQuant::Q6K, GgmlType::Q6K),
        ];
        for (k, ty) in ks {
            for (n_out, n_in, n_tokens) in [(8, 256, 16), (13, 512, 9), (45, 768, 37)] {
                let w = weights(k, n_out, n_in);
                let x: Vec<f32> = (0..n_in * n_tokens)
                    .map(|i| ((i * 104_729) % 997) as f32 * 1e-2 - 5.0)
                    .collect();
                let mut want = vec![0f32; n_out * n_tokens];
                dot::matmul_tiled_without_vnni(ty, &w, n_in, &x, &mut want);
                let mut got = vec![f32::NAN; n_out * n_tokens];
                matmul(k, &w, n_out, n_in, &x, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(w.is_finite() && *w != 0.0, "{ty} at {i}: {w}");
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{ty} {n_out}x{n_in}x{n_tokens} at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
