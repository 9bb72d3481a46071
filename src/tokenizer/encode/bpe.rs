//! Byte-level BPE as llama.cpp runs it (`llm_tokenizer_bpe_session`):
//! each word's bytes start as one symbol each, and the adjacent pair with
//! the lowest merge rank (leftmost among equals) is merged until no pair
//! has a rank.
//!
//! llama.cpp works on the GPT-2 byte-to-character encoding of the word and
//! looks strings up; here every token text and merge side is decoded back
//! to the raw bytes once, interned as a *piece* id, and the merge table is
//! keyed by pairs of pieces, so encoding a word hashes nothing but two
//! integers per candidate pair and allocates nothing per token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::pre_split::Splitter;
use super::vocab::Vocab;

/// No piece / no token.
const NONE: u32 = u32::MAX;

/// GPT-2's byte → character map (`bytes_to_unicode`): printable Latin-1
/// bytes stand for themselves, the rest for U+0100 onwards in byte order.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 0x100u32;
    for (b, slot) in map.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(cp).expect("below U+0144");
    }
    map
}

/// The raw bytes a byte-level encoded text stands for, or `None` when it
/// has a character outside the encoding (such a text can never be the
/// encoding of a word).
fn decode(text: &str, byte_of: &FxHashMap<char, u8>) -> Option<Vec<u8>> {
    text.chars().map(|c| byte_of.get(&c).copied()).collect()
}

/// A symbol of the word being merged.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    piece: u32,
    prev: u32,
    next: u32,
}

/// A queued merge; ordered by rank, then leftmost (llama.cpp's order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: u32,
    right: u32,
    left_len: u32,
    right_len: u32,
    merged: u32,
}

/// Reusable buffers for one text.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Candidate>>,
}

/// A byte-level BPE vocabulary ready to encode words.
pub struct Bpe {
    pub splitter: Splitter,
    ignore_merges: bool,
    /// Raw bytes → piece.
    pieces: FxHashMap<Box<[u8]>, u32>,
    /// Piece → token id ([`NONE`] when the piece is no token).
    piece_token: Vec<u32>,
    /// The piece of each single byte.
    byte_piece: [u32; 256],
    /// (left piece, right piece) → (rank, merged piece); the first merge
    /// of a pair wins, as llama.cpp's `emplace`.
    merges: FxHashMap<(u32, u32), (u32, u32)>,
}

impl Bpe {
    /// Builds the tables from the vocabulary and the `"a b"` merges.
    pub fn new(vocab: &Vocab, merges: &[String], splitter: Splitter, ignore_merges: bool) -> Bpe {
        let chars = byte_chars();
        let byte_of: FxHashMap<char, u8> = chars
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut bpe = Bpe {
            splitter,
            ignore_merges,
            pieces: FxHashMap::default(),
            piece_token: Vec::new(),
            byte_piece: [NONE; 256],
            merges: FxHashMap::default(),
        };
        for (id, text) in vocab.texts.iter().enumerate() {
            // A text repeated later wins, as in llama.cpp's token_to_id.
            if vocab.id_of.get(text) != Some(&(id as u32)) {
                continue;
            }
            if let Some(raw) = decode(text, &byte_of) {
                let p = bpe.intern(&raw);
                bpe.piece_token[p as usize] = id as u32;
            }
        }
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let space = m.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1);
            let (a, b) = match space {
                Some(i) => (&m[..i], &m[i + 1..]),
                None => ("", ""),
            };
            let (Some(a), Some(b)) = (decode(a, &byte_of), decode(b, &byte_of)) else {
                continue;
            };
            if a.is_empty() || b.is_empty() {
                continue;
            }
            let merged = [a.as_slice(), b.as_slice()].concat();
            let (pa, pb, pm) = (bpe.intern(&a), bpe.intern(&b), bpe.intern(&merged));
            bpe.merges.entry((pa, pb)).or_insert((rank as u32, pm));
        }
        for b in 0..=255u8 {
            bpe.byte_piece[b as usize] = bpe.pieces.get(&[b][..]).copied().unwrap_or(NONE);
        }
        bpe
    }

    fn intern(&mut self, raw: &[u8]) -> u32 {
        if let Some(&p) = self.pieces.get(raw) {
            return p;
        }
        let p = self.piece_token.len() as u32;
        self.pieces.insert(raw.into(), p);
        self.piece_token.push(NONE);
        p
    }

    fn token_of(&self, raw: &[u8]) -> Option<u32> {
        let p = *self.pieces.get(raw)?;
        Some(self.piece_token[p as usize]).filter(|&t| t != NONE)
    }

    fn push_pair(&self, sc: &mut BpeScratch, left: u32, right: u32) {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (sc.symbols[left as usize], sc.symbols[right as usize]);
        if let Some(&(rank, merged)) = self.merges.get(&(l.piece, r.piece)) {
            sc.queue.push(Reverse(Candidate {
                rank,
                left,
                right,
                left_len: l.len,
                right_len: r.len,
                merged,
            }));
        }
    }

    /// Appends the tokens of one word (raw bytes).
    pub fn encode_word(&self, word: &[u8], sc: &mut BpeScratch, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(t) = self.token_of(word) {
                out.push(t);
                return;
            }
        }
        let n = word.len() as u32;
        sc.symbols.clear();
        sc.queue.clear();
        sc.symbols.extend(word.iter().enumerate().map(|(i, &b)| {
            let i = i as u32;
            Symbol {
                start: i,
                len: 1,
                piece: self.byte_piece[b as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            }
        }));
        for i in 1..n {
            self.push_pair(sc, i - 1, i);
        }
        while let Some(Reverse(c)) = sc.queue.pop() {
            let (left, right) = (c.left, c.right);
            let (l, r) = (sc.symbols[left as usize], sc.symbols[right as usize]);
            // A pair whose sides changed since it was queued is stale.
            if l.len == 0 || r.len == 0 || l.len != c.left_len || r.len != c.right_len {
                continue;
            }
            let s = &mut sc.symbols[left as usize];
            s.len += r.len;
            s.piece = c.merged;
            s.next = r.next;
            sc.symbols[right as usize].len = 0;
            if r.next != NONE {
                sc.symbols[r.next as usize].prev = left;
            }
            self.push_pair(sc, l.prev, left);
            self.push_pair(sc, left, r.next);
        }
        for s in sc.symbols.iter().filter(|s| s.len > 0) {
            let token = if s.piece == NONE {
                NONE
            } else {
                self.piece_token[s.piece as usize]
            };
            if token != NONE {
                out.push(token);
                continue;
            }
            // llama.cpp looks up each byte of the *encoded* text alone;
            // only printable ASCII encodes to a one-byte text.
            let bytes = &word[s.start as usize..(s.start + s.len) as usize];
            for &b in bytes.iter().filter(|&&b| (0x21..=0x7e).contains(&b)) {
                if let Some(t) = self.token_of(&[b]) {
                    out.push(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_map_matches_the_published_table() {
        let m = byte_chars();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[0xad], 'Ń');
        assert_eq!(m[0], 'Ā');
    }
}
