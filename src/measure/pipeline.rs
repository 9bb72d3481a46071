//! One measured conversion: importance matrix from the calibration text,
//! the reference's logits on the held-out text, the conversion, each
//! output measured against the reference and judged by the budget, and
//! `auto`'s bisection over the standard mixes.
//!
//! The reference model (the source in f32) is dropped before the
//! conversion starts, so a run holds it and the streaming converter's few
//! tensors at different times, never together.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::journal::{tokens_digest, Workspace};
use super::reference::Reference;
use super::{MeasureOptions, TypeChoice, DEFAULT_AUTO_FALLBACK};
use crate::convert::Progress;
use crate::convert::{self, ConvertError, ConvertReport, ConvertRequest, OutputReport, OutputSpec};
use crate::eval::forward::Model;
use crate::eval::{
    chunk_bos_of, collect_imatrix, evaluate, Base, ChunkPlan, ChunkProgress, KldSummary,
    LogitsHeader, LogitsReader, LogitsWriter, MeasureError,
};
use crate::quality::{
    AutoSearch, Candidate, MeasuredType, QualityReport, TextSource, TypeQuality, Verdict,
    AUTO_CANDIDATES,
};
use crate::quant::FileType;

/// Why a conversion was not measured (the report says so, the daemon
/// logs it once per drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotMeasured {
    /// One line.
    pub reason: String,
}

/// What a measured conversion produced.
#[derive(Debug)]
pub struct MeasuredConversion {
    /// The files on disk: every requested type, and `auto`'s choice.
    pub conversion: ConvertReport,
    /// The measurements and verdicts (`auto`'s candidates among them), or
    /// why there are none.
    pub quality: Result<QualityReport, NotMeasured>,
}

/// One written output, its numbers and the gate's verdict.
type Measured = (OutputReport, TypeQuality, Verdict);

/// The reference's logits on the held-out text, as a base-logits file.
struct ReferenceLogits {
    path: PathBuf,
    /// Names the tokens and chunking (journal keys).
    key: String,
}

/// Converts `req.source` to every type of `choices` (output paths from
/// `output_path`), measuring and judging each against the source when
/// `opts` has a held-out text. `req.outputs` is ignored.
///
/// # Errors
/// The conversion fails, a text cannot be read or tokenized or is too
/// short for two chunks, or the job is cancelled.
pub fn convert_measured(
    req: &ConvertRequest,
    choices: &[TypeChoice],
    output_path: &(dyn Fn(FileType) -> PathBuf + Sync),
    opts: &MeasureOptions,
    progress: &dyn Progress,
    chunks: &(dyn ChunkProgress + Sync),
    cancel: &AtomicBool,
) -> Result<MeasuredConversion, ConvertError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.threads.unwrap_or(0))
        .build()
        .map_err(|e| ConvertError::Other(format!("thread pool: {e}")))?;
    pool.install(|| {
        let job = Job {
            choices,
            output_path,
            opts,
            progress,
            chunks,
            cancel,
        };
        job.run(req)
    })
}

struct Job<'a> {
    choices: &'a [TypeChoice],
    output_path: &'a (dyn Fn(FileType) -> PathBuf + Sync),
    opts: &'a MeasureOptions,
    progress: &'a dyn Progress,
    chunks: &'a (dyn ChunkProgress + Sync),
    cancel: &'a AtomicBool,
}

