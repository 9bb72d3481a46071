//! Where the weights live and how the graphs find them by GGUF name.
//!
//! A [`Store`] is either a mapped GGUF file (matrices are read from the
//! map in place, never copied whole) or a checkpoint's tensors decoded to
//! f32 and held in memory, each in the vector it was made in. Either way the graphs see a [`Matrix`] (a 2-D
//! weight of any ggml type, multiplied through `matmul`) or a small 1-D
//! vector decoded to f32 once (norms, biases).

use std::collections::HashMap;
use std::ops::Range;

use crate::eval::EvalError;
use crate::gguf::{GgufFile, Metadata};
use crate::quant::{dequantize, GgmlType};

/// One tensor's entry: its type, ggml dimensions and bytes in the store.
#[derive(Debug, Clone)]
struct Entry {
    ty: GgmlType,
    ne: Vec<u64>,
    place: Place,
}

/// Where a tensor's bytes are.
#[derive(Debug, Clone)]
enum Place {
    /// A byte range of the mapped GGUF file.
    File(Range<usize>),
    /// One of the tensors made in memory, whole.
    Owned(usize),
}

/// The bytes behind the tensors.
#[derive(Debug)]
enum Bytes {
    /// A mapped GGUF file.
    Gguf(GgufFile),
    /// Tensors made in memory (a checkpoint's, as f32 whose memory holds
    /// their little-endian bytes), kept in the vectors they were made in:
    /// copying half a gigabyte into one buffer cost more than making it.
    Owned(Vec<Vec<f32>>),
}

/// The tensors of one model and its metadata.
#[derive(Debug)]
pub(crate) struct Store {
    bytes: Bytes,
    entries: HashMap<String, Entry>,
    /// `general.architecture` and the `<arch>.*` keys.
    pub metadata: Metadata,
}

/// A 2-D weight `[n_in, n_out]` (ggml order): `n_out` rows of `n_in`.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    /// GGUF name, as the observer and errors report it.
    pub name: String,
    /// Stored type.
    pub ty: GgmlType,
    /// Row length (input features).
    pub n_in: usize,
    /// Rows (output features).
    pub n_out: usize,
    place: Place,
}

impl Store {
    /// The tensors of a GGUF file, read in place from its map.
    pub fn gguf(file: GgufFile) -> Store {
        let entries = file
            .tensors
            .iter()
            .map(|t| {
                let start = t.offset as usize;
                let entry = Entry {
                    ty: t.info.ty,
                    ne: t.info.ne.clone(),
                    place: Place::File(start..start + t.nbytes as usize),
                };
                (t.info.name.clone(), entry)
            })
            .collect();
        let metadata = file.metadata.clone();
        Store {
            bytes: Bytes::Gguf(file),
            entries,
            metadata,
        }
    }

    /// Tensors made one at a time as f32 elements with their ggml
    /// dimensions (a checkpoint's), kept as they come.
    pub fn owned<I>(tensors: I, metadata: Metadata) -> Result<Store, EvalError>
    where
        I: IntoIterator<Item = Result<(String, Vec<u64>, Vec<f32>), EvalError>>,
    {
        let mut owned = Vec::new();
        let mut entries = HashMap::new();
        for t in tensors {
            let (name, ne, mut data) = t?;
            if cfg!(target_endian = "big") {
                for v in &mut data {
                    *v = f32::from_bits(v.to_bits().swap_bytes());
                }
            }
            let entry = Entry {
                ty: GgmlType::F32,
                ne,
                place: Place::Owned(owned.len()),
            };
            owned.push(data);
            entries.insert(name, entry);
        }
        Ok(Store {
            bytes: Bytes::Owned(owned),
            entries,
            metadata,
        })
    }

    /// The bytes at `place` (a place this store made).
    fn bytes_at(&self, place: &Place) -> &[u8] {
        match (&self.bytes, place) {
            (Bytes::Gguf(f), Place::File(r)) => &f.bytes()[r.clone()],
            (Bytes::Owned(t), Place::Owned(i)) => le_bytes(&t[*i]),
            // Places come from this store's own entries; another store's
            // would read as empty, which every reader refuses by size.
            _ => &[],
        }
    }

    /// True when the model has a tensor named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn entry(&self, name: &str) -> Result<&Entry, EvalError> {
        self.entries
            .get(name)
            .ok_or_else(|| EvalError::MissingTensor(name.to_owned()))
    }

    /// The 2-D weight `name`, which must be `[n_in, n_out]`.
    pub fn matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<Matrix, EvalError> {
        let e = self.entry(name)?;
        let want = [n_in as u64, n_out as u64];
        if e.ne != want {
            return Err(EvalError::BadTensor {
                tensor: name.to_owned(),
                reason: format!("has shape {:?}, the graph needs {want:?}", e.ne),
            });
        }
        Ok(Matrix {
            name: name.to_owned(),
            ty: e.ty,
            n_in,
            n_out,
            place: e.place.clone(),
        })
    }

    /// The ggml dimensions of `name`.
    pub fn shape(&self, name: &str) -> Result<&[u64], EvalError> {
        Ok(&self.entry(name)?.ne)
    }

    /// The 1-D tensor `name` of `n` elements, decoded to f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, EvalError> {
        let e = self.entry(name)?;
        if e.ne != [n as u64] {
            return Err(EvalError::BadTensor {
                tensor: name.to_owned(),
                reason: format!("has shape {:?}, the graph needs [{n}]", e.ne),
            });
        }
        decode(name, e.ty, self.bytes_at(&e.place), n)
    }

    /// `vector(name, n)` when the model has it.
    pub fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>, EvalError> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The bytes of `m`.
    pub fn data(&self, m: &Matrix) -> &[u8] {
        self.bytes_at(&m.place)
    }

    /// Row `row` of `m` decoded to f32 into `out` (ggml's `get_rows`).
    pub fn row_into(&self, m: &Matrix, row: usize, out: &mut [f32]) -> Result<(), EvalError> {
        let row_size = m.ty.row_size(m.n_in).ok_or_else(|| EvalError::BadTensor {
            tensor: m.name.clone(),
            reason: format!("rows of {} are not whole {} blocks", m.n_in, m.ty),
        })?;
        let start = row * row_size;
        let bytes = &self.data(m)[start..start + row_size];
        out.copy_from_slice(&decode(&m.name, m.ty, bytes, m.n_in)?);
        Ok(())
    }
}

/// The memory of `v`: its little-endian bytes, as [`Store::owned`] stores
/// them on any machine.
fn le_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte is a valid u8; the slice
    // covers exactly `v`'s memory and borrows it.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn decode(name: &str, ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, EvalError> {
    dequantize(ty, bytes, n).map_err(|source| EvalError::Quant {
        tensor: name.to_owned(),
        source,
    })
}
