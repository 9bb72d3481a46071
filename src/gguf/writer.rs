//! The streaming GGUF v3 writer.
//!
//! The whole layout (header, key/values, tensor table, offsets) is known
//! before any tensor data is written, so tensors can be produced one at a
//! time and memory holds only the tensor being written. The file is written
//! under a temporary name ([`crate::durable`]) and appears under its final
//! name only when [`GgufWriter::finish`] succeeds; its SHA-256 is computed
//! from the bytes as they are written (Ollama's blob upload needs it).
//!
//! On-disk layout written here:
//!
//! ```text
//! "GGUF" u32 version=3  u64 n_tensors  u64 n_kv
//! n_kv × { string key, i32 type, value }
//! n_tensors × { string name, u32 n_dims, i64 ne[n_dims], i32 ggml_type, u64 offset }
//! zero padding to ALIGNMENT
//! tensor data, each tensor zero-padded to ALIGNMENT (the last one too)
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::layout::{offsets, pad, TensorInfo, ALIGNMENT};
use super::value::{GgufArray, GgufValue, Metadata};
use super::GgufError;
use crate::durable::AtomicFile;

/// The GGUF magic bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The GGUF version kvant writes.
pub const VERSION: u32 = 3;

/// A finished GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenGguf {
    /// Where it now is.
    pub path: PathBuf,
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A `Write` that counts and hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one GGUF file, tensor by tensor, in table order.
pub struct GgufWriter {
    out: HashingWriter<BufWriter<std::fs::File>>,
    atomic: AtomicFile,
    tensors: Vec<TensorInfo>,
    offsets: Vec<u64>,
    data_start: u64,
    next: usize,
    /// Bytes written when writeback was last started.
    writeback_at: u64,
}

/// How much output accumulates before its disk writes are started.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.atomic.final_path())
            .field("next", &self.next)
            .finish()
    }
}

impl GgufWriter {
    /// Starts `path` (under a temporary name): writes the header, the
    /// metadata and the tensor table.
    pub fn create(
        path: &Path,
        metadata: &Metadata,
        tensors: Vec<TensorInfo>,
    ) -> Result<GgufWriter, GgufError> {
        let offsets = offsets(&tensors)?;
        let mut atomic = AtomicFile::create(path).map_err(|e| GgufError::io(path, e))?;
        let file = atomic
            .file()
            .try_clone()
            .map_err(|e| GgufError::io(path, e))?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        };
        let io = |e| GgufError::io(path, e);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
        out.write_all(&(tensors.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&(metadata.len() as u64).to_le_bytes())
            .map_err(io)?;
        for (key, value) in metadata.iter() {
            if key.is_empty() {
                return Err(GgufError::Usage("empty metadata key".into()));
            }
            write_string(&mut out, key).map_err(io)?;
            out.write_all(&(value.value_type() as i32).to_le_bytes())
                .map_err(io)?;
            write_value(&mut out, value).map_err(io)?;
        }
        for (t, off) in tensors.iter().zip(&offsets) {
            write_string(&mut out, &t.name).map_err(io)?;
            out.write_all(&(t.ne.len() as u32).to_le_bytes())
                .map_err(io)?;
            for &d in &t.ne {
                out.write_all(&(d as i64).to_le_bytes()).map_err(io)?;
            }
            out.write_all(&(t.ty.id() as i32).to_le_bytes())
                .map_err(io)?;
            out.write_all(&off.to_le_bytes()).map_err(io)?;
        }
        let data_start = pad(out.written, ALIGNMENT);
        let header_pad = data_start - out.written;
        write_zeros(&mut out, header_pad).map_err(io)?;
        Ok(GgufWriter {
            out,
            atomic,
            tensors,
            offsets,
            data_start,
            next: 0,
            writeback_at: 0,
        })
    }