impl Job<'_> {
    fn run(&self, req: &ConvertRequest) -> Result<MeasuredConversion, ConvertError> {
        let not_measured = not_measured_reason(&self.opts.eval_text);
        let calibrate = self.opts.calibration.path().is_some() && req.imatrix.is_none();
        if let (Some(reason), false) = (&not_measured, calibrate) {
            return self.unmeasured(req, reason.clone());
        }
        let model = req
            .name
            .clone()
            .unwrap_or_else(|| convert::default_name(&req.source));
        let work_dir = (self.output_path)(DEFAULT_AUTO_FALLBACK)
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let mut ws = Workspace::open(self.opts.journal_dir.as_deref(), &work_dir, &model)?;
        let mut req = req.clone();
        let mut imatrix_text = req
            .imatrix
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        // The source in f32 lives only for the imatrix and the reference
        // logits; it is dropped before the conversion streams.
        let reference = {
            let source = Reference::open(&req)?;
            if calibrate {
                req.imatrix = Some(self.imatrix(&source, &mut ws)?);
                imatrix_text = Some(self.opts.calibration.display_name());
            }
            match not_measured {
                Some(reason) => Err(reason),
                None => Ok(self.reference_logits(&source, &mut ws)?),
            }
        };
        match reference {
            Err(reason) => self.unmeasured(&req, reason),
            Ok(reference) => self.measured(&req, &reference, &mut ws, imatrix_text),
        }
    }

    /// A conversion with nothing measured (`auto` falls back to the usual
    /// mix).
    fn unmeasured(
        &self,
        req: &ConvertRequest,
        mut reason: NotMeasured,
    ) -> Result<MeasuredConversion, ConvertError> {
        let conversion = self.convert(req, &TypeChoice::unmeasured(self.choices))?;
        if TypeChoice::split(self.choices).1 {
            reason.reason.push_str(&format!(
                "; auto chose {} without measuring",
                DEFAULT_AUTO_FALLBACK.name()
            ));
        }
        Ok(MeasuredConversion {
            conversion,
            quality: Err(reason),
        })
    }

    fn convert(
        &self,
        req: &ConvertRequest,
        types: &[FileType],
    ) -> Result<ConvertReport, ConvertError> {
        let mut one = req.clone();
        one.outputs = types
            .iter()
            .map(|&t| OutputSpec {
                file_type: t,
                path: (self.output_path)(t),
            })
            .collect();
        convert::convert(&one, self.progress, self.cancel)
    }

    /// `text`'s tokens in `eval_ctx`-token chunks (at most `max_chunks`),
    /// and a key naming them for the journal. A text too short for two
    /// chunks is named in the error.
    fn chunked(
        &self,
        source: &Reference,
        text: &TextSource,
        max_chunks: usize,
    ) -> Result<(Vec<u32>, ChunkPlan, String), ConvertError> {
        let tokens = source.tokens(text)?;
        let plan = source
            .plan(tokens.len(), self.opts.eval_ctx, max_chunks)
            .map_err(|e| match (e, text.path()) {
                (e @ MeasureError::TooFewTokens { .. }, Some(p)) => MeasureError::Malformed {
                    path: p.to_owned(),
                    reason: format!("{e}; give a longer text or a smaller eval_ctx"),
                },
                (e, _) => e,
            })?;
        let key = format!(
            "{}-{}x{}",
            tokens_digest(&tokens),
            plan.n_ctx,
            plan.n_chunks
        );
        Ok((tokens, plan, key))
    }

    /// The importance matrix of the calibration text, from the source's
    /// own weights (reused from the journal when an earlier run made it).
    fn imatrix(&self, source: &Reference, ws: &mut Workspace) -> Result<PathBuf, ConvertError> {
        let (tokens, plan, key) =
            self.chunked(source, &self.opts.calibration, self.opts.calibration_chunks)?;
        let path = match &self.opts.save_imatrix {
            Some(p) => p.clone(),
            None => ws.file(&format!("imatrix-{key}.gguf")),
        };
        if ws.reusable(&path) && self.opts.save_imatrix.is_none() {
            return Ok(path);
        }
        let run = collect_imatrix(
            &source.model,
            &tokens,
            plan,
            source.bos(),
            false,
            self.chunks,
        )?;
        run.collector
            .write_gguf(&path, &[self.opts.calibration.display_name()])?;
        Ok(path)
    }

    /// The reference's logits on the held-out text, written once as a
    /// llama-perplexity base-logits file.
    fn reference_logits(
        &self,
        source: &Reference,
        ws: &mut Workspace,
    ) -> Result<ReferenceLogits, ConvertError> {
        let (tokens, plan, key) =
            self.chunked(source, &self.opts.eval_text, self.opts.eval_chunks)?;
        let path = ws.file(&format!("reference-{key}.logits"));
        if ws.reusable(&path) {
            return Ok(ReferenceLogits { path, key });
        }
        let header = LogitsHeader {
            n_ctx: plan.n_ctx,
            n_vocab: source.model.n_vocab(),
            n_chunks: plan.n_chunks,
        };
        let mut writer = LogitsWriter::create(&path, header, &tokens)?;
        evaluate(
            &source.model,
            &tokens,
            plan,
            source.bos(),
            Base::None,
            Some(&mut writer),
            self.chunks,
        )?;
        writer.finish()?;
        Ok(ReferenceLogits { path, key })
    }

    /// Converts, measures and judges every fixed type (in one pass), then
    /// runs `auto`'s search, converting one candidate per step.
    fn measured(
        &self,
        req: &ConvertRequest,
        reference: &ReferenceLogits,
        ws: &mut Workspace,
        imatrix_text: Option<String>,
    ) -> Result<MeasuredConversion, ConvertError> {
        let (fixed, auto) = TypeChoice::split(self.choices);
        let mut measured: Vec<Measured> = Vec::new();
        let mut base_report = None;
        if !fixed.is_empty() {
            let report = self.convert(req, &fixed)?;
            for out in &report.outputs {
                let q = self.measure(out, reference, ws)?;
                measured.push((out.clone(), q.clone(), self.opts.budget.judge(&q)));
            }
            base_report = Some(report);
        }
        let (chosen, candidates) = if auto {
            self.auto_search(req, reference, ws, &fixed, &mut measured, &mut base_report)?
        } else {
            (None, vec![])
        };
        let Some(mut conversion) = base_report else {
            return Err(ConvertError::Other("no output requested".into()));
        };
        conversion.outputs = measured.iter().map(|(o, _, _)| o.clone()).collect();
        let quality = assemble(
            &conversion,
            &measured,
            &candidates,
            chosen.as_deref(),
            self.opts,
            imatrix_text,
        );
        Ok(MeasuredConversion {
            conversion,
            quality: Ok(quality),
        })
    }

    /// `auto`'s bisection: each step converts and measures one candidate
    /// (or takes a type already measured by name), adding it to
    /// `measured`; returns the chosen mix and every candidate's outcome.
    /// Candidates converted here and not chosen are this job's own scratch
    /// and are removed.
    fn auto_search(
        &self,
        req: &ConvertRequest,
        reference: &ReferenceLogits,
        ws: &mut Workspace,
        fixed: &[FileType],
        measured: &mut Vec<Measured>,
        base_report: &mut Option<ConvertReport>,
    ) -> Result<(Option<String>, Vec<Candidate>), ConvertError> {
        let mut search = AutoSearch::new(&AUTO_CANDIDATES, self.opts.budget);
        let mut tried: Vec<OutputReport> = Vec::new();
        while let Some(t) = search.next() {
            if let Some((_, q, _)) = measured.iter().find(|(o, _, _)| o.file_type == t.name()) {
                search.record(t, q.clone());
                continue;
            }
            let report = self.convert(req, &[t])?;
            let out =
                report.outputs.first().cloned().ok_or_else(|| {
                    ConvertError::Other(format!("no {} output written", t.name()))
                })?;
            base_report.get_or_insert(report);
            let q = self.measure(&out, reference, ws)?;
            let verdict = search.record(t, q.clone());
            tried.push(out.clone());
            measured.push((out, q, verdict));
        }
        let chosen = search.chosen().map(|t| t.name());
        for out in &tried {
            if Some(&out.file_type) != chosen.as_ref() {
                let _ = std::fs::remove_file(&out.path);
            }
        }
        measured.retain(|(o, _, _)| {
            fixed.iter().any(|t| t.name() == o.file_type) || Some(&o.file_type) == chosen.as_ref()
        });
        Ok((chosen, search.candidates()))
    }

    /// One output against the reference (from the journal when an earlier
    /// run measured the same bytes on the same tokens).
    fn measure(
        &self,
        out: &OutputReport,
        reference: &ReferenceLogits,
        ws: &mut Workspace,
    ) -> Result<TypeQuality, ConvertError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Cancelled);
        }
        let key = format!("{}:{}", out.sha256, reference.key);
        if let Some(q) = ws.measured(&key) {
            tracing::info!(file_type = %out.file_type, "{}: measured by an earlier run of this job (journaled); not measured again", out.file_type);
            return Ok(q);
        }
        let q = match self.compare(&out.path, &reference.path) {
            Ok(kld) => quality_of(out, &kld),
            // A file whose logits are not finite is measured as broken,
            // never published; the journal keeps that verdict too.
            Err(MeasureError::Model(crate::eval::EvalError::NonFinite { .. })) => {
                broken_quality(out)
            }
            Err(e) => return Err(e.into()),
        };
        ws.record(key, q.clone())?;
        Ok(q)
    }

    fn compare(&self, gguf: &Path, reference: &Path) -> Result<KldSummary, MeasureError> {
        let model = Model::open_gguf(gguf)?;
        let bos = chunk_bos_of(model.metadata());
        let mut reader = LogitsReader::open(reference)?;
        let tokens = reader.tokens().to_vec();
        let plan = reader.header().plan();
        let report = evaluate(
            &model,
            &tokens,
            plan,
            bos,
            Base::File(&mut reader),
            None,
            self.chunks,
        )?;
        report.kld.ok_or_else(|| MeasureError::Malformed {
            path: reference.to_owned(),
            reason: "no KL-divergence statistics".into(),
        })
    }
}

