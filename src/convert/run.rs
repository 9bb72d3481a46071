//! The conversion pass itself: open, plan, then one streaming pass over
//! the planned tensors writing every requested output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::shims::{choose_types, discover, gguf_vocab, quantize, PolicyModel, PolicyTensor};
use super::{locate, ConvertError, ConvertReport, ConvertRequest, OutputReport, Progress};
use crate::arch::{self, transform, ArchPlan, HParamOverrides, PlannedTensor, Recipe};
use crate::gguf::{GgufValue, GgufWriter, Metadata, TensorInfo};
use crate::quant::{FileType, GgmlType};
use crate::source::{self, Checkpoint};

/// `general.quantization_version` (ggml's `GGML_QNT_VERSION`).
const QUANTIZATION_VERSION: u32 = 2;

/// File stems that say nothing about the model; the folder name is used
/// instead.
const GENERIC_STEMS: [&str; 6] = [
    "ckpt",
    "model",
    "best_model",
    "pytorch_model",
    "final",
    "checkpoint",
];

pub(super) fn run(
    req: &ConvertRequest,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    if req.outputs.is_empty() {
        return Err(ConvertError::Other("no output requested".into()));
    }
    let paths = locate(&req.source)?;
    if paths.is_gguf {
        return Err(ConvertError::Other(format!(
            "{}: re-quantizing a GGUF is not supported yet",
            paths.checkpoint.display()
        )));
    }
    let ck = source::open(&paths.checkpoint)?;
    let sidecar = match &paths.sidecar_config {
        Some(p) => Some(read_json(p)?),
        None => None,
    };
    let config = ck.config.as_ref().or(sidecar.as_ref());
    let overrides = HParamOverrides { n_head: req.n_head };
    let plan = arch::plan(&ck, config, &overrides).map_err(|source| ConvertError::Arch {
        path: paths.checkpoint.clone(),
        source,
    })?;

    let mut files = discover(&paths.dir);
    if let Some(t) = &req.tokenizer {
        files.tokenizer_json = Some(t.clone());
    }
    files.config_json = config.cloned();
    let vocab = gguf_vocab(&files, plan.n_vocab)
        .map_err(|e| ConvertError::Other(format!("{}: {e}", paths.checkpoint.display())))?;

    let name = req
        .name
        .clone()
        .unwrap_or_else(|| default_name(&paths.checkpoint));
    let n_params: u64 = plan.tensors.iter().map(PlannedTensor::n_elements).sum();
    let base = base_metadata(&plan, &name, n_params);

    // Each output's tensor types, decided before anything is written.
    let policy_model = PolicyModel {
        tensors: plan
            .tensors
            .iter()
            .map(|t| PolicyTensor {
                name: t.name.clone(),
                ne: t.ne.clone(),
            })
            .collect(),
    };
    let mut writers = Vec::with_capacity(req.outputs.len());
    let mut all_types = Vec::with_capacity(req.outputs.len());
    for out in &req.outputs {
        let types = output_types(out.file_type, &plan, &policy_model)?;
        let mut md = base.clone();
        md.set(
            "general.file_type",
            GgufValue::U32(out.file_type.llama_ftype()),
        );
        md.set(
            "general.quantization_version",
            GgufValue::U32(QUANTIZATION_VERSION),
        );
        md.extend(vocab.metadata.clone());
        let infos = plan
            .tensors
            .iter()
            .zip(&types)
            .map(|(t, ty)| TensorInfo::new(t.name.clone(), t.ne.clone(), *ty))
            .collect();
        if let Some(dir) = out.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConvertError::Other(format!("{}: {e}", dir.display())))?;
        }
        writers.push(GgufWriter::create(&out.path, &md, infos)?);
        all_types.push(types);
    }

    // One pass: each tensor is read and converted to f32 once, then
    // encoded for every output (outputs sharing a type share the bytes).
    progress.start(plan.tensors.len());
    for (i, t) in plan.tensors.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Cancelled);
        }
        let data = materialize(&ck, t)?;
        let n_per_row = t.ne.first().copied().unwrap_or(1) as usize;
        let mut encoded: HashMap<GgmlType, Vec<u8>> = HashMap::new();
        for (w, types) in writers.iter_mut().zip(&all_types) {
            let ty = types[i];
            if !encoded.contains_key(&ty) {
                let bytes =
                    quantize(ty, &data, n_per_row).map_err(|reason| ConvertError::Tensor {
                        path: paths.checkpoint.clone(),
                        tensor: t.name.clone(),
                        reason: reason.to_string(),
                    })?;
                encoded.insert(ty, bytes);
            }
            w.write_tensor(&t.name, &encoded[&ty])?;
        }
        progress.tensor_done(&t.name);
    }

    let mut outputs = Vec::with_capacity(writers.len());
    for ((w, types), spec) in writers.into_iter().zip(&all_types).zip(&req.outputs) {
        let done = w.finish()?;
        outputs.push(output_report(&plan, types, spec.file_type, done));
    }
    Ok(ConvertReport {
        model_name: name,
        arch: plan.arch.to_owned(),
        n_params,
        context_length: plan.context_length,
        stop_tokens: vocab.stop_tokens.clone(),
        hparams: plan.hparams.clone(),
        version: version_label(&ck),
        outputs,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn read_json(p: &Path) -> Result<serde_json::Value, ConvertError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| ConvertError::Other(format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::Other(format!("{}: invalid JSON: {e}", p.display())))
}

/// The model's name: the file stem, or the folder's name when the stem is
/// generic (`ckpt.pt` says nothing; its folder usually does).
pub fn default_name(checkpoint: &Path) -> String {
    let stem = checkpoint
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = || {
        std::path::absolute(checkpoint).ok().and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
    };
    if checkpoint.is_dir() {
        return std::path::absolute(checkpoint)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
    }
    if stem.is_empty() || GENERIC_STEMS.contains(&stem.as_str()) {
        folder().unwrap_or_else(|| "model".into())
    } else {
        stem
    }
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

fn output_types(
    ftype: FileType,
    plan: &ArchPlan,
    model: &PolicyModel,
) -> Result<Vec<GgmlType>, ConvertError> {
    let mut types = choose_types(ftype, model).map_err(|e| ConvertError::Other(e.to_string()))?;
    // llama.cpp's converter stores 1-D tensors, norms, biases and position
    // embeddings as F32 whatever the output type.
    for (ty, t) in types.iter_mut().zip(&plan.tensors) {
        if t.keep_f32 {
            *ty = GgmlType::F32;
        }
    }
    Ok(types)
}

/// Produces one planned tensor's elements as f32, in GGUF order.
fn materialize(ck: &Checkpoint, t: &PlannedTensor) -> Result<Vec<f32>, ConvertError> {
    let bad = |reason: String| ConvertError::Tensor {
        path: ck.path.clone(),
        tensor: t.name.clone(),
        reason,
    };
    let source = |name: &str| {
        ck.tensor(name)
            .ok_or_else(|| bad(format!("source tensor '{name}' is missing")))
    };
    let data = match &t.recipe {
        Recipe::Copy { source: s } => source(s)?.to_f32()?,
        Recipe::Transpose { source: s } => {
            let src = source(s)?;
            let [rows, cols] = match src.shape.as_slice() {
                [r, c] => [*r, *c],
                other => return Err(bad(format!("cannot transpose shape {other:?}"))),
            };
            transform::transpose(&src.to_f32()?, rows, cols)
        }
        Recipe::PermuteRope { source: s, n_head } => {
            let src = source(s)?;
            let rows = src.shape.first().copied().unwrap_or(1);
            let cols = src.numel() / rows.max(1);
            transform::permute_rope(&src.to_f32()?, rows, cols, *n_head)
        }
        Recipe::Zeros => vec![0.0; t.n_elements() as usize],
    };
    if data.len() as u64 != t.n_elements() {
        return Err(bad(format!(
            "has {} elements, the GGUF shape {:?} needs {}",
            data.len(),
            t.ne,
            t.n_elements()
        )));
    }
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(format!(
            "element {i} is {v}: the weights are not finite"
        )));
    }
    Ok(data)
}

fn output_report(
    plan: &ArchPlan,
    types: &[GgmlType],
    ftype: FileType,
    done: crate::gguf::WrittenGguf,
) -> OutputReport {
    let mut type_counts = BTreeMap::new();
    let mut bits = 0f64;
    let mut elems = 0f64;
    for (t, ty) in plan.tensors.iter().zip(types) {
        *type_counts.entry(ty.to_string()).or_insert(0) += 1;
        bits += ty.bits_per_weight() * t.n_elements() as f64;
        elems += t.n_elements() as f64;
    }
    OutputReport {
        path: done.path,
        file_type: ftype.name(),
        sha256: done.sha256,
        size: done.size,
        type_counts,
        tensor_types: plan
            .tensors
            .iter()
            .zip(types)
            .map(|(t, ty)| (t.name.clone(), ty.to_string()))
            .collect(),
        bits_per_weight: if elems > 0.0 { bits / elems } else { 0.0 },
    }
}

/// nanoGPT saves `iter_num`: a natural immutable version label.
fn version_label(ck: &Checkpoint) -> Option<String> {
    ck.extra
        .get("iter_num")
        .and_then(|v| v.as_i64())
        .map(|n| format!("iter{n}"))
}
