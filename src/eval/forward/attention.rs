//! Causal self-attention as llama.cpp computes it on the CPU with its
//! default context: K and V stored in the F16 KV cache, then
//! `ggml_flash_attn_ext` (flash attention is on by default, `auto`, and
//! the CPU supports it).
//!
//! ggml's CPU kernel has two paths, picked by the number of queries in
//! the micro-batch (`ggml_compute_forward_flash_attn_ext_f16`):
//!
//! * 64 or more (`GGML_FA_TILE_Q`): the tiled path. Q stays f32, the
//!   f16 K and V are widened to f32, scores, softmax and the weighted sum
//!   of V are f32.
//! * fewer: the one-row path. Q is rounded to f16 for the K·Q dot
//!   (`ggml_vec_dot_f16`, f32 sum), the softmax runs online, and the
//!   weighted sum of V is accumulated *in f16* (`ggml_vec_mad_f16`,
//!   rescaled with `ggml_vec_scale_f16`), each step rounded.
//!
//! Both are mirrored here, so short sequences agree as well as long ones.
//! Query head `h` reads KV head `h / (n_head / n_head_kv)` (GQA).

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::ops::v_expf8;
use super::ops::{round_f16, round_f16_all, v_expf};

/// `GGML_FA_TILE_Q`: from this many queries on, ggml takes the tiled path.
const TILE_Q: usize = 64;
/// `GGML_FA_TILE_KV`: keys per tile of the tiled path.
const TILE_KV: usize = 64;

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Query/key head size.
    pub head_dim_k: usize,
    /// Value head size.
    pub head_dim_v: usize,
}

impl AttnShape {
    /// The heads of `hp`.
    pub fn of(hp: &super::hparams::HParams) -> AttnShape {
        AttnShape {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim_k: hp.head_dim_k,
            head_dim_v: hp.head_dim_v,
        }
    }
}

/// Attention of `n_tokens` queries over the same positions, causal.
/// `q` is `n_tokens × n_head·dk`, `k` `n_tokens × n_head_kv·dk`, `v`
/// `n_tokens × n_head_kv·dv`, `out` `n_tokens × n_head·dv`. `k` and `v`
/// are rounded to f16 in place (they are the KV cache).
pub(crate) fn attention(
    s: AttnShape,
    q: &[f32],
    k: &mut [f32],
    v: &mut [f32],
    out: &mut [f32],
    n_tokens: usize,
) {
    round_f16_all(k);
    round_f16_all(v);
    let scale = 1.0 / (s.head_dim_k as f32).sqrt();
    let tiled = n_tokens >= TILE_Q;
    let (k, v) = (&*k, &*v);
    let fma = has_fma();
    let kv_of = |h: usize| h / (s.n_head / s.n_head_kv);
    if tiled {
        let kt = transpose_keys(s, k, n_tokens);
        let vh = values_by_head(s, v, n_tokens);
        let head = |h: usize| Head {
            s,
            k,
            kt: &kt[kv_of(h) * kt_head_len(s, n_tokens)..][..kt_head_len(s, n_tokens)],
            v: ValueRows {
                v: &vh,
                first: kv_of(h) * n_tokens * s.head_dim_v,
                stride: s.head_dim_v,
            },
            kv: kv_of(h),
            scale,
        };
        tiled_blocks(s, q, out, n_tokens, fma, &head);
        return;
    }
    let head = |h: usize| Head {
        s,
        k,
        kt: &[],
        v: ValueRows {
            v,
            first: kv_of(h) * s.head_dim_v,
            stride: s.n_head_kv * s.head_dim_v,
        },
        kv: kv_of(h),
        scale,
    };
    out.par_chunks_mut(s.n_head * s.head_dim_v)
        .enumerate()
        .for_each_init(
            || Scratch::new(n_tokens, s.head_dim_k, s.head_dim_v),
            |scratch, (i, out_row)| {
                for h in 0..s.n_head {
                    let qh = &q[(i * s.n_head + h) * s.head_dim_k..][..s.head_dim_k];
                    let oh = &mut out_row[h * s.head_dim_v..][..s.head_dim_v];
                    head(h).run_one_row(fma, qh, i, oh, scratch);
                }
            },
        );
}

