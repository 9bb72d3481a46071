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

/// Encodes one task's rows (whole blocks) into their bytes.
type BlockFn = fn(&[f32], &mut [u8]);

/// One block quantizer, inlined into the per-task loop below so that the
/// loop can be compiled once for the baseline CPU and once with AVX2.
trait Block {
    const BS: usize;
    const TS: usize;
    fn quantize(x: &[f32], out: &mut [u8]);
}

#[inline(always)]
fn each_block<B: Block>(x: &[f32], out: &mut [u8]) {
    for (o, xb) in out.chunks_exact_mut(B::TS).zip(x.chunks_exact(B::BS)) {
        B::quantize(xb, o);
    }
}

/// [`each_block`] compiled for AVX2. Only the vector width changes:
/// AVX2 does not imply FMA (which Rust would not use for `a * b + c`
/// anyway), and LLVM keeps every float operation's IEEE result, so the
/// bytes are those of the baseline build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn each_block_avx2<B: Block>(x: &[f32], out: &mut [u8]) {
    each_block::<B>(x, out);
}

/// The best [`each_block`] this CPU runs.
fn task_fn<B: Block>() -> BlockFn {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been found to support AVX2.
        return |x, out| unsafe { each_block_avx2::<B>(x, out) };
    }
    each_block::<B>
}

/// `Name: BlockStruct, block size => quantizer;` defines `Name: Block`.
macro_rules! blocks {
    ($($name:ident: $block:ident, $bs:expr => $f:path;)*) => {$(
        #[allow(non_camel_case_types)] // named after the ggml type
        struct $name;
        impl Block for $name {
            const BS: usize = $bs;
            const TS: usize = $block::SIZE;
            #[inline(always)]
            fn quantize(x: &[f32], out: &mut [u8]) {
                $f(x, out)
            }
        }
    )*};
}

blocks! {
    Q4_0: BlockQ4_0, 32 => BlockQ4_0::quantize;
    Q4_1: BlockQ4_1, 32 => BlockQ4_1::quantize;
    Q5_0: BlockQ5_0, 32 => BlockQ5_0::quantize;
    Q5_1: BlockQ5_1, 32 => BlockQ5_1::quantize;
    Q8_0: BlockQ8_0, 32 => BlockQ8_0::quantize_fast;
    Q2K: BlockQ2K, 256 => BlockQ2K::quantize;
    Q3K: BlockQ3K, 256 => BlockQ3K::quantize;
    Q4K: BlockQ4K, 256 => BlockQ4K::quantize_fast;
    Q5K: BlockQ5K, 256 => BlockQ5K::quantize_fast;
    Q6K: BlockQ6K, 256 => BlockQ6K::quantize_fast;
}

