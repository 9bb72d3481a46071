//! The forward pass of every architecture kvant writes (`gpt2`, `llama`,
//! `qwen2`, `qwen3`), computed the way llama.cpp's CPU backend computes
//! it, so its logits agree with llama.cpp's (and Ollama's runner's) on the
//! same file.
//!
//! * [`Model::open_gguf`] reads a GGUF file: weights stay in the map and
//!   are multiplied in place, whatever their type.
//! * [`Model::from_checkpoint`] evaluates a checkpoint's own full-precision
//!   tensors, mapped to GGUF names and layouts by `arch`'s plan.
//! * [`Model::logits`] runs one sequence from position 0, the whole
//!   sequence through each matrix at once (one llama.cpp micro-batch), on
//!   rayon's global pool. [`Model::outputs`] returns only the positions a
//!   caller scores ([`Outputs`]) and, like llama.cpp, does not compute
//!   the others' last feed-forward and output product.
//!
//! What is mirrored, and where from (llama.cpp pinned by the
//! `llama-cpp-sys-2 =0.1.161` dev-dependency): the graphs of
//! `src/models/{gpt2,llama,qwen2,qwen3}.cpp` and `llama-graph.cpp`
//! (`build_norm`, `build_qkv`, `build_ffn`, `build_attn`); the norms'
//! epsilons from the GGUF keys; GELU through ggml's f16 table; the F16
//! KV cache and the CPU flash-attention kernel (`attention`); RoPE's f32
//! cache (`rope`); and matrix products with the activations converted to
//! the weight type's dot-product partner (`matmul`).
//!
//! This module must not tokenize text or compute statistics: token ids in,
//! logits out. [`MatmulObserver`] lets a caller see every product's input
//! (importance matrices).

mod attention;
mod checkpoint;
mod gpt2;
mod hparams;
mod linear;
mod llama;
mod matmul;
mod ops;
mod rope;
mod weights;

use std::path::Path;

use crate::arch::HParamOverrides;
use crate::eval::EvalError;
use crate::gguf::GgufFile;
use hparams::HParams;
use weights::{Matrix, Store};

/// Sees every matrix multiplication's f32 input, as ggml's `cb_eval`
/// sees `src1` of a `MUL_MAT` (what `llama-imatrix` accumulates).
pub trait MatmulObserver {
    /// `input` is `n_tokens` rows of `n_in` values, multiplied by the
    /// weight named `weight_name` (its GGUF name, e.g.
    /// `blk.0.attn_qkv.weight`; a tied output is `token_embd.weight`).
    fn observe(&mut self, weight_name: &str, input: &[f32], n_tokens: usize, n_in: usize);
}

/// Which positions' logits a pass returns, and where it drops the rest.
///
/// llama-perplexity requests logits only from `n_ctx/2` on, and llama.cpp's
/// graphs then gather those rows (`ggml_get_rows(cur, inp_out_ids)`) right
/// after the last layer's attention: the last feed-forward and the output
/// product (a third of a small model's work) run on half the rows. Rows
/// are independent, so the kept rows' values do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// Every position (`llama_decode` with logits requested everywhere).
    All,
    /// Positions `first..`, the others dropped after the last layer's
    /// attention, as llama.cpp does.
    From(usize),
    /// Positions `first..`, the others dropped only before the output
    /// norm, so that every block's products still see every token (what
    /// an importance matrix collects when it leaves `output.weight` out).
    FromAfterLastLayer(usize),
}

impl Outputs {
    /// The first position whose logits are returned.
    pub fn first(self) -> usize {
        match self {
            Outputs::All => 0,
            Outputs::From(first) | Outputs::FromAfterLastLayer(first) => first,
        }
    }

    /// The rows to drop after the last layer's attention.
    fn dropped_after_last_attention(self) -> usize {
        match self {
            Outputs::From(first) => first,
            _ => 0,
        }
    }

