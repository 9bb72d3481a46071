//! Collecting an importance matrix as `llama-imatrix` does, and writing it
//! in both of its formats (read back by [`crate::quant::Imatrix`]).
//!
//! What is collected (llama-imatrix's `collect_imatrix`): the input of
//! every matrix product whose weight is named `blk.*` — and
//! `output.weight` with `--process-output` — when the product has at
//! least 16 input rows. Per weight, the sum of x² per input column,
//! accumulated in f32 row by row, and the number of rows (tokens) seen.
//! Every position of every chunk counts, the BOS and the first half too.
//! Only dense products exist in the graphs kvant evaluates, so each entry
//! has one matrix and one count (MoE `MUL_MAT_ID` entries, one count per
//! expert, do not arise).
//!
//! GGUF form (`save_imatrix`): keys `general.type = "imatrix"`,
//! `imatrix.datasets` (string array), `imatrix.chunk_count` (u32, the
//! chunks seen), `imatrix.chunk_size` (u32, `-c`); per weight `W`, in name
//! order, F32 tensors `W.in_sum2 [n_in]` (raw sums) and `W.counts [1]`.
//!
//! Legacy form (`save_imatrix_legacy`), little-endian:
//!
//! ```text
//! i32 n_entries
//! n_entries × { i32 len, name[len], i32 ncall = ceil(count / chunk_size),
//!               i32 nval, f32 (Σx² / count) · ncall [nval] }
//! i32 chunk_count ; i32 len ; dataset[len]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::MatmulObserver;
use super::MeasureError;
use crate::durable::AtomicFile;
use crate::gguf::{GgufArray, GgufValue, GgufWriter, Metadata, TensorInfo};
use crate::quant::GgmlType;

/// Products with fewer input rows are skipped (llama-imatrix's rule).
const MIN_ROWS: usize = 16;

/// One weight's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Σ x² per input column.
    pub sums: Vec<f32>,
    /// Input rows (tokens) seen.
    pub count: u64,
}

/// Collects Σx² per weight while it observes forward passes.
#[derive(Debug, Clone)]
pub struct ImatrixCollector {
    process_output: bool,
    chunk_size: usize,
    entries: BTreeMap<String, ImatrixEntry>,
    last_chunk: u32,
    failure: Option<String>,
}

impl ImatrixCollector {
    /// A collector for chunks of `chunk_size` tokens; `process_output`
    /// also collects `output.weight`.
    pub fn new(chunk_size: usize, process_output: bool) -> ImatrixCollector {
        ImatrixCollector {
            process_output,
            chunk_size: chunk_size.max(1),
            entries: BTreeMap::new(),
            last_chunk: 0,
            failure: None,
        }
    }

    fn wants(&self, weight_name: &str, n_tokens: usize) -> bool {
        n_tokens >= MIN_ROWS
            && (weight_name.starts_with("blk.")
                || (self.process_output && weight_name == "output.weight"))
    }

    /// The entries, by weight name.
    pub fn entries(&self) -> &BTreeMap<String, ImatrixEntry> {
        &self.entries
    }

    /// Chunks seen (llama-imatrix's `m_last_chunk`).
    pub fn chunk_count(&self) -> u32 {
        self.last_chunk
    }

