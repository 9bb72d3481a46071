//! Splitting text into words before BPE, exactly as llama.cpp does for the
//! pre-tokenizers kvant writes (`tokenizer.ggml.pre`).
//!
//! llama.cpp does not run these regexes through a regex engine: for GPT-2,
//! Llama-3 and Qwen2 it has hand-written scanners
//! (`unicode_regex_split_custom_gpt2`/`_llama3`/`_qwen2` in `unicode.cpp`)
//! whose results are what a GGUF tokenizes to. These are the same scanning
//! rules, branch for branch (alternatives tried in the regex's order, a
//! look-ahead past the end of the text seeing nothing), over code points
//! classified as in [`super::unicode`].

use std::ops::Range;

use super::unicode::{flags, LETTER, NUMBER, WHITESPACE};

/// Set on every code point inside the text: llama.cpp's flags are never
/// zero for a real code point, only for a position past the end.
const PRESENT: u8 = 0x80;

/// Which scanner a `tokenizer.ggml.pre` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splitter {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?i:'s|…)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// Llama-3's with single digits (`\p{N}`).
    Qwen2,
}

/// Reusable buffers for one text.
#[derive(Default)]
pub struct SplitScratch {
    /// Byte offset of each code point, and the text's length last.
    offsets: Vec<usize>,
    chars: Vec<char>,
    flags: Vec<u8>,
}

/// Cursor over the code points of one text with the scanners' primitives.
struct Scan<'a> {
    chars: &'a [char],
    flags: &'a [u8],
    prev_end: usize,
    words: Vec<Range<usize>>,
}

impl Scan<'_> {
    fn len(&self) -> usize {
        self.chars.len()
    }

    fn cpt(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn fl(&self, pos: usize) -> u8 {
        self.flags.get(pos).copied().unwrap_or(0)
    }

    /// Ends a word at `end` (nothing when empty); returns its length.
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.words.push(self.prev_end..end);
        }
        self.prev_end = end;
        len
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case folded when
    /// `fold`): the length matched, 0 when none.
    fn contraction(&self, pos: usize, fold: bool) -> usize {
        let low = |c: Option<char>| {
            let c = c.unwrap_or('\0');
            if fold {
                c.to_ascii_lowercase()
            } else {
                c
            }
        };
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.len() {
            return 0;
        }
        let next = low(self.cpt(pos + 1));
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return 2;
        }
        if pos + 2 < self.len() {
            let next2 = low(self.cpt(pos + 2));
            if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return 3;
            }
        }
        0
    }

    /// `\s+(?!\S)|\s+` at `pos`, after the other alternatives failed.
    fn spaces(&mut self, pos: usize, n_ws: usize) -> usize {
        if n_ws > 1 && pos + n_ws < self.len() {
            self.add(pos + n_ws - 1);
            pos + n_ws - 1
        } else if n_ws > 0 {
            self.add(pos + n_ws);
            pos + n_ws
        } else {
            self.add(pos + 1);
            pos + 1
        }
    }
}

const WORDY: u8 = WHITESPACE | LETTER | NUMBER;

fn gpt2(s: &mut Scan) {
    let mut pos = 0;
    while pos < s.len() {
        let c = s.chars[pos];
        let n = s.contraction(pos, false);
        if n > 0 {
            pos += s.add(pos + n);
            continue;
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a run of one class,
        // after an optional space.
        let mut f2 = if c == ' ' { s.fl(pos + 1) } else { s.fl(pos) };
        let in_run: Option<fn(u8) -> bool> = if f2 & LETTER != 0 {
            Some(|f| f & LETTER != 0)
        } else if f2 & NUMBER != 0 {
            Some(|f| f & NUMBER != 0)
        } else if f2 & WORDY == 0 && f2 != 0 {
            Some(|f| f & WORDY == 0 && f != 0)
        } else {
            None
        };
        if let Some(in_run) = in_run {
            pos += usize::from(c == ' ');
            while in_run(f2) {
                pos += 1;
                f2 = s.fl(pos);
            }
            s.add(pos);
            continue;
        }
        let mut n_ws = 0;
        while s.fl(pos + n_ws) & WHITESPACE != 0 {
            n_ws += 1;
        }
        pos = s.spaces(pos, n_ws);
    }
}

/// Llama-3 (`digits` = 3) and Qwen2 (`digits` = 1).
fn llama3(s: &mut Scan, digits: usize) {
    let mut pos = 0;
    while pos < s.len() {
        let c = s.chars[pos];
        let f = s.fl(pos);
        let n = s.contraction(pos, true);
        if n > 0 {
            pos += s.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == '\r' || c == '\n' || f & NUMBER != 0)
            && (f & LETTER != 0 || s.fl(pos + 1) & LETTER != 0)
        {
            pos += 1;
            while s.fl(pos) & LETTER != 0 {
                pos += 1;
            }
            s.add(pos);
            continue;
        }
        // \p{N}{1,digits}
        if f & NUMBER != 0 {
            let mut start = pos;
            while s.fl(pos) & NUMBER != 0 {
                pos += 1;
                if pos - start >= digits {
                    s.add(pos);
                    start = pos;
                }
            }
            s.add(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; llama.cpp tests the first code
        // point's presence here, not the one after the space.
        let mut f2 = if c == ' ' { s.fl(pos + 1) } else { f };
        if f2 & WORDY == 0 && f != 0 {
            pos += usize::from(c == ' ');
            while f2 & WORDY == 0 && f2 != 0 {
                pos += 1;
                f2 = s.fl(pos);
            }
            while matches!(s.cpt(pos), Some('\r' | '\n')) {
                pos += 1;
            }
            s.add(pos);
            continue;
        }
        // \s*[\r\n]+
        let mut n_ws = 0;
        let mut last_newline_end = 0;
        while s.fl(pos + n_ws) & WHITESPACE != 0 {
            if matches!(s.chars[pos + n_ws], '\r' | '\n') {
                last_newline_end = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        if last_newline_end > 0 {
            pos = last_newline_end;
            s.add(pos);
            continue;
        }
        pos = s.spaces(pos, n_ws);
    }
}

impl Splitter {
    /// The words of `text`, as byte ranges into it, in order; `words` is
    /// cleared first.
    pub fn split(self, text: &str, scratch: &mut SplitScratch, words: &mut Vec<Range<usize>>) {
        scratch.chars.clear();
        scratch.flags.clear();
        scratch.offsets.clear();
        for (i, c) in text.char_indices() {
            scratch.offsets.push(i);
            scratch.chars.push(c);
            scratch.flags.push(flags(c) | PRESENT);
        }
        scratch.offsets.push(text.len());
        let mut scan = Scan {
            chars: &scratch.chars,
            flags: &scratch.flags,
            prev_end: 0,
            words: std::mem::take(words),
        };
        scan.words.clear();
        match self {
            Splitter::Gpt2 => gpt2(&mut scan),
            Splitter::Llama3 => llama3(&mut scan, 3),
            Splitter::Qwen2 => llama3(&mut scan, 1),
        }
        *words = scan.words;
        for w in words.iter_mut() {
            *w = scratch.offsets[w.start]..scratch.offsets[w.end];
        }
    }
}
