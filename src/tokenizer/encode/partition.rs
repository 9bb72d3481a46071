//! Cutting user-defined tokens out of the text before tokenizing
//! (`tokenizer_st_partition` in `llama-vocab.cpp`, with
//! `parse_special = false`): control and unknown tokens stay text, a
//! user-defined token is found wherever its text occurs.
//!
//! Tokens are tried longest text first, each over the fragments the
//! longer ones left, as llama.cpp does; among texts of equal length the
//! lower id goes first (llama.cpp's sort leaves that order unspecified).

use std::ops::Range;

use super::vocab::{attr, Vocab};

/// A piece of the text: still text, or a token already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// Bytes of the text to tokenize.
    Text(Range<usize>),
    /// A user-defined token.
    Token(u32),
}

/// One token that is cut out.
struct Cut {
    id: u32,
    text: String,
    lstrip: bool,
    rstrip: bool,
}

/// The user-defined tokens of a vocabulary, in llama.cpp's order.
pub struct Partitioner {
    cuts: Vec<Cut>,
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl Partitioner {
    /// Collects the tokens llama.cpp would cut out with `parse_special`
    /// off.
    pub fn new(vocab: &Vocab) -> Partitioner {
        let special = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut cuts: Vec<Cut> = vocab
            .attrs
            .iter()
            .enumerate()
            .filter(|(_, &a)| a & special != 0 && a & (attr::CONTROL | attr::UNKNOWN) == 0)
            .map(|(i, &a)| Cut {
                id: i as u32,
                text: vocab.texts[i].clone(),
                lstrip: a & attr::LSTRIP != 0,
                rstrip: a & attr::RSTRIP != 0,
            })
            .collect();
        cuts.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        Partitioner { cuts }
    }

    /// The fragments of `text`, in order.
    pub fn split(&self, text: &str, out: &mut Vec<Fragment>) {
        out.clear();
        if text.is_empty() {
            return;
        }
        out.push(Fragment::Text(0..text.len()));
        let mut next = Vec::new();
        for cut in &self.cuts {
            next.clear();
            for f in out.drain(..) {
                match f {
                    Fragment::Text(r) => cut_one(text, r, cut, &mut next),
                    token => next.push(token),
                }
            }
            std::mem::swap(out, &mut next);
        }
    }
}

/// Splits the text `r` at every occurrence of `cut`.
fn cut_one(text: &str, r: Range<usize>, cut: &Cut, out: &mut Vec<Fragment>) {
    let bytes = text.as_bytes();
    let mut cur = r;
    loop {
        let Some(i) = text[cur.clone()].find(cut.text.as_str()) else {
            if !cur.is_empty() {
                out.push(Fragment::Text(cur));
            }
            return;
        };
        let at = cur.start + i;
        let mut left_end = at;
        if cut.lstrip {
            while left_end > cur.start && is_c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > cur.start {
            out.push(Fragment::Text(cur.start..left_end));
        }
        out.push(Fragment::Token(cut.id));
        let mut right = at + cut.text.len();
        if right >= cur.end {
            return;
        }
        if cut.rstrip {
            while right < cur.end && is_c_space(bytes[right]) {
                right += 1;
            }
        }
        cur = right..cur.end;
    }
}
