//! The quality gate: how much damage a published file may show, and the
//! verdict on one measured file.
//!
//! The defaults come from llama.cpp's own scoreboard (tools/perplexity
//! README, LLaMA-3 8B on Wikitext-2, KLD against FP16): Q8_0 0.0014,
//! Q6_K 0.0055, Q4_K_M 0.031 (ΔPPL +2.8 %), Q4_0 0.072 (+7.5 %),
//! Q3_K_M 0.084 (+8.1 %), Q2_K 0.45 (+56 %). A budget of mean KLD 0.1 and
//! +10 % perplexity lets every mix people run in practice through (down to
//! Q3_K_M on that model) and stops the Q2_K-style damage that makes a
//! model visibly worse. Small models are more sensitive than 8B ones, so
//! the gate often speaks on them: that is the point of measuring.

use serde::{Deserialize, Serialize};

use super::TypeQuality;

/// Default maximum mean KL-divergence (see the module doc).
pub const DEFAULT_MAX_KLD: f64 = 0.1;
/// Default maximum perplexity increase, in percent.
pub const DEFAULT_MAX_PPL_INCREASE: f64 = 10.0;
/// Below this share of same top tokens a file is broken whatever the
/// budget: Q2_K on LLaMA-3 8B still keeps 71 %, a file that agrees on
/// fewer than half of the tokens no longer computes the same model.
pub const MIN_SAME_TOP_P: f64 = 0.5;

/// The damage a published file may show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Maximum mean KL-divergence from the full-precision model.
    #[serde(default = "default_max_kld")]
    pub max_kld: f64,
    /// Maximum perplexity increase, in percent.
    #[serde(default = "default_max_ppl_increase")]
    pub max_ppl_increase: f64,
}

fn default_max_kld() -> f64 {
    DEFAULT_MAX_KLD
}

fn default_max_ppl_increase() -> f64 {
    DEFAULT_MAX_PPL_INCREASE
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_kld: DEFAULT_MAX_KLD,
            max_ppl_increase: DEFAULT_MAX_PPL_INCREASE,
        }
    }
}

/// What the gate says of one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Within budget: may be published.
    Pass,
    /// Over budget: written and reported, not registered.
    OverBudget {
        /// Each limit exceeded, with the measured value and the limit.
        reasons: Vec<String>,
    },
    /// Never published, whatever the budget.
    Broken {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// True for [`Verdict::Pass`].
    pub fn passes(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// One line for logs and status (`KLD 0.31 > budget 0.1`).
    pub fn reason(&self) -> Option<String> {
        match self {
            Verdict::Pass => None,
            Verdict::OverBudget { reasons } => Some(reasons.join("; ")),
            Verdict::Broken { reason } => Some(reason.clone()),
        }
    }
}

impl Budget {
    /// The verdict on `q`.
    pub fn judge(&self, q: &TypeQuality) -> Verdict {
        if q.has_non_finite() {
            return Verdict::Broken {
                reason: "its logits are not finite (NaN or infinity)".to_string(),
            };
        }
        if q.same_top_p < MIN_SAME_TOP_P {
            return Verdict::Broken {
                reason: format!(
                    "top-token agreement collapsed: {:.1} % < {:.0} %",
                    q.same_top_p * 100.0,
                    MIN_SAME_TOP_P * 100.0
                ),
            };
        }
        let mut reasons = Vec::new();
        if q.kld_mean > self.max_kld {
            reasons.push(format!(
                "mean KLD {:.4} > budget {}",
                q.kld_mean, self.max_kld
            ));
        }
        let increase = q.ppl_increase_pct();
        if increase > self.max_ppl_increase {
            reasons.push(format!(
                "PPL +{increase:.2} % > budget +{} %",
                self.max_ppl_increase
            ));
        }
        if reasons.is_empty() {
            Verdict::Pass
        } else {
            Verdict::OverBudget { reasons }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::measure::sample;
    use super::*;

    #[test]
    fn defaults_pass_q4_k_m_and_stop_q2_k_damage_from_llama_cpps_table() {
        let b = Budget::default();
        assert!(b.judge(&sample("q4_k_m", 4.89, 0.031273, 2.816)).passes());
        assert!(b.judge(&sample("q3_k_m", 4.0, 0.084358, 8.06)).passes());
        let q2 = b.judge(&sample("q2_k", 3.16, 0.445132, 56.48));
        match q2 {
            Verdict::OverBudget { reasons } => {
                assert_eq!(reasons.len(), 2, "{reasons:?}");
                assert!(reasons[0].contains("0.4451 > budget 0.1"), "{reasons:?}");
                assert!(
                    reasons[1].contains("+56.48 % > budget +10 %"),
                    "{reasons:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nan_or_collapsed_agreement_is_broken_whatever_the_budget() {
        let generous = Budget {
            max_kld: f64::INFINITY,
            max_ppl_increase: f64::INFINITY,
        };
        let mut q = sample("q2_k", 3.0, 0.2, 5.0);
        q.ppl = f64::NAN;
        assert!(matches!(generous.judge(&q), Verdict::Broken { .. }));
        let mut q = sample("q2_k", 3.0, 0.2, 5.0);
        q.same_top_p = 0.3;
        let v = generous.judge(&q);
        assert!(v.reason().is_some_and(|r| r.contains("30.0 %")), "{v:?}");
    }

    #[test]
    fn a_budget_reads_from_toml_with_defaults_for_missing_keys() {
        let b: Budget = toml::from_str("max_kld = 0.01").expect("parses");
        assert_eq!(b.max_kld, 0.01);
        assert_eq!(b.max_ppl_increase, DEFAULT_MAX_PPL_INCREASE);
        assert!(toml::from_str::<Budget>("max_kdl = 1").is_err());
    }
}
