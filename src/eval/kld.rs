//! KL divergence of a model Q from a base, exactly as
//! `llama-perplexity --kl-divergence` computes and summarises it.
//!
//! The base distribution is never used at full precision: llama.cpp stores
//! it as one u16 record per scored token (see [`super::logits_file`]), and
//! so does kvant, also when the base is a model evaluated in the same run —
//! so both tools compare Q with the *same* quantized base.
//!
//! Per scored token, with `l` Q's logits and `b` the decoded base log-probs:
//!
//! ```text
//! nll_q    = max(l) + lse(l) − l_tok            (f32)
//! nll_base = −b_tok
//! KLD      = Σ_{v: b_v > −16} exp(b_v) · (b_v − (l_v − max − lse))   (f64 sum)
//! Δp       = exp(−nll_q) − exp(−nll_base)
//! same top = argmax(l) == argmax(b)            (first index on ties)
//! ```
//!
//! The summary is llama.cpp's: `mean_and_uncertainty` (σ only when more
//! than 10 values), the NLL covariance for the ln-ratio, linearly
//! interpolated percentiles on the sorted values, computed in f32 as the
//! tool does. Pure arithmetic: no I/O.

use serde::Serialize;

use super::perplexity::Estimate;

/// Log-probabilities more than this far below the top are not stored
/// (llama.cpp clips a record's range to 16 nats).
const RANGE_NATS: f32 = 16.0;

/// u16 words in one record for a vocabulary of `n_vocab`: two f32 (scale,
/// minimum log-prob), then one word per token, padded to an even count.
pub fn record_words(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// llama.cpp's `nearest_int`: round half to even through the 1.5·2²³
/// trick, for values in [0, 2²²).
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

fn max_and_lse(logits: &[f32]) -> (f32, usize, f32) {
    let (mut max, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    (max, imax, sum.ln() as f32)
}

/// Encodes one position's logits into a base record (`record` holds
/// [`record_words`] words) and returns the NLL of `token`, as
/// llama-perplexity does when it writes `--kl-divergence-base`.
pub fn encode_record(logits: &[f32], token: usize, record: &mut [u16]) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let min = logits.iter().copied().fold(logits[0], f32::min);
    let min = min.max(max - RANGE_NATS);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let lse = sum.ln() as f32;
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    let (head, words) = record.split_at_mut(4);
    head[..2].copy_from_slice(&half_words(scale));
    head[2..].copy_from_slice(&half_words(min_log_prob));
    let words = &mut words[..logits.len()];
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (q, &l) in words.iter_mut().zip(logits) {
            *q = if l > min {
                nearest_int(inv * (l - min)) as u16
            } else {
                0
            };
        }
    } else {
        words.fill(0);
    }
    f64::from(max + lse - logits[token])
}

fn half_words(x: f32) -> [u16; 2] {
    let b = x.to_le_bytes();
    [
        u16::from_le_bytes([b[0], b[1]]),
        u16::from_le_bytes([b[2], b[3]]),
    ]
}

fn f32_of(words: &[u16]) -> f32 {
    let (a, b) = (words[0].to_le_bytes(), words[1].to_le_bytes());
    f32::from_le_bytes([a[0], a[1], b[0], b[1]])
}

/// One token's comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenComparison {
    /// Q's NLL of the token (f32, as llama.cpp).
    pub nll: f32,
    /// The base's NLL of the token.
    pub nll_base: f32,
    /// KL(base ‖ Q) at this position.
    pub kld: f64,
    /// p_Q(token) − p_base(token).
    pub p_diff: f32,
    /// Whether both put the most probability on the same token.
    pub same_top: bool,
}

/// Compares Q's `logits` at one position with the base `record`.
pub fn compare(logits: &[f32], record: &[u16], token: usize) -> TokenComparison {
    let (max, imax, lse) = max_and_lse(logits);
    let scale = f32_of(&record[0..2]);
    let min_log_prob = f32_of(&record[2..4]);
    let q = &record[4..4 + logits.len()];
    let nll = max + lse - logits[token];
    let nll_base = -(scale * f32::from(q[token]) + min_log_prob);
    let log_norm = max + lse;
    let mut kld = 0f64;
    let (mut imax_base, mut top_base) = (0usize, 0f32);
    for (i, (&w, &l)) in q.iter().zip(logits).enumerate() {
        let log_p_base = scale * f32::from(w) + min_log_prob;
        if i == 0 || log_p_base > top_base {
            top_base = log_p_base;
            imax_base = i;
        }
        if log_p_base > -RANGE_NATS {
            let p_base = log_p_base.exp();
            kld += f64::from(p_base * (log_p_base - l + log_norm));
        }
    }
    TokenComparison {
        nll,
        nll_base,
        kld,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax == imax_base,
    }
}