/// The tiled path for every head, a block of [`TILE_Q`] queries at a time
/// per task: each key tile is scored against all the block's queries in
/// turn while it is in L1 (one query at a time would stream every head's
/// keys from L2 per query). Each query still meets the tiles in order
/// with exactly [`Head::tile_step`]'s operations, so the bits are ggml's.
/// Results are head-major, then transposed.
fn tiled_blocks<'a>(
    s: AttnShape,
    q: &[f32],
    out: &mut [f32],
    n_tokens: usize,
    fma: bool,
    head: &(dyn Fn(usize) -> Head<'a> + Sync),
) {
    let dv = s.head_dim_v;
    let mut by_head = vec![0f32; s.n_head * n_tokens * dv];
    by_head
        .par_chunks_mut(n_tokens * dv)
        .enumerate()
        .flat_map(|(h, rows)| {
            rows.par_chunks_mut(TILE_Q * dv)
                .enumerate()
                .map(move |(b, o)| (h, b, o))
        })
        .for_each_init(
            || Scratch::new(n_tokens, s.head_dim_k, dv),
            |scratch, (h, b, o)| {
                let i0 = b * TILE_Q;
                let n = o.len() / dv;
                let qs: Vec<&[f32]> = (i0..i0 + n)
                    .map(|i| &q[(i * s.n_head + h) * s.head_dim_k..][..s.head_dim_k])
                    .collect();
                head(h).run_block(fma, &qs, i0, o, scratch);
            },
        );
    for (i, row) in out.chunks_exact_mut(s.n_head * dv).enumerate() {
        for (h, o) in row.chunks_exact_mut(dv).enumerate() {
            o.copy_from_slice(&by_head[(h * n_tokens + i) * dv..][..dv]);
        }
    }
}

/// Floats of one KV head's transposed keys: whole tiles, so a tile's
/// scores never read past the last position.
fn kt_head_len(s: AttnShape, n_tokens: usize) -> usize {
    n_tokens.div_ceil(TILE_KV) * s.head_dim_k * TILE_KV
}

/// The keys as `[kv head][tile][dim][TILE_KV positions]` (zero past the
/// last position), so the tiled path scores eight keys with one vector per
/// dimension. Each tile is contiguous (16 KiB for 64 dimensions): with
/// rows of all positions, a tile's rows were a power of two apart and
/// fell into a few L1 sets, and the tile left L1 between queries.
fn transpose_keys(s: AttnShape, k: &[f32], n_tokens: usize) -> Vec<f32> {
    let dk = s.head_dim_k;
    let mut kt = vec![0f32; s.n_head_kv * kt_head_len(s, n_tokens)];
    kt.par_chunks_mut(kt_head_len(s, n_tokens))
        .enumerate()
        .for_each(|(kv, head)| {
            for (t, tile) in head.chunks_exact_mut(dk * TILE_KV).enumerate() {
                for jj in 0..TILE_KV.min(n_tokens - t * TILE_KV) {
                    let j = t * TILE_KV + jj;
                    let key = &k[(j * s.n_head_kv + kv) * dk..][..dk];
                    for (d, &x) in key.iter().enumerate() {
                        tile[d * TILE_KV + jj] = x;
                    }
                }
            }
        });
    kt
}

/// The values as `[kv head][position][dim]`, so a tile's value rows are
/// contiguous (see [`transpose_keys`]).
fn values_by_head(s: AttnShape, v: &[f32], n_tokens: usize) -> Vec<f32> {
    let dv = s.head_dim_v;
    let mut vh = vec![0f32; s.n_head_kv * n_tokens * dv];
    vh.par_chunks_mut(n_tokens * dv)
        .enumerate()
        .for_each(|(kv, head)| {
            for (j, row) in head.chunks_exact_mut(dv).enumerate() {
                row.copy_from_slice(&v[(j * s.n_head_kv + kv) * dv..][..dv]);
            }
        });
    vh
}

/// Where a head's value rows are: row `j` is `v[first + j · stride..]`.
#[derive(Clone, Copy)]
struct ValueRows<'a> {
    v: &'a [f32],
    first: usize,
    stride: usize,
}

/// True when the CPU runs fused multiply-adds as instructions; without
/// them `f32::mul_add` is a libm call per element.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A query's online-softmax state between tiles: the running maximum and
/// sum.
#[derive(Debug, Clone, Copy)]
struct Running {
    m: f32,
    sum: f32,
}