    /// The rows to drop before the output norm.
    fn dropped_before_output(self) -> usize {
        match self {
            Outputs::FromAfterLastLayer(first) => first,
            _ => 0,
        }
    }
}

/// The graph of one architecture with its weights.
#[derive(Debug)]
enum Graph {
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
}

/// A model ready to evaluate.
#[derive(Debug)]
pub struct Model {
    store: Store,
    hp: HParams,
    n_vocab: usize,
    graph: Graph,
}

impl Model {
    /// Opens a GGUF file; its tensors are read from the mapped file when
    /// they are used, never copied whole.
    ///
    /// # Errors
    /// The file cannot be read, its architecture is not one kvant can
    /// evaluate, or a tensor or key the graph needs is missing or
    /// mis-shaped.
    pub fn open_gguf(path: &Path) -> Result<Model, EvalError> {
        Model::from_store(Store::gguf(GgufFile::open(path)?))
    }

    /// Evaluates a checkpoint's own full-precision tensors (a nanoGPT
    /// `ckpt.pt`, a `state_dict`, safetensors, a Hugging Face folder; a
    /// GGUF path is opened as [`Model::open_gguf`]), laid out as kvant's
    /// converter would write them, in f32. `overrides` gives what the
    /// checkpoint does not store (a bare state_dict's `n_head`).
    ///
    /// # Errors
    /// The checkpoint cannot be read or mapped to a family, or a tensor is
    /// not finite.
    pub fn from_checkpoint(path: &Path, overrides: &HParamOverrides) -> Result<Model, EvalError> {
        Model::from_store(checkpoint::store(path, overrides, None)?.0)
    }

    /// [`Model::from_checkpoint`] (any source conversion takes, GGUF
    /// included) with the vocabulary its conversion writes (`tokenizer`
    /// overriding the tokenizer.json beside it), the source opened once.
    pub(crate) fn from_source(
        path: &Path,
        overrides: &HParamOverrides,
        tokenizer: Option<&Path>,
    ) -> Result<(Model, crate::convert::Vocabulary), EvalError> {
        let (store, vocab) = checkpoint::store(path, overrides, tokenizer)?;
        Ok((Model::from_store(store)?, vocab))
    }

    /// The model's metadata (a GGUF's keys, or the family's for a
    /// checkpoint).
    pub fn metadata(&self) -> &crate::gguf::Metadata {
        &self.store.metadata
    }

