//! The base-logits file of `llama-perplexity --kl-divergence-base`, which
//! `kvant eval --save-logits` writes and `--base-logits` reads, byte for
//! byte the same.
//!
//! ```text
//! offset 0   8 bytes  "_logits_" (no NUL)
//!        8   i32      n_ctx      tokens per chunk (-c)
//!       12   i32      n_vocab
//!       16   i32      n_chunk
//!       20   i32 × n_chunk·n_ctx   the evaluation tokens, as tokenized
//!                                  (not BOS-substituted)
//!       …    n_chunk × (n_ctx − 1 − n_ctx/2) records, chunk order, then
//!            position order; a record is `record_words(n_vocab)` u16:
//!            f32 scale, f32 min_log_prob, u16 q[n_vocab], a zero pad word
//!            when n_vocab is odd.
//! ```
//!
//! All integers little-endian. The reader checks the header and the file
//! size against each other before it allocates anything, and every token
//! against the vocabulary.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::kld::record_words;
use super::perplexity::ChunkPlan;
use super::MeasureError;
use crate::durable::AtomicFile;

/// The file's magic.
pub const MAGIC: &[u8; 8] = b"_logits_";
const HEADER_BYTES: u64 = 20;

/// What a base-logits file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogitsHeader {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Chunks stored.
    pub n_chunks: usize,
}

impl LogitsHeader {
    /// The chunking the file was made with.
    pub fn plan(&self) -> ChunkPlan {
        ChunkPlan {
            n_ctx: self.n_ctx,
            n_chunks: self.n_chunks,
        }
    }

    /// u16 words of records per chunk.
    pub fn words_per_chunk(&self) -> usize {
        self.plan().scored_per_chunk() * record_words(self.n_vocab)
    }

    /// The exact size of a file with this header.
    pub fn file_size(&self) -> u64 {
        HEADER_BYTES
            + 4 * (self.n_chunks * self.n_ctx) as u64
            + 2 * (self.n_chunks * self.words_per_chunk()) as u64
    }
}

/// A base-logits file being written (under a temporary name until
/// [`LogitsWriter::finish`]).
pub struct LogitsWriter {
    out: BufWriter<File>,
    atomic: AtomicFile,
    header: LogitsHeader,
    written: usize,
}

