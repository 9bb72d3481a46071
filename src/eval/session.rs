//! The evaluator as callers use it (the CLI, the daemon): name the files,
//! get the statistics. Opens the model (and its base), loads the tokens,
//! checks that everything describes the same vocabulary and chunking, and
//! runs [`evaluate`] or [`collect_imatrix`], writing outputs atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::evaluate::{collect_imatrix, evaluate, Base, ChunkProgress, EvalReport};
use super::forward::Model;
use super::logits_file::{LogitsHeader, LogitsReader, LogitsWriter};
use super::perplexity::{ChunkPlan, Estimate};
use super::vocab::{check_same_vocabulary, chunk_bos};
use super::MeasureError;
use crate::gguf::GgufFile;
use crate::tokenizer::encode::{read_token_file, TextTokenizer};

/// llama.cpp's default chunk size.
pub const DEFAULT_CTX: usize = 512;

/// Where the evaluation tokens come from.
#[derive(Debug, Clone)]
pub enum TokenInput {
    /// Ids already tokenized (as `llama_tokenize` with specials gives them).
    Ids(Vec<u32>),
    /// A nanoGPT `val.bin`/`train.bin` (uint16 little-endian ids).
    TokenFile(PathBuf),
    /// A UTF-8 text, tokenized with the model's own tokenizer as
    /// llama-perplexity tokenizes its `-f` file (one trailing newline
    /// dropped, specials added).
    Text(PathBuf),
}

/// What the model is compared with.
#[derive(Debug, Clone, Default)]
pub enum BaseInput {
    /// Nothing: perplexity only.
    #[default]
    None,
    /// Another GGUF of the same vocabulary.
    Model(PathBuf),
    /// A `--kl-divergence-base` file (llama-perplexity's or kvant's).
    Logits(PathBuf),
}

/// One evaluation, as `kvant eval` asks for it.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// The GGUF to evaluate.
    pub model: PathBuf,
    /// The tokens; may be omitted with a base-logits file (its tokens are
    /// used).
    pub tokens: Option<TokenInput>,
    /// Tokens per chunk (default 512, or the base-logits file's).
    pub n_ctx: Option<usize>,
    /// At most this many chunks.
    pub max_chunks: Option<usize>,
    /// The base.
    pub base: BaseInput,
    /// Write this model's logits as a base file here.
    pub save_logits: Option<PathBuf>,
}

fn load_tokens(
    input: &TokenInput,
    gguf: &GgufFile,
    n_vocab: usize,
) -> Result<Vec<u32>, MeasureError> {
    match input {
        TokenInput::Ids(ids) => Ok(ids.clone()),
        TokenInput::TokenFile(path) => Ok(read_token_file(path, n_vocab)?),
        TokenInput::Text(path) => {
            let raw = std::fs::read_to_string(path).map_err(|e| MeasureError::io(path, e))?;
            let text = raw.strip_suffix('\n').unwrap_or(&raw);
            Ok(TextTokenizer::from_gguf(gguf)?.encode(text, true)?)
        }
    }
}

fn open_model(path: &Path) -> Result<(GgufFile, Model), MeasureError> {
    Ok((GgufFile::open(path)?, Model::open_gguf(path)?))
}

fn check_ctx(model: &Model, path: &Path, n_ctx: usize) -> Result<(), MeasureError> {
    if n_ctx > model.n_ctx_train() {
        return Err(MeasureError::BadContext {
            n_ctx,
            reason: format!(
                "exceeds the {} positions {} was trained with",
                model.n_ctx_train(),
                path.display()
            ),
        });
    }
    Ok(())
}

/// The chunks of `n_tokens` tokens (`n_ctx` default 512), checked
/// against the model's positions.
fn plan_chunks(
    model: &Model,
    path: &Path,
    n_tokens: usize,
    n_ctx: Option<usize>,
    max_chunks: Option<usize>,
) -> Result<ChunkPlan, MeasureError> {
    let plan = ChunkPlan::new(n_tokens, n_ctx.unwrap_or(DEFAULT_CTX), max_chunks)?;
    check_ctx(model, path, plan.n_ctx)?;
    Ok(plan)
}

/// Runs one evaluation.
pub fn run_eval(
    req: &EvalRequest,
    progress: &dyn ChunkProgress,
) -> Result<EvalReport, MeasureError> {
    let (gguf, model) = open_model(&req.model)?;
    let n_vocab = model.n_vocab();
    let bos = chunk_bos(&gguf);
    let given = req
        .tokens
        .as_ref()
        .map(|t| load_tokens(t, &gguf, n_vocab))
        .transpose()?;
    if let BaseInput::Logits(path) = &req.base {
        let mut reader = LogitsReader::open(path)?;
        let tokens = check_logits_file(&reader, req, n_vocab, given.as_deref())?;
        let mut plan = reader.header().plan();
        plan.n_chunks = req
            .max_chunks
            .map_or(plan.n_chunks, |m| m.clamp(1, plan.n_chunks));
        check_ctx(&model, &req.model, plan.n_ctx)?;
        let mut save = start_save(req, plan, n_vocab, &tokens)?;
        let report = evaluate(
            &model,
            &tokens,
            plan,
            bos,
            Base::File(&mut reader),
            save.as_mut(),
            progress,
        )?;
        finish_save(save)?;
        return Ok(report);
    }
    let tokens = given.ok_or_else(|| MeasureError::Malformed {
        path: req.model.clone(),
        reason: "no text or tokens to evaluate".into(),
    })?;
    let plan = plan_chunks(&model, &req.model, tokens.len(), req.n_ctx, req.max_chunks)?;
    let base_model = match &req.base {
        BaseInput::Model(path) => {
            let (base_gguf, base) = open_model(path)?;
            check_same_vocabulary(&gguf, &base_gguf)?;
            Some(base)
        }
        _ => None,
    };
    let base = match &base_model {
        Some(m) => Base::Model(m),
        None => Base::None,
    };
    let mut save = start_save(req, plan, n_vocab, &tokens)?;
    let report = evaluate(&model, &tokens, plan, bos, base, save.as_mut(), progress)?;
    finish_save(save)?;
    Ok(report)
}