/// The per-task encoder of a block type: the lock-step kernels for
/// Q4_K/Q5_K/Q6_K and the vectorizing Q8_0 (byte-identical to their
/// references, which the unit tests check), the reference kernels for
/// the rest.
fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    Some(match ty {
        GgmlType::Q4_0 => task_fn::<Q4_0>(),
        GgmlType::Q4_1 => task_fn::<Q4_1>(),
        GgmlType::Q5_0 => task_fn::<Q5_0>(),
        GgmlType::Q5_1 => task_fn::<Q5_1>(),
        GgmlType::Q8_0 => task_fn::<Q8_0>(),
        GgmlType::Q2K => task_fn::<Q2K>(),
        GgmlType::Q3K => task_fn::<Q3K>(),
        GgmlType::Q4K => task_fn::<Q4K>(),
        GgmlType::Q5K => task_fn::<Q5K>(),
        GgmlType::Q6K => task_fn::<Q6K>(),
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

/// Elements per parallel task (rounded to whole rows, at least one):
/// enough work to amortise scheduling, balanced over two to many cores,
/// and a decode scratch that stays in cache.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// The rows of one tensor, in whatever form the caller holds them.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// f32 elements in memory.
    F32(&'a [f32]),
    /// Little-endian F32, F16 or BF16 elements exactly as a GGUF or
    /// safetensors file stores them (say, a mapped tensor). They are
    /// decoded a few rows at a time inside each task, so quantizing them
    /// never makes a whole-tensor f32 copy.
    Le {
        /// F32, F16 or BF16.
        ty: GgmlType,
        /// The encoded elements.
        bytes: &'a [u8],
    },
}

impl Rows<'_> {
    /// Bytes per element of a `Le` source, `None` for a type it cannot be.
    fn le_size(ty: GgmlType) -> Option<usize> {
        match ty {
            GgmlType::F32 => Some(4),
            GgmlType::F16 | GgmlType::BF16 => Some(2),
            _ => None,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize, QuantError> {
        match *self {
            Rows::F32(v) => Ok(v.len()),
            Rows::Le { ty, bytes } => {
                let size = Self::le_size(ty).ok_or(QuantError::Unsupported(ty))?;
                if !bytes.len().is_multiple_of(size) {
                    return Err(QuantError::BadRowLength {
                        ty,
                        block: 1,
                        n_per_row: bytes.len(),
                    });
                }
                Ok(bytes.len() / size)
            }
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len().is_ok_and(|n| n == 0)
    }

    /// The first NaN or infinity (index and value), scanned a task's
    /// worth of elements at a time: for a source some output copies
    /// unchanged, so no quantizer checks it.
    pub fn first_non_finite(&self) -> Result<Option<(usize, f32)>, QuantError> {
        let n = self.len()?;
        let mut scratch = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + ELEMS_PER_TASK).min(n);
            let x = self.f32s(start..end, &mut scratch);
            if let Some(i) = first_non_finite(x) {
                return Ok(Some((start + i, x[i])));
            }
            start = end;
        }
        Ok(None)
    }

    /// Elements `range` as f32: borrowed when they already are, else
    /// decoded into `scratch` (reused from task to task).
    fn f32s<'s>(&self, range: std::ops::Range<usize>, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        Self: 's,
    {
        let (ty, bytes) = match *self {
            Rows::F32(v) => return &v[range],
            Rows::Le { ty, bytes } => (ty, bytes),
        };
        if ty == GgmlType::F32 && cfg!(target_endian = "little") {
            let b = &bytes[range.start * 4..range.end * 4];
            // SAFETY: every bit pattern is a valid f32, and only the
            // aligned middle is used.
            let (head, mid, tail) = unsafe { b.align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                // A mapped GGUF's data is aligned: read it in place.
                return mid;
            }
        }
        scratch.clear();
        scratch.reserve(range.len());
        match ty {
            GgmlType::F16 => scratch.extend(
                bytes[range.start * 2..range.end * 2]
                    .chunks_exact(2)
                    .map(|b| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            GgmlType::BF16 => scratch.extend(
                bytes[range.start * 2..range.end * 2]
                    .chunks_exact(2)
                    .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            _ => scratch.extend(
                bytes[range.start * 4..range.end * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        scratch
    }
}

/// The index of the first NaN or infinity in `x`. Checked in blocks
/// without an early exit inside one, so the common all-finite case runs
/// as straight vector code.
#[inline]
fn first_non_finite(x: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    for (k, c) in x.chunks(256).enumerate() {
        let bad = c
            .iter()
            .fold(false, |acc, v| acc | (v.to_bits() & EXP == EXP));
        if bad {
            return c.iter().position(|v| !v.is_finite()).map(|i| k * 256 + i);
        }
    }
    None
}

/// Quantizes `src` (rows of `n_per_row` f32) into `ty`'s bytes, exactly
/// as `ggml_quantize_chunk` does. `imatrix` holds one importance per
/// column; it is used where ggml uses it and ignored where ggml ignores it.
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantError> {
    let n_rows = src.len().checked_div(n_per_row).unwrap_or(0);
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
    let n_rows = src.len().checked_div(n_per_row).unwrap_or(0);
    quantize_rows(ty, Rows::F32(src), n_per_row, imatrix, 0..n_rows, dst)
}

/// What encodes one task's rows.
#[derive(Clone, Copy)]
enum Kernel<'q> {
    /// F32, F16, BF16: element by element, to `type_size` low bytes.
    Float(fn(f32) -> u32),
    /// A block quantizer over the task's blocks.
    Blocks(BlockFn),
    /// ggml's importance-weighted quantizer, row by row.
    Imatrix(&'q [f32]),
}

/// Quantizes rows `rows` of the tensor `src` (rows of `n_per_row`) into
/// `dst`, which holds exactly those rows' bytes of `ty`. A caller streams
/// a large tensor by calling this on successive row ranges (releasing the
/// input each range came from); errors name rows of the whole tensor.
pub fn quantize_rows(
    ty: GgmlType,
    src: Rows<'_>,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    rows: std::ops::Range<usize>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let bad_len = QuantError::BadRowLength {
        ty,
        block: ty.block_size(),
        n_per_row,
    };
    let n = src.len()?;
    if n_per_row == 0 || !n.is_multiple_of(n_per_row) || rows.end > n / n_per_row {
        return Err(bad_len);
    }
    let row_size = ty.row_size(n_per_row).ok_or(bad_len)?;
    if dst.len() != row_size * rows.len() {
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
    let kernel = match ty {
        GgmlType::F32 => Kernel::Float(f32::to_bits),
        GgmlType::F16 => Kernel::Float(|v| u32::from(f32_to_f16_bits(v))),
        GgmlType::BF16 => Kernel::Float(|v| u32::from(f32_to_bf16_bits(v))),
        _ => match imatrix.filter(|_| imatrix_kernels::uses_imatrix(ty)) {
            Some(q) => Kernel::Imatrix(q),
            None => Kernel::Blocks(block_fn(ty).ok_or(QuantError::Unsupported(ty))?),
        },
    };
    let rows_per_task = (ELEMS_PER_TASK / n_per_row).max(1);
    let first = rows.start;
    let run = |scratch: &mut Vec<f32>, (k, d): (usize, &mut [u8])| {
        let r0 = first + k * rows_per_task;
        let nr = d.len() / row_size;
        let x = src.f32s(r0 * n_per_row..(r0 + nr) * n_per_row, scratch);
        if let Some(i) = first_non_finite(x) {
            return Err(QuantError::NonFinite {
                row: r0 + i / n_per_row,
                col: i % n_per_row,
                value: x[i],
            });
        }
        encode(kernel, ty, x, d, n_per_row, row_size);
        Ok(())
    };
    let result = dst
        .par_chunks_mut(row_size * rows_per_task)
        .enumerate()
        .try_for_each_init(Vec::new, run);
    // Tasks race, so the error found may not be the first: report the
    // first one, whichever task saw an error.
    if let Err(QuantError::NonFinite { .. }) = result {
        let mut scratch = Vec::new();
        for r in rows.clone() {
            let x = src.f32s(r * n_per_row..(r + 1) * n_per_row, &mut scratch);
            if let Some(i) = first_non_finite(x) {
                return Err(QuantError::NonFinite {
                    row: r,
                    col: i,
                    value: x[i],
                });
            }
        }
    }
    result
}

/// One task's rows `x` into their bytes `d`.
fn encode(
    kernel: Kernel<'_>,
    ty: GgmlType,
    x: &[f32],
    d: &mut [u8],
    n_per_row: usize,
    row_size: usize,
) {
    match kernel {
        Kernel::Float(conv) => {
            let size = ty.type_size();
            for (o, v) in d.chunks_exact_mut(size).zip(x) {
                o.copy_from_slice(&conv(*v).to_le_bytes()[..size]);
            }
        }
        Kernel::Blocks(f) => f(x, d),
        Kernel::Imatrix(q) => {
            for (drow, srow) in d.chunks_exact_mut(row_size).zip(x.chunks_exact(n_per_row)) {
                imatrix_kernels::quantize_row(ty, srow, drow, q);
            }
        }
    }
}

/// Decodes `n` elements of `ty` from `bytes` (ggml's `to_float`).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let bs = ty.block_size();
    let ts = ty.type_size();
    if !n.is_multiple_of(bs) || bytes.len() != n / bs * ts {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn le_bytes(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        match ty {
            GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => x
                .iter()
                .flat_map(|v| f32_to_f16_bits(*v).to_le_bytes())
                .collect(),
            _ => x
                .iter()
                .flat_map(|v| f32_to_bf16_bits(*v).to_le_bytes())
                .collect(),
        }
    }

    /// Encoded sources, whole or in row ranges (and misaligned), give the
    /// bytes of their decoded f32.
    #[test]
    fn le_sources_in_row_ranges_match_f32() {
        let n_per_row = 512;
        let x: Vec<f32> = (0..n_per_row * 37)
            .map(|i| ((i * 7919) % 1000) as f32 / 333.0 - 1.5)
            .collect();
        for src_ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let bytes = le_bytes(src_ty, &x);
            let decoded = dequantize(src_ty, &bytes, x.len()).expect("decode");
            let mut shifted = vec![0u8; bytes.len() + 1];
            shifted[1..].copy_from_slice(&bytes);
            for ty in [GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::F16] {
                let want = quantize(ty, &decoded, n_per_row, None).expect("quantize");
                let row_size = ty.row_size(n_per_row).expect("row size");
                for b in [&bytes[..], &shifted[1..]] {
                    let src = Rows::Le {
                        ty: src_ty,
                        bytes: b,
                    };
                    let mut got = vec![0u8; want.len()];
                    for (k, d) in got.chunks_mut(row_size * 10).enumerate() {
                        let r0 = k * 10;
                        let r1 = r0 + d.len() / row_size;
                        quantize_rows(ty, src, n_per_row, None, r0..r1, d).expect("rows");
                    }
                    assert!(got == want, "{src_ty} -> {ty}");
                }
            }
        }
    }

    /// The first bad element is reported, in whole-tensor rows, whichever
    /// task finds one first.
    #[test]
    fn non_finite_is_reported_at_its_first_place() {
        let n_per_row = 256;
        let mut x = vec![0.25f32; n_per_row * 400];
        x[n_per_row * 390 + 3] = f32::NAN;
        x[n_per_row * 201 + 17] = f32::INFINITY;
        x[n_per_row * 201 + 200] = f32::NEG_INFINITY;
        let bytes = le_bytes(GgmlType::F32, &x);
        let src = Rows::Le {
            ty: GgmlType::F32,
            bytes: &bytes,
        };
        let row_size = GgmlType::Q4K.row_size(n_per_row).expect("row size");
        let mut d = vec![0u8; row_size * 300];
        match quantize_rows(GgmlType::Q4K, src, n_per_row, None, 100..400, &mut d) {
            Err(QuantError::NonFinite {
                row: 201,
                col: 17,
                value,
            }) => {
                assert_eq!(value, f32::INFINITY)
            }
            other => panic!("{other:?}"),
        }
    }
}