impl LogitsWriter {
    /// Starts `path`: writes the header and the `tokens` the chunks cover.
    pub fn create(
        path: &Path,
        header: LogitsHeader,
        tokens: &[u32],
    ) -> Result<LogitsWriter, MeasureError> {
        let io = |e| MeasureError::io(path, e);
        let mut atomic = AtomicFile::create(path).map_err(io)?;
        let file = atomic.file().try_clone().map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let covered = &tokens[..header.n_chunks * header.n_ctx];
        let mut head = Vec::with_capacity(HEADER_BYTES as usize + 4 * covered.len());
        head.extend_from_slice(MAGIC);
        for n in [header.n_ctx, header.n_vocab, header.n_chunks] {
            head.extend_from_slice(&(n as i32).to_le_bytes());
        }
        for &t in covered {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        out.write_all(&head).map_err(io)?;
        Ok(LogitsWriter {
            out,
            atomic,
            header,
            written: 0,
        })
    }

    /// Appends one chunk's records (`words_per_chunk` words).
    pub fn write_chunk(&mut self, records: &[u16]) -> Result<(), MeasureError> {
        let path = self.atomic.final_path().to_owned();
        if records.len() != self.header.words_per_chunk() || self.written == self.header.n_chunks {
            return Err(MeasureError::Malformed {
                path,
                reason: format!(
                    "internal error: chunk {} of {} has {} words, expected {}",
                    self.written,
                    self.header.n_chunks,
                    records.len(),
                    self.header.words_per_chunk()
                ),
            });
        }
        let bytes: Vec<u8> = records.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.out
            .write_all(&bytes)
            .map_err(|e| MeasureError::io(&path, e))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place once every chunk is
    /// written.
    pub fn finish(mut self) -> Result<PathBuf, MeasureError> {
        let path = self.atomic.final_path().to_owned();
        if self.written != self.header.n_chunks {
            return Err(MeasureError::Malformed {
                path,
                reason: format!(
                    "internal error: only {} of {} chunks written",
                    self.written, self.header.n_chunks
                ),
            });
        }
        self.out.flush().map_err(|e| MeasureError::io(&path, e))?;
        self.atomic.commit().map_err(|e| MeasureError::io(&path, e))
    }
}

/// A base-logits file being read, chunk by chunk.
pub struct LogitsReader {
    input: BufReader<File>,
    path: PathBuf,
    header: LogitsHeader,
    tokens: Vec<u32>,
    read: usize,
}

impl LogitsReader {
    /// Opens `path`, checks its header against its size and reads its
    /// tokens.
    pub fn open(path: &Path) -> Result<LogitsReader, MeasureError> {
        let io = |e| MeasureError::io(path, e);
        let bad = |reason: String| MeasureError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut head = [0u8; HEADER_BYTES as usize];
        if size < HEADER_BYTES {
            return Err(bad(format!(
                "not a llama-perplexity logits file ({size} bytes)"
            )));
        }
        input.read_exact(&mut head).map_err(io)?;
        if &head[..8] != MAGIC {
            return Err(bad(
                "not a llama-perplexity logits file (no _logits_ magic)".into(),
            ));
        }
        let field = |at: usize, what: &str| {
            let v = i32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("bad {what} {v} in the header")))
        };
        let header = LogitsHeader {
            n_ctx: field(8, "n_ctx")?,
            n_vocab: field(12, "n_vocab")?,
            n_chunks: field(16, "n_chunk")?,
        };
        if header.n_ctx < 4 {
            return Err(bad(format!("bad n_ctx {} in the header", header.n_ctx)));
        }
        // Checked before allocating: the header must describe this file.
        let expected = header
            .n_chunks
            .checked_mul(header.n_ctx)
            .and_then(|t| t.checked_mul(header.n_vocab))
            .map(|_| header.file_size());
        match expected {
            Some(e) if e == size => {}
            Some(e) => {
                return Err(bad(format!(
                    "is {size} bytes, but its header ({} chunks of {} tokens, \
                     {} vocabulary entries) describes {e}",
                    header.n_chunks, header.n_ctx, header.n_vocab
                )))
            }
            None => return Err(bad("header sizes overflow".into())),
        }
        let mut raw = vec![0u8; 4 * header.n_chunks * header.n_ctx];
        input.read_exact(&mut raw).map_err(io)?;
        let mut tokens = Vec::with_capacity(raw.len() / 4);
        for (i, c) in raw.chunks_exact(4).enumerate() {
            let t = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            match u32::try_from(t) {
                Ok(t) if (t as usize) < header.n_vocab => tokens.push(t),
                _ => {
                    return Err(bad(format!(
                        "token {t} at byte offset {} is outside its vocabulary of {}",
                        HEADER_BYTES as usize + 4 * i,
                        header.n_vocab
                    )))
                }
            }
        }
        Ok(LogitsReader {
            input,
            path: path.to_owned(),
            header,
            tokens,
            read: 0,
        })
    }

    /// The header.
    pub fn header(&self) -> LogitsHeader {
        self.header
    }

    /// The evaluation tokens stored in the file.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next chunk's records into `records`.
    pub fn read_chunk(&mut self, records: &mut Vec<u16>) -> Result<(), MeasureError> {
        if self.read == self.header.n_chunks {
            return Err(MeasureError::Malformed {
                path: self.path.clone(),
                reason: format!("has only {} chunks", self.header.n_chunks),
            });
        }
        let mut raw = vec![0u8; 2 * self.header.words_per_chunk()];
        self.input
            .read_exact(&mut raw)
            .map_err(|e| MeasureError::io(&self.path, e))?;
        records.clear();
        records.extend(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        );
        self.read += 1;
        Ok(())
    }
}
