//! ggml's own quantizer (`ggml_quantize_chunk`) and decoder (`to_float`)
//! from the pinned llama.cpp: the reference every kvant kernel must equal
//! byte for byte.

use kvant::quant::GgmlType;
use llama_cpp_sys_2::*;

/// `ggml_quantize_chunk(ty, src, …, imatrix)` over all rows.
pub fn quantize_chunk(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Vec<u8> {
    super::llama::init();
    let nrows = src.len() / n_per_row;
    let row = ty.row_size(n_per_row).expect("row length fits the type");
    let mut dst = vec![0u8; row * nrows];
    // SAFETY: src holds nrows*n_per_row floats, dst is sized by ggml's
    // row size, imatrix (if any) holds n_per_row floats.
    let written = unsafe {
        ggml_quantize_init(ty.id() as ggml_type);
        ggml_quantize_chunk(
            ty.id() as ggml_type,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            nrows as i64,
            n_per_row as i64,
            imatrix.map_or(std::ptr::null(), |q| q.as_ptr()),
        )
    };
    assert_eq!(written, dst.len());
    dst
}

/// ggml's `to_float` for `ty`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    // SAFETY: traits are static; to_float reads n/blck blocks from bytes.
    unsafe {
        let traits = ggml_get_type_traits(ty.id() as ggml_type);
        let f = (*traits).to_float.expect("type has to_float");
        f(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64);
    }
    out
}
