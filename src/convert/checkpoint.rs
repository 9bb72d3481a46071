//! Converting a checkpoint: open it, map it to a family, build the
//! tokenizer keys, then stream every planned tensor to every output.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::mix::{load_imatrix, policy_model, stamp_file_type, types_for};
use super::report::{build_report, n_params};
use super::stream::{write_outputs, JobTensor, OutputPlan, TensorData};
use super::{ChatTemplate, ConvertError, ConvertReport, ConvertRequest, ModelPaths, Progress};
use crate::adapter::{Adapter, Merge};
use crate::arch::{self, transform, ArchPlan, HParamOverrides, PlannedTensor, Recipe};
use crate::gguf::{GgufValue, Metadata};
use crate::quant::GgmlType;
use crate::source::{self, Checkpoint, DType};
use crate::tokenizer::{chat_specials, discover, gguf_vocab, TokenizerFiles};

pub(super) fn run(
    req: &ConvertRequest,
    paths: &ModelPaths,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let ck = source::open(&paths.checkpoint)?;
    let config = checkpoint_config(&ck, paths)?;
    let plan = plan_for(&ck, config.as_ref(), req, paths)?;
    stream(
        req, paths, &ck, config, plan, None, progress, cancel, started,
    )
}

/// The stored hyper-parameters: the checkpoint's own, else a sidecar
/// `config.json`.
pub(super) fn checkpoint_config(
    ck: &Checkpoint,
    paths: &ModelPaths,
) -> Result<Option<serde_json::Value>, ConvertError> {
    match (&ck.config, &paths.sidecar_config) {
        (Some(c), _) => Ok(Some(c.clone())),
        (None, Some(p)) => Ok(Some(read_json(p)?)),
        (None, None) => Ok(None),
    }
}

/// Maps `ck` to its family.
pub(super) fn plan_for(
    ck: &Checkpoint,
    config: Option<&serde_json::Value>,
    req: &ConvertRequest,
    paths: &ModelPaths,
) -> Result<ArchPlan, ConvertError> {
    let overrides = HParamOverrides { n_head: req.n_head };
    arch::plan(ck, config, &overrides).map_err(|source| ConvertError::Arch {
        path: paths.checkpoint.clone(),
        source,
    })
}

/// An adapter merged into the checkpoint as it is streamed.
pub(crate) struct Merging<'a> {
    /// What changes.
    pub merge: &'a Merge,
    /// The adapter.
    pub adapter: &'a Adapter,
}

/// Streams a planned checkpoint to every output, merging `merging`'s
/// adapter into the tensors it changes.
#[allow(clippy::too_many_arguments)]
pub(super) fn stream(
    req: &ConvertRequest,
    paths: &ModelPaths,
    ck: &Checkpoint,
    config: Option<serde_json::Value>,
    plan: ArchPlan,
    merging: Option<Merging<'_>>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    started: Instant,
) -> Result<ConvertReport, ConvertError> {
    // Planning may have compared tensors (tied heads); start streaming with
    // none of the checkpoint resident.
    for t in &ck.tensors {
        t.release_pages();
    }

    let files = tokenizer_files(
        &paths.dir,
        merging.as_ref().map(|m| m.adapter),
        req.tokenizer.as_deref(),
        config.clone(),
    );
    let vocab = gguf_vocab(&files, plan.n_vocab)?;
    let chat_template = match vocab
        .metadata
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
    {
        Some(jinja) => ChatTemplate::decide(Some(jinja), &chat_specials(&files)?),
        None => ChatTemplate::None,
    };

    let name = req.name.clone().unwrap_or_else(|| match &merging {
        Some(m) => super::default_name(&m.adapter.dir),
        None => super::default_name(&paths.checkpoint),
    });
    let tensors: Vec<JobTensor> = plan
        .tensors
        .iter()
        .map(|t| JobTensor {
            name: t.name.clone(),
            ne: t.ne.clone(),
        })
        .collect();
    let params = n_params(&tensors);
    let mut base = base_metadata(&plan, &name, params);
    if let Some(m) = &merging {
        base.extend(m.adapter.provenance(&paths.checkpoint));
    }

    let imatrix = load_imatrix(req.imatrix.as_deref())?;
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for spec in &req.outputs {
        let mut md = base.clone();
        stamp_file_type(&mut md, spec.file_type);
        md.extend(vocab.metadata.clone());
        let model = policy_model(&md, &tensors);
        let mut types = types_for(
            spec.file_type,
            &model,
            &req.type_overrides,
            imatrix.as_ref(),
        )?;
        // llama.cpp's converter stores 1-D tensors, norms, biases and
        // position embeddings as F32 whatever the output type.
        for (ty, t) in types.iter_mut().zip(&plan.tensors) {
            if t.keep_f32 {
                *ty = GgmlType::F32;
            }
        }
        outputs.push(OutputPlan {
            spec,
            metadata: md,
            types,
        });
    }
    let all_types: Vec<Vec<GgmlType>> = outputs.iter().map(|o| o.types.clone()).collect();

    let written = write_outputs(
        &tensors,
        outputs,
        &paths.checkpoint,
        imatrix.as_ref(),
        progress,
        cancel,
        |i| {
            // A tensor copied as stored is read in place, band by band;
            // the others are rearranged in memory first.
            let merged = |s: &str| merging.as_ref().is_some_and(|m| m.merge.touches(s));
            let source = plan.tensors[i].recipe.source();
            if !source.is_some_and(merged) {
                if let Some(mapped) = in_place(ck, &plan.tensors[i]) {
                    return Ok(mapped);
                }
            }
            let data = materialize(ck, &plan.tensors[i], merging.as_ref()).map(TensorData::F32);
            // The source bytes are in f32 now; let their pages go.
            if let Some(src) = plan.tensors[i].recipe.source().and_then(|s| ck.tensor(s)) {
                src.release_pages();
            }
            data
        },
        |ty, _, _| Err(format!("cannot decode {ty}")),
    )?;
    Ok(build_report(
        name,
        plan.arch.to_owned(),
        plan.context_length,
        vocab.stop_tokens.clone(),
        plan.hparams.clone(),
        // An adapter's version is its content, never the base's.
        if merging.is_some() {
            None
        } else {
            version_label(ck)
        },
        chat_template,
        &tensors,
        &req.outputs,
        &all_types,
        written,
        started,
    ))
}

