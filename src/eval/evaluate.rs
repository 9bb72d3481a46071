//! The evaluator: runs a model over a token stream chunk by chunk and
//! gathers perplexity, the KL divergence from a base, and importance
//! statistics, the way llama-perplexity and llama-imatrix do.
//!
//! The model is anything that turns a chunk into logits ([`LogitSource`]):
//! kvant's own forward pass, or — in tests — llama.cpp itself, so the
//! statistics are proven independently of kvant's arithmetic.

use serde::Serialize;

use super::forward::Outputs;
use super::imatrix_collect::ImatrixCollector;
use super::kld::{compare, encode_record, record_words, KldSummary, KldSums};
use super::logits_file::{LogitsReader, LogitsWriter};
use super::perplexity::{score_chunk, token_nll, ChunkPlan, Estimate, NllSums};
use super::MatmulObserver;
use super::MeasureError;

/// Something that computes next-token logits for one sequence.
pub trait LogitSource {
    /// Vocabulary size (logits per position).
    fn n_vocab(&self) -> usize;

    /// The logits of positions `outputs.first()..` (`(tokens.len() −
    /// first) × n_vocab`, row-major) of one sequence starting at position
    /// 0; `observer` sees every matrix product's input.
    fn logits(
        &self,
        tokens: &[u32],
        outputs: Outputs,
        observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>, MeasureError>;
}

impl LogitSource for super::forward::Model {
    fn n_vocab(&self) -> usize {
        super::forward::Model::n_vocab(self)
    }

