//! Importance-matrix files (llama-imatrix output), loaded into the
//! per-column mean of x² that quantizers weight their errors with.
//!
//! Both forms llama-quantize reads are accepted: the GGUF form
//! (`<name>.in_sum2` / `<name>.counts` F32 tensors plus the `imatrix.*`
//! keys) and the legacy `.dat` stream. Values are computed exactly as the
//! pinned llama.cpp's loaders (`common/imatrix-loader.cpp` and the quantize
//! tool's `load_imatrix`) compute them, in f32.
//!
//! This file must not know about models or type policy. Invariants: every
//! length and count in a legacy file is checked against the bytes left
//! before anything is allocated; a loaded matrix holds only finite values
//! (llama.cpp refuses to quantize with any non-finite one).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::gguf::{GgufError, GgufFile, GgufValue};
use crate::quant::GgmlType;

/// Longest tensor name accepted in a legacy file (GGUF names are shorter).
const MAX_LEGACY_NAME: usize = 4096;

/// Largest legacy file read into memory: one f32 per input column of every
/// tensor (and expert) — a few hundred MB for the largest MoE models.
const MAX_LEGACY_FILE: u64 = 4 << 30;

/// Something wrong with an importance-matrix file, or a matrix that does
/// not fit a tensor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImatrixError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF imatrix the GGUF reader refused.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: GgufError,
    },
    /// The file is not a valid importance matrix.
    #[error("{path}: not a valid imatrix file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value is NaN or infinite (llama.cpp refuses these).
    #[error("{path}: imatrix entry {tensor} contains a non-finite value")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The entry.
        tensor: String,
    },
    /// The matrix for a tensor has the wrong length (llama.cpp aborts the
    /// quantization in this case).
    #[error("{path}: imatrix size {len} is different from tensor size {expected} for {tensor}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The entry's length.
        len: usize,
        /// What the tensor needs.
        expected: usize,
    },
}