/// The tokenizer files conversion reads for a model in `dir`: those beside
/// it, or an adapter folder's own (saved beside the adapter by many
/// training scripts) when it has a tokenizer.json; `tokenizer` instead of
/// the tokenizer.json found; the checkpoint's hyper-parameters as its
/// config.json.
pub(crate) fn tokenizer_files(
    dir: &Path,
    adapter: Option<&Adapter>,
    tokenizer: Option<&Path>,
    config: Option<serde_json::Value>,
) -> TokenizerFiles {
    let mut files = match adapter.map(|a| discover(&a.dir)) {
        Some(own) if own.tokenizer_json.is_some() => own,
        _ => discover(dir),
    };
    if let Some(t) = tokenizer {
        files.tokenizer_json = Some(t.to_owned());
    }
    files.config_json = config;
    files
}

/// Where a source's `tokenizer.ggml.*` keys come from: a GGUF's own, or
/// the files conversion builds them from (built only when asked, so a
/// model evaluated on token ids needs no tokenizer).
pub(crate) enum Vocabulary {
    /// A GGUF input's metadata.
    Gguf(Metadata),
    /// Tokenizer files for a model of `n_vocab` embedding rows.
    Files {
        /// The files.
        files: TokenizerFiles,
        /// Embedding rows.
        n_vocab: usize,
    },
}

impl Vocabulary {
    /// The keys, as conversion writes them.
    pub(crate) fn keys(self) -> Result<Metadata, ConvertError> {
        match self {
            Vocabulary::Gguf(md) => Ok(md),
            Vocabulary::Files { files, n_vocab } => Ok(gguf_vocab(&files, n_vocab)?.metadata),
        }
    }
}

pub(crate) fn read_json(p: &Path) -> Result<serde_json::Value, ConvertError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| ConvertError::Other(format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::Other(format!("{}: invalid JSON: {e}", p.display())))
}

/// A size label in llama.cpp's style (`1.2M`, `124M`, `7B`).
fn size_label(n: u64) -> String {
    let (v, unit) = match n {
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "B"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "M"),
        n => (n as f64 / 1e3, "K"),
    };
    if v >= 10.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// The metadata every output shares, in the order llama.cpp's converter
/// writes it: architecture, general keys, then the family's keys.
fn base_metadata(plan: &ArchPlan, name: &str, n_params: u64) -> Metadata {
    let mut md = Metadata::new();
    md.set("general.architecture", plan.arch);
    md.set("general.type", "model");
    md.set("general.name", name);
    md.set("general.size_label", size_label(n_params));
    md.set("general.parameter_count", GgufValue::U64(n_params));
    for (k, v) in plan.metadata.iter() {
        md.set(k, v.clone());
    }
    md
}

