//! Rotary position embedding as ggml's CPU `rope_f32` computes it: a
//! per-position cache of cos/sin built by repeated multiplication in f32
//! (`ggml_rope_cache_init`), YaRN's ramp (`rope_yarn`), frequency factors
//! (`rope_freqs.weight`) dividing θ, and pairs rotated either adjacently
//! ("normal", LLaMA after the converter's Q/K permutation) or half a head
//! apart ("NEOX", Qwen2/Qwen3).

use rayon::prelude::*;

use super::hparams::RopeParams;

/// Which elements of a head form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeMode {
    /// `(2i, 2i+1)`: `GGML_ROPE_TYPE_NORMAL`.
    Normal,
    /// `(i, i + n_rot/2)`: `GGML_ROPE_TYPE_NEOX`.
    Neox,
}

/// The rotation applied to Q and K of one layer.
pub(crate) struct Rope<'a> {
    /// The constants.
    pub params: RopeParams,
    /// Pair layout.
    pub mode: RopeMode,
    /// `rope_freqs.weight`, one factor per pair, or none.
    pub freq_factors: Option<&'a [f32]>,
}

fn yarn_corr_dim(n_dims: usize, n_ctx_orig: usize, n_rot: f32, base: f32) -> f32 {
    n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// `ggml_rope_yarn_corr_dims`.
fn yarn_corr_dims(p: &RopeParams) -> [f32; 2] {
    let start = yarn_corr_dim(p.n_rot, p.n_ctx_orig, p.beta_fast, p.freq_base).floor();
    let end = yarn_corr_dim(p.n_rot, p.n_ctx_orig, p.beta_slow, p.freq_base).ceil();
    [start.max(0.0), end.min(p.n_rot as f32 - 1.0)]
}

impl Rope<'_> {
    /// cos/sin for each pair at position `pos`, as `ggml_rope_cache_init`.
    fn cache(&self, pos: usize, corr: [f32; 2], cache: &mut [f32]) {
        let p = &self.params;
        let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
        let mut theta = pos as f32;
        for i0 in (0..p.n_rot).step_by(2) {
            let ff = self.freq_factors.map_or(1.0, |f| f[i0 / 2]);
            let theta_extrap = theta / ff;
            let theta_interp = p.freq_scale * theta_extrap;
            let mut t = theta_interp;
            let mut mscale = p.attn_factor;
            if p.ext_factor != 0.0 {
                let y = ((i0 / 2) as f32 - corr[0]) / (corr[1] - corr[0]).max(0.001);
                let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * p.ext_factor;
                t = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
                mscale *= 1.0 + 0.1 * (1.0 / p.freq_scale).ln();
            }
            cache[i0] = t.cos() * mscale;
            cache[i0 + 1] = t.sin() * mscale;
            theta *= theta_scale;
        }
    }

    /// Rotates every head of `x` (rows of `n_head × head_dim`, row `t`
    /// at position `t`) in place.
    pub fn apply(&self, x: &mut [f32], n_head: usize, head_dim: usize) {
        let n_rot = self.params.n_rot;
        let corr = yarn_corr_dims(&self.params);
        x.par_chunks_mut(n_head * head_dim)
            .enumerate()
            .for_each_init(
                || vec![0f32; n_rot],
                |cache, (pos, row)| {
                    self.cache(pos, corr, cache);
                    for head in row.chunks_exact_mut(head_dim) {
                        self.rotate(head, cache);
                    }
                },
            );
    }

    fn rotate(&self, head: &mut [f32], cache: &[f32]) {
        let n_rot = self.params.n_rot;
        for i0 in (0..n_rot).step_by(2) {
            let (a, b) = match self.mode {
                RopeMode::Normal => (i0, i0 + 1),
                RopeMode::Neox => (i0 / 2, i0 / 2 + n_rot / 2),
            };
            let (cos, sin) = (cache[i0], cache[i0 + 1]);
            let (x0, x1) = (head[a], head[b]);
            // `rotate_pairs` as GCC contracts it with `-mfma`: the first
            // product of each line fused with the sum.
            head[a] = x0.mul_add(cos, -(x1 * sin));
            head[b] = x0.mul_add(sin, x1 * cos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RopeParams {
        RopeParams {
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 128,
        }
    }

    #[test]
    fn position_zero_is_the_identity_and_norms_are_kept() {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let rope = Rope {
                params: params(),
                mode,
                freq_factors: None,
            };
            let mut x = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
            rope.apply(&mut x, 1, 4);
            assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
            let norm: f32 = x[4..].iter().map(|v| v * v).sum();
            assert!((norm - 30.0).abs() < 1e-4);
            assert_ne!(&x[4..], &[1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn normal_mode_rotates_adjacent_pairs_by_the_position() {
        let rope = Rope {
            params: params(),
            mode: RopeMode::Normal,
            freq_factors: None,
        };
        let mut x = vec![0.0; 4];
        x.extend([1.0, 0.0, 1.0, 0.0]);
        rope.apply(&mut x, 1, 4);
        // Pair 0 turns by θ = 1 radian at position 1.
        assert!((x[4] - 1f32.cos()).abs() < 1e-6 && (x[5] - 1f32.sin()).abs() < 1e-6);
    }
}
