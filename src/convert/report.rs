//! The summary of a finished job: per output, sizes, digests and the type
//! of every tensor.

use std::collections::BTreeMap;
use std::time::Instant;

use super::stream::JobTensor;
use super::{ConvertReport, OutputReport, OutputSpec};
use crate::gguf::WrittenGguf;
use crate::quant::GgmlType;

/// Parameters in the model: elements of every written tensor (a tied
/// output head is not written, so it is counted once).
pub(super) fn n_params(tensors: &[JobTensor]) -> u64 {
    tensors.iter().map(JobTensor::n_elements).sum()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_report(
    model_name: String,
    arch: String,
    context_length: u32,
    stop_tokens: Vec<String>,
    hparams: serde_json::Value,
    version: Option<String>,
    chat_template: super::ChatTemplate,
    tensors: &[JobTensor],
    specs: &[OutputSpec],
    types: &[Vec<GgmlType>],
    written: Vec<WrittenGguf>,
    started: Instant,
) -> ConvertReport {
    let outputs = written
        .into_iter()
        .zip(specs)
        .zip(types)
        .map(|((done, spec), types)| output_report(tensors, types, spec, done))
        .collect();
    ConvertReport {
        model_name,
        arch,
        n_params: n_params(tensors),
        context_length,
        stop_tokens,
        hparams,
        version,
        chat_template,
        outputs,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn output_report(
    tensors: &[JobTensor],
    types: &[GgmlType],
    spec: &OutputSpec,
    done: WrittenGguf,
) -> OutputReport {
    let mut type_counts = BTreeMap::new();
    let mut bits = 0f64;
    let mut elems = 0f64;
    for (t, ty) in tensors.iter().zip(types) {
        *type_counts.entry(ty.to_string()).or_insert(0) += 1;
        bits += ty.bits_per_weight() * t.n_elements() as f64;
        elems += t.n_elements() as f64;
    }
    OutputReport {
        path: done.path,
        file_type: spec.file_type.name(),
        sha256: done.sha256,
        size: done.size,
        type_counts,
        tensor_types: tensors
            .iter()
            .zip(types)
            .map(|(t, ty)| (t.name.clone(), ty.to_string()))
            .collect(),
        bits_per_weight: if elems > 0.0 { bits / elems } else { 0.0 },
    }
}
