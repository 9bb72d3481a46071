//! Measuring a conversion against its own source, in the same run: the
//! importance matrix from a calibration text, the full-precision
//! reference's logits on the held-out text (computed once, kept in a
//! llama-perplexity base-logits file), each written type's statistics
//! against them, the budget's verdict, and `auto`'s choice of type.
//!
//! * [`convert_measured`] — the whole job, as `kvant convert` and the
//!   daemon's conversion child run it.
//! * `reference` — the checkpoint's own f32 weights as the reference
//!   model, and its tokenizer (no F32 GGUF is written for it).
//! * `journal` — measurements recorded as they finish, so a run killed
//!   mid-measurement redoes only what was not recorded.
//!
//! The numbers are the evaluator's (`crate::eval`); the decisions and the
//! pictures are `crate::quality`'s. This module only wires them to
//! conversion and files.

mod journal;
mod pipeline;
mod reference;
mod type_choice;

use std::path::PathBuf;

pub use pipeline::{convert_measured, MeasuredConversion, NotMeasured};
pub use type_choice::{TypeChoice, DEFAULT_AUTO_FALLBACK};

use crate::quality::{Budget, TextSource};

/// Tokens per evaluation chunk unless configured (`eval_ctx`); clamped to
/// the model's trained context.
pub const DEFAULT_EVAL_CTX: usize = 256;
/// Chunks evaluated unless configured (`eval_chunks`): 3 × 256 tokens
/// score 381 tokens, enough to separate Q8_0 from Q2_K by orders of
/// magnitude, and few enough that a 100M-parameter model's whole drop
/// stays under 30 s at 2 threads (`benches/quality.rs`: with 4 chunks it
/// ran 26–31 s).
pub const DEFAULT_EVAL_CHUNKS: usize = 3;
/// Calibration chunks for the importance matrix unless configured
/// (`calibration_chunks`): 4 × 256 tokens, which with the evaluation keeps
/// a 124M model's whole drop under 30 s at 2 threads (`benches/quality.rs`).
pub const DEFAULT_CALIBRATION_CHUNKS: usize = 4;

/// What to measure a conversion with.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// The held-out text; [`TextSource::Missing`] means nothing is gated.
    pub eval_text: TextSource,
    /// The calibration text for the importance matrix (ignored when the
    /// request already names an imatrix file).
    pub calibration: TextSource,
    /// Keep the computed importance matrix here (GGUF form).
    pub save_imatrix: Option<PathBuf>,
    /// Tokens per chunk.
    pub eval_ctx: usize,
    /// Chunks of held-out text evaluated.
    pub eval_chunks: usize,
    /// Chunks of calibration text run for the importance matrix.
    pub calibration_chunks: usize,
    /// What a published type may lose.
    pub budget: Budget,
    /// Where measurements are journaled (the daemon's per-drop folder);
    /// `None` keeps them in a temporary folder removed at the end.
    pub journal_dir: Option<PathBuf>,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            eval_text: TextSource::Missing { looked_for: vec![] },
            calibration: TextSource::Missing { looked_for: vec![] },
            save_imatrix: None,
            eval_ctx: DEFAULT_EVAL_CTX,
            eval_chunks: DEFAULT_EVAL_CHUNKS,
            calibration_chunks: DEFAULT_CALIBRATION_CHUNKS,
            budget: Budget::default(),
            journal_dir: None,
        }
    }
}