/// llama.cpp's `kl_divergence_result`, plus every KLD and Δp value for the
/// percentiles.
#[derive(Debug, Clone, Default)]
pub struct KldSums {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    max_p_diff: f32,
    n_same_top: usize,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
}

impl KldSums {
    /// Adds one token.
    pub fn add(&mut self, t: &TokenComparison) {
        self.sum_nll += f64::from(t.nll);
        self.sum_nll2 += f64::from(t.nll * t.nll);
        self.sum_nll_base += f64::from(t.nll_base);
        self.sum_nll_base2 += f64::from(t.nll_base * t.nll_base);
        self.sum_nll_nll_base += f64::from(t.nll * t.nll_base);
        self.sum_kld += t.kld;
        self.sum_kld2 += t.kld * t.kld;
        self.sum_p_diff += f64::from(t.p_diff);
        let p2 = f64::from(t.p_diff * t.p_diff);
        self.sum_p_diff2 += p2;
        self.sum_p_diff4 += p2 * p2;
        self.max_p_diff = self.max_p_diff.max(t.p_diff.abs());
        self.n_same_top += usize::from(t.same_top);
        self.kld_values.push(t.kld as f32);
        self.p_diff_values.push(t.p_diff);
    }

    /// Tokens compared.
    pub fn count(&self) -> usize {
        self.kld_values.len()
    }

    /// The summary llama-perplexity prints (its per-chunk line uses the
    /// same numbers). `None` before any token was added.
    pub fn summary(&self) -> Option<KldSummary> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let log_ppl = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let log_base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let ppl = exp_estimate(log_ppl);
        let ppl_base = exp_estimate(log_base);
        let ratio_unc =
            (log_ppl.uncertainty.powi(2) + log_base.uncertainty.powi(2) - 2.0 * cov).sqrt();
        let ln_ratio = Estimate {
            value: log_ppl.value - log_base.value,
            uncertainty: ratio_unc,
        };
        let ppl_cov = ppl.value * ppl_base.value * cov;
        let mse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.value.sqrt();
        let same = self.n_same_top as f64 / n as f64;
        let mut kld = self.kld_values.clone();
        let mut p_diff = self.p_diff_values.clone();
        kld.sort_by(f32::total_cmp);
        p_diff.sort_by(f32::total_cmp);
        Some(KldSummary {
            n_tokens: n,
            ppl,
            ppl_base,
            ln_ppl_correlation: cov / (log_ppl.uncertainty * log_base.uncertainty),
            ln_ppl_ratio: ln_ratio,
            ppl_ratio: exp_estimate(ln_ratio),
            ppl_diff: Estimate {
                value: ppl.value - ppl_base.value,
                uncertainty: (ppl.uncertainty.powi(2) + ppl_base.uncertainty.powi(2)
                    - 2.0 * ppl_cov)
                    .sqrt(),
            },
            kld: mean_and_uncertainty(self.sum_kld, self.sum_kld2, n),
            kld_percentiles: Percentiles::of(&kld, KLD_FRACTIONS),
            p_diff: mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n),
            p_diff_percentiles: Percentiles::of(&p_diff, P_DIFF_FRACTIONS),
            p_diff_max_abs: f64::from(self.max_p_diff),
            p_diff_rms: Estimate {
                value: rms,
                uncertainty: 0.5 / rms * mse.uncertainty,
            },
            same_top: Estimate {
                value: same,
                uncertainty: (same * (1.0 - same) / (n as f64 - 1.0)).sqrt(),
            },
        })
    }
}

/// The fractions llama-perplexity prints for KLD (besides max, median, min).
const KLD_FRACTIONS: &[f32] = &[0.999, 0.990, 0.950, 0.900, 0.100, 0.050, 0.010, 0.001];
/// The fractions it prints for Δp.
const P_DIFF_FRACTIONS: &[f32] = &[
    0.999, 0.990, 0.950, 0.900, 0.750, 0.250, 0.100, 0.050, 0.010, 0.001,
];

fn exp_estimate(log: Estimate) -> Estimate {
    let v = log.value.exp();
    Estimate {
        value: v,
        uncertainty: v * log.uncertainty,
    }
}

