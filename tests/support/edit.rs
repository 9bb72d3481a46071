//! Rewriting a GGUF with changed metadata (same tensors), for tests that
//! ask llama.cpp how a variant of a converted file behaves.

use std::path::{Path, PathBuf};

use kvant::gguf::{GgufFile, GgufWriter, Metadata, TensorInfo};

/// Writes `src` to `out` with `edit` applied to its metadata.
pub fn with_metadata(src: &Path, out: PathBuf, edit: impl FnOnce(&mut Metadata)) -> PathBuf {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata.clone();
    edit(&mut md);
    let infos: Vec<TensorInfo> = f.tensors.iter().map(|t| t.info.clone()).collect();
    let mut w = GgufWriter::create(&out, &md, infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(&t.info.name, f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    out
}
