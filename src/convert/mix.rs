//! Deciding each output's tensor types: llama.cpp's policy
//! ([`crate::quant::choose_types`]) fed with the model facts from the GGUF
//! metadata, plus the importance matrix lookup per tensor.

use super::stream::JobTensor;
use super::ConvertError;
use crate::gguf::{GgufValue, Metadata};
use crate::quant::{
    choose_types, FileType, GgmlType, Imatrix, PolicyModel, PolicyTensor, TypeOverrides,
};

/// The facts the policy needs, read from the metadata the output will
/// carry (so a checkpoint and its F32 GGUF get the same decisions).
pub(super) fn policy_model(md: &Metadata, tensors: &[JobTensor]) -> PolicyModel {
    let arch = md
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .unwrap_or("")
        .to_owned();
    let u = |k: &str| {
        md.get(&format!("{arch}.{k}"))
            .and_then(GgufValue::as_u64)
            .unwrap_or(0) as u32
    };
    let n_head = u("attention.head_count");
    let n_head_kv = match u("attention.head_count_kv") {
        0 => n_head,
        v => v,
    };
    PolicyModel {
        n_layer: u("block_count"),
        n_head,
        n_head_kv,
        n_expert: u("expert_count"),
        tensors: tensors
            .iter()
            .map(|t| PolicyTensor {
                name: t.name.clone(),
                ne: t.ne.clone(),
            })
            .collect(),
        arch,
    }
}

/// Each tensor's type in an output of `ftype`.
pub(super) fn types_for(
    ftype: FileType,
    model: &PolicyModel,
    overrides: &TypeOverrides,
    imatrix: Option<&Imatrix>,
) -> Result<Vec<GgmlType>, ConvertError> {
    choose_types(ftype, model, overrides, imatrix.is_some())
        .map_err(|e| ConvertError::Other(e.to_string()))
}

/// Loads the importance matrix named in the request.
pub(super) fn load_imatrix(
    path: Option<&std::path::Path>,
) -> Result<Option<Imatrix>, ConvertError> {
    path.map(|p| Imatrix::load(p).map_err(|e| ConvertError::Other(e.to_string())))
        .transpose()
}

/// The keys that depend on the output's mix, set last as llama.cpp's tools
/// do: `general.file_type` and `general.quantization_version`.
pub(super) fn stamp_file_type(md: &mut Metadata, ftype: FileType) {
    md.set("general.file_type", GgufValue::U32(ftype.llama_ftype()));
    md.set(
        "general.quantization_version",
        GgufValue::U32(QUANTIZATION_VERSION),
    );
}

/// `general.quantization_version` (ggml's `GGML_QNT_VERSION`).
pub(super) const QUANTIZATION_VERSION: u32 = 2;
