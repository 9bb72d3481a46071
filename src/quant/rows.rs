//! The public entry: whole tensors (rows of `n_per_row` f32) to a ggml
//! type's bytes and back, rows spread over the rayon pool.
//!
//! Splitting work by whole rows keeps the bytes identical to a serial run:
//! every block is computed by the same scalar code whichever thread runs
//! it. Memory is the input plus the output, nothing per model.

use rayon::prelude::*;

use super::fp16::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use super::imatrix_kernels;
use super::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
use super::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::{GgmlType, QuantError};

type BlockFn = fn(&[f32], &mut [u8]);

fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    Some(match ty {
        GgmlType::Q4_0 => BlockQ4_0::quantize,
        GgmlType::Q4_1 => BlockQ4_1::quantize,
        GgmlType::Q5_0 => BlockQ5_0::quantize,
        GgmlType::Q5_1 => BlockQ5_1::quantize,
        GgmlType::Q8_0 => BlockQ8_0::quantize,
        GgmlType::Q2K => BlockQ2K::quantize,
        GgmlType::Q3K => BlockQ3K::quantize,
        GgmlType::Q4K => BlockQ4K::quantize,
        GgmlType::Q5K => BlockQ5K::quantize,
        GgmlType::Q6K => |x, out| BlockQ6K::quantize_with(x, out, None),
        _ => return None,
    })
}

fn dequant_fn(ty: GgmlType) -> Option<BlockFnRev> {
    Some(match ty {
        GgmlType::Q4_0 => BlockQ4_0::dequantize,
        GgmlType::Q4_1 => BlockQ4_1::dequantize,
        GgmlType::Q5_0 => BlockQ5_0::dequantize,
        GgmlType::Q5_1 => BlockQ5_1::dequantize,
        GgmlType::Q8_0 => BlockQ8_0::dequantize,
        GgmlType::Q2K => BlockQ2K::dequantize,
        GgmlType::Q3K => BlockQ3K::dequantize,
        GgmlType::Q4K => BlockQ4K::dequantize,
        GgmlType::Q5K => BlockQ5K::dequantize,
        GgmlType::Q6K => BlockQ6K::dequantize,
        _ => return None,
    })
}

type BlockFnRev = fn(&[u8], &mut [f32]);

/// Rows per parallel task: enough work to amortise scheduling, few enough
/// to balance two to many cores.
const ROWS_PER_TASK: usize = 16;

/// Quantizes `src` (rows of `n_per_row` f32) into `ty`'s bytes, exactly
/// as `ggml_quantize_chunk` does. `imatrix` holds one importance per
/// column; it is used where ggml uses it and ignored where ggml ignores it.
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantError> {
    let n_rows = if n_per_row == 0 {
        0
    } else {
        src.len() / n_per_row
    };
    let row_size = ty.row_size(n_per_row).ok_or(QuantError::BadRowLength {
        ty,
        block: ty.block_size(),
        n_per_row,
    })?;
    let mut dst = vec![0u8; row_size * n_rows];
    quantize_into(ty, src, n_per_row, imatrix, &mut dst)?;
    Ok(dst)
}

