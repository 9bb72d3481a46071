//! A checkpoint's own tensors as a model: the family's plan (`arch`)
//! names and lays them out as the GGUF file would, and each is made in
//! f32 exactly as conversion makes it (`convert::materialize`; a LoRA
//! adapter folder merged into its base), so the same graphs evaluate the
//! full-precision source.

use std::path::Path;

use super::weights::Store;
use crate::arch::{self, HParamOverrides};
use crate::convert::{
    locate, materialize, merged_f32, read_json, tokenizer_files, ConvertError, Vocabulary,
};
use crate::eval::EvalError;
use crate::source;

/// The store of the checkpoint at `path` (a file or a model folder),
/// with `overrides` for hyper-parameters it does not carry, and where its
/// vocabulary comes from (`tokenizer` overriding the tokenizer.json
/// beside it), each source opened once.
pub(crate) fn store(
    path: &Path,
    overrides: &HParamOverrides,
    tokenizer: Option<&Path>,
) -> Result<(Store, Vocabulary), EvalError> {
    let paths = locate(path)?;
    if paths.is_gguf {
        let file = crate::gguf::GgufFile::open(path)?;
        let vocab = Vocabulary::Gguf(file.metadata.clone());
        return Ok((Store::gguf(file), vocab));
    }
    if crate::adapter::is_adapter_folder(&paths.checkpoint) {
        let (store, vocab) =
            merged_f32(&paths.checkpoint, overrides.n_head, tokenizer, |md, t| {
                Store::owned(t.map(|t| t.map_err(EvalError::from)), md)
            })?;
        return Ok((store?, vocab));
    }
    let ck = source::open(&paths.checkpoint).map_err(ConvertError::from)?;
    let sidecar = match &paths.sidecar_config {
        Some(p) => Some(read_json(p)?),
        None => None,
    };
    let config = ck.config.as_ref().or(sidecar.as_ref());
    let plan = arch::plan(&ck, config, overrides).map_err(|source| ConvertError::Arch {
        path: paths.checkpoint.clone(),
        source,
    })?;
    let vocab = Vocabulary::Files {
        files: tokenizer_files(&paths.dir, None, tokenizer, config.cloned()),
        n_vocab: plan.n_vocab,
    };
    let tensors = plan.tensors.iter().map(|t| {
        let data = materialize(&ck, t, None)?;
        if let Some(src) = t.recipe.source().and_then(|s| ck.tensor(s)) {
            src.release_pages();
        }
        Ok((t.name.clone(), t.ne.clone(), data))
    });
    let mut metadata = plan.metadata.clone();
    metadata.set("general.architecture", plan.arch);
    Ok((Store::owned(tensors, metadata)?, vocab))
}
