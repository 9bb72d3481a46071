//! Quantization with an importance matrix (ggml's `quantize_row_*_impl`
//! with `quant_weights`).

use super::GgmlType;

/// True when ggml's quantizer for `ty` uses an importance matrix.
pub fn uses_imatrix(_ty: GgmlType) -> bool {
    false
}

/// Quantizes one row of `ty` with per-column importances `qw`.
pub fn quantize_row(_ty: GgmlType, _x: &[f32], _out: &mut [u8], _qw: &[f32]) {}