    /// The tensor table, in the order tensors must be written.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Index of the next tensor [`GgufWriter::write_tensor`] expects.
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Writes the data of the next tensor in table order; `data` must be
    /// exactly that tensor's size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        self.begin_tensor(name)?;
        self.append_tensor_bytes(data)?;
        self.end_tensor()
    }

    /// Starts the next tensor in table order, to be given in pieces with
    /// [`GgufWriter::append_tensor_bytes`] and closed by
    /// [`GgufWriter::end_tensor`] (so a big tensor's first bytes reach the
    /// disk while its last ones are still being encoded).
    pub fn begin_tensor(&mut self, name: &str) -> Result<(), GgufError> {
        let Some(info) = self.tensors.get(self.next) else {
            return Err(GgufError::Usage(format!(
                "tensor '{name}' written after the last tensor"
            )));
        };
        if info.name != name {
            return Err(GgufError::Usage(format!(
                "expected tensor '{}' next, got '{name}'",
                info.name
            )));
        }
        // The same check candle's writer makes: the stream must be exactly
        // where the table said this tensor starts.
        let expected = self.data_start + self.offsets[self.next];
        if self.out.written != expected {
            return Err(GgufError::Usage(format!(
                "internal error: at byte {} but tensor '{name}' starts at {expected}",
                self.out.written
            )));
        }
        Ok(())
    }

    /// Appends bytes to the tensor begun last; more than its size is an
    /// error.
    pub fn append_tensor_bytes(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let (start, nbytes, name) = self.current()?;
        if self.out.written - start + data.len() as u64 > nbytes {
            return Err(GgufError::Usage(format!(
                "tensor '{name}': more than its {nbytes} bytes given"
            )));
        }
        let path = self.atomic.final_path().to_owned();
        self.out
            .write_all(data)
            .map_err(|e| GgufError::io(&path, e))?;
        if self.out.written - self.writeback_at >= WRITEBACK_EVERY {
            self.out.flush().map_err(|e| GgufError::io(&path, e))?;
            crate::durable::start_writeback(
                self.out.inner.get_ref(),
                self.writeback_at..self.out.written,
            );
            self.writeback_at = self.out.written;
        }
        Ok(())
    }

    /// Closes the tensor begun last: it must have exactly its size; the
    /// alignment padding follows.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        let (start, nbytes, name) = self.current()?;
        let given = self.out.written - start;
        if given != nbytes {
            return Err(GgufError::Usage(format!(
                "tensor '{name}': {given} bytes given, {nbytes} expected"
            )));
        }
        let path = self.atomic.final_path().to_owned();
        write_zeros(&mut self.out, pad(nbytes, ALIGNMENT) - nbytes)
            .map_err(|e| GgufError::io(&path, e))?;
        self.next += 1;
        Ok(())
    }

    /// The open tensor's start offset in the file, size and name.
    fn current(&self) -> Result<(u64, u64, String), GgufError> {
        let info = self
            .tensors
            .get(self.next)
            .ok_or_else(|| GgufError::Usage("no tensor begun".into()))?;
        Ok((
            self.data_start + self.offsets[self.next],
            info.nbytes()?,
            info.name.clone(),
        ))
    }

    /// Flushes, syncs and renames the file into place. Fails, leaving
    /// nothing behind, if any tensor was not written.
    pub fn finish(mut self) -> Result<WrittenGguf, GgufError> {
        if self.next != self.tensors.len() {
            return Err(GgufError::Usage(format!(
                "finish() after {} of {} tensors",
                self.next,
                self.tensors.len()
            )));
        }
        let path = self.atomic.final_path().to_owned();
        self.out.flush().map_err(|e| GgufError::io(&path, e))?;
        let size = self.out.written;
        let sha256 = hex::encode(self.out.hasher.finalize_reset());
        let path = self.atomic.commit().map_err(|e| GgufError::io(&path, e))?;
        Ok(WrittenGguf { path, sha256, size })
    }
}

fn write_zeros(w: &mut impl Write, n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 64] = [0; 64];
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &GgufValue) -> std::io::Result<()> {
    match v {
        GgufValue::U8(x) => w.write_all(&[*x]),
        GgufValue::I8(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::Bool(x) => w.write_all(&[u8::from(*x)]),
        GgufValue::String(s) => write_string(w, s),
        GgufValue::U64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::Array(a) => {
            w.write_all(&(a.elem_type() as i32).to_le_bytes())?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            write_array_items(w, a)
        }
    }
}

fn write_array_items(w: &mut impl Write, a: &GgufArray) -> std::io::Result<()> {
    macro_rules! each_le {
        ($v:expr) => {{
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match a {
        GgufArray::U8(v) => w.write_all(v),
        GgufArray::I8(v) => each_le!(v),
        GgufArray::U16(v) => each_le!(v),
        GgufArray::I16(v) => each_le!(v),
        GgufArray::U32(v) => each_le!(v),
        GgufArray::I32(v) => each_le!(v),
        GgufArray::F32(v) => each_le!(v),
        GgufArray::Bool(v) => {
            for x in v {
                w.write_all(&[u8::from(*x)])?;
            }
            Ok(())
        }
        GgufArray::String(v) => {
            for s in v {
                write_string(w, s)?;
            }
            Ok(())
        }
        GgufArray::U64(v) => each_le!(v),
        GgufArray::I64(v) => each_le!(v),
        GgufArray::F64(v) => each_le!(v),
    }
}
