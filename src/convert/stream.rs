//! The streaming core shared by every kind of input: given the tensor
//! table, each output's types and metadata, and a function producing one
//! tensor's data, write every output in a single pass.
//!
//! Memory: one tensor's f32 data plus its encodings (outputs that share a
//! type share the bytes), whatever the model size. Each output is written
//! under a temporary name and renamed into place by `finish`; an error or
//! a cancel drops the writers, which removes the temporary files.

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
        /// Refuse NaN/Inf even where the bytes are copied unchanged
        /// (a checkpoint's weights; a GGUF input is copied as is, as
        /// llama-quantize does).
        check_finite: bool,
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
    // The files are written (copied out and hashed: serial work) by a
    // thread of their own while the pool quantizes. Encodings travel in
    // bands, so a big tensor's first bytes are on their way to the disk
    // while its last ones are encoded; the bounded channel keeps a few
    // bands in flight, never a model.
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToWriter<'a>>(4);
        // Written bands go back to the encoder for re-use: fresh buffers
        // cost a page fault per 4 KiB.
        let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
        let types = &types;
        let writer = s.spawn(move || -> Result<Vec<GgufWriter>, ConvertError> {
            let mut begun = None;
            for msg in rx {
                let index = msg.index();
                let t = &tensors[index];
                if begun != Some(index) {
                    for w in writers.iter_mut() {
                        w.begin_tensor(&t.name)?;
                    }
                    begun = Some(index);
                }
                match msg {
                    ToWriter::Band { ty, bytes, .. } => {
                        for (w, tys) in writers.iter_mut().zip(types) {
                            if tys[index] == ty {
                                w.append_tensor_bytes(&bytes)?;
                            }
                        }
                        let _ = give_back.send(bytes);
                    }
                    ToWriter::Done { input, release, .. } => {
                        for (w, tys) in writers.iter_mut().zip(types) {
                            if let Some((_, bytes)) = input.filter(|(ty, _)| *ty == tys[index]) {
                                w.append_tensor_bytes(bytes)?;
                            }
                            w.end_tensor()?;
                        }
                        if let (Some((_, bytes)), Some(release)) = (input, &release) {
                            release(0..bytes.len());
                        }
                        progress.tensor_done(&t.name);
                    }
                }
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
            &tx,
            &mut BufferPool::new(returned),
        );
        drop(tx);
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

/// What the encoder hands the writer thread, in file order.
enum ToWriter<'a> {
    /// The next bytes of tensor `index` encoded as `ty` (every output
    /// writing `ty` for it appends them).
    Band {
        index: usize,
        ty: GgmlType,
        bytes: Vec<u8>,
    },
    /// Tensor `index` is complete. Outputs that keep the input's type get
    /// the input's own bytes; `release` lets their pages go afterwards.
    Done {
        index: usize,
        input: Option<(GgmlType, &'a [u8])>,
        release: Option<Release<'a>>,
    },
}

impl ToWriter<'_> {
    fn index(&self) -> usize {
        match self {
            ToWriter::Band { index, .. } | ToWriter::Done { index, .. } => *index,
        }
    }
}

type Release<'a> = Box<dyn Fn(std::ops::Range<usize>) + Send + 'a>;

/// The writer thread stopped (on an error it reports itself).
struct WriterGone;

/// Produces and encodes every tensor in order, handing the bands to `tx`.
#[allow(clippy::too_many_arguments)]
fn encode_tensors<'a>(
    tensors: &[JobTensor],
    types: &[Vec<GgmlType>],
    source_path: &std::path::Path,
    imatrix: Option<&Imatrix>,
    cancel: &AtomicBool,
    produce: &mut impl FnMut(usize) -> Result<TensorData<'a>, ConvertError>,
    decode: &impl Fn(GgmlType, &[u8], usize) -> Result<Vec<f32>, String>,
    tx: &std::sync::mpsc::SyncSender<ToWriter<'a>>,
    pool: &mut BufferPool,
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
        // share a type share the bytes), one type at a time over the whole
        // tensor.
        let mut wanted: Vec<GgmlType> = Vec::new();
        for ty in types.iter().map(|tys| tys[i]) {
            if !wanted.contains(&ty) {
                wanted.push(ty);
            }
        }
        // Ok(false): the writer stopped, and reports its own error.
        let mut encode = |src: Rows<'_>, ty: GgmlType, done: &dyn Fn(std::ops::Range<usize>)| {
            let mut send = |bytes| {
                tx.send(ToWriter::Band {
                    index: i,
                    ty,
                    bytes,
                })
                .map_err(|_| WriterGone)
            };
            match quantize_banded(ty, src, n_per_row, weights, done, pool, &mut send) {
                Ok(()) => Ok(true),
                Err(Banded::Quant(e)) => Err(bad(e.to_string())),
                Err(Banded::WriterGone) => Ok(false),
            }
        };
        let (input, release) = match produce(i)? {
            TensorData::F32(v) => {
                for &ty in &wanted {
                    if !encode(Rows::F32(&v), ty, &|_| {})? {
                        return Ok(());
                    }
                }
                (None, None)
            }
            TensorData::Mapped {
                ty,
                bytes,
                release,
                check_finite,
            } => {
                let keeps = wanted.contains(&ty);
                // Quantizers check what they read; a copy is checked here.
                if keeps && check_finite {
                    let found = Rows::Le { ty, bytes }
                        .first_non_finite()
                        .map_err(|e| bad(e.to_string()))?;
                    if let Some((i, v)) = found {
                        return Err(bad(format!(
                            "element {i} is {v}: the weights are not finite"
                        )));
                    }
                }
                wanted.retain(|w| *w != ty);
                if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                    // Bands can be let go as soon as they are quantized
                    // unless an output still copies the raw bytes; a second
                    // type re-reads released bands from the page cache,
                    // which beats holding them.
                    let done = |r| {
                        if !keeps {
                            release(r)
                        }
                    };
                    for &to in &wanted {
                        if !encode(Rows::Le { ty, bytes }, to, &done)? {
                            return Ok(());
                        }
                    }
                } else if !wanted.is_empty() {
                    let v = decode(ty, bytes, n).map_err(bad)?;
                    for &to in &wanted {
                        if !encode(Rows::F32(&v), to, &|_| {})? {
                            return Ok(());
                        }
                    }
                }
                (Some((ty, bytes)), Some(release))
            }
        };
        let done = ToWriter::Done {
            index: i,
            input,
            release,
        };
        if tx.send(done).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Encoding buffers handed back by the writer, kept for the next tensors.
