//! Where every tensor goes: the tensor table and data offsets, computed
//! before a single tensor byte is written.
//!
//! GGUF requires `offset[i] == Σ_{j<i} PAD(nbytes_j, ALIGNMENT)`: tensors are
//! packed in table order, each padded to the alignment (including the last).

use super::GgufError;
use crate::quant::GgmlType;

/// GGUF's default (and kvant's only) data alignment.
pub const ALIGNMENT: u64 = 32;

/// Longest tensor name llama.cpp accepts (`GGML_MAX_NAME` - 1).
pub const MAX_TENSOR_NAME: usize = 63;

/// One tensor's entry in the GGUF tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_qkv.weight`.
    pub name: String,
    /// Dimensions in ggml order: `ne[0]` is the contiguous (row) length,
    /// i.e. the reverse of the PyTorch shape.
    pub ne: Vec<u64>,
    /// Element type of the stored data.
    pub ty: GgmlType,
}

impl TensorInfo {
    /// Creates an entry.
    pub fn new(name: impl Into<String>, ne: Vec<u64>, ty: GgmlType) -> Self {
        TensorInfo {
            name: name.into(),
            ne,
            ty,
        }
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Bytes of this tensor's data, checking that rows fit whole blocks.
    pub fn nbytes(&self) -> Result<u64, GgufError> {
        let ne0 = *self.ne.first().unwrap_or(&1);
        let block = self.ty.block_size() as u64;
        if !ne0.is_multiple_of(block) {
            return Err(GgufError::Usage(format!(
                "tensor '{}': row length {ne0} is not a multiple of {}'s block size {block}",
                self.name, self.ty
            )));
        }
        let rows: u64 = self.ne.iter().skip(1).product();
        (ne0 / block)
            .checked_mul(self.ty.type_size() as u64)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| GgufError::Usage(format!("tensor '{}' is too large", self.name)))
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub fn pad(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

/// Checks names and computes each tensor's offset relative to the data
/// section start.
pub fn offsets(tensors: &[TensorInfo]) -> Result<Vec<u64>, GgufError> {
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME {
            return Err(GgufError::Usage(format!(
                "tensor name '{}' must be 1..={MAX_TENSOR_NAME} bytes",
                t.name
            )));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(GgufError::Usage(format!("duplicate tensor '{}'", t.name)));
        }
        if t.ne.is_empty() || t.ne.len() > 4 {
            return Err(GgufError::Usage(format!(
                "tensor '{}' has {} dimensions (1..=4 allowed)",
                t.name,
                t.ne.len()
            )));
        }
        out.push(offset);
        offset = offset
            .checked_add(pad(t.nbytes()?, ALIGNMENT))
            .ok_or_else(|| GgufError::Usage("model too large".into()))?;
    }
    Ok(out)
}
