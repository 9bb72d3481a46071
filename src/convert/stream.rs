//! The streaming core shared by every kind of input: given the tensor
//! table, each output's types and metadata, and a function producing one
//! tensor's data, write every output in a single pass.
//!
//! Memory: one tensor's f32 data plus its encodings (outputs that share a
//! type share the bytes), whatever the model size. Each output is written
//! under a temporary name and renamed into place by `finish`; an error or
//! a cancel drops the writers, which removes the temporary files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ConvertError, OutputSpec, Progress};
use crate::gguf::{GgufWriter, Metadata, TensorInfo, WrittenGguf};
use crate::quant::{quantize_rows, GgmlType, Imatrix, QuantError, Rows};

/// One tensor of the output table.
#[derive(Debug, Clone)]
pub(super) struct JobTensor {
    pub name: String,
    pub ne: Vec<u64>,
}

impl JobTensor {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// One tensor's data, as the producer has it.
pub(super) enum TensorData<'a> {
    /// Elements as f32, in GGUF order.
    F32(Vec<f32>),
    /// The input's own bytes of type `ty`, read in place (a mapped GGUF
    /// tensor). An output that keeps the type gets them unchanged, as
    /// llama-quantize does; F32/F16/BF16 are quantized from them band by
    /// band; other types are decoded first (re-quantizing). `release` is
    /// told each byte range no output needs any more, so its pages can go
    /// before the next band is read.
    Mapped {
        ty: GgmlType,
        bytes: &'a [u8],
        release: Release<'a>,
    },
}

/// What one output needs besides the shared table.
pub(super) struct OutputPlan<'a> {
    pub spec: &'a OutputSpec,
    pub metadata: Metadata,
    pub types: Vec<GgmlType>,
}

/// Input bytes quantized per band before the band's pages are released:
/// large enough that a band keeps both cores busy, small next to a big
/// tensor (GPT-2's token embedding is 154 MB of F32).
const BAND_BYTES: usize = 8 << 20;

#[allow(clippy::too_many_arguments)]
/// Writes every output; `produce(i)` gives tensor `i`'s data, called once
/// per tensor in table order. `source_path` names the input in errors.
pub(super) fn write_outputs<'a>(
    tensors: &[JobTensor],
    outputs: Vec<OutputPlan<'_>>,
    source_path: &std::path::Path,
    imatrix: Option<&Imatrix>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    mut produce: impl FnMut(usize) -> Result<TensorData<'a>, ConvertError>,
    decode: impl Fn(GgmlType, &[u8], usize) -> Result<Vec<f32>, String>,
) -> Result<Vec<WrittenGguf>, ConvertError> {
    let mut writers: Vec<GgufWriter> = Vec::with_capacity(outputs.len());
    let mut types = Vec::with_capacity(outputs.len());
    for out in outputs {
        let infos = tensors
            .iter()
            .zip(&out.types)
            .map(|(t, ty)| TensorInfo::new(t.name.clone(), t.ne.clone(), *ty))
            .collect();
        if let Some(dir) = out.spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConvertError::Other(format!("{}: {e}", dir.display())))?;
        }
        writers.push(GgufWriter::create(&out.spec.path, &out.metadata, infos)?);
        types.push(out.types);
    }

    progress.start(tensors.len());
    // Tensor i is written (copied out and hashed, serial work) by a thread
    // of its own while tensor i + 1 is quantized on the pool. The
    // rendezvous channel keeps at most two tensors' encodings alive.
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Encoded<'a>>(0);
        let types = &types;
        let writer = s.spawn(move || -> Result<Vec<GgufWriter>, ConvertError> {
            for job in rx {
                let t = &tensors[job.index];
                for (w, tys) in writers.iter_mut().zip(types) {
                    let ty = tys[job.index];
                    let data = match job.input {
                        Some((in_ty, bytes)) if in_ty == ty => bytes,
                        _ => job.bytes.get(&ty).map(Vec::as_slice).ok_or_else(|| {
                            ConvertError::Other(format!("internal: {} has no {ty} bytes", t.name))
                        })?,
                    };
                    w.write_tensor(&t.name, data)?;
                }
                if let (Some((_, bytes)), Some(release)) = (job.input, &job.release) {
                    release(0..bytes.len());
                }
                progress.tensor_done(&t.name);
            }
            Ok(writers)
        });
        let encoded = encode_tensors(
            tensors,
            types,
            source_path,
            imatrix,
            cancel,
            &mut produce,
            &decode,
            tx,
        );
        let writers = writer
            .join()
            .map_err(|_| ConvertError::Other("the writer thread panicked".into()))?;
        // A write error stops the writer, which the encoder then sees as
        // a closed channel: the write error is the one to report.
        let writers = writers?;
        encoded?;
        writers
            .into_iter()
            .map(|w| w.finish().map_err(ConvertError::from))
            .collect()
    })
}

/// One tensor ready to be written: its encodings by type, and the input
/// bytes for outputs that keep the input's type.
struct Encoded<'a> {
    index: usize,
    bytes: HashMap<GgmlType, Vec<u8>>,
    input: Option<(GgmlType, &'a [u8])>,
    release: Option<Release<'a>>,
}