struct BufferPool {
    returned: std::sync::mpsc::Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl BufferPool {
    /// At most this many idle band buffers are kept (a few bands are in
    /// flight), so the pool holds a few bands, never a tensor.
    const KEEP: usize = 6;

    fn new(returned: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        BufferPool {
            returned,
            spare: Vec::new(),
        }
    }

    /// The largest idle buffer (empty), or a new one.
    fn take(&mut self) -> Vec<u8> {
        self.spare.extend(self.returned.try_iter());
        self.spare.sort_by_key(Vec::capacity);
        let extra = self.spare.len().saturating_sub(Self::KEEP);
        self.spare.drain(..extra);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf
    }
}

/// Why banded quantization stopped.
enum Banded {
    Quant(QuantError),
    WriterGone,
}

/// Quantizes a whole tensor to `ty` in bands of about [`BAND_BYTES`] of
/// input, handing each band's bytes to `emit` in order and calling `done`
/// with the band's input byte range once it is encoded.
fn quantize_banded(
    ty: GgmlType,
    src: Rows<'_>,
    n_per_row: usize,
    weights: Option<&[f32]>,
    done: &dyn Fn(std::ops::Range<usize>),
    pool: &mut BufferPool,
    emit: &mut dyn FnMut(Vec<u8>) -> Result<(), WriterGone>,
) -> Result<(), Banded> {
    let n = src.len().map_err(Banded::Quant)?;
    let bad_len = QuantError::BadRowLength {
        ty,
        block: ty.block_size(),
        n_per_row,
    };
    let row_size = ty
        .row_size(n_per_row)
        .ok_or(Banded::Quant(bad_len.clone()))?;
    let n_rows = n.checked_div(n_per_row).ok_or(Banded::Quant(bad_len))?;
    if n_rows == 0 {
        // Lets quantize_rows report a row length that does not divide.
        return quantize_rows(ty, src, n_per_row, weights, 0..0, &mut []).map_err(Banded::Quant);
    }
    let in_row = match src {
        Rows::F32(_) => 4 * n_per_row,
        Rows::Le { bytes, .. } => bytes.len() / n_rows,
    };
    let band = (BAND_BYTES / in_row.max(1)).max(1);
    let mut r0 = 0;
    while r0 < n_rows {
        let r1 = (r0 + band).min(n_rows);
        let mut out = pool.take();
        out.resize((r1 - r0) * row_size, 0);
        quantize_rows(ty, src, n_per_row, weights, r0..r1, &mut out).map_err(Banded::Quant)?;
        done(r0 * in_row..r1 * in_row);
        emit(out).map_err(|WriterGone| Banded::WriterGone)?;
        r0 = r1;
    }
    Ok(())
}