/// A planned tensor that is a plain copy of a contiguous F32/F16/BF16
/// source tensor, as its stored bytes: quantized straight from the map,
/// each band's pages let go once encoded, so even a 150 MB embedding never
/// sits in memory whole.
fn in_place<'a>(ck: &'a Checkpoint, t: &PlannedTensor) -> Option<TensorData<'a>> {
    let Recipe::Copy { source } = &t.recipe else {
        return None;
    };
    let src = ck.tensor(source)?;
    let ty = match src.dtype {
        DType::F32 => GgmlType::F32,
        DType::F16 => GgmlType::F16,
        DType::BF16 => GgmlType::BF16,
        _ => return None,
    };
    let bytes = src.contiguous_bytes()?;
    if src.numel() as u64 != t.n_elements() {
        return None; // materialize reports the mismatch
    }
    Some(TensorData::Mapped {
        ty,
        bytes,
        release: Box::new(move |r| src.release_range(r)),
        check_finite: true,
    })
}

/// Produces one planned tensor's elements as f32, in GGUF order.
pub(crate) fn materialize(
    ck: &Checkpoint,
    t: &PlannedTensor,
    merging: Option<&Merging<'_>>,
) -> Result<Vec<f32>, ConvertError> {
    let bad = |reason: String| ConvertError::Tensor {
        path: ck.path.clone(),
        tensor: t.name.clone(),
        reason,
    };
    let source = |name: &str| {
        ck.tensor(name)
            .ok_or_else(|| bad(format!("source tensor '{name}' is missing")))
    };
    // A source tensor's elements, with the adapter merged in (in the
    // checkpoint's layout, before any rearrangement).
    let read = |src: &crate::source::SourceTensor| -> Result<Vec<f32>, ConvertError> {
        let mut v = src.to_f32()?;
        if let Some(m) = merging {
            m.merge.apply(&src.name, &mut v, &m.adapter.weights)?;
        }
        Ok(v)
    };
    let data = match &t.recipe {
        Recipe::Copy { source: s } => read(source(s)?)?,
        Recipe::Transpose { source: s } => {
            let src = source(s)?;
            let [rows, cols] = match src.shape.as_slice() {
                [r, c] => [*r, *c],
                other => return Err(bad(format!("cannot transpose shape {other:?}"))),
            };
            transform::transpose(&read(src)?, rows, cols)
        }
        Recipe::PermuteRope { source: s, n_head } => {
            let src = source(s)?;
            let rows = src.shape.first().copied().unwrap_or(1);
            let cols = src.numel() / rows.max(1);
            transform::permute_rope(&read(src)?, rows, cols, *n_head)
        }
        Recipe::Zeros => vec![0.0; t.n_elements() as usize],
        Recipe::Computed { values } => values.clone(),
    };
    if data.len() as u64 != t.n_elements() {
        return Err(bad(format!(
            "has {} elements, the GGUF shape {:?} needs {}",
            data.len(),
            t.ne,
            t.n_elements()
        )));
    }
    if let Some(i) = first_non_finite(&data) {
        return Err(bad(format!(
            "element {i} is {}: the weights are not finite",
            data[i]
        )));
    }
    Ok(data)
}

/// The index of the first NaN or infinity in `data`. Pieces are tested
/// in parallel without branching (which vectorises; a checkpoint's
/// tensors are read whole before evaluation), then the first bad piece
/// is searched element by element.
fn first_non_finite(data: &[f32]) -> Option<usize> {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 14;
    let bad = |c: &[f32]| c.iter().fold(false, |bad, v| bad | !v.is_finite());
    let piece = data.par_chunks(PIECE).position_first(bad)?;
    let start = piece * PIECE;
    data[start..]
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| start + i)
}

/// nanoGPT saves `iter_num`: a natural immutable version label.
fn version_label(ck: &Checkpoint) -> Option<String> {
    ck.extra
        .get("iter_num")
        .and_then(|v| v.as_i64())
        .map(|n| format!("iter{n}"))
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;

    /// The first bad element is found wherever it lies (first piece, a
    /// piece boundary, the partial last piece), for NaN and both
    /// infinities, and later bad elements do not hide it.
    #[test]
    fn the_first_non_finite_element_is_found() {
        let mut data = vec![1.5f32; (1 << 14) * 3 + 5];
        assert_eq!(first_non_finite(&data), None);
        for at in [0, 7, 1 << 14, (1 << 14) * 2 - 1, data.len() - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                data[at] = bad;
                if at + 3 < data.len() {
                    data[at + 3] = f32::NAN;
                }
                assert_eq!(first_non_finite(&data), Some(at), "{bad} at {at}");
                data[at] = f32::MAX;
                if at + 3 < data.len() {
                    data[at + 3] = 1.5;
                }
            }
        }
        assert_eq!(first_non_finite(&data), None);
    }
}
