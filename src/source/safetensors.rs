//! `.safetensors` files: an 8-byte header length, a JSON header, and the
//! tensors' bytes, read through the `safetensors` crate's validation (no
//! holes, sizes that add up, header within limits) over a memory map.

use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};

use super::{Checkpoint, DType, SourceError, SourceFormat, SourceTensor};

fn dtype(d: Dtype, name: &str, path: &Path) -> Result<DType, SourceError> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        other => {
            return Err(SourceError::Unsupported {
                path: path.to_owned(),
                reason: format!(
                    "tensor '{name}' has dtype {other:?}, which kvant does not convert"
                ),
            })
        }
    })
}

/// Reads the tensors of one safetensors file (no config).
pub fn open(path: &Path, map: Arc<Mmap>) -> Result<Checkpoint, SourceError> {
    let malformed = |e: safetensors::SafeTensorError| SourceError::Malformed {
        path: path.to_owned(),
        reason: format!("invalid safetensors file: {e}"),
    };
    let st = SafeTensors::deserialize(&map).map_err(malformed)?;
    let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(malformed)?;
    let data_start = 8 + header_len;
    let mut extra = Map::new();
    if let Some(m) = meta.metadata() {
        for (k, v) in m {
            extra.insert(k.clone(), Value::String(v.clone()));
        }
    }
    // File order (by offset), as the tensors lie on disk.
    let mut infos: Vec<(String, &safetensors::tensor::TensorInfo)> =
        meta.tensors().into_iter().map(|(n, i)| (n, i)).collect();
    infos.sort_by_key(|(_, i)| i.data_offsets.0);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let view = st.tensor(&name).map_err(malformed)?;
        let dt = dtype(view.dtype(), &name, path)?;
        tensors.push(SourceTensor::mapped(
            name,
            dt,
            view.shape().to_vec(),
            map.clone(),
            data_start + info.data_offsets.0,
            None,
        )?);
    }
    Ok(Checkpoint {
        path: path.to_owned(),
        format: SourceFormat::Safetensors,
        tensors,
        config: None,
        extra,
    })
}
