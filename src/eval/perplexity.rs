//! Perplexity exactly as llama.cpp's `llama-perplexity` defines it.
//!
//! * The token stream is cut into `n_chunks = min(--chunks, len / n_ctx)`
//!   chunks of `n_ctx` tokens that do not overlap; the remainder is
//!   dropped. At least two chunks' worth of tokens are required.
//! * Each chunk is evaluated on its own from position 0, its first token
//!   *replaced* (not preceded) by BOS when the vocabulary adds BOS.
//! * Only the second half is scored: the logits at positions
//!   `n_ctx/2 ..= n_ctx-2` predict the tokens at the next position, so a
//!   chunk scores `n_ctx - 1 - n_ctx/2` tokens.
//! * Per token `nll = −(l_tok − max − ln Σ expf(l − max))`, the sum taken
//!   in f64; `PPL = exp(mean nll)` and its uncertainty is
//!   `PPL · sqrt(var(nll) / (N − 1))` (first-order error propagation).
//!
//! Pure arithmetic: no I/O, no model.

use std::ops::Range;

use serde::Serialize;

use super::MeasureError;

/// How a token stream is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkPlan {
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
}

impl ChunkPlan {
    /// The plan for `n_tokens` tokens in chunks of `n_ctx`, at most
    /// `max_chunks` of them. Fails, as llama.cpp does, when there are fewer
    /// than `2 · n_ctx` tokens.
    pub fn new(
        n_tokens: usize,
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<ChunkPlan, MeasureError> {
        if n_ctx < 4 {
            return Err(MeasureError::BadContext {
                n_ctx,
                reason: "is too small (at least 4 tokens per chunk)".into(),
            });
        }
        let needed = 2 * n_ctx;
        if n_tokens < needed {
            return Err(MeasureError::TooFewTokens {
                needed,
                have: n_tokens,
                n_ctx,
            });
        }
        let all = n_tokens / n_ctx;
        let n_chunks = max_chunks.map_or(all, |m| m.clamp(1, all));
        Ok(ChunkPlan { n_ctx, n_chunks })
    }

    /// The first position whose logits are scored (`n_ctx / 2`).
    pub fn first_scored(&self) -> usize {
        self.n_ctx / 2
    }

    /// Tokens scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first_scored()
    }

    /// Positions of a chunk whose logits are scored; the logits at
    /// position `k` predict the token at `k + 1`.
    pub fn scored_positions(&self) -> Range<usize> {
        self.first_scored()..self.n_ctx - 1
    }

    /// The tokens of chunk `index` as given to the model: the chunk's
    /// tokens with the first replaced by `bos` when there is one.
    pub fn chunk_input(&self, tokens: &[u32], index: usize, bos: Option<u32>) -> Vec<u32> {
        let mut input = self.chunk(tokens, index).to_vec();
        if let (Some(bos), Some(first)) = (bos, input.first_mut()) {
            *first = bos;
        }
        input
    }

    /// The original tokens of chunk `index` (the targets).
    pub fn chunk<'t>(&self, tokens: &'t [u32], index: usize) -> &'t [u32] {
        &tokens[index * self.n_ctx..(index + 1) * self.n_ctx]
    }

    /// All tokens the plan covers, in order.
    pub fn covered<'t>(&self, tokens: &'t [u32]) -> &'t [u32] {
        &tokens[..self.n_chunks * self.n_ctx]
    }
}

/// The negative log-likelihood of `token` under `logits`, as
/// llama-perplexity's `log_softmax` computes it (f32 `expf`, f64 sum).
pub fn token_nll(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    -(f64::from(logits[token] - max) - sum.ln())
}

/// Running sums of per-token NLLs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllSums {
    /// Σ nll.
    pub sum: f64,
    /// Σ nll².
    pub sum_sq: f64,
    /// Tokens added.
    pub count: usize,
}

impl NllSums {
    /// Adds one token's NLL.
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    /// The perplexity so far, with llama-perplexity's final uncertainty.
    pub fn perplexity(&self) -> Estimate {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        let ppl = mean.exp();
        let sigma = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Estimate {
            value: ppl,
            uncertainty: sigma * ppl,
        }
    }
}

/// A value and its ± uncertainty (one standard error).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// One standard error.
    pub uncertainty: f64,
}

/// Adds the scored positions of one chunk to `sums`. `logits` holds the
/// model's logits for the chunk's positions from
/// [`ChunkPlan::first_scored`] on (`n_vocab` each), `targets` the chunk's
/// original tokens.
pub fn score_chunk(
    plan: &ChunkPlan,
    logits: &[f32],
    n_vocab: usize,
    targets: &[u32],
    sums: &mut NllSums,
) {
    use rayon::prelude::*;
    // Each position's softmax is independent: computed in parallel, added
    // in position order (the same sums as one by one).
    let first = plan.first_scored();
    let nlls: Vec<f64> = plan
        .scored_positions()
        .into_par_iter()
        .map(|k| {
            let row = &logits[(k - first) * n_vocab..(k - first + 1) * n_vocab];
            token_nll(row, targets[k + 1] as usize)
        })
        .collect();
    for nll in nlls {
        sums.add(nll);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn two_chunks_are_the_minimum() {
        let e = ChunkPlan::new(255, 128, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the text has 255 tokens, but 256 are needed (two chunks of 128 tokens)"
        );
        let p = ChunkPlan::new(1000, 128, None).unwrap();
        assert_eq!(p.n_chunks, 7);
        assert_eq!(ChunkPlan::new(1000, 128, Some(3)).unwrap().n_chunks, 3);
    }

    #[test]
    fn second_half_is_scored_and_bos_replaces_the_first_token() {
        let p = ChunkPlan::new(1024, 512, None).unwrap();
        assert_eq!(p.scored_per_chunk(), 255);
        assert_eq!(p.scored_positions(), 256..511);
        let tokens: Vec<u32> = (0..1024).collect();
        let input = p.chunk_input(&tokens, 1, Some(9999));
        assert_eq!(input[0], 9999);
        assert_eq!(input[1], 513);
        assert_eq!(p.chunk(&tokens, 1)[0], 512);
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let mut s = NllSums::default();
        for _ in 0..10 {
            s.add(token_nll(&[0.5; 64], 3));
        }
        let e = s.perplexity();
        assert!((e.value - 64.0).abs() < 1e-9, "{e:?}");
        assert!(e.uncertainty < 1e-3, "{e:?}");
    }
}
