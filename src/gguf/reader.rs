//! A bounded GGUF reader over a memory map.
//!
//! Every length, count and dimension is checked against the bytes left in
//! the file before anything is allocated, so a hostile or truncated file
//! gives an error naming the field, never a panic or a huge allocation.
//! Arrays of arrays are refused (llama.cpp's models never nest them), so
//! nothing recurses, and duplicates are found with hash sets, so a file of
//! millions of keys or tensors costs linear time.
//! Tensor data is not read: [`GgufFile::tensor_data`] returns a slice of
//! the map.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::layout::{pad, TensorInfo, ALIGNMENT, MAX_TENSOR_NAME};
use super::value::{GgufArray, GgufValue, Metadata, ValueType};
use super::writer::MAGIC;
use super::GgufError;
use crate::quant::GgmlType;

/// A tensor in a GGUF file being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// Name, type and dimensions.
    pub info: TensorInfo,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub nbytes: u64,
}

/// An opened GGUF file: its metadata and tensor table, data mapped lazily.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// The key/value table.
    pub metadata: Metadata,
    /// The tensor table, in file order.
    pub tensors: Vec<GgufTensor>,
    /// Where the data section starts.
    pub data_start: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, reason: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "{what} at byte {} needs {n} bytes, file has {} left",
                    self.pos,
                    self.buf.len().saturating_sub(self.pos)
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.left())
            .ok_or_else(|| self.bad(format!("{what}: string length {len} exceeds the file")))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.bad(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, ty: ValueType, what: &str) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            ValueType::U8 => GgufValue::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => GgufValue::U32(self.u32(what)?),
            ValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.bad(format!("{what}: bool byte {b}"))),
            },
            ValueType::String => GgufValue::String(self.string(what)?),
            ValueType::U64 => GgufValue::U64(self.u64(what)?),
            ValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => GgufValue::Array(self.array_value(what)?),
        })
    }

    fn array_value(&mut self, what: &str) -> Result<GgufArray, GgufError> {
        let elem_id = self.u32(what)?;
        let elem = ValueType::from_id(elem_id)
            .ok_or_else(|| self.bad(format!("{what}: unknown array element type {elem_id}")))?;
        if elem == ValueType::Array {
            return Err(self.bad(format!("{what}: nested arrays are not allowed")));
        }
        let n = self.u64(what)?;
        // Every element takes at least one byte (a string at least eight),
        // so a count larger than the bytes left is a lie: refuse it before
        // allocating.
        let min_size = elem.fixed_size().unwrap_or(8) as u64;
        if n.saturating_mul(min_size) > self.left() as u64 {
            return Err(self.bad(format!("{what}: array of {n} elements exceeds the file")));
        }
        let n = n as usize;
        macro_rules! collect {
            ($variant:ident, $t:ty) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.array(what)?));
                }
                GgufArray::$variant(v)
            }};
        }
        Ok(match elem {
            ValueType::U8 => GgufArray::U8(self.take(n, what)?.to_vec()),
            ValueType::I8 => collect!(I8, i8),
            ValueType::U16 => collect!(U16, u16),
            ValueType::I16 => collect!(I16, i16),
            ValueType::U32 => collect!(U32, u32),
            ValueType::I32 => collect!(I32, i32),
            ValueType::F32 => collect!(F32, f32),
            ValueType::U64 => collect!(U64, u64),
            ValueType::I64 => collect!(I64, i64),
            ValueType::F64 => collect!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    match self.array::<1>(what)?[0] {
                        0 => v.push(false),
                        1 => v.push(true),
                        b => return Err(self.bad(format!("{what}: bool byte {b}"))),
                    }
                }
                GgufArray::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(what)?);
                }
                GgufArray::String(v)
            }
            ValueType::Array => unreachable!("rejected above"),
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`. The file must not change while it is open
    /// (it is memory-mapped).
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        // SAFETY: the map is read-only; kvant only opens files that have
        // settled, and a file truncated underneath us can at worst SIGBUS,
        // the documented risk of every mmap reader (see ripgrep's mmap.rs).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        let (version, metadata, tensors, data_start) = parse(&map, path)?;
        Ok(GgufFile {
            path: path.to_owned(),
            map,
            version,
            metadata,
            tensors,
            data_start,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    /// The raw data bytes of `t` (checked against the file size when the
    /// file was opened).
    pub fn tensor_data(&self, t: &GgufTensor) -> &[u8] {
        &self.map[t.offset as usize..(t.offset + t.nbytes) as usize]
    }

    /// Lets the kernel drop this process's pages of `t`'s data once it has
    /// been read, so streaming a large file does not count it whole
    /// against resident memory (the pages stay in the page cache).
    pub fn release_pages(&self, t: &GgufTensor) {
        #[cfg(unix)]
        // SAFETY: a read-only shared file mapping; MADV_DONTNEED only drops
        // page-table entries, later reads fault the same bytes back in.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                t.offset as usize,
                t.nbytes as usize,
            )
        };
        #[cfg(not(unix))]
        let _ = t;
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

type Parsed = (u32, Metadata, Vec<GgufTensor>, u64);

fn parse(buf: &[u8], path: &Path) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    if c.take(4, "magic")? != MAGIC {
        return Err(c.bad("magic is not 'GGUF'"));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(c.bad(format!("unsupported version {version}")));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A tensor info takes at least 8+1+4+8+4+8 bytes; a key/value at least
    // 8+1+4+1.
    if n_tensors.saturating_mul(33) > c.left() as u64 {
        return Err(c.bad(format!("tensor count {n_tensors} exceeds the file")));
    }
    if n_kv.saturating_mul(14) > c.left() as u64 {
        return Err(c.bad(format!("metadata count {n_kv} exceeds the file")));
    }
    let mut metadata = Metadata::new();
    let mut keys = HashSet::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(c.bad(format!("metadata key #{i} is empty")));
        }
        if !keys.insert(key.clone()) {
            return Err(c.bad(format!("duplicate metadata key '{key}'")));
        }
        let ty_id = c.u32(&key)?;
        let ty = ValueType::from_id(ty_id)
            .ok_or_else(|| c.bad(format!("'{key}': unknown value type {ty_id}")))?;
        let value = c.value(ty, &key)?;
        metadata.push_new(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(c.bad(format!(
                "general.alignment must be a power-of-two u32, is {v:?}"
            )))
        }
    };
    let mut infos = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        if name.len() > MAX_TENSOR_NAME {
            return Err(c.bad(format!("tensor name '{name}' is too long")));
        }
        let n_dims = c.u32(&name)?;
        if !(1..=4).contains(&n_dims) {
            return Err(c.bad(format!("tensor '{name}' has {n_dims} dimensions")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = i64::from_le_bytes(c.array(&name)?);
            if d < 0 {
                return Err(c.bad(format!("tensor '{name}' has dimension {d}")));
            }
            ne.push(d as u64);
        }
        let ty_id = c.u32(&name)?;
        let ty = GgmlType::from_id(ty_id)
            .ok_or_else(|| c.bad(format!("tensor '{name}' has unknown ggml type {ty_id}")))?;
        let offset = c.u64(&name)?;
        let info = TensorInfo::new(name, ne, ty);
        let nbytes = info.nbytes().map_err(|e| c.bad(e.to_string()))?;
        if !names.insert(info.name.clone()) {
            return Err(c.bad(format!("duplicate tensor '{}'", info.name)));
        }
        infos.push((info, offset, nbytes));
    }
    let data_start = pad(c.pos as u64, alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    let mut expected = 0u64;
    for (info, offset, nbytes) in infos {
        if offset != expected {
            return Err(c.bad(format!(
                "tensor '{}' has offset {offset}, expected {expected}",
                info.name
            )));
        }
        let abs = data_start
            .checked_add(offset)
            .filter(|a| a.checked_add(nbytes).is_some_and(|e| e <= buf.len() as u64))
            .ok_or_else(|| {
                c.bad(format!(
                    "tensor '{}' ({nbytes} bytes at {offset}) lies beyond the end of the file",
                    info.name
                ))
            })?;
        expected = offset.saturating_add(pad(nbytes, alignment));
        tensors.push(GgufTensor {
            info,
            offset: abs,
            nbytes,
        });
    }
    Ok((version, metadata, tensors, data_start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// Metadata and a two-tensor table (F32 [3], Q8_0 [32, 2]).
    fn sample_layout() -> (Metadata, Vec<TensorInfo>) {
        let mut md = Metadata::new();
        md.set("general.architecture", "gpt2");
        md.set("gpt2.block_count", GgufValue::U32(2));
        md.set(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(vec!["a".into(), "b".into()])),
        );
        let tensors = vec![
            TensorInfo::new("a", vec![3], GgmlType::F32),
            TensorInfo::new("b", vec![32, 2], GgmlType::Q8_0),
        ];
        (md, tensors)
    }

    fn sample(dir: &Path) -> PathBuf {
        let (md, tensors) = sample_layout();
        let path = dir.join("t.gguf");
        let mut w = GgufWriter::create(&path, &md, tensors).expect("create");
        w.write_tensor("a", &[1u8; 12]).expect("a");
        w.write_tensor("b", &[2u8; 68]).expect("b");
        let done = w.finish().expect("finish");
        assert_eq!(done.size, std::fs::metadata(&path).expect("meta").len());
        path
    }

    #[test]
    fn written_file_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let f = GgufFile::open(&path).expect("open");
        assert_eq!(f.version, 3);
        assert_eq!(f.metadata.get("gpt2.block_count"), Some(&GgufValue::U32(2)));
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensor_data(&f.tensors[0]), &[1u8; 12]);
        assert_eq!(f.tensor_data(&f.tensors[1]), &[2u8; 68]);
        assert_eq!(f.tensors[1].offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let bytes = std::fs::read(&path).expect("read");
        for cut in 0..bytes.len() - 1 {
            let p = dir.path().join("cut.gguf");
            std::fs::write(&p, &bytes[..cut]).expect("write");
            // The last tensor's padding is not needed to read it.
            if let Ok(f) = GgufFile::open(&p) {
                assert!(cut >= bytes.len() - 28, "cut at {cut} accepted");
                drop(f);
            }
        }
    }

    #[test]
    fn a_tensor_given_in_pieces_is_the_same_file_and_sizes_are_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = std::fs::read(sample(dir.path())).expect("read");
        let (md, tensors) = sample_layout();
        let path = dir.path().join("pieces.gguf");
        let mut w = GgufWriter::create(&path, &md, tensors).expect("create");
        w.write_tensor("a", &[1u8; 12]).expect("a");
        assert!(w.begin_tensor("a").is_err(), "out of order");
        w.begin_tensor("b").expect("b");
        w.append_tensor_bytes(&[2u8; 30]).expect("first piece");
        assert!(w.end_tensor().is_err(), "short tensor closed");
        assert!(w.append_tensor_bytes(&[2u8; 39]).is_err(), "too many bytes");
        w.append_tensor_bytes(&[2u8; 38]).expect("second piece");
        w.end_tensor().expect("end");
        w.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), whole);
    }
}
