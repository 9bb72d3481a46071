//! Text into token ids exactly as llama.cpp's
//! `llama_tokenize(vocab, text, add_special, parse_special = false)` gives
//! them for the same GGUF: what perplexity, imatrix calibration and any
//! evaluation of a converted model must feed it.
//!
//! Only the GGUF's `tokenizer.ggml.*` keys are used (a GGUF travels without
//! its `tokenizer.json`), read as llama.cpp's loader reads them
//! ([`vocab`]), then:
//!
//! * user-defined tokens are cut out first ([`partition`]);
//! * `gpt2` vocabularies split each fragment into words with the scanner
//!   for their `tokenizer.ggml.pre` ([`pre_split`]: gpt-2, llama-bpe and
//!   qwen2, the ones kvant writes, and their aliases) and merge each word
//!   by rank ([`bpe`]);
//! * `llama` vocabularies run SentencePiece's score-driven merge with byte
//!   fallback and llama.cpp's space prefix ([`spm`]);
//! * BOS/EOS are added by llama.cpp's rules (`add_bos_token`, with
//!   llama.cpp's default per tokenizer when the key is absent).
//!
//! Why not the Hugging Face `tokenizers` crate: what must be matched is
//! llama.cpp, not the tokenizer the model was trained with, and the two
//! differ where llama.cpp departs from HF: Llama-3's `ignore_merges`
//! (llama.cpp always sets it for llama-bpe; the fixture's tokenizer.json
//! does not), user-defined tokens being cut out with llama.cpp's longest-
//! first rule, a BPE symbol that is no token falling back to its ASCII
//! bytes, and — for SentencePiece — merging by token score (a GGUF has
//! scores, not merges) where HF's fast tokenizer differs from SentencePiece
//! on leading double spaces. The crate would also need its regex engine
//! to agree with llama.cpp's hand-written scanners on every code point.
//! Each algorithm here is a short, direct transcription of llama.cpp's,
//! proven equal to llama.cpp itself on every fixture tokenizer by
//! `tests/tokenizer_encode.rs`.

mod attrs;
mod bpe;
mod error;
mod partition;
mod pre_split;
mod spm;
mod token_file;
mod unicode;
mod vocab;

pub use error::EncodeError;
pub use token_file::read_token_file;

use crate::gguf::{GgufArray, GgufFile, Metadata};

use bpe::{Bpe, BpeScratch};
use partition::{Fragment, Partitioner};
use pre_split::SplitScratch;
use spm::{Spm, SpmScratch};
use vocab::Algorithm;

enum Encoder {
    Bpe(Bpe),
    Spm(Spm),
}

/// A GGUF's tokenizer, encoding text as llama.cpp does.
pub struct TextTokenizer {
    encoder: Encoder,
    partitioner: Partitioner,
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// Buffers reused across the fragments and words of one `encode` call.
#[derive(Default)]
struct Scratch {
    fragments: Vec<Fragment>,
    words: Vec<std::ops::Range<usize>>,
    split: SplitScratch,
    bpe: BpeScratch,
    spm: SpmScratch,
}

impl TextTokenizer {
    /// The tokenizer of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<TextTokenizer, EncodeError> {
        Self::build(&file.metadata, &file.path().display().to_string())
    }

    /// The tokenizer described by `tokenizer.ggml.*` metadata before any
    /// GGUF is written: for a checkpoint, the `metadata` of
    /// [`crate::tokenizer::gguf_vocab`].
    pub fn from_metadata(metadata: &Metadata) -> Result<TextTokenizer, EncodeError> {
        Self::build(metadata, "tokenizer metadata")
    }

    fn build(md: &Metadata, origin: &str) -> Result<TextTokenizer, EncodeError> {
        let vocab = vocab::read(md, origin)?;
        let encoder = match vocab.algorithm {
            Algorithm::Spm => Encoder::Spm(Spm::new(&vocab)),
            Algorithm::Bpe {
                splitter,
                ignore_merges,
            } => {
                let merges =
                    match md.get("tokenizer.ggml.merges").and_then(|v| v.as_array()) {
                        Some(GgufArray::String(m)) => m.as_slice(),
                        _ => return Err(EncodeError::Malformed {
                            origin: origin.to_owned(),
                            reason:
                                "a gpt2 tokenizer without tokenizer.ggml.merges (a string array)"
                                    .into(),
                        }),
                    };
                Encoder::Bpe(Bpe::new(&vocab, merges, splitter, ignore_merges))
            }
        };
        unicode::warm_up();
        Ok(TextTokenizer {
            encoder,
            partitioner: Partitioner::new(&vocab),
            n_vocab: vocab.texts.len(),
            bos: vocab.bos,
            eos: vocab.eos,
            add_bos: vocab.add_bos,
            add_eos: vocab.add_eos,
        })
    }

    /// `llama_tokenize(text, add_special, parse_special = false)`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EncodeError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let mut sc = Scratch::default();
        if add_special && self.add_bos {
            out.push(self.bos.ok_or(EncodeError::NoSpecial { which: "BOS" })?);
        }
        self.partitioner.split(text, &mut sc.fragments);
        let fragments = std::mem::take(&mut sc.fragments);
        // SentencePiece puts a space before the first fragment and before
        // every fragment after a cut-out token.
        let mut after_special = true;
        for f in &fragments {
            match f {
                Fragment::Token(t) => {
                    out.push(*t);
                    after_special = true;
                }
                Fragment::Text(r) => {
                    self.encode_text(&text[r.clone()], after_special, &mut sc, &mut out)?;
                    after_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or(EncodeError::NoSpecial { which: "EOS" })?);
        }
        Ok(out)
    }

    fn encode_text(
        &self,
        text: &str,
        after_special: bool,
        sc: &mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<(), EncodeError> {
        match &self.encoder {
            Encoder::Spm(spm) => {
                let prefix = spm.add_space_prefix && after_special;
                spm.encode_fragment(text, prefix, &mut sc.spm, out)
            }
            Encoder::Bpe(bpe) => {
                bpe.splitter.split(text, &mut sc.split, &mut sc.words);
                for w in &sc.words {
                    bpe.encode_word(&text.as_bytes()[w.clone()], &mut sc.bpe, out);
                }
                Ok(())
            }
        }
    }

    /// The BOS id, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether `encode(_, true)` starts with BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
}
