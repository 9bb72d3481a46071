//! A tensor as a checkpoint stores it: name, element type, shape and where
//! its bytes are. Nothing is read until asked for, and then one tensor at a
//! time.

use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use super::SourceError;

/// Element types a checkpoint may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// True for floating-point types (the only ones that can be weights).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

/// Where a tensor's bytes live: a range of a shared memory map (or of an
/// owned buffer, for tests and small sources), with element strides.
#[derive(Debug, Clone)]
pub struct TensorBytes {
    backing: Backing,
    /// Byte offset of element 0 within the backing bytes.
    offset: usize,
    /// Strides in elements, one per dimension (PyTorch order).
    strides: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Backing {
    Map(Arc<Mmap>),
    Owned(Arc<[u8]>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(b) => b,
        }
    }
}

/// One tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    /// Name after prefix stripping (`_orig_mod.`, `module.`), e.g.
    /// `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Stored element type.
    pub dtype: DType,
    /// Shape in PyTorch order (outermost first). Empty for a 0-d tensor.
    pub shape: Vec<usize>,
    bytes: TensorBytes,
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

impl SourceTensor {
    /// A tensor viewing `map[offset..]` with the given element strides.
    /// Validates that every element lies inside the map (checked
    /// arithmetic), so later reads cannot go out of bounds.
    pub fn mapped(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        map: Arc<Mmap>,
        offset: usize,
        strides: Option<Vec<usize>>,
    ) -> Result<SourceTensor, SourceError> {
        Self::build(name, dtype, shape, Backing::Map(map), offset, strides)
    }

    /// A contiguous tensor over an owned buffer.
    pub fn owned(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Arc<[u8]>,
    ) -> Result<SourceTensor, SourceError> {
        Self::build(name, dtype, shape, Backing::Owned(bytes), 0, None)
    }

