//! `types = ["auto"]`: the smallest standard mix whose measured quality is
//! within budget.
//!
//! Quality grows with size, so the candidates (ordered by their nominal
//! bits per weight) are searched by bisection: each step converts and
//! measures one mix, and a pass rules out every larger one, a failure
//! every smaller one. Ten candidates take at most four measurements, and
//! no mix is converted twice. Sizes on a small model can differ from the
//! nominal order (llama.cpp falls back to legacy types for rows that are
//! not a multiple of 256); the report lists the real sizes measured.

use serde::{Deserialize, Serialize};

use super::{Budget, TypeQuality, Verdict};
use crate::quant::FileType;

/// The mixes `auto` chooses from, smallest first (llama.cpp's nominal
/// bits per weight on Llama-3.1-8B: 3.16 … 8.50). Legacy Q4_0/Q5_0 are
/// left out: a K-quant mix of the same size is better.
pub const AUTO_CANDIDATES: [FileType; 10] = [
    FileType::Q2_K,
    FileType::Q3_K_S,
    FileType::Q3_K_M,
    FileType::Q3_K_L,
    FileType::Q4_K_S,
    FileType::Q4_K_M,
    FileType::Q5_K_S,
    FileType::Q5_K_M,
    FileType::Q6_K,
    FileType::Q8_0,
];

/// The bisection over [`AUTO_CANDIDATES`] (or any list, smallest first).
#[derive(Debug, Clone)]
pub struct AutoSearch {
    candidates: Vec<FileType>,
    budget: Budget,
    measured: Vec<Option<(TypeQuality, Verdict)>>,
    /// Candidates below `lo` failed (or are ruled out by a failure).
    lo: usize,
    /// Candidates at or above `hi` passed (or are ruled out by a pass).
    hi: usize,
}

/// Why a candidate was or was not chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The smallest within budget.
    Chosen,
    /// Within budget, but a smaller one is too.
    PassedLarger,
    /// Measured and over budget, or broken.
    Failed {
        /// The gate's reason.
        reason: String,
    },
    /// Not converted: the search ruled it out.
    NotMeasured {
        /// Which measurement ruled it out.
        reason: String,
    },
}

impl Outcome {
    /// The outcome as the report says it.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Chosen => "chosen: the smallest within budget".into(),
            Outcome::PassedLarger => "within budget, but a smaller mix is too".into(),
            Outcome::Failed { reason } => format!("over budget: {reason}"),
            Outcome::NotMeasured { reason } => format!("not converted: {reason}"),
        }
    }
}