    fn logits(
        &self,
        tokens: &[u32],
        outputs: Outputs,
        observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>, MeasureError> {
        Ok(self.outputs(tokens, outputs, observer)?)
    }
}

/// What the caller is told after each chunk (a progress bar, a log line).
pub trait ChunkProgress {
    /// The run has `n_chunks` chunks.
    fn start(&self, n_chunks: usize);
    /// Chunk `index` (0-based) is done; `ppl` is the running perplexity.
    fn chunk_done(&self, index: usize, ppl: f64);
}

/// A [`ChunkProgress`] that shows nothing.
pub struct NoChunkProgress;

impl ChunkProgress for NoChunkProgress {
    fn start(&self, _: usize) {}
    fn chunk_done(&self, _: usize, _: f64) {}
}

/// What the model is compared with.
pub enum Base<'a> {
    /// Nothing: perplexity only.
    None,
    /// Another model of the same vocabulary, evaluated chunk by chunk.
    Model(&'a dyn LogitSource),
    /// A llama-perplexity `--kl-divergence-base` file (its tokens are the
    /// ones evaluated).
    File(&'a mut LogitsReader),
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The chunking used.
    pub plan: ChunkPlan,
    /// Tokens scored.
    pub n_scored: usize,
    /// Perplexity ± its uncertainty.
    pub perplexity: Estimate,
    /// The KL-divergence statistics, when there was a base.
    pub kld: Option<KldSummary>,
}

/// Evaluates `model` on `plan`'s chunks of `tokens` (first token of each
/// chunk replaced by `bos`), compares it with `base`, and writes its own
/// logits as a base file into `save` when given.
pub fn evaluate(
    model: &dyn LogitSource,
    tokens: &[u32],
    plan: ChunkPlan,
    bos: Option<u32>,
    mut base: Base<'_>,
    mut save: Option<&mut LogitsWriter>,
    progress: &dyn ChunkProgress,
) -> Result<EvalReport, MeasureError> {
    let n_vocab = model.n_vocab();
    let words = record_words(n_vocab);
    let (mut nll, mut kld) = (NllSums::default(), KldSums::default());
    let mut base_records = Vec::new();
    let mut own_records = vec![0u16; plan.scored_per_chunk() * words];
    // Like llama-perplexity, only the positions that are scored (and the
    // last one) get logits.
    let outputs = Outputs::From(plan.first_scored());
    progress.start(plan.n_chunks);
    for index in 0..plan.n_chunks {
        let input = plan.chunk_input(tokens, index, bos);
        let targets = plan.chunk(tokens, index);
        let logits = checked_logits(model, &input, outputs, None)?;
        if save.is_some() {
            encode_chunk(&plan, &logits, n_vocab, targets, &mut own_records);
        }
        match &mut base {
            Base::None => score_chunk(&plan, &logits, n_vocab, targets, &mut nll),
            Base::Model(b) => {
                let base_logits = checked_logits(*b, &input, outputs, None)?;
                base_records.resize(own_records.len(), 0);
                encode_chunk(&plan, &base_logits, n_vocab, targets, &mut base_records);
                compare_chunk(&plan, &logits, n_vocab, targets, &base_records, &mut kld);
            }
            Base::File(f) => {
                f.read_chunk(&mut base_records)?;
                compare_chunk(&plan, &logits, n_vocab, targets, &base_records, &mut kld);
            }
        }
        if let Some(w) = save.as_deref_mut() {
            w.write_chunk(&own_records)?;
        }
        let running = match kld.summary() {
            Some(s) => s.ppl.value,
            None => nll.perplexity().value,
        };
        progress.chunk_done(index, running);
    }
    let summary = kld.summary();
    Ok(EvalReport {
        plan,
        n_scored: plan.n_chunks * plan.scored_per_chunk(),
        perplexity: summary.as_ref().map_or_else(|| nll.perplexity(), |s| s.ppl),
        kld: summary,
    })
}

/// The model's logits for `input` from position `outputs.first()` on,
/// checked for shape.
fn checked_logits(
    model: &dyn LogitSource,
    input: &[u32],
    outputs: Outputs,
    observer: Option<&mut dyn MatmulObserver>,
) -> Result<Vec<f32>, MeasureError> {
    let n_vocab = model.n_vocab();
    let logits = model.logits(input, outputs, observer)?;
    let n_tokens = input.len().saturating_sub(outputs.first());
    if logits.len() != n_tokens * n_vocab {
        return Err(MeasureError::LogitShape {
            got: logits.len(),
            n_tokens,
            n_vocab,
        });
    }
    Ok(logits)
}

/// Encodes a chunk's scored positions (`logits` from the first scored
/// position on) as base records.
fn encode_chunk(
    plan: &ChunkPlan,
    logits: &[f32],
    n_vocab: usize,
    targets: &[u32],
    records: &mut [u16],
) {
    let words = record_words(n_vocab);
    let first = plan.first_scored();
    for k in plan.scored_positions() {
        let row = &logits[(k - first) * n_vocab..(k - first + 1) * n_vocab];
        let rec = &mut records[(k - first) * words..(k - first + 1) * words];
        encode_record(row, targets[k + 1] as usize, rec);
    }
}

/// Compares a chunk's scored positions (`logits` from the first scored
/// position on) with the base records.
fn compare_chunk(
    plan: &ChunkPlan,
    logits: &[f32],
    n_vocab: usize,
    targets: &[u32],
    records: &[u16],
    kld: &mut KldSums,
) {
    let words = record_words(n_vocab);
    let first = plan.first_scored();
    for k in plan.scored_positions() {
        let row = &logits[(k - first) * n_vocab..(k - first + 1) * n_vocab];
        let rec = &records[(k - first) * words..(k - first + 1) * words];
        kld.add(&compare(row, rec, targets[k + 1] as usize));
    }
}

/// The outcome of [`collect_imatrix`].
#[derive(Debug, Clone)]
pub struct ImatrixRun {
    /// The statistics, ready to be written.
    pub collector: ImatrixCollector,
    /// The perplexity llama-imatrix prints beside it (second halves).
    pub perplexity: Estimate,
}

/// Runs `model` over `plan`'s chunks and collects the importance matrix
/// (every position of every chunk feeds it), as llama-imatrix does.
pub fn collect_imatrix(
    model: &dyn LogitSource,
    tokens: &[u32],
    plan: ChunkPlan,
    bos: Option<u32>,
    process_output: bool,
    progress: &dyn ChunkProgress,
) -> Result<ImatrixRun, MeasureError> {
    let n_vocab = model.n_vocab();
    let mut collector = ImatrixCollector::new(plan.n_ctx, process_output);
    let mut nll = NllSums::default();
    // llama-imatrix requests every position's logits, so every block's
    // products see every token; only the perplexity it prints needs
    // logits, and only `output.weight`'s statistics need the other rows.
    let first = plan.first_scored();
    let outputs = if process_output {
        Outputs::All
    } else {
        Outputs::FromAfterLastLayer(first)
    };
    progress.start(plan.n_chunks);
    for index in 0..plan.n_chunks {
        let input = plan.chunk_input(tokens, index, bos);
        let logits = checked_logits(model, &input, outputs, Some(&mut collector))?;
        collector.check()?;
        let targets = plan.chunk(tokens, index);
        let row_of = |k: usize| k - outputs.first();
        for k in plan.scored_positions() {
            let row = &logits[row_of(k) * n_vocab..(row_of(k) + 1) * n_vocab];
            nll.add(token_nll(row, targets[k + 1] as usize));
        }
        progress.chunk_done(index, nll.perplexity().value);
    }
    Ok(ImatrixRun {
        collector,
        perplexity: nll.perplexity(),
    })
}