    fn build(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        backing: Backing,
        offset: usize,
        strides: Option<Vec<usize>>,
    ) -> Result<SourceTensor, SourceError> {
        let strides = strides.unwrap_or_else(|| contiguous_strides(&shape));
        if strides.len() != shape.len() {
            return Err(SourceError::BadTensor {
                tensor: name,
                reason: format!("{} strides for {} dimensions", strides.len(), shape.len()),
            });
        }
        let total = backing.bytes().len();
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| SourceError::BadTensor {
                tensor: name.clone(),
                reason: "element count overflows".into(),
            })?;
        if numel > 0 {
            // Last element index = Σ (size_i - 1) * stride_i.
            let last = shape.iter().zip(&strides).try_fold(0usize, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            });
            let end = last
                .and_then(|l| l.checked_add(1))
                .and_then(|n| n.checked_mul(dtype.size()))
                .and_then(|b| b.checked_add(offset));
            match end {
                Some(end) if end <= total => {}
                _ => {
                    return Err(SourceError::BadTensor {
                        tensor: name,
                        reason: format!(
                            "shape {shape:?} at byte offset {offset} does not fit in its {total}-byte storage"
                        ),
                    })
                }
            }
        }
        Ok(SourceTensor {
            name,
            dtype,
            shape,
            bytes: TensorBytes {
                backing,
                offset,
                strides,
            },
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        let want = contiguous_strides(&self.shape);
        self.shape
            .iter()
            .zip(self.bytes.strides.iter().zip(&want))
            .all(|(&d, (&s, &w))| d <= 1 || s == w)
    }

    /// The raw little-endian bytes, when the tensor is contiguous.
    pub fn contiguous_bytes(&self) -> Option<&[u8]> {
        if !self.is_contiguous() {
            return None;
        }
        let start = self.bytes.offset;
        let len = self.numel() * self.dtype.size();
        Some(&self.bytes.backing.bytes()[start..start + len])
    }

    /// Whether both tensors hold the same bytes (a tied head saved twice, or
    /// one storage seen under two names). One storage is recognised without
    /// reading it; otherwise the bytes are compared in bands whose pages
    /// are let go as they are compared, so the check never holds a tensor.
    pub fn same_bytes(&self, other: &SourceTensor) -> bool {
        let (Some(a), Some(b)) = (self.contiguous_bytes(), other.contiguous_bytes()) else {
            return false;
        };
        if a.len() != b.len() || self.dtype != other.dtype {
            return false;
        }
        if std::ptr::eq(a.as_ptr(), b.as_ptr()) {
            return true;
        }
        const BAND: usize = 8 << 20;
        let mut start = 0;
        while start < a.len() {
            let end = (start + BAND).min(a.len());
            let equal = a[start..end] == b[start..end];
            self.release_range(start..end);
            other.release_range(start..end);
            if !equal {
                return false;
            }
            start = end;
        }
        true
    }

    /// Tells the kernel this process no longer needs the pages holding
    /// this tensor's bytes, so a model streamed through a memory map never
    /// counts whole against resident memory. The pages stay in the page
    /// cache and are read back transparently if touched again.
    pub fn release_pages(&self) {
        self.release_range(0..self.numel() * self.dtype.size());
    }

    /// [`SourceTensor::release_pages`] for `range` of the tensor's bytes
    /// (relative to its first byte): a band already converted.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        if let Backing::Map(map) = &self.bytes.backing {
            let start = self.bytes.offset.saturating_add(range.start);
            let len = range.len().min(map.len().saturating_sub(start));
            if len == 0 {
                return;
            }
            // SAFETY: the map is a read-only shared mapping of a file;
            // MADV_DONTNEED on it only drops this process's page-table
            // entries, and later reads fault the same file bytes back in.
            // memmap2 rounds the start down to a page boundary.
            #[cfg(unix)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
    }

    /// Same tensor under another name (used when mapping names).
    pub fn renamed(mut self, name: String) -> SourceTensor {
        self.name = name;
        self
    }

    /// The elements as f32 in row-major order (following strides). Float
    /// types convert exactly (f64 rounds to nearest); integer types are
    /// refused.
    pub fn to_f32(&self) -> Result<Vec<f32>, SourceError> {
        if !self.dtype.is_float() {
            return Err(SourceError::BadTensor {
                tensor: self.name.clone(),
                reason: format!("{:?} is not a floating-point type", self.dtype),
            });
        }
        let n = self.numel();
        let mut out = Vec::with_capacity(n);
        let bytes = self.bytes.backing.bytes();
        let esize = self.dtype.size();
        let convert = |b: &[u8]| -> f32 { float_le(self.dtype, b) };
        if let Some(raw) = self.contiguous_bytes() {
            widen_contiguous(self.dtype, raw, &mut out);
            return Ok(out);
        }
        // Strided walk: an odometer over the index space.
        let dims = self.shape.len();
        let mut idx = vec![0usize; dims];
        for _ in 0..n {
            let elem: usize = idx
                .iter()
                .zip(&self.bytes.strides)
                .map(|(i, s)| i * s)
                .sum();
            let at = self.bytes.offset + elem * esize;
            out.push(convert(&bytes[at..at + esize]));
            for d in (0..dims).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

/// One little-endian float element of `dtype` (a float type) as f32.
fn float_le(dtype: DType, b: &[u8]) -> f32 {
    match dtype {
        DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        _ => 0.0,
    }
}

/// Contiguous little-endian floats of `dtype` widened into `out`, in
/// parallel pieces: a 124M-parameter checkpoint's tensors are half a
/// gigabyte, and one element-by-element pass over them cost a second
/// before the first forward pass could start. Each type gets its own
/// loop, which the compiler vectorises.
fn widen_contiguous(dtype: DType, raw: &[u8], out: &mut Vec<f32>) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 16;
    let esize = dtype.size();
    out.resize(raw.len() / esize, 0.0);
    let pieces = out.par_chunks_mut(PIECE).zip(raw.par_chunks(PIECE * esize));
    match dtype {
        DType::F32 => pieces.for_each(|(o, r)| {
            for (o, b) in o.iter_mut().zip(r.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }),
        DType::F16 => pieces.for_each(|(o, r)| {
            for (o, b) in o.iter_mut().zip(r.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }),
        DType::BF16 => pieces.for_each(|(o, r)| {
            for (o, b) in o.iter_mut().zip(r.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }),
        _ => pieces.for_each(|(o, r)| {
            for (o, b) in o.iter_mut().zip(r.chunks_exact(esize)) {
                *o = float_le(dtype, b);
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Arc<[u8]> {
        v.iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn transposed_view_reads_in_logical_order() {
        // storage [[1,2,3],[4,5,6]]; view = its transpose, shape [3,2].
        let t = SourceTensor::build(
            "t".into(),
            DType::F32,
            vec![3, 2],
            Backing::Owned(f32_bytes(&[1., 2., 3., 4., 5., 6.])),
            0,
            Some(vec![1, 3]),
        )
        .expect("valid view");
        assert!(!t.is_contiguous());
        assert_eq!(t.to_f32().expect("f32"), vec![1., 4., 2., 5., 3., 6.]);
    }

    /// The parallel widening of a contiguous tensor gives each element's
    /// own conversion, over several pieces and a partial last one, for
    /// every float type.
    #[test]
    fn contiguous_floats_widen_element_by_element() {
        let n = (1 << 16) * 2 + 77;
        let values: Vec<f64> = (0..n)
            .map(|i| ((i as f64) * 0.618_034).sin() * 1e3 + (i % 7) as f64 * 1e-7)
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|&v| match dtype {
                    DType::F32 => (v as f32).to_le_bytes().to_vec(),
                    DType::F16 => f16::from_f64(v).to_le_bytes().to_vec(),
                    DType::BF16 => bf16::from_f64(v).to_le_bytes().to_vec(),
                    _ => v.to_le_bytes().to_vec(),
                })
                .collect();
            let want: Vec<f32> = bytes
                .chunks_exact(dtype.size())
                .map(|b| float_le(dtype, b))
                .collect();
            let t = SourceTensor::build(
                "t".into(),
                dtype,
                vec![n],
                Backing::Owned(bytes.into()),
                0,
                None,
            )
            .expect("valid tensor");
            let got = t.to_f32().expect("floats");
            assert!(
                got.iter()
                    .map(|v| v.to_bits())
                    .eq(want.iter().map(|v| v.to_bits())),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn views_past_the_storage_are_refused() {
        let r = SourceTensor::build(
            "t".into(),
            DType::F32,
            vec![2, 3],
            Backing::Owned(f32_bytes(&[0.; 6])),
            4,
            None,
        );
        assert!(r.is_err());
    }
}