/// One line of the report's candidate table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The mix.
    pub file_type: String,
    /// Its numbers, when it was measured.
    pub quality: Option<TypeQuality>,
    /// Why it was or was not chosen.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl AutoSearch {
    /// A search over `candidates` (smallest first) under `budget`.
    pub fn new(candidates: &[FileType], budget: Budget) -> AutoSearch {
        AutoSearch {
            candidates: candidates.to_vec(),
            budget,
            measured: vec![None; candidates.len()],
            lo: 0,
            hi: candidates.len(),
        }
    }

    /// The next mix to convert and measure, or `None` when the search is
    /// over.
    pub fn next(&self) -> Option<FileType> {
        (self.lo < self.hi).then(|| self.candidates[(self.lo + self.hi) / 2])
    }

    /// Records the measurement of `file_type` (the one [`Self::next`] gave)
    /// and returns the gate's verdict on it.
    pub fn record(&mut self, file_type: FileType, quality: TypeQuality) -> Verdict {
        let verdict = self.budget.judge(&quality);
        if let Some(i) = self.candidates.iter().position(|&c| c == file_type) {
            if verdict.passes() {
                self.hi = self.hi.min(i);
            } else {
                self.lo = self.lo.max(i + 1);
            }
            self.measured[i] = Some((quality, verdict.clone()));
        }
        verdict
    }

    /// The chosen mix, once [`Self::next`] is `None` (none when even the
    /// largest failed).
    pub fn chosen(&self) -> Option<FileType> {
        let i = self.hi;
        (i < self.candidates.len() && self.lo >= self.hi)
            .then(|| self.candidates[i])
            .filter(|_| self.measured[i].as_ref().is_some_and(|(_, v)| v.passes()))
    }

    /// Every candidate with its numbers and why it was or was not chosen.
    pub fn candidates(&self) -> Vec<Candidate> {
        let chosen = self.chosen();
        let passed_below = |i: usize| {
            (0..i).find_map(|j| {
                self.measured[j]
                    .as_ref()
                    .filter(|(_, v)| v.passes())
                    .map(|_| self.candidates[j])
            })
        };
        let failed_above = |i: usize| {
            (i + 1..self.candidates.len()).find_map(|j| {
                self.measured[j]
                    .as_ref()
                    .filter(|(_, v)| !v.passes())
                    .map(|_| self.candidates[j])
            })
        };
        self.candidates
            .iter()
            .enumerate()
            .map(|(i, &ft)| {
                let outcome = match &self.measured[i] {
                    Some(_) if Some(ft) == chosen => Outcome::Chosen,
                    Some((_, v)) if v.passes() => Outcome::PassedLarger,
                    Some((_, v)) => Outcome::Failed {
                        reason: v.reason().unwrap_or_default(),
                    },
                    None => Outcome::NotMeasured {
                        reason: match (passed_below(i), failed_above(i)) {
                            (Some(p), _) => format!("larger than {p}, which is within budget"),
                            (None, Some(f)) => format!("smaller than {f}, which is over budget"),
                            (None, None) => "not reached".to_string(),
                        },
                    },
                };
                Candidate {
                    file_type: ft.name(),
                    quality: self.measured[i].as_ref().map(|(q, _)| q.clone()),
                    outcome,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::measure::sample;
    use super::*;

    /// Measures with a model of damage that falls with size, as real
    /// files do: KLD halves per candidate step.
    fn run(budget: Budget) -> (AutoSearch, Vec<FileType>) {
        let mut s = AutoSearch::new(&AUTO_CANDIDATES, budget);
        let mut order = Vec::new();
        while let Some(ft) = s.next() {
            let i = AUTO_CANDIDATES
                .iter()
                .position(|&c| c == ft)
                .expect("candidate");
            order.push(ft);
            let kld = 0.4 / 2f64.powi(i as i32);
            s.record(
                ft,
                sample(&ft.name(), 3.0 + i as f64 * 0.6, kld, kld * 40.0),
            );
        }
        (s, order)
    }

    #[test]
    fn a_tight_budget_picks_a_large_mix_a_loose_one_a_small_one() {
        let tight = Budget {
            max_kld: 0.002,
            max_ppl_increase: 100.0,
        };
        let (s, order) = run(tight);
        // 0.4 / 2^8 = 0.0016 is the first under 0.002: Q6_K.
        assert_eq!(s.chosen(), Some(FileType::Q6_K));
        assert!(order.len() <= 4, "{order:?}");
        let loose = Budget {
            max_kld: 0.3,
            max_ppl_increase: 100.0,
        };
        let (s, order) = run(loose);
        assert_eq!(s.chosen(), Some(FileType::Q3_K_S));
        assert!(order.len() <= 4, "{order:?}");
        let table = s.candidates();
        assert_eq!(table.len(), AUTO_CANDIDATES.len());
        assert_eq!(table[1].outcome, Outcome::Chosen);
        assert!(matches!(table[0].outcome, Outcome::Failed { .. }));
        let last = &table[9];
        assert!(
            matches!(&last.outcome, Outcome::NotMeasured { reason } if reason.contains("Q3_K_S")),
            "{last:?}"
        );
    }

    #[test]
    fn nothing_is_chosen_when_even_the_largest_fails() {
        let impossible = Budget {
            max_kld: 0.0,
            max_ppl_increase: 0.0,
        };
        let (s, order) = run(impossible);
        assert_eq!(s.chosen(), None);
        assert_eq!(order.last(), Some(&FileType::Q8_0));
        assert!(s
            .candidates()
            .iter()
            .all(|c| !matches!(c.outcome, Outcome::Chosen)));
    }
}