impl Running {
    fn new() -> Running {
        Running {
            m: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }

    /// `out /= sum` as ggml scales by the reciprocal.
    fn finish(&self, out: &mut [f32]) {
        let inv = if self.sum == 0.0 { 0.0 } else { 1.0 / self.sum };
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

struct Scratch {
    scores: Vec<f32>,
    q16: Vec<f32>,
    acc: Vec<f32>,
}

impl Scratch {
    fn new(n_tokens: usize, dk: usize, dv: usize) -> Scratch {
        Scratch {
            scores: vec![0.0; n_tokens.max(TILE_KV)],
            q16: vec![0.0; dk],
            acc: vec![0.0; dv],
        }
    }
}

/// One query head against its KV head.
struct Head<'a> {
    s: AttnShape,
    k: &'a [f32],
    /// This head's keys transposed (`transpose_keys`), for the tiled path.
    kt: &'a [f32],
    v: ValueRows<'a>,
    kv: usize,
    scale: f32,
}

impl Head<'_> {
    /// One query through the one-row path (fewer than [`TILE_Q`]
    /// queries), compiled with FMA and AVX2 when `fma` (the same
    /// operations either way: a fused multiply-add rounds once,
    /// instruction or libm).
    fn run_one_row(&self, fma: bool, q: &[f32], i: usize, out: &mut [f32], sc: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the caller checked the CPU has AVX2 and FMA.
            unsafe { self.one_row_fma(q, i, out, sc) };
            return;
        }
        let _ = fma;
        self.one_row(q, i, out, sc);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn one_row_fma(&self, q: &[f32], i: usize, out: &mut [f32], sc: &mut Scratch) {
        self.one_row(q, i, out, sc);
    }

    #[inline(always)]
    fn key(&self, j: usize) -> &[f32] {
        let dk = self.s.head_dim_k;
        &self.k[(j * self.s.n_head_kv + self.kv) * dk..][..dk]
    }

    #[inline(always)]
    fn value(&self, j: usize) -> &[f32] {
        &self.v.v[self.v.first + j * self.v.stride..][..self.s.head_dim_v]
    }

    /// The tiled path (`ggml_compute_forward_flash_attn_ext_tiled`) for the
    /// queries `i0..i0 + qs.len()` (`out` holds their rows): key tiles of
    /// [`TILE_KV`] from position 0 ([`Head::tile_step`]), each query in turn
    /// per tile, so each query meets its tiles in ggml's order; then the
    /// sum's reciprocal.
    fn run_block(&self, fma: bool, qs: &[&[f32]], i0: usize, out: &mut [f32], sc: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the caller checked the CPU has AVX2 and FMA.
            unsafe { self.run_block_fma(qs, i0, out, sc) };
            return;
        }
        let _ = fma;
        self.block_any(qs, i0, out, sc);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_block_fma(&self, qs: &[&[f32]], i0: usize, out: &mut [f32], sc: &mut Scratch) {
        self.block_any(qs, i0, out, sc);
    }

    #[inline(always)]
    fn block_any(&self, qs: &[&[f32]], i0: usize, out: &mut [f32], sc: &mut Scratch) {
        let dv = self.s.head_dim_v;
        out.fill(0.0);
        let mut states = vec![Running::new(); qs.len()];
        let last = i0 + qs.len() - 1;
        for ic in (0..=last).step_by(TILE_KV) {
            for (r, (q, o)) in qs.iter().zip(out.chunks_exact_mut(dv)).enumerate() {
                let i = i0 + r;
                if ic <= i {
                    self.tile_step(q, i, ic, &mut states[r], o, sc);
                }
            }
        }
        for (st, o) in states.iter().zip(out.chunks_exact_mut(dv)) {
            st.finish(o);
        }
    }

    /// One key tile for query `i`: scores as sequential f32 multiply-adds
    /// (`simd_gemm`), scaled, an online softmax with ggml's vectorized
    /// `expf` (`ggml_vec_soft_max_f32`), and V accumulated by sequential
    /// multiply-adds.
    #[inline(always)]
    fn tile_step(
        &self,
        q: &[f32],
        i: usize,
        ic: usize,
        st: &mut Running,
        out: &mut [f32],
        sc: &mut Scratch,
    ) {
        let n = (i + 1 - ic).min(TILE_KV);
        let scores = &mut sc.scores[..TILE_KV];
        self.tile_scores(q, ic, scores);
        scores[n..].fill(f32::NEG_INFINITY);
        let tile_max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let m_new = st.m.max(tile_max);
        if m_new > st.m {
            let ms = (st.m - m_new).exp();
            out.iter_mut().for_each(|o| *o *= ms);
            st.sum *= ms;
        }
        st.m = m_new;
        st.sum = (f64::from(st.sum) + soft_max(scores, st.m)) as f32;
        self.add_values(&scores[..n], ic, out);
    }

    /// `scores[jj] = (Σ_d k[ic+jj][d]·q[d]) · scale` for a tile of keys,
    /// each a sequential f32 multiply-add chain from 0 over `d` (as
    /// `simd_gemm`), eight keys side by side.
    #[inline(always)]
    fn tile_scores(&self, q: &[f32], ic: usize, scores: &mut [f32]) {
        let dk = self.s.head_dim_k;
        let tile = &self.kt[ic * dk..][..dk * TILE_KV];
        let mut acc = [0f32; TILE_KV];
        for (d, &qd) in q.iter().enumerate() {
            let keys = &tile[d * TILE_KV..][..TILE_KV];
            for (a, &k) in acc.iter_mut().zip(keys) {
                *a = k.mul_add(qd, *a);
            }
        }
        for (s, a) in scores.iter_mut().zip(acc) {
            *s = a * self.scale;
        }
    }

    /// `out[d] += p[jj] · v[ic+jj][d]` for the tile's keys in order, a
    /// sequential multiply-add chain per `d`, kept in registers a slice of
    /// 64 dimensions at a time.
    #[inline(always)]
    fn add_values(&self, p: &[f32], ic: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if out.len().is_multiple_of(64) && has_fma() {
            // SAFETY: the CPU has AVX2 and FMA (has_fma); every value row
            // `ic + jj` of the tile exists and holds out.len() values.
            unsafe { self.add_values_fma(p, ic, out) };
            return;
        }
        const SLICE: usize = 64;
        for (c, o) in out.chunks_mut(SLICE).enumerate() {
            let mut acc = [0f32; SLICE];
            acc[..o.len()].copy_from_slice(o);
            for (jj, &p) in p.iter().enumerate() {
                let v = &self.value(ic + jj)[c * SLICE..][..o.len()];
                for (a, &v) in acc.iter_mut().zip(v) {
                    *a = v.mul_add(p, *a);
                }
            }
            o.copy_from_slice(&acc[..o.len()]);
        }
    }

    /// [`Head::add_values`] with the 64 sums of a slice held in eight
    /// registers (the portable loop keeps them on the stack): the same
    /// multiply-add chain per dimension, in the same order.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_values_fma(&self, p: &[f32], ic: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        for (c, o) in out.chunks_exact_mut(64).enumerate() {
            let op = o.as_mut_ptr();
            let mut acc: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(op.add(8 * l)));
            for (jj, &pj) in p.iter().enumerate() {
                let v = self.value(ic + jj)[c * 64..][..64].as_ptr();
                let pv = _mm256_set1_ps(pj);
                for (l, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(v.add(8 * l)), pv, *a);
                }
            }
            for (l, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(op.add(8 * l), *a);
            }
        }
    }

    /// The one-row path, step for step: Q in f16, the V accumulator in
    /// f16, the running maximum and sum in f32.
    #[inline(always)]
    fn one_row(&self, q: &[f32], i: usize, out: &mut [f32], sc: &mut Scratch) {
        for (d, &x) in sc.q16.iter_mut().zip(q) {
            *d = round_f16(x);
        }
        let acc = &mut sc.acc;
        acc.fill(0.0);
        let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
        for j in 0..=i {
            let s = dot_f16(&sc.q16, self.key(j)) * self.scale;
            let (mut ms, mut vs) = (1f32, 1f32);
            if s > m {
                ms = (m - s).exp();
                m = s;
                acc.iter_mut().for_each(|a| *a = round_f16(*a * ms));
            } else {
                vs = (s - m).exp();
            }
            for (a, &v) in acc.iter_mut().zip(self.value(j)) {
                *a = round_f16(v.mul_add(vs, *a));
            }
            // `S = S*ms + vs`, one FMA as GCC contracts it.
            sum = sum.mul_add(ms, vs);
        }
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    }
}

