//! The three code-point classes llama.cpp's pre-tokenizers look at:
//! letter (`\p{L}`), number (`\p{N}`) and whitespace (`\s`).
//!
//! The general categories come from `regex-syntax`'s Unicode tables (the
//! same data the `regex` crate matches `\p{L}` with), expanded once into a
//! byte per code point so the splitters pay one load per character.
//! Whitespace is the `White_Space` property, which is the set llama.cpp's
//! `unicode_set_whitespace` lists and what `char::is_whitespace` tests.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`.
pub const LETTER: u8 = 1;
/// `\p{N}`.
pub const NUMBER: u8 = 2;
/// `\s`.
pub const WHITESPACE: u8 = 4;

/// One past the largest code point.
const N_CODEPOINTS: usize = 0x11_0000;

fn fill(table: &mut [u8], class: &str, flag: u8) {
    let hir = regex_syntax::parse(class).expect("a Unicode class regex-syntax knows");
    let HirKind::Class(Class::Unicode(set)) = hir.kind() else {
        unreachable!("{class} parses to a Unicode class")
    };
    for r in set.ranges() {
        for f in &mut table[r.start() as usize..=r.end() as usize] {
            *f |= flag;
        }
    }
}

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u8; N_CODEPOINTS];
        fill(&mut t, r"\p{L}", LETTER);
        fill(&mut t, r"\p{N}", NUMBER);
        for (cp, flags) in t.iter_mut().enumerate() {
            if char::from_u32(cp as u32).is_some_and(char::is_whitespace) {
                *flags |= WHITESPACE;
            }
        }
        t
    })
}

/// The classes of `c` (a mask of [`LETTER`], [`NUMBER`], [`WHITESPACE`]).
#[inline]
pub fn flags(c: char) -> u8 {
    table()[c as usize]
}

/// Forces the table to be built (so the first `encode` is not the one that
/// pays for it).
pub fn warm_up() {
    let _ = table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azerbaijani_letters_digits_and_spaces() {
        for c in "əğışçöüƏĞİŞÇÖÜaZ".chars() {
            assert_eq!(flags(c), LETTER, "{c}");
        }
        for c in "09٣½Ⅻ".chars() {
            assert_eq!(flags(c), NUMBER, "{c}");
        }
        for c in [' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{85}'] {
            assert_eq!(flags(c), WHITESPACE, "{c:?}");
        }
        // Combining marks, emoji and punctuation are none of the three.
        for c in ['\u{301}', '😀', '\'', '-', '\u{200b}'] {
            assert_eq!(flags(c), 0, "{c:?}");
        }
    }
}
