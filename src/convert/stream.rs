//! The streaming core shared by every kind of input: given the tensor
//! table, each output's types and metadata, and a function producing one
//! tensor's data, write every output in a single pass.
//!
//! Memory: one tensor's f32 data plus its encodings (outputs that share a
//! type share the bytes), whatever the model size. Each output is written
//! under a temporary name and renamed into place by `finish`; an error or
//! a cancel drops the writers, which removes the temporary files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ConvertError, OutputSpec, Progress};
use crate::gguf::{GgufWriter, Metadata, TensorInfo, WrittenGguf};
use crate::quant::{GgmlType, Imatrix};

/// One tensor of the output table.
#[derive(Debug, Clone)]
pub(super) struct JobTensor {
    pub name: String,
    pub ne: Vec<u64>,
}

impl JobTensor {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// One tensor's data, as the producer has it.
pub(super) enum TensorData {
    /// Elements as f32, in GGUF order.
    F32(Vec<f32>),
    /// Already-encoded bytes of type `ty` (a GGUF input's tensor that
    /// keeps its type is copied unchanged, as llama-quantize does), with a
    /// way to decode it if another output needs a different type.
    Encoded { ty: GgmlType, bytes: Vec<u8> },
}

/// What one output needs besides the shared table.
pub(super) struct OutputPlan<'a> {
    pub spec: &'a OutputSpec,
    pub metadata: Metadata,
    pub types: Vec<GgmlType>,
}

/// Writes every output; `produce(i)` gives tensor `i`'s data, called once
/// per tensor in table order. `source_path` names the input in errors.
pub(super) fn write_outputs(
    tensors: &[JobTensor],
    outputs: Vec<OutputPlan<'_>>,
    source_path: &std::path::Path,
    imatrix: Option<&Imatrix>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    mut produce: impl FnMut(usize) -> Result<TensorData, ConvertError>,
    decode: impl Fn(GgmlType, &[u8], usize) -> Result<Vec<f32>, String>,
) -> Result<Vec<WrittenGguf>, ConvertError> {
    let mut writers = Vec::with_capacity(outputs.len());
    let mut types = Vec::with_capacity(outputs.len());
    for out in outputs {
        let infos = tensors
            .iter()
            .zip(&out.types)
            .map(|(t, ty)| TensorInfo::new(t.name.clone(), t.ne.clone(), *ty))
            .collect();
        if let Some(dir) = out.spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConvertError::Other(format!("{}: {e}", dir.display())))?;
        }
        writers.push(GgufWriter::create(&out.spec.path, &out.metadata, infos)?);
        types.push(out.types);
    }

    progress.start(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Cancelled);
        }
        let bad = |reason: String| ConvertError::Tensor {
            path: source_path.to_owned(),
            tensor: t.name.clone(),
            reason,
        };
        let n_per_row = t.ne.first().copied().unwrap_or(1) as usize;
        // llama.cpp looks the tensor up by name; a size mismatch is an
        // error except for token_embd, which then goes without.
        let weights = match imatrix {
            Some(m) => match m.get(&t.name, n_per_row) {
                Ok(w) => w,
                Err(_) if t.name == "token_embd.weight" => None,
                Err(e) => return Err(bad(e.to_string())),
            },
            None => None,
        };
        let mut encoded: HashMap<GgmlType, Vec<u8>> = HashMap::new();
        let mut f32_data: Option<Vec<f32>> = None;
        match produce(i)? {
            TensorData::F32(v) => f32_data = Some(v),
            TensorData::Encoded { ty, bytes } => {
                encoded.insert(ty, bytes);
            }
        }
        for (w, types) in writers.iter_mut().zip(&types) {
            let ty = types[i];
            if !encoded.contains_key(&ty) {
                if f32_data.is_none() {
                    let (src_ty, bytes) =
                        encoded.iter().next().ok_or_else(|| bad("no data".into()))?;
                    f32_data = Some(decode(*src_ty, bytes, t.n_elements() as usize).map_err(bad)?);
                }
                let data = f32_data.as_deref().unwrap_or_default();
                let bytes = crate::quant::quantize(ty, data, n_per_row, weights)
                    .map_err(|e| bad(e.to_string()))?;
                encoded.insert(ty, bytes);
            }
            w.write_tensor(&t.name, &encoded[&ty])?;
        }
        progress.tensor_done(&t.name);
    }
    writers
        .into_iter()
        .map(|w| w.finish().map_err(ConvertError::from))
        .collect()
}