    /// The first error met while observing (a non-finite sum, or a weight
    /// seen with two input widths).
    pub fn check(&self) -> Result<(), MeasureError> {
        match &self.failure {
            Some(tensor) => Err(MeasureError::NonFinite {
                tensor: tensor.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes the GGUF form to `path` (atomically). `datasets` are the
    /// texts the matrix was computed from.
    pub fn write_gguf(&self, path: &Path, datasets: &[String]) -> Result<(), MeasureError> {
        self.check()?;
        let mut md = Metadata::new();
        md.set("general.type", "imatrix");
        md.set(
            "imatrix.datasets",
            GgufValue::Array(GgufArray::String(datasets.to_vec())),
        );
        md.set("imatrix.chunk_count", GgufValue::U32(self.last_chunk));
        md.set("imatrix.chunk_size", GgufValue::U32(self.chunk_size as u32));
        let mut tensors = Vec::new();
        for (name, e) in &self.entries {
            tensors.push(TensorInfo::new(
                format!("{name}.in_sum2"),
                vec![e.sums.len() as u64],
                GgmlType::F32,
            ));
            tensors.push(TensorInfo::new(
                format!("{name}.counts"),
                vec![1],
                GgmlType::F32,
            ));
        }
        let mut w = GgufWriter::create(path, &md, tensors)?;
        for (name, e) in &self.entries {
            w.write_tensor(&format!("{name}.in_sum2"), &f32_bytes(&e.sums))?;
            w.write_tensor(&format!("{name}.counts"), &f32_bytes(&[e.count as f32]))?;
        }
        w.finish()?;
        Ok(())
    }

    /// Writes the legacy `.dat` form to `path` (atomically).
    pub fn write_dat(&self, path: &Path, dataset: &str) -> Result<(), MeasureError> {
        self.check()?;
        let chunk = self.chunk_size as u64;
        let stored: Vec<_> = self.entries.iter().filter(|(_, e)| e.count > 0).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
        for (name, e) in stored {
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let ncall = e.count.div_ceil(chunk) as i32;
            out.extend_from_slice(&ncall.to_le_bytes());
            out.extend_from_slice(&(e.sums.len() as i32).to_le_bytes());
            let count = e.count as f32;
            let values: Vec<f32> = e.sums.iter().map(|&s| (s / count) * ncall as f32).collect();
            out.extend_from_slice(&f32_bytes(&values));
        }
        out.extend_from_slice(&(self.last_chunk as i32).to_le_bytes());
        out.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
        out.extend_from_slice(dataset.as_bytes());
        let io = |e| MeasureError::io(path, e);
        let mut f = AtomicFile::create(path).map_err(io)?;
        f.file().write_all(&out).map_err(io)?;
        f.commit().map_err(io)?;
        Ok(())
    }
}

impl MatmulObserver for ImatrixCollector {
    fn observe(&mut self, weight_name: &str, input: &[f32], n_tokens: usize, n_in: usize) {
        if self.failure.is_some() || !self.wants(weight_name, n_tokens) {
            return;
        }
        let e = self
            .entries
            .entry(weight_name.to_owned())
            .or_insert_with(|| ImatrixEntry {
                sums: vec![0.0; n_in],
                count: 0,
            });
        if e.sums.len() != n_in || input.len() < n_tokens * n_in {
            self.failure = Some(weight_name.to_owned());
            return;
        }
        for row in input.chunks_exact(n_in).take(n_tokens) {
            for (acc, &x) in e.sums.iter_mut().zip(row) {
                *acc += x * x;
            }
        }
        if e.sums.iter().any(|s| !s.is_finite()) {
            self.failure = Some(weight_name.to_owned());
            return;
        }
        e.count += n_tokens as u64;
        let chunks = (e.count / self.chunk_size as u64) as u32;
        self.last_chunk = self.last_chunk.max(chunks);
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_block_weights_with_enough_rows_are_collected() {
        let mut c = ImatrixCollector::new(32, false);
        let x = vec![2.0f32; 32 * 3];
        c.observe("blk.0.attn_qkv.weight", &x, 32, 3);
        c.observe("blk.0.attn_qkv.weight", &x[..15 * 3], 15, 3);
        c.observe("output.weight", &x, 32, 3);
        c.observe("cache_k_l0", &x, 32, 3);
        assert_eq!(c.entries().len(), 1);
        let e = &c.entries()["blk.0.attn_qkv.weight"];
        assert_eq!(e.sums, vec![128.0; 3]);
        assert_eq!(e.count, 32);
        assert_eq!(c.chunk_count(), 1);
        let mut c = ImatrixCollector::new(32, true);
        c.observe("output.weight", &x, 32, 3);
        assert_eq!(c.entries().len(), 1);
    }

    #[test]
    fn a_non_finite_sum_is_an_error() {
        let mut c = ImatrixCollector::new(16, false);
        c.observe("blk.1.ffn_up.weight", &[f32::MAX; 16], 16, 1);
        assert!(c.check().is_err());
    }
}
