//! Converting a PEFT LoRA adapter folder: merged into its base (the
//! default, any adapter), or as a GGUF LoRA adapter file beside the base's
//! own GGUF.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::checkpoint::{
    checkpoint_config, plan_for, stream, tokenizer_files, Merging, Vocabulary,
};
use super::{locate, ConvertError, ConvertReport, ConvertRequest, ModelPaths, Progress};
use crate::adapter::{self, gguf_adapter, Adapter};
use crate::arch::ArchPlan;
use crate::gguf::{GgufWriter, TensorInfo};
use crate::quant::GgmlType;
use crate::source::{self, Checkpoint};

/// The base of `adapter`, located and opened.
struct Base {
    paths: ModelPaths,
    ck: Checkpoint,
    config: Option<serde_json::Value>,
}

fn open_base(adapter: &Adapter, inbox: Option<&Path>) -> Result<Base, ConvertError> {
    let found = adapter::find_base(&adapter.dir, &adapter.config, inbox)?;
    let paths = locate(&found.path)?;
    if paths.is_gguf || adapter::is_adapter_folder(&paths.checkpoint) {
        return Err(ConvertError::Other(format!(
            "{}: the base {} must be a checkpoint or Hugging Face folder (found by {}), not a GGUF or another adapter",
            adapter.dir.display(),
            found.path.display(),
            found.rule
        )));
    }
    let ck = source::open(&paths.checkpoint)?;
    let config = checkpoint_config(&ck, &paths)?;
    Ok(Base { paths, ck, config })
}

/// An adapter, its base, the base's plan with the tensors the adapter
/// replaces untied, and what the merge changes.
struct MergedBase {
    adapter: Adapter,
    base: Base,
    plan: ArchPlan,
    merge: adapter::Merge,
}

fn open_merged(dir: &Path, req: &ConvertRequest) -> Result<MergedBase, ConvertError> {
    let adapter = adapter::open(dir)?;
    let mut base = open_base(&adapter, None)?;
    let untie = adapter::replace_tensors(&mut base.ck, &adapter.pieces, &adapter.dir)?;
    let mut plan = plan_for(&base.ck, base.config.as_ref(), req, &base.paths)?;
    let merge = adapter::plan_merge(
        &base.ck,
        &plan,
        &adapter.pieces,
        &adapter.config,
        &adapter.weights,
        untie,
    )?;
    merge.untie(&mut plan);
    Ok(MergedBase {
        adapter,
        base,
        plan,
        merge,
    })
}

/// Converts the adapter folder `dir` merged into its base: every
/// requested output is the fine-tuned model.
pub(super) fn run_merged(
    req: &ConvertRequest,
    dir: &Path,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let MergedBase {
        adapter,
        base,
        plan,
        merge,
    } = open_merged(dir, req)?;
    let merging = Merging {
        merge: &merge,
        adapter: &adapter,
    };
    let mut report = stream(
        req,
        &base.paths,
        &base.ck,
        base.config.clone(),
        plan,
        Some(merging),
        progress,
        cancel,
        started,
    )?;
    report.hparams["adapter"] = serde_json::json!({
        "folder": adapter.dir,
        "base": base.paths.checkpoint,
        "sha256": adapter.sha256,
        "merged_tensors": merge.n_edits(),
    });
    Ok(report)
}

/// One tensor of a model in f32: GGUF name, GGUF shape, elements.
type F32Tensor = (String, Vec<u64>, Vec<f32>);

/// The fine-tuned model of the adapter folder `dir` as the merged
/// conversion makes it before quantizing: each planned tensor in f32 with
/// the adapter merged in, handed to `take` one at a time with the
/// family's metadata (the reference a measured conversion compares
/// with), and the vocabulary the merged conversion writes (`tokenizer`
/// overriding it).
pub(crate) fn merged_f32<R>(
    dir: &Path,
    n_head: Option<usize>,
    tokenizer: Option<&Path>,
    take: impl FnOnce(
        crate::gguf::Metadata,
        &mut dyn Iterator<Item = Result<F32Tensor, ConvertError>>,
    ) -> R,
) -> Result<(R, Vocabulary), ConvertError> {
    let req = ConvertRequest {
        n_head,
        ..Default::default()
    };
    let MergedBase {
        adapter,
        base,
        plan,
        merge,
    } = open_merged(dir, &req)?;
    let merging = Merging {
        merge: &merge,
        adapter: &adapter,
    };
    let files = tokenizer_files(
        &base.paths.dir,
        Some(&adapter),
        tokenizer,
        base.config.clone(),
    );
    let vocab = Vocabulary::Files {
        files,
        n_vocab: plan.n_vocab,
    };
    let mut metadata = plan.metadata.clone();
    metadata.set("general.architecture", plan.arch);
    let mut tensors = plan.tensors.iter().map(|t| {
        let data = super::checkpoint::materialize(&base.ck, t, Some(&merging))?;
        Ok((t.name.clone(), t.ne.clone(), data))
    });
    Ok((take(metadata, &mut tensors), vocab))
}

/// What [`convert_as_adapter`] wrote and found.
#[derive(Debug, Clone)]
pub struct AdapterOutputs {
    /// The GGUF LoRA adapter file.
    pub adapter: crate::gguf::WrittenGguf,
    /// The base model it applies to (a folder or checkpoint file), to be
    /// converted as usual.
    pub base: PathBuf,
    /// The base's GGUF architecture.
    pub arch: String,
}

/// Writes the adapter folder `dir` as a GGUF LoRA adapter at `out`
/// (factors in F32), for the base found by the usual rules (`inbox` adds
/// one place to look). Refuses, suggesting the merged mode, what
/// llama.cpp cannot apply at run time.
pub fn convert_as_adapter(
    dir: &Path,
    out: &Path,
    name: Option<&str>,
    inbox: Option<&Path>,
) -> Result<AdapterOutputs, ConvertError> {
    let adapter = adapter::open(dir)?;
    gguf_adapter::check_runtime(&adapter)?;
    let base = open_base(&adapter, inbox)?;
    let plan: ArchPlan = plan_for(
        &base.ck,
        base.config.as_ref(),
        &ConvertRequest::default(),
        &base.paths,
    )?;
    // The same fit checks as merging: every targeted tensor exists with
    // the shape the factors need.
    adapter::plan_merge(
        &base.ck,
        &plan,
        &adapter.pieces,
        &adapter.config,
        &adapter.weights,
        false,
    )?;
    let (tensors, alpha) = gguf_adapter::factors(&adapter, &plan)?;
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| super::default_name(&adapter.dir));
    let md = gguf_adapter::metadata(&adapter, &plan, &name, alpha, &base.paths.checkpoint);
    let infos = tensors
        .iter()
        .map(|t| TensorInfo::new(t.name.clone(), t.ne.clone(), GgmlType::F32))
        .collect();
    if let Some(parent) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ConvertError::Other(format!("{}: {e}", parent.display())))?;
    }
    let mut w = GgufWriter::create(out, &md, infos)?;
    for t in &tensors {
        w.begin_tensor(&t.name)?;
        let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.append_tensor_bytes(&bytes)?;
        w.end_tensor()?;
    }
    Ok(AdapterOutputs {
        adapter: w.finish()?,
        base: base.paths.checkpoint.clone(),
        arch: plan.arch.to_owned(),
    })
}
