//! The full-precision reference: the conversion's own source evaluated in
//! f32 (a checkpoint's tensors as conversion makes them, or a GGUF input as
//! it is), and the tokenizer conversion writes, so a text is tokenized
//! exactly as the GGUF's users (and llama.cpp) will tokenize it.

use std::cell::OnceCell;

use crate::arch::HParamOverrides;
use crate::convert::{ConvertError, ConvertRequest};
use crate::eval::forward::Model;
use crate::eval::{chunk_bos_of, ChunkPlan, MeasureError};
use crate::gguf::Metadata;
use crate::quality::TextSource;
use crate::tokenizer::encode::{read_token_file, TextTokenizer};

/// The source as a model, with its vocabulary.
pub(super) struct Reference {
    /// The forward pass over the source's f32 weights.
    pub model: Model,
    /// Its `tokenizer.ggml.*` metadata.
    vocab: Metadata,
    /// Built from `vocab` the first time a text is tokenized.
    tokenizer: OnceCell<TextTokenizer>,
}

impl Reference {
    /// Opens `req`'s source once (it stays mapped; tensors made f32 as
    /// conversion makes them, a LoRA folder merged into its base).
    pub fn open(req: &ConvertRequest) -> Result<Reference, ConvertError> {
        let overrides = HParamOverrides { n_head: req.n_head };
        let (model, vocab) = Model::from_source(&req.source, &overrides, req.tokenizer.as_deref())
            .map_err(MeasureError::from)?;
        Ok(Reference {
            model,
            vocab: vocab.keys()?,
            tokenizer: OnceCell::new(),
        })
    }

    /// The id each chunk starts with, when the vocabulary adds BOS.
    pub fn bos(&self) -> Option<u32> {
        chunk_bos_of(&self.vocab)
    }

    /// The tokens of `text` (a UTF-8 file tokenized as llama-perplexity
    /// tokenizes its `-f` file, or nanoGPT token ids). Errors name the
    /// file.
    pub fn tokens(&self, text: &TextSource) -> Result<Vec<u32>, MeasureError> {
        match text {
            TextSource::Tokens(p) => Ok(read_token_file(p, self.model.n_vocab())?),
            TextSource::Text(p) => {
                let raw = std::fs::read_to_string(p).map_err(|e| MeasureError::io(p, e))?;
                let text = raw.strip_suffix('\n').unwrap_or(&raw);
                let tokenizer = match self.tokenizer.get() {
                    Some(t) => t,
                    None => {
                        let built = TextTokenizer::from_metadata(&self.vocab)?;
                        self.tokenizer.get_or_init(|| built)
                    }
                };
                Ok(tokenizer.encode(text, true)?)
            }
            TextSource::Missing { .. } => Err(MeasureError::Malformed {
                path: Default::default(),
                reason: "no text".into(),
            }),
        }
    }

    /// Chunks of `n_ctx` tokens (at most the trained context), at most
    /// `max_chunks` of them.
    pub fn plan(
        &self,
        n_tokens: usize,
        n_ctx: usize,
        max_chunks: usize,
    ) -> Result<ChunkPlan, MeasureError> {
        let n_ctx = n_ctx.min(self.model.n_ctx_train());
        ChunkPlan::new(n_tokens, n_ctx, Some(max_chunks))
    }
}