fn not_measured_reason(eval_text: &TextSource) -> Option<NotMeasured> {
    match eval_text {
        TextSource::Missing { looked_for } => Some(NotMeasured {
            reason: format!(
                "not measured: no held-out text (looked for {}; or set eval_text)",
                looked_for.join(", ")
            ),
        }),
        _ => None,
    }
}

fn quality_of(out: &OutputReport, kld: &KldSummary) -> TypeQuality {
    TypeQuality {
        file_type: out.file_type.clone(),
        size: out.size,
        bits_per_weight: out.bits_per_weight,
        ppl: kld.ppl.value,
        ppl_base: kld.ppl_base.value,
        kld_mean: kld.kld.value,
        kld_p99: kld.kld_percentiles.get(0.99).unwrap_or(f64::NAN),
        same_top_p: kld.same_top.value,
        rms_dp: kld.p_diff_rms.value,
        n_tokens: kld.n_tokens,
    }
}

fn broken_quality(out: &OutputReport) -> TypeQuality {
    TypeQuality {
        file_type: out.file_type.clone(),
        size: out.size,
        bits_per_weight: out.bits_per_weight,
        ppl: f64::NAN,
        ppl_base: f64::NAN,
        kld_mean: f64::NAN,
        kld_p99: f64::NAN,
        same_top_p: f64::NAN,
        rms_dp: f64::NAN,
        n_tokens: 0,
    }
}

