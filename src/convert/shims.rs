//! TEMPORARY stand-ins for APIs other modules are growing (removed as each
//! lands). Only F32/F16/BF16 outputs work through these.

use std::path::{Path, PathBuf};

use crate::gguf::Metadata;
use crate::quant::{FileType, GgmlType};

pub struct TokenizerFiles {
    pub tokenizer_json: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    pub spm_model: Option<PathBuf>,
    pub config_json: Option<serde_json::Value>,
}

pub struct Vocab {
    pub metadata: Metadata,
    pub stop_tokens: Vec<String>,
}

pub fn discover(_dir: &Path) -> TokenizerFiles {
    TokenizerFiles {
        tokenizer_json: None,
        tokenizer_config: None,
        spm_model: None,
        config_json: None,
    }
}

pub fn gguf_vocab(_f: &TokenizerFiles, _rows: usize) -> Result<Vocab, String> {
    Err("tokenizer conversion is not implemented yet".into())
}

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

pub fn quantize(ty: GgmlType, src: &[f32], _n_per_row: usize) -> Result<Vec<u8>, String> {
    Ok(match ty {
        GgmlType::F32 => src.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => src
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        GgmlType::BF16 => src
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        other => return Err(format!("{other} is not implemented yet")),
    })
}

pub fn dequantize(ty: GgmlType, bytes: &[u8], _n: usize) -> Result<Vec<f32>, String> {
    Ok(match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("cannot decode {other} yet")),
    })
}