/// [`quantize`] into a caller's buffer of exactly the right size.
pub fn quantize_into(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let bad_len = QuantError::BadRowLength {
        ty,
        block: ty.block_size(),
        n_per_row,
    };
    if n_per_row == 0 || src.len() % n_per_row != 0 {
        return Err(bad_len);
    }
    let row_size = ty.row_size(n_per_row).ok_or(bad_len)?;
    let n_rows = src.len() / n_per_row;
    if dst.len() != row_size * n_rows {
        return Err(QuantError::BadRowLength {
            ty,
            block: ty.block_size(),
            n_per_row: dst.len(),
        });
    }
    if let Some(q) = imatrix {
        if q.len() != n_per_row {
            return Err(QuantError::BadImatrix {
                got: q.len(),
                want: n_per_row,
            });
        }
    }
    if let Some((i, v)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            row: i / n_per_row,
            col: i % n_per_row,
            value: *v,
        });
    }
    match ty {
        GgmlType::F32 => {
            dst.par_chunks_mut(4 * 4096)
                .zip(src.par_chunks(4096))
                .for_each(|(d, s)| {
                    for (o, v) in d.chunks_exact_mut(4).zip(s) {
                        o.copy_from_slice(&v.to_le_bytes());
                    }
                });
            return Ok(());
        }
        GgmlType::F16 | GgmlType::BF16 => {
            let conv = if ty == GgmlType::F16 {
                f32_to_f16_bits
            } else {
                f32_to_bf16_bits
            };
            dst.par_chunks_mut(2 * 4096)
                .zip(src.par_chunks(4096))
                .for_each(|(d, s)| {
                    for (o, v) in d.chunks_exact_mut(2).zip(s) {
                        o.copy_from_slice(&conv(*v).to_le_bytes());
                    }
                });
            return Ok(());
        }
        _ => {}
    }
    let bs = ty.block_size();
    let ts = ty.type_size();
    if let Some(q) = imatrix.filter(|_| imatrix_kernels::uses_imatrix(ty)) {
        dst.par_chunks_mut(row_size * ROWS_PER_TASK)
            .zip(src.par_chunks(n_per_row * ROWS_PER_TASK))
            .for_each(|(d, s)| {
                for (drow, srow) in d.chunks_exact_mut(row_size).zip(s.chunks_exact(n_per_row)) {
                    imatrix_kernels::quantize_row(ty, srow, drow, q);
                }
            });
        return Ok(());
    }
    let f = block_fn(ty).ok_or(QuantError::Unsupported(ty))?;
    dst.par_chunks_mut(row_size * ROWS_PER_TASK)
        .zip(src.par_chunks(n_per_row * ROWS_PER_TASK))
        .for_each(|(d, s)| {
            for (out, x) in d.chunks_exact_mut(ts).zip(s.chunks_exact(bs)) {
                f(x, out);
            }
        });
    Ok(())
}

/// Decodes `n` elements of `ty` from `bytes` (ggml's `to_float`).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let bs = ty.block_size();
    let ts = ty.type_size();
    if n % bs != 0 || bytes.len() != n / bs * ts {
        return Err(QuantError::BadRowLength {
            ty,
            block: bs,
            n_per_row: n,
        });
    }
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        _ => {
            let f = dequant_fn(ty).ok_or(QuantError::Unsupported(ty))?;
            out.par_chunks_mut(bs * 64)
                .zip(bytes.par_chunks(ts * 64))
                .for_each(|(y, b)| {
                    for (yb, bb) in y.chunks_exact_mut(bs).zip(b.chunks_exact(ts)) {
                        f(bb, yb);
                    }
                });
        }
    }
    Ok(out)
}

// Each block struct's size is ggml's (`static_assert` in ggml-common.h).
const _: () = {
    assert!(BlockQ4_0::SIZE == GgmlType::Q4_0.type_size());
    assert!(BlockQ4_1::SIZE == GgmlType::Q4_1.type_size());
    assert!(BlockQ5_0::SIZE == GgmlType::Q5_0.type_size());
    assert!(BlockQ5_1::SIZE == GgmlType::Q5_1.type_size());
    assert!(BlockQ8_0::SIZE == GgmlType::Q8_0.type_size());
    assert!(BlockQ2K::SIZE == GgmlType::Q2K.type_size());
    assert!(BlockQ3K::SIZE == GgmlType::Q3K.type_size());
    assert!(BlockQ4K::SIZE == GgmlType::Q4K.type_size());
    assert!(BlockQ5K::SIZE == GgmlType::Q5K.type_size());
    assert!(BlockQ6K::SIZE == GgmlType::Q6K.type_size());
};