/// `ggml_vec_soft_max_f32` (AVX2 build): `x ← expf(x − max)` with ggml's
/// vectorized `expf`, eight at a time, each eight summed in ggml's lane
/// order and added in double.
#[inline(always)]
fn soft_max(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (has_fma).
        return unsafe { soft_max_fma(x, max) };
    }
    let mut sum = 0f64;
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for v in c.iter_mut() {
            *v = v_expf(*v - max);
        }
        let t = [c[0] + c[4], c[1] + c[5], c[2] + c[6], c[3] + c[7]];
        sum += f64::from((t[0] + t[2]) + (t[1] + t[3]));
    }
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    sum
}

/// [`soft_max`] eight lanes at a time: the same `expf` bits
/// ([`v_expf8`]) and the same sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn soft_max_fma(x: &mut [f32], max: f32) -> f64 {
    use std::arch::x86_64::*;
    let mut sum = 0f64;
    let m = _mm256_set1_ps(max);
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = v_expf8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
        _mm256_storeu_ps(c.as_mut_ptr(), v);
        // Lanes l and l + 4, then the pairs: `hsum_float_8`'s order.
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        sum += f64::from(_mm_cvtss_f32(h));
    }
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    sum
}

/// `ggml_vec_dot_f16` (AVX2 build): four eight-lane accumulators over
/// steps of 32, reduced as `GGML_F16_VEC_REDUCE`, the tail in double.
#[inline(always)]
fn dot_f16(a: &[f32], b: &[f32]) -> f32 {
    let n32 = a.len() / 32 * 32;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..n32).step_by(32) {
        for (r, lanes) in acc.iter_mut().enumerate() {
            for (l, v) in lanes.iter_mut().enumerate() {
                let at = i + r * 8 + l;
                *v = a[at].mul_add(b[at], *v);
            }
        }
    }
    let mut x0 = [0f32; 8];
    for l in 0..8 {
        x0[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t0 = [x0[0] + x0[4], x0[1] + x0[5], x0[2] + x0[6], x0[3] + x0[7]];
    let mut sum = f64::from((t0[0] + t0[1]) + (t0[2] + t0[3]));
    for (x, y) in a[n32..].iter().zip(&b[n32..]) {
        sum += f64::from(x * y);
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> AttnShape {
        AttnShape {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 2,
            head_dim_v: 2,
        }
    }

    #[test]
    fn the_first_position_sees_only_itself() {
        let q = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let mut k = vec![1.0, 0.0, 0.0, 1.0];
        let mut v = vec![3.0, 4.0, 5.0, 6.0];
        let mut out = vec![0.0; 8];
        attention(shape(), &q, &mut k, &mut v, &mut out, 2);
        assert_eq!(&out[..4], &[3.0, 4.0, 3.0, 4.0]);
        // Position 1, head 0 (q = e0) weights key 0 (score 1/√2) over key 1 (0).
        let w0 = 1.0 / (1.0 + (-(0.5f32.sqrt())).exp());
        let want = 3.0 * w0 + 5.0 * (1.0 - w0);
        assert!((out[4] - want).abs() < 1e-2, "{} vs {want}", out[4]);
    }

    #[test]
    fn both_paths_agree_closely() {
        let n = TILE_Q;
        let s = AttnShape {
            n_head: 1,
            n_head_kv: 1,
            head_dim_k: 4,
            head_dim_v: 4,
        };
        let x: Vec<f32> = (0..n * 4)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let (mut k, mut v) = (x.clone(), x.iter().map(|a| a * 0.5).collect::<Vec<_>>());
        let mut tiled = vec![0.0; n * 4];
        attention(s, &x, &mut k, &mut v, &mut tiled, n);
        let k16 = k.clone();
        let h = Head {
            s,
            k: &k16,
            kt: &[],
            v: ValueRows {
                v: &v,
                first: 0,
                stride: 4,
            },
            kv: 0,
            scale: 0.5,
        };
        let mut sc = Scratch::new(n, 4, 4);
        let mut row = vec![0.0; 4];
        h.one_row(&x[(n - 1) * 4..], n - 1, &mut row, &mut sc);
        for (a, b) in row.iter().zip(&tiled[(n - 1) * 4..]) {
            assert!((a - b).abs() < 2e-3, "{a} vs {b}");
        }
    }
}
