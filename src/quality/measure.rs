//! What one quantized file's measurement against its full-precision
//! reference says: the numbers a gate, a chooser and a page work from.

use serde::{Deserialize, Serialize};

/// One output type measured against the drop's own full-precision model
/// on the held-out text (definitions as `llama-perplexity --kl-divergence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeQuality {
    /// The mix, as users write it (`q4_k_m`).
    pub file_type: String,
    /// Size of the GGUF file in bytes.
    pub size: u64,
    /// Bits per weight over all tensors.
    pub bits_per_weight: f64,
    /// Perplexity of this file on the held-out text.
    pub ppl: f64,
    /// Perplexity of the full-precision reference on the same tokens.
    pub ppl_base: f64,
    /// Mean KL-divergence from the reference's token distributions.
    pub kld_mean: f64,
    /// 99th percentile of the per-token KL-divergence.
    pub kld_p99: f64,
    /// Share of scored tokens whose top token equals the reference's (0–1).
    pub same_top_p: f64,
    /// Root mean square of the change in the probability of the right token (0–1).
    pub rms_dp: f64,
    /// Tokens scored.
    pub n_tokens: usize,
}

impl TypeQuality {
    /// Perplexity increase over the reference, in percent.
    pub fn ppl_increase_pct(&self) -> f64 {
        (self.ppl / self.ppl_base - 1.0) * 100.0
    }

    /// True when any number is NaN or infinite: the file computes garbage.
    pub fn has_non_finite(&self) -> bool {
        [
            self.ppl,
            self.kld_mean,
            self.kld_p99,
            self.same_top_p,
            self.rms_dp,
        ]
        .iter()
        .any(|v| !v.is_finite())
    }
}

#[cfg(test)]
pub(crate) fn sample(file_type: &str, bpw: f64, kld: f64, ppl_pct: f64) -> TypeQuality {
    TypeQuality {
        file_type: file_type.to_string(),
        size: (bpw * 1_000_000.0) as u64,
        bits_per_weight: bpw,
        ppl: 35.0 * (1.0 + ppl_pct / 100.0),
        ppl_base: 35.0,
        kld_mean: kld,
        kld_p99: kld * 8.0,
        same_top_p: 1.0 - kld,
        rms_dp: kld.sqrt() / 4.0,
        n_tokens: 2040,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppl_increase_is_relative_to_the_reference() {
        let q = sample("q4_k_m", 4.9, 0.03, 2.8);
        assert!((q.ppl_increase_pct() - 2.8).abs() < 1e-9);
        assert!(!q.has_non_finite());
        let nan = TypeQuality {
            kld_mean: f64::NAN,
            ..q
        };
        assert!(nan.has_non_finite());
    }
}