/// llama.cpp's `mean_and_uncertainty`: the mean and its standard error,
/// the error 0 unless there are more than 10 values.
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count < 1 {
        return Estimate {
            value: 0.0,
            uncertainty: 0.0,
        };
    }
    let n = count as f64;
    let f = sum / n;
    let d = sum2 / n - f * f;
    let uncertainty = if d > 0.0 && count > 10 {
        (d / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Estimate {
        value: f,
        uncertainty,
    }
}

/// llama.cpp's `covariance` of the mean NLLs (0 below 10 values).
fn covariance(sa: f64, sb: f64, sab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sab / n - (sa / n) * (sb / n)) / (n - 1.0)
}

/// llama.cpp's `percentile` on sorted values, in f32 as it computes it.
pub fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return 0.0;
    };
    if fraction <= 0.0 {
        return first;
    }
    if fraction >= 1.0 {
        return last;
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let frac = p - ip as f32;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

/// The median as llama.cpp takes it: the middle value, or the mean of the
/// two middle values.
fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

/// Maximum, the printed percentiles (highest first), median and minimum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// The largest value.
    pub max: f64,
    /// `(fraction, value)`, highest fraction first.
    pub at: Vec<(f64, f64)>,
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
}

impl Percentiles {
    fn of(sorted: &[f32], fractions: &[f32]) -> Percentiles {
        Percentiles {
            max: f64::from(*sorted.last().unwrap_or(&0.0)),
            at: fractions
                .iter()
                .map(|&f| (f64::from(f), f64::from(percentile(sorted, f))))
                .collect(),
            median: f64::from(median(sorted)),
            min: f64::from(*sorted.first().unwrap_or(&0.0)),
        }
    }

    /// The value at `fraction` (one of the printed fractions).
    pub fn get(&self, fraction: f64) -> Option<f64> {
        self.at
            .iter()
            .find(|(f, _)| (f - fraction).abs() < 1e-6)
            .map(|&(_, v)| v)
    }
}

/// Everything llama-perplexity's KL-divergence summary reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldSummary {
    /// Tokens compared.
    pub n_tokens: usize,
    /// PPL(Q).
    pub ppl: Estimate,
    /// PPL(base), from the stored base log-probs.
    pub ppl_base: Estimate,
    /// Pearson correlation of the per-token NLLs (a fraction, not %).
    pub ln_ppl_correlation: f64,
    /// Mean ln(PPL(Q)/PPL(base)).
    pub ln_ppl_ratio: Estimate,
    /// PPL(Q)/PPL(base).
    pub ppl_ratio: Estimate,
    /// PPL(Q) − PPL(base).
    pub ppl_diff: Estimate,
    /// Mean KLD.
    pub kld: Estimate,
    /// KLD percentiles.
    pub kld_percentiles: Percentiles,
    /// Mean Δp (a fraction, not %).
    pub p_diff: Estimate,
    /// Δp percentiles (fractions).
    pub p_diff_percentiles: Percentiles,
    /// Largest |Δp|.
    pub p_diff_max_abs: f64,
    /// RMS Δp.
    pub p_diff_rms: Estimate,
    /// Share of tokens whose top choice agrees (a fraction).
    pub same_top: Estimate,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn logits(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 * 20.0 - 10.0
            })
            .collect()
    }

    #[test]
    fn a_model_compared_with_itself_diverges_by_quantization_only() {
        let l = logits(7, 301);
        let mut rec = vec![0u16; record_words(301)];
        assert_eq!(rec.len(), 306);
        // A token within the 16 nats the record keeps.
        let tok = (0..301).find(|&i| l[i] > 5.0).unwrap();
        let nll = encode_record(&l, tok, &mut rec);
        assert_eq!(rec[305], 0, "the pad word stays zero");
        let t = compare(&l, &rec, tok);
        assert!(t.same_top);
        assert!(t.kld.abs() < 1e-4, "{t:?}");
        assert!((f64::from(t.nll) - nll).abs() < 1e-5);
        assert!((t.nll - t.nll_base).abs() < 1e-3, "{t:?}");
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(65535.0), 65535);
    }

    #[test]
    fn percentiles_interpolate_like_llama_cpp() {
        let v = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(median(&v), 2.5);
        assert_eq!(median(&v[..3]), 2.0);
    }

    #[test]
    fn uncertainty_needs_more_than_ten_values() {
        assert_eq!(mean_and_uncertainty(10.0, 30.0, 10).uncertainty, 0.0);
        assert!(mean_and_uncertainty(11.0, 30.0, 11).uncertainty > 0.0);
    }
}