type Release<'a> = Box<dyn Fn(std::ops::Range<usize>) + Send + 'a>;

/// Produces and encodes every tensor in order, handing each to `tx`.
#[allow(clippy::too_many_arguments)]
fn encode_tensors<'a>(
    tensors: &[JobTensor],
    types: &[Vec<GgmlType>],
    source_path: &std::path::Path,
    imatrix: Option<&Imatrix>,
    cancel: &AtomicBool,
    produce: &mut impl FnMut(usize) -> Result<TensorData<'a>, ConvertError>,
    decode: &impl Fn(GgmlType, &[u8], usize) -> Result<Vec<f32>, String>,
    tx: std::sync::mpsc::SyncSender<Encoded<'a>>,
) -> Result<(), ConvertError> {
    for (i, t) in tensors.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Cancelled);
        }
        let bad = |reason: String| ConvertError::Tensor {
            path: source_path.to_owned(),
            tensor: t.name.clone(),
            reason,
        };
        let n_per_row = t.ne.first().copied().unwrap_or(1) as usize;
        // llama.cpp looks the tensor up by name; a size mismatch is an
        // error except for token_embd, which then goes without.
        let weights = match imatrix {
            Some(m) => match m.get(&t.name, n_per_row) {
                Ok(w) => w,
                Err(_) if t.name == "token_embd.weight" => None,
                Err(e) => return Err(bad(e.to_string())),
            },
            None => None,
        };
        let n = t.n_elements() as usize;
        // The types this tensor is written as, each once (outputs that
        // share a type share the bytes).
        let mut wanted: Vec<GgmlType> = Vec::new();
        for ty in types.iter().map(|tys| tys[i]) {
            if !wanted.contains(&ty) {
                wanted.push(ty);
            }
        }
        let encode_all = |src: Rows<'_>, wanted: &[GgmlType]| {
            let mut out = HashMap::new();
            for &ty in wanted {
                let bytes = quantize_all(ty, src, n_per_row, weights, &|_| {})
                    .map_err(|e| bad(e.to_string()))?;
                out.insert(ty, bytes);
            }
            Ok::<_, ConvertError>(out)
        };
        let job = match produce(i)? {
            TensorData::F32(v) => Encoded {
                index: i,
                bytes: encode_all(Rows::F32(&v), &wanted)?,
                input: None,
                release: None,
            },
            TensorData::Mapped { ty, bytes, release } => {
                let keeps = wanted.contains(&ty);
                wanted.retain(|w| *w != ty);
                let encoded = if wanted.is_empty() {
                    HashMap::new()
                } else if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                    // Bands can be let go as soon as they are quantized
                    // unless an output still copies the raw bytes.
                    let done = |r| {
                        if !keeps {
                            release(r)
                        }
                    };
                    let mut out = HashMap::new();
                    for &to in &wanted {
                        // One type at a time over the whole tensor: a
                        // second type re-reads released bands from the
                        // page cache, which beats holding them.
                        let encoded =
                            quantize_all(to, Rows::Le { ty, bytes }, n_per_row, weights, &done)
                                .map_err(|e| bad(e.to_string()))?;
                        out.insert(to, encoded);
                    }
                    out
                } else {
                    let v = decode(ty, bytes, n).map_err(bad)?;
                    encode_all(Rows::F32(&v), &wanted)?
                };
                Encoded {
                    index: i,
                    bytes: encoded,
                    input: Some((ty, bytes)),
                    release: Some(release),
                }
            }
        };
        if tx.send(job).is_err() {
            // The writer stopped on an error, which the caller reports.
            return Ok(());
        }
    }
    Ok(())
}

/// Quantizes a whole tensor to `ty`, in bands of about [`BAND_BYTES`] of
/// input, calling `done` with each band's input byte range once it is
/// encoded.
fn quantize_all(
    ty: GgmlType,
    src: Rows<'_>,
    n_per_row: usize,
    weights: Option<&[f32]>,
    done: &dyn Fn(std::ops::Range<usize>),
) -> Result<Vec<u8>, QuantError> {
    let n = src.len()?;
    let bad_len = QuantError::BadRowLength {
        ty,
        block: ty.block_size(),
        n_per_row,
    };
    let row_size = ty.row_size(n_per_row).ok_or(bad_len.clone())?;
    let n_rows = n.checked_div(n_per_row).ok_or(bad_len)?;
    let in_row = match src {
        Rows::F32(_) => 4 * n_per_row,
        Rows::Le { bytes, .. } => bytes.len() / n_rows.max(1),
    };
    let band = (BAND_BYTES / in_row.max(1)).max(1);
    let mut out = vec![0u8; row_size * n_rows];
    for (k, d) in out.chunks_mut(row_size * band).enumerate() {
        let r0 = k * band;
        let r1 = r0 + d.len() / row_size;
        quantize_rows(ty, src, n_per_row, weights, r0..r1, d)?;
        done(r0 * in_row..r1 * in_row);
    }
    if n_rows == 0 {
        // Lets quantize_rows report a row length that does not divide.
        quantize_rows(ty, src, n_per_row, weights, 0..0, &mut out)?;
    }
    Ok(out)
}