/// The base-logits file must have this vocabulary and chunk size (and the
/// text's tokens, when a text is given too); returns its tokens.
fn check_logits_file(
    reader: &LogitsReader,
    req: &EvalRequest,
    n_vocab: usize,
    given: Option<&[u32]>,
) -> Result<Vec<u32>, MeasureError> {
    let h = reader.header();
    let mismatch = |reason: String| MeasureError::Mismatch {
        path: reader.path().to_owned(),
        reason,
    };
    if h.n_vocab != n_vocab {
        return Err(mismatch(format!(
            "computed with a vocabulary of {} tokens, {} has {n_vocab}",
            h.n_vocab,
            req.model.display()
        )));
    }
    if let Some(c) = req.n_ctx.filter(|&c| c != h.n_ctx) {
        return Err(mismatch(format!(
            "computed with chunks of {} tokens (-c {}), not -c {c}",
            h.n_ctx, h.n_ctx
        )));
    }
    let tokens = reader.tokens().to_vec();
    if let Some(given) = given {
        if given.len() < tokens.len() || given[..tokens.len()] != tokens[..] {
            return Err(mismatch(
                "was computed on other tokens than the given text".into(),
            ));
        }
    }
    Ok(tokens)
}

fn start_save(
    req: &EvalRequest,
    plan: ChunkPlan,
    n_vocab: usize,
    tokens: &[u32],
) -> Result<Option<LogitsWriter>, MeasureError> {
    let Some(path) = &req.save_logits else {
        return Ok(None);
    };
    let header = LogitsHeader {
        n_ctx: plan.n_ctx,
        n_vocab,
        n_chunks: plan.n_chunks,
    };
    LogitsWriter::create(path, header, tokens).map(Some)
}

fn finish_save(save: Option<LogitsWriter>) -> Result<(), MeasureError> {
    if let Some(w) = save {
        w.finish()?;
    }
    Ok(())
}

/// The two imatrix file forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImatrixFormat {
    /// GGUF (llama-imatrix's default).
    #[default]
    Gguf,
    /// The legacy `.dat` stream.
    Dat,
}

/// One importance-matrix run, as `kvant imatrix` asks for it.
#[derive(Debug, Clone)]
pub struct ImatrixRequest {
    /// The GGUF to run (usually F32/F16/BF16).
    pub model: PathBuf,
    /// The calibration tokens.
    pub tokens: TokenInput,
    /// The dataset name stored in the file (llama-imatrix stores the text
    /// file's path as given).
    pub dataset: String,
    /// Tokens per chunk (default 512).
    pub n_ctx: Option<usize>,
    /// At most this many chunks.
    pub max_chunks: Option<usize>,
    /// Also collect `output.weight`.
    pub process_output: bool,
    /// The output file.
    pub output: PathBuf,
    /// Its form.
    pub format: ImatrixFormat,
}

/// What an imatrix run wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImatrixSummary {
    /// The file written.
    pub output: PathBuf,
    /// The chunking used.
    pub plan: ChunkPlan,
    /// Weights with statistics.
    pub entries: usize,
    /// The perplexity over the same chunks (second halves).
    pub perplexity: Estimate,
}

/// Runs one importance-matrix collection and writes the file.
pub fn run_imatrix(
    req: &ImatrixRequest,
    progress: &dyn ChunkProgress,
) -> Result<ImatrixSummary, MeasureError> {
    let (gguf, model) = open_model(&req.model)?;
    let tokens = load_tokens(&req.tokens, &gguf, model.n_vocab())?;
    let plan = plan_chunks(&model, &req.model, tokens.len(), req.n_ctx, req.max_chunks)?;
    let run = collect_imatrix(
        &model,
        &tokens,
        plan,
        chunk_bos(&gguf),
        req.process_output,
        progress,
    )?;
    match req.format {
        ImatrixFormat::Gguf => run
            .collector
            .write_gguf(&req.output, std::slice::from_ref(&req.dataset))?,
        ImatrixFormat::Dat => run.collector.write_dat(&req.output, &req.dataset)?,
    }
    Ok(ImatrixSummary {
        output: req.output.clone(),
        plan,
        entries: run.collector.entries().len(),
        perplexity: run.perplexity,
    })
}
