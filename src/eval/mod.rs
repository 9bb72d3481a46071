//! Evaluating models kvant writes, and measuring them as llama.cpp's own
//! tools do: perplexity and KL divergence (`llama-perplexity`) and
//! importance matrices (`llama-imatrix`).
//!
//! * [`forward`] — the forward pass over a GGUF file (weights read from
//!   the map) or over a checkpoint's full-precision tensors, computed the
//!   way llama.cpp's CPU backend computes it.
//! * [`run_eval`] and [`run_imatrix`] are the evaluator as the CLI and the
//!   daemon call it: files in, statistics (and files) out.
//! * [`evaluate()`] runs a model ([`LogitSource`]) over a token stream in
//!   chunks and returns an [`EvalReport`]: PPL ± σ and, against a base
//!   model or a base-logits file, llama-perplexity's KL-divergence summary
//!   ([`KldSummary`]).
//! * [`collect_imatrix()`] gathers Σx² per input column of every block
//!   weight ([`ImatrixCollector`]), written in llama-imatrix's GGUF or
//!   legacy form and read back by [`crate::quant::Imatrix`].
//! * [`perplexity`], [`kld`] hold the definitions, as pure functions;
//!   [`logits_file`] the `--kl-divergence-base` format.
//!
//! The statistics must not know how a forward pass is computed (they ask a
//! [`LogitSource`], which [`forward::Model`] is) nor how results are
//! shown; the forward pass must not know how text is tokenized.

mod error;
mod evaluate;
pub mod forward;
pub mod imatrix_collect;
pub mod kld;
pub mod logits_file;
mod measure_error;
pub mod perplexity;
mod session;
mod vocab;

pub use error::EvalError;
pub use evaluate::{
    collect_imatrix, evaluate, Base, ChunkProgress, EvalReport, ImatrixRun, LogitSource,
    NoChunkProgress,
};
pub use forward::{MatmulObserver, Outputs};
pub use imatrix_collect::{ImatrixCollector, ImatrixEntry};
pub use kld::KldSummary;
pub use logits_file::{LogitsHeader, LogitsReader, LogitsWriter};
pub use measure_error::MeasureError;
pub use perplexity::{ChunkPlan, Estimate};
pub use session::{
    run_eval, run_imatrix, BaseInput, EvalRequest, ImatrixFormat, ImatrixRequest, ImatrixSummary,
    TokenInput, DEFAULT_CTX,
};
pub use vocab::{check_same_vocabulary, chunk_bos, chunk_bos_of};
