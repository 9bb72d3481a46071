//! SentencePiece as llama.cpp runs it (`llm_tokenizer_spm_session`):
//! spaces become `▁` (one more in front when the space prefix applies),
//! each UTF-8 character starts as a symbol, and the adjacent pair whose
//! concatenation is the highest-scoring token (leftmost among equals) is
//! merged until no pair makes a token. A symbol left that is no token is
//! written as its bytes (`<0xXX>` tokens).
//!
//! This agrees with the `sentencepiece` library, not with Hugging Face's
//! fast tokenizer (which differs on leading double spaces); no crate
//! implements llama.cpp's score-driven merge over a GGUF's scores, so it
//! is kvant's own.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::vocab::Vocab;
use super::EncodeError;

const NONE: u32 = u32::MAX;

/// A candidate merge, ordered as llama.cpp's queue pops them.
#[derive(Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher score first; equal scores (0.0 == -0.0, as in C++):
        // lower left first.
        let by_score = if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
        by_score.then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// Reusable buffers for one text.
#[derive(Default)]
pub struct SpmScratch {
    text: String,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

/// A SentencePiece vocabulary ready to encode text fragments.
pub struct Spm {
    /// Token text bytes → id.
    id_of: FxHashMap<Box<[u8]>, u32>,
    scores: Vec<f32>,
    /// The token of each byte: `<0xXX>`, else the byte as a one-character
    /// text (llama.cpp's `byte_to_token`).
    byte_token: [u32; 256],
    /// Whether a fragment after a special token (or at the start) gets a
    /// leading space.
    pub add_space_prefix: bool,
}

impl Spm {
    /// Builds the lookup tables.
    pub fn new(vocab: &Vocab) -> Spm {
        let id_of: FxHashMap<Box<[u8]>, u32> = vocab
            .id_of
            .iter()
            .map(|(t, &i)| (t.as_bytes().into(), i))
            .collect();
        let mut byte_token = [NONE; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = id_of
                .get(hex.as_bytes())
                .or_else(|| id_of.get(&[b as u8][..]))
                .copied()
                .unwrap_or(NONE);
        }
        Spm {
            id_of,
            scores: vocab.scores.clone(),
            byte_token,
            add_space_prefix: vocab.add_space_prefix,
        }
    }

    fn push_pair(&self, sc: &mut SpmScratch, left: u32, right: u32) {
        if left == NONE || right == NONE {
            return;
        }
        let l = sc.symbols[left as usize];
        let r = sc.symbols[right as usize];
        let span = &sc.text.as_bytes()[l.start as usize..(l.start + l.len + r.len) as usize];
        if let Some(&token) = self.id_of.get(span) {
            sc.queue.push(Bigram {
                score: self.scores[token as usize],
                left,
                right,
                size: span.len() as u32,
            });
        }
    }

    /// Appends the tokens of one text fragment; `prefix` puts the space
    /// llama.cpp adds before a fragment that follows a special token.
    pub fn encode_fragment(
        &self,
        fragment: &str,
        prefix: bool,
        sc: &mut SpmScratch,
        out: &mut Vec<u32>,
    ) -> Result<(), EncodeError> {
        sc.text.clear();
        if prefix {
            sc.text.push('▁');
        }
        for piece in fragment.split(' ').enumerate() {
            if piece.0 > 0 {
                sc.text.push('▁');
            }
            sc.text.push_str(piece.1);
        }
        sc.symbols.clear();
        sc.queue.clear();
        let n = sc.text.chars().count() as u32;
        for (i, (start, c)) in sc.text.char_indices().enumerate() {
            let i = i as u32;
            sc.symbols.push(Symbol {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            });
        }
        for i in 1..n {
            self.push_pair(sc, i - 1, i);
        }
        while let Some(b) = sc.queue.pop() {
            let (l, r) = (sc.symbols[b.left as usize], sc.symbols[b.right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            sc.symbols[b.left as usize].len += r.len;
            sc.symbols[b.left as usize].next = r.next;
            sc.symbols[b.right as usize].len = 0;
            if r.next != NONE {
                sc.symbols[r.next as usize].prev = b.left;
            }
            self.push_pair(sc, l.prev, b.left);
            self.push_pair(sc, b.left, r.next);
        }
        let bytes = sc.text.as_bytes();
        for s in sc.symbols.iter().filter(|s| s.len > 0) {
            let span = &bytes[s.start as usize..(s.start + s.len) as usize];
            if let Some(&t) = self.id_of.get(span) {
                out.push(t);
                continue;
            }
            for &byte in span {
                match self.byte_token[byte as usize] {
                    NONE => return Err(EncodeError::NoByteToken { byte }),
                    t => out.push(t),
                }
            }
        }
        Ok(())
    }
}