/// A loaded importance matrix: per tensor name, mean(x²) per input column
/// (per expert for 3-D expert tensors, expert-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    path: PathBuf,
    entries: HashMap<String, Vec<f32>>,
    /// `imatrix.datasets` (or the legacy trailer's dataset name).
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count` (or the legacy trailer's chunk count).
    pub chunk_count: u32,
    /// True when the file was in the legacy `.dat` form.
    pub is_legacy: bool,
}

impl Imatrix {
    /// Loads `path`, GGUF form first, the legacy form when the file is not
    /// GGUF (as llama.cpp falls back when `gguf_init` fails).
    pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
        let io = |source| ImatrixError::Io {
            path: path.to_owned(),
            source,
        };
        // Only the magic decides the form; a GGUF file is then mapped by
        // the GGUF reader instead of being read whole.
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::with_capacity(4);
        (&mut file).take(4).read_to_end(&mut bytes).map_err(io)?;
        let imatrix = if bytes == crate::gguf::MAGIC {
            load_gguf(path)?
        } else {
            let len = file.metadata().map_err(io)?.len();
            if len > MAX_LEGACY_FILE {
                return Err(malformed(
                    path,
                    format!(
                        "{len} bytes is over the {MAX_LEGACY_FILE}-byte limit for a .dat imatrix"
                    ),
                ));
            }
            file.read_to_end(&mut bytes).map_err(io)?;
            load_legacy(path, &bytes)?
        };
        for (name, values) in &imatrix.entries {
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ImatrixError::NonFinite {
                    path: path.to_owned(),
                    tensor: name.clone(),
                });
            }
        }
        Ok(imatrix)
    }

    /// The weights for `tensor_name`, whose rows hold `n_per_row` values
    /// (for a 3-D expert tensor pass `ne[0] * n_expert`). `None` when the
    /// file has no entry, and — as llama.cpp — when a token embedding's
    /// entry has the wrong size; a wrong size for any other tensor is an
    /// error, because llama.cpp aborts on it.
    pub fn get(&self, tensor_name: &str, n_per_row: usize) -> Result<Option<&[f32]>, ImatrixError> {
        let Some(values) = self.entries.get(tensor_name) else {
            return Ok(None);
        };
        if values.len() == n_per_row {
            return Ok(Some(values));
        }
        if tensor_name == "token_embd.weight" || tensor_name == "per_layer_token_embd.weight" {
            return Ok(None);
        }
        Err(ImatrixError::SizeMismatch {
            path: self.path.clone(),
            tensor: tensor_name.to_string(),
            len: values.len(),
            expected: n_per_row,
        })
    }

    /// The raw entry for `tensor_name`, without the size check (for tools
    /// that hand the whole matrix on, as llama-quantize does).
    pub fn values(&self, tensor_name: &str) -> Option<&[f32]> {
        self.entries.get(tensor_name).map(Vec::as_slice)
    }

    /// Names of all entries (unordered).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the matrix has no entries (a loaded file never has none).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> ImatrixError {
    ImatrixError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The GGUF form: sums and counts per entry, divided per expert slice.
fn load_gguf(path: &Path) -> Result<Imatrix, ImatrixError> {
    let file = GgufFile::open(path).map_err(|source| ImatrixError::Gguf {
        path: path.to_owned(),
        source,
    })?;
    if file.tensors.is_empty() {
        return Err(malformed(path, "no data"));
    }
    let md = &file.metadata;
    let (datasets_key, count_key, size_key) = (
        md.get("imatrix.datasets"),
        md.get("imatrix.chunk_count"),
        md.get("imatrix.chunk_size"),
    );
    if datasets_key.is_none() || count_key.is_none() || size_key.is_none() {
        return Err(malformed(
            path,
            "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)",
        ));
    }
    let u32_key = |v: Option<&GgufValue>, key: &str| match v {
        Some(GgufValue::U32(n)) => Ok(*n),
        _ => Err(malformed(path, format!("{key} is not a u32"))),
    };
    let chunk_count = u32_key(count_key, "imatrix.chunk_count")?;
    u32_key(size_key, "imatrix.chunk_size")?;
    let datasets = match datasets_key {
        Some(GgufValue::Array(crate::gguf::GgufArray::String(items))) => items.clone(),
        _ => Vec::new(),
    };

    #[derive(Default)]
    struct Parts<'a> {
        in_sum: Option<&'a crate::gguf::GgufTensor>,
        in_sum2: Option<&'a crate::gguf::GgufTensor>,
        counts: Option<&'a crate::gguf::GgufTensor>,
    }
    let mut parts: HashMap<&str, Parts> = HashMap::new();
    for t in &file.tensors {
        let name = t.info.name.as_str();
        if name.is_empty() {
            continue;
        }
        if let Some(base) = name.strip_suffix(".in_sum") {
            parts.entry(base).or_default().in_sum = Some(t);
        } else if let Some(base) = name.strip_suffix(".in_sum2") {
            parts.entry(base).or_default().in_sum2 = Some(t);
        } else if let Some(base) = name.strip_suffix(".counts") {
            parts.entry(base).or_default().counts = Some(t);
        }
    }

    let mut entries = HashMap::new();
    for (name, p) in parts {
        let (Some(sums), Some(counts)) = (p.in_sum2, p.counts) else {
            return Err(malformed(
                path,
                format!("mismatched sums and counts for {name}"),
            ));
        };
        if p.in_sum
            .is_some_and(|s| s.info.n_elements() != sums.info.n_elements())
        {
            return Err(malformed(
                path,
                format!("mismatched sums and counts for {name}"),
            ));
        }
        if sums.info.ty != GgmlType::F32 || counts.info.ty != GgmlType::F32 {
            return Err(malformed(
                path,
                format!("sums and counts for {name} must be F32"),
            ));
        }
        let sums: Vec<f32> = f32s(file.tensor_data(sums)).collect();
        let counts: Vec<f32> = f32s(file.tensor_data(counts)).collect();
        if counts.is_empty() {
            return Err(malformed(path, format!("no counts for {name}")));
        }
        if let Some(c) = counts.iter().find(|c| !c.is_finite()) {
            return Err(malformed(
                path,
                format!("count {c} for {name} is not finite"),
            ));
        }
        // The loader stores counts as integers (lround), then the quantize
        // tool divides each expert's slice by its count as f32; a slice
        // that saw no input gets weight 1, and any tail left over by an
        // uneven split stays 0.
        let ne0 = sums.len() / counts.len();
        let mut values = vec![0.0f32; sums.len()];
        for (j, &count) in counts.iter().enumerate() {
            let count = count.round() as i64 as f32;
            let slice = j * ne0..(j + 1) * ne0;
            for (v, &s) in values[slice.clone()].iter_mut().zip(&sums[slice]) {
                *v = if count > 0.0 { s / count } else { 1.0 };
            }
        }
        entries.insert(name.to_string(), values);
    }
    Ok(Imatrix {
        path: path.to_owned(),
        entries,
        datasets,
        chunk_count,
        is_legacy: false,
    })
}

/// A little-endian reader that checks every read against the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ImatrixError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                malformed(
                    self.path,
                    format!(
                        "{what} needs {n} bytes at offset {}, file ends first",
                        self.pos
                    ),
                )
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// The legacy `.dat` form: per entry a name, a call count and values that
/// are mean(x²) times the call count.
fn load_legacy(path: &Path, bytes: &[u8]) -> Result<Imatrix, ImatrixError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    let n_entries = r.i32("entry count")?;
    if n_entries < 1 {
        return Err(malformed(path, "no data"));
    }
    let mut entries = HashMap::new();
    for i in 0..n_entries {
        let len = r.i32("name length")?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_LEGACY_NAME)
            .ok_or_else(|| malformed(path, format!("entry {i}: bad name length {len}")))?;
        let raw = r.take(len, "name")?;
        // C reads the name as a NUL-terminated string.
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(raw).into_owned();
        let ncall = r.i32("call count")?;
        let nval = r.i32("value count")?;
        if nval < 1 {
            return Err(malformed(
                path,
                format!("entry {name}: bad value count {nval}"),
            ));
        }
        let nval = nval as usize;
        if nval > r.left() / 4 {
            return Err(malformed(
                path,
                format!(
                    "entry {name}: {nval} values but only {} bytes left",
                    r.left()
                ),
            ));
        }
        let raw = r.take(nval * 4, "values")?;
        let values: Vec<f32> = if ncall > 0 {
            let n = ncall as i64 as f32;
            f32s(raw).map(|s| s / n).collect()
        } else {
            f32s(raw).collect()
        };
        entries.insert(name, values);
    }
    // The optional trailer: last chunk count, then a dataset name.
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if r.left() > 0 {
        if let Ok(n) = r.i32("chunk count") {
            chunk_count = n.max(0) as u32;
            if let Ok(len) = r.i32("dataset name length") {
                if len > 0 && len as usize <= r.left() {
                    if let Ok(raw) = r.take(len as usize, "dataset name") {
                        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
                        datasets.push(String::from_utf8_lossy(raw).into_owned());
                    }
                }
            }
        }
    }
    Ok(Imatrix {
        path: path.to_owned(),
        entries,
        datasets,
        chunk_count,
        is_legacy: true,
    })
}
