//! The full-precision reference: the conversion's own source evaluated in
//! f32 (a checkpoint's tensors as conversion makes them, or a GGUF input as
//! it is), and the tokenizer conversion writes, so a text is tokenized
//! exactly as the GGUF's users (and llama.cpp) will tokenize it.

use std::path::Path;

use crate::arch::HParamOverrides;
use crate::convert::{locate, merged_f32, source_vocab, ConvertError, ConvertRequest};
use crate::eval::forward::Model;
use crate::eval::{chunk_bos_of, ChunkPlan, MeasureError};
use crate::gguf::{GgufFile, Metadata};
use crate::quality::TextSource;
use crate::tokenizer::encode::{read_token_file, TextTokenizer};

/// The source as a model, with its vocabulary.
pub(super) struct Reference {
    /// The forward pass over the source's f32 weights.
    pub model: Model,
    /// Its `tokenizer.ggml.*` metadata.
    vocab: Metadata,
}

impl Reference {
    /// Opens `req`'s source (it stays mapped; tensors made f32 as
    /// conversion makes them).
    pub fn open(req: &ConvertRequest) -> Result<Reference, ConvertError> {
        let paths = locate(&req.source)?;
        if paths.is_gguf {
            let file = GgufFile::open(&paths.checkpoint)?;
            let model = Model::open_gguf(&paths.checkpoint).map_err(MeasureError::from)?;
            return Ok(Reference {
                model,
                vocab: file.metadata.clone(),
            });
        }
        let overrides = HParamOverrides { n_head: req.n_head };
        let model = Model::from_checkpoint(&req.source, &overrides).map_err(MeasureError::from)?;
        let vocab = if crate::adapter::is_adapter_folder(&paths.checkpoint) {
            // The fine-tune's vocabulary, as the merged conversion writes it.
            merged_f32(&paths.checkpoint, req.n_head, |_, _| ())?.1
        } else {
            source_vocab(&paths, req.tokenizer.as_deref(), model.n_vocab())?
        };
        Ok(Reference { model, vocab })
    }

    /// The id each chunk starts with, when the vocabulary adds BOS.
    pub fn bos(&self) -> Option<u32> {
        chunk_bos_of(&self.vocab)
    }

    /// The tokens of `text` (a UTF-8 file tokenized as llama-perplexity
    /// tokenizes its `-f` file, or nanoGPT token ids).
    pub fn tokens(&self, text: &TextSource) -> Result<Vec<u32>, MeasureError> {
        match text {
            TextSource::Tokens(p) => Ok(read_token_file(p, self.model.n_vocab())?),
            TextSource::Text(p) => {
                let raw = std::fs::read_to_string(p).map_err(|e| MeasureError::io(p, e))?;
                let text = raw.strip_suffix('\n').unwrap_or(&raw);
                Ok(TextTokenizer::from_metadata(&self.vocab)?.encode(text, true)?)
            }
            TextSource::Missing { .. } => Err(MeasureError::Malformed {
                path: Path::new("").to_owned(),
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
