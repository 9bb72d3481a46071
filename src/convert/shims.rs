//! TEMPORARY stand-ins for APIs other modules are growing (removed as each
//! lands). Only F32/F16/BF16 outputs work through these.

use crate::quant::{FileType, GgmlType};

pub struct PolicyTensor {
    pub name: String,
    pub ne: Vec<u64>,
}

pub struct PolicyModel {
    pub tensors: Vec<PolicyTensor>,
}

pub fn choose_types(ftype: FileType, model: &PolicyModel) -> Result<Vec<GgmlType>, String> {
    Ok(model
        .tensors
        .iter()
        .map(|t| {
            if t.ne.len() < 2 || t.name.contains("_norm") || t.name.starts_with("position_embd") {
                GgmlType::F32
            } else {
                ftype.default_type()
            }
        })
        .collect())
}