/// The report: every measured type, smallest first, with its verdict;
/// published means "within budget" here (the daemon registers exactly
/// those).
fn assemble(
    conversion: &ConvertReport,
    measured: &[Measured],
    candidates: &[Candidate],
    chosen: Option<&str>,
    opts: &MeasureOptions,
    imatrix_text: Option<String>,
) -> QualityReport {
    let mut types: Vec<MeasuredType> = measured
        .iter()
        .map(|(_, q, v)| MeasuredType {
            quality: q.clone(),
            verdict: v.clone(),
            published: v.passes(),
            chosen: chosen == Some(q.file_type.as_str()),
        })
        .collect();
    types.sort_by(|a, b| {
        a.quality
            .bits_per_weight
            .total_cmp(&b.quality.bits_per_weight)
    });
    let first = measured
        .iter()
        .map(|(_, q, _)| q)
        .find(|q| q.ppl_base.is_finite());
    QualityReport {
        model: conversion.model_name.clone(),
        version: conversion.version.clone(),
        text: opts.eval_text.display_name(),
        n_tokens: first.map_or(0, |q| q.n_tokens),
        ppl_base: first.map_or(f64::NAN, |q| q.ppl_base),
        budget: opts.budget,
        imatrix_text,
        types,
        history: vec![],
        candidates: candidates.to_vec(),
    }
}
