//! The output of a family mapping: which GGUF tensors to write, in which
//! order, with which shapes, and how each is made from source tensors.
//!
//! A plan is pure data. `convert` executes it one tensor at a time.

use crate::gguf::Metadata;

/// How one GGUF tensor is produced from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Recipe {
    /// The source tensor's elements in their row-major order.
    Copy {
        /// Source tensor name.
        source: String,
    },
    /// A 2-D source stored `[in, out]` (Hugging Face Conv1D) written as
    /// `[out, in]`.
    Transpose {
        /// Source tensor name.
        source: String,
    },
    /// Rows reordered from Hugging Face's rotate-half layout to the
    /// interleaved pairs llama.cpp's RoPE expects (`undo_permute` in
    /// llama.cpp's converter), for `n_head` heads.
    PermuteRope {
        /// Source tensor name.
        source: String,
        /// Heads the rows are split into.
        n_head: usize,
    },
    /// All zeros: a bias the checkpoint does not have (nanoGPT
    /// `bias=False`), which llama.cpp's graph requires. Adding zero is
    /// exactly what the missing bias means, so outputs are unchanged.
    Zeros,
    /// Values computed from the hyper-parameters, not read from the
    /// checkpoint (Llama-3.1's `rope_freqs` frequency factors).
    Computed {
        /// The elements.
        values: Vec<f32>,
    },
}

impl Recipe {
    /// The source tensor this recipe reads, if any.
    pub fn source(&self) -> Option<&str> {
        match self {
            Recipe::Copy { source }
            | Recipe::Transpose { source }
            | Recipe::PermuteRope { source, .. } => Some(source),
            Recipe::Zeros | Recipe::Computed { .. } => None,
        }
    }
}

/// One tensor of the GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name, e.g. `blk.0.attn_qkv.weight`.
    pub name: String,
    /// Dimensions in ggml order (reverse of PyTorch's).
    pub ne: Vec<u64>,
    /// How to make its data.
    pub recipe: Recipe,
    /// True for tensors llama.cpp's converter always stores as F32 (1-D
    /// tensors, norms, biases, position embeddings) whatever the output
    /// type.
    pub keep_f32: bool,
}

impl PlannedTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A complete mapping of a checkpoint to one GGUF architecture.
#[derive(Debug, Clone)]
pub struct ArchPlan {
    /// `general.architecture` (`gpt2`, `llama`, …).
    pub arch: &'static str,
    /// `general.architecture` and every `<arch>.*` key, typed exactly as
    /// llama.cpp's loader wants them.
    pub metadata: Metadata,
    /// Tensors in file order.
    pub tensors: Vec<PlannedTensor>,
    /// Embedding rows (must equal the tokenizer's token count; the
    /// tokenizer pads with unused tokens when it has fewer).
    pub n_vocab: usize,
    /// Trained context length.
    pub context_length: u32,
    /// The hyper-parameters used, for reports.
    pub hparams: serde_json::Value,
}
