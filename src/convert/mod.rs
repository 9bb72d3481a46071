//! One conversion job: checkpoint → (arch mapping, tokenizer) → every
//! requested GGUF file, in one streaming pass over the source tensors.
//!
//! Each source tensor is read once, converted to f32 once, and then
//! quantized for every requested output; memory holds a few tensors, never
//! the model. Outputs are written under temporary names and renamed into
//! place only when complete.
//!
//! This module must not know about the queue, retries or HTTP.

mod adapter;
mod chat;
mod checkpoint;
mod discover;
mod mix;
mod naming;
mod report;
mod requantize;
mod stream;

pub use adapter::{convert_as_adapter, AdapterOutputs};
pub use chat::{
    end_of_text_tokens, jinja_chat_template, specials_from_gguf, ChatTemplate, RAW_TEMPLATE,
};
pub use discover::{is_hf_folder, locate, ModelPaths, CHECKPOINT_EXTENSIONS};
pub use naming::default_name;
// For `eval`: a checkpoint's planned tensors as f32, as conversion makes them.
pub(crate) use adapter::merged_f32;
pub(crate) use checkpoint::{materialize, read_json, tokenizer_files, Vocabulary};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::quant::FileType;

/// What to convert and where to.
#[derive(Debug, Clone, Default)]
pub struct ConvertRequest {
    /// A checkpoint file or a model folder.
    pub source: PathBuf,
    /// One output file per requested type.
    pub outputs: Vec<OutputSpec>,
    /// `tokenizer.json` to use instead of the one found beside the source.
    pub tokenizer: Option<PathBuf>,
    /// Model name (`general.name`); defaults to the source's name.
    pub name: Option<String>,
    /// Hyper-parameters the checkpoint does not carry (a bare state_dict).
    pub n_head: Option<usize>,
    /// An importance matrix (llama.cpp imatrix, GGUF or legacy `.dat`).
    pub imatrix: Option<PathBuf>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Per-tensor type overrides (llama-quantize's `--tensor-type`,
    /// `--output-tensor-type`, `--token-embedding-type`, `--pure`).
    pub type_overrides: crate::quant::TypeOverrides,
    /// Re-quantize tensors of a GGUF input that are already quantized
    /// (lossy twice; llama-quantize's `--allow-requantize`).
    pub allow_requantize: bool,
}

/// One requested output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The mix to write.
    pub file_type: FileType,
    /// Final path of the GGUF file.
    pub path: PathBuf,
}

/// What a finished conversion produced, for the summary line, the report
/// JSON and the Modelfile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    /// `general.name`.
    pub model_name: String,
    /// GGUF architecture (`gpt2`, `llama`, …).
    pub arch: String,
    /// Parameters in the model (elements of all written tensors, tied
    /// output counted once).
    pub n_params: u64,
    /// Trained context length (`num_ctx` for the Modelfile).
    pub context_length: u32,
    /// End-of-text token strings (Modelfile `stop` parameters).
    pub stop_tokens: Vec<String>,
    /// Hyper-parameters used, as JSON.
    pub hparams: serde_json::Value,
    /// A version label for this checkpoint (nanoGPT's `iter_num`), if any.
    pub version: Option<String>,
    /// The Ollama chat template decided for the model (translated and
    /// proven, none, or a fallback with its reason).
    pub chat_template: ChatTemplate,
    /// Each file written.
    pub outputs: Vec<OutputReport>,
    /// Wall time of the whole job.
    pub seconds: f64,
}

/// One written GGUF file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputReport {
    /// Where it is.
    pub path: PathBuf,
    /// The mix (`q4_k_m`).
    pub file_type: String,
    /// SHA-256 of the file, computed while writing.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Count of tensors per ggml type.
    pub type_counts: BTreeMap<String, usize>,
    /// Each tensor's name and type, in file order.
    pub tensor_types: Vec<(String, String)>,
    /// Average bits per weight over all tensors.
    pub bits_per_weight: f64,
}

/// Receives progress while converting (a terminal bar, a log line).
pub trait Progress: Sync {
    /// Called once with the number of source tensors to process.
    fn start(&self, total_tensors: usize);
    /// Called after each source tensor is written to every output.
    fn tensor_done(&self, name: &str);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: usize) {}
    fn tensor_done(&self, _: &str) {}
}

/// Why a conversion failed. The message names the file and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The tokenizer cannot be converted faithfully.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// Writing a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The checkpoint does not map to a supported family.
    #[error("{path}: {source}")]
    Arch {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::arch::ArchError,
    },
    /// A tensor's data cannot be converted (NaN, Inf, wrong size).
    #[error("{path}: tensor '{tensor}': {reason}")]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
    /// A LoRA adapter cannot be used (not LoRA, no base, a base that
    /// does not fit).
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterError),
    /// Measuring an output (or computing an importance matrix from a
    /// calibration text) failed.
    #[error(transparent)]
    Measure(Box<crate::eval::MeasureError>),
    /// The job was cancelled (shutdown); nothing was left behind.
    #[error("cancelled")]
    Cancelled,
}

impl From<crate::eval::MeasureError> for ConvertError {
    fn from(e: crate::eval::MeasureError) -> Self {
        ConvertError::Measure(Box::new(e))
    }
}

/// Runs one conversion. Blocking and CPU-heavy: call it from a worker
/// thread (`spawn_blocking` in async code). Setting `cancel` stops it at
/// the next tensor, removing partial outputs.
pub fn convert(
    req: &ConvertRequest,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ConvertReport, ConvertError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.threads.unwrap_or(0))
        .build()
        .map_err(|e| ConvertError::Other(format!("thread pool: {e}")))?;
    if req.outputs.is_empty() {
        return Err(ConvertError::Other("no output requested".into()));
    }
    let paths = locate(&req.source)?;
    pool.install(|| {
        if crate::adapter::is_adapter_folder(&paths.checkpoint) {
            adapter::run_merged(req, &paths.checkpoint, progress, cancel)
        } else if paths.is_gguf {
            requantize::run(req, &paths, progress, cancel)
        } else {
            checkpoint::run(req, &paths, progress, cancel)
        }
    })
}