    fn from_store(store: Store) -> Result<Model, EvalError> {
        let arch = store
            .metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let rms = match arch.as_str() {
            "gpt2" => false,
            "llama" | "qwen2" | "qwen3" => true,
            _ => return Err(EvalError::UnsupportedArchitecture(arch)),
        };
        let hp = HParams::read(&store.metadata, rms)?;
        let n_vocab = match store.shape("token_embd.weight")? {
            [n, v] if *n as usize == hp.n_embd => *v as usize,
            other => {
                return Err(EvalError::BadTensor {
                    tensor: "token_embd.weight".into(),
                    reason: format!(
                        "has shape {other:?}, the graph needs [{}, n_vocab]",
                        hp.n_embd
                    ),
                })
            }
        };
        let graph = if rms {
            Graph::Llama(llama::Llama::load(&store, &hp, n_vocab)?)
        } else {
            Graph::Gpt2(gpt2::Gpt2::load(&store, &hp, n_vocab)?)
        };
        Ok(Model {
            store,
            hp,
            n_vocab,
            graph,
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> &str {
        &self.hp.arch
    }

    /// Rows of the token embedding (and of the logits).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> usize {
        self.hp.n_ctx_train
    }

    /// Logits for every position of one sequence starting at position 0,
    /// row-major `n_tokens × n_vocab`. `observer` sees every matrix
    /// product's input.
    ///
    /// # Errors
    /// An empty sequence, a token id outside the vocabulary, a sequence
    /// longer than GPT-2's position table, or an output that is not
    /// finite ([`EvalError::NonFinite`] names the first tensor).
    pub fn logits(
        &self,
        tokens: &[u32],
        observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>, EvalError> {
        self.outputs(tokens, Outputs::All, observer)
    }

    /// The logits of positions `outputs.first()..` of one sequence
    /// starting at position 0, row-major `(n_tokens − first) × n_vocab`,
    /// the other positions dropped where `outputs` says.
    ///
    /// # Errors
    /// Those of [`Model::logits`], and [`EvalError::NoOutputs`] when
    /// `first` is not a position of the sequence.
    pub fn outputs(
        &self,
        tokens: &[u32],
        outputs: Outputs,
        observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>, EvalError> {
        if tokens.is_empty() {
            return Err(EvalError::EmptySequence);
        }
        if outputs.first() >= tokens.len() {
            return Err(EvalError::NoOutputs {
                first: outputs.first(),
                n_tokens: tokens.len(),
            });
        }
        if let Some((position, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.n_vocab)
        {
            return Err(EvalError::TokenOutOfRange {
                token,
                position,
                n_vocab: self.n_vocab,
            });
        }
        match &self.graph {
            Graph::Gpt2(g) => g.logits(&self.store, &self.hp, tokens, outputs, observer),
            Graph::Llama(g) => g.logits(&self.store, &self.hp, tokens, outputs, observer),
        }
    }
}

/// The activations of one call, allocated once and reused by every layer.
pub(crate) struct Buffers {
    /// The residual stream, `n_tokens × n_embd`.
    x: Vec<f32>,
    /// Normed input and projection outputs, `n_tokens × n_embd`.
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, `n_tokens × n_head·head_dim_v`.
    attn: Vec<f32>,
    /// Feed-forward activations (the gate's, for SwiGLU).
    ff: Vec<f32>,
    /// The up projection of SwiGLU.
    ff_up: Vec<f32>,
    /// A fused QKV projection's output.
    scratch: Vec<f32>,
}

impl Buffers {
    fn new(hp: &HParams, n_tokens: usize) -> Buffers {
        let z = |w: usize| vec![0f32; n_tokens * w];
        Buffers {
            x: z(hp.n_embd),
            h: z(hp.n_embd),
            q: z(hp.n_head * hp.head_dim_k),
            k: z(hp.n_head_kv * hp.head_dim_k),
            v: z(hp.n_head_kv * hp.head_dim_v),
            attn: z(hp.n_head * hp.head_dim_v),
            ff: z(hp.n_ff),
            ff_up: if hp.arch == "gpt2" {
                Vec::new()
            } else {
                z(hp.n_ff)
            },
            scratch: Vec::new(),
        }
    }
}

impl Buffers {
    /// Drops the first `drop` of the residual stream's `rows` rows
    /// (`ggml_get_rows(cur, inp_out_ids)`) and shortens the buffers the
    /// rest of the pass uses to the rows kept, whose number it returns.
    fn drop_first_rows(&mut self, drop: usize, rows: usize, hp: &HParams) -> usize {
        if drop == 0 {
            return rows;
        }
        let kept = rows - drop;
        self.x.copy_within(drop * hp.n_embd..rows * hp.n_embd, 0);
        self.x.truncate(kept * hp.n_embd);
        self.h.truncate(kept * hp.n_embd);
        self.ff.truncate(kept * hp.n_ff);
        self.ff_up.truncate(kept * hp.n_ff);
        kept
    }
}

/// `ggml_get_rows`: row `ids[t]` of `m`, decoded, into row `t` of `out`.
fn embed(store: &Store, m: &Matrix, ids: &[u32], out: &mut [f32]) -> Result<(), EvalError> {
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(m.n_in)) {
        store.row_into(m, id as usize, row)?;
    }
    ops::check_finite(out, &m.name)
}
