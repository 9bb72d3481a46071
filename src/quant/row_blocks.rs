//! A product's output, `out[t·n_out + r]` (token-major, as ggml's `dst`),
//! handed to parallel tasks by blocks of weight rows.
//!
//! Every product here runs one task per block of weight rows, and each
//! task produces its rows' outputs for every token. Collecting those in a
//! row-major buffer and transposing it afterwards cost a zeroed buffer
//! and a pass over every output (5 % of an F32 evaluation). Instead each
//! task gets a [`RowBlock`], a window on its own rows of `out`, and writes
//! every result straight into place.

use std::marker::PhantomData;

use rayon::prelude::*;

/// `out` split into blocks of `rows_per_block` weight rows (the last one
/// shorter), one [`RowBlock`] per block, in row order.
///
/// # Panics
/// If `out.len()` is not a multiple of `n_out` or `rows_per_block` is 0:
/// a programming error.
pub(crate) fn par_row_blocks(
    out: &mut [f32],
    n_out: usize,
    rows_per_block: usize,
) -> impl IndexedParallelIterator<Item = RowBlock<'_>> {
    assert!(rows_per_block > 0 && n_out > 0 && out.len().is_multiple_of(n_out));
    let n_tokens = out.len() / n_out;
    let base = OutPtr(out.as_mut_ptr());
    (0..n_out.div_ceil(rows_per_block))
        .into_par_iter()
        .map(move |b| {
            let r0 = b * rows_per_block;
            RowBlock {
                base,
                n_out,
                n_tokens,
                r0,
                n_rows: rows_per_block.min(n_out - r0),
                _out: PhantomData,
            }
        })
}

/// Rows `r0..r0 + n_rows` of a token-major output, for every token: the
/// part of `out` one task owns.
pub(crate) struct RowBlock<'a> {
    base: OutPtr,
    n_out: usize,
    n_tokens: usize,
    r0: usize,
    n_rows: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl RowBlock<'_> {
    /// Rows in this block.
    pub(crate) fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Tokens of the output.
    pub(crate) fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Sets the output of the block's row `r` (counted from the block's
    /// first) for token `t`.
    ///
    /// # Panics
    /// If `r` or `t` is outside the block.
    #[inline]
    pub(crate) fn set(&mut self, r: usize, t: usize, v: f32) {
        assert!(
            r < self.n_rows && t < self.n_tokens,
            "({r}, {t}) outside the block"
        );
        // SAFETY: the index is inside `out` (checked just above), and the
        // element belongs to this block's rows. `par_row_blocks` makes one
        // block per range of rows, the ranges are disjoint, and a block
        // cannot be cloned, so no other block writes or reads it while
        // `out` is borrowed.
        unsafe { *self.base.0.add(t * self.n_out + self.r0 + r) = v }
    }

    /// Sets rows `r..r + vs.len()` for token `t`.
    ///
    /// # Panics
    /// If the rows or `t` leave the block.
    #[inline]
    pub(crate) fn set_rows(&mut self, r: usize, t: usize, vs: &[f32]) {
        assert!(
            r + vs.len() <= self.n_rows && t < self.n_tokens,
            "rows {r}+{} of token {t} outside the block",
            vs.len()
        );
        // SAFETY: as in `set`: the whole range is inside this block's rows
        // of token `t` (checked just above).
        unsafe {
            let at = self.base.0.add(t * self.n_out + self.r0 + r);
            std::ptr::copy_nonoverlapping(vs.as_ptr(), at, vs.len());
        }
    }
}

/// The output's first element, shared by the blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the pointer is only dereferenced through `RowBlock`, whose
// blocks cover disjoint elements (see `RowBlock::set`), while the
// `&mut [f32]` they came from stays borrowed.
unsafe impl Send for OutPtr {}
// SAFETY: as above; sharing the pointer itself reads nothing.
unsafe impl Sync for OutPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block writes its own rows for every token, and together they
    /// fill the token-major output exactly once.
    #[test]
    fn blocks_cover_the_output_once() {
        for (n_out, n_tokens, per) in [(7, 3, 2), (8, 1, 8), (5, 4, 16)] {
            let mut out = vec![-1f32; n_out * n_tokens];
            let rows: Vec<usize> = par_row_blocks(&mut out, n_out, per)
                .enumerate()
                .map(|(b, mut blk)| {
                    for r in 0..blk.n_rows() {
                        for t in 0..blk.n_tokens() {
                            blk.set(r, t, (t * 1000 + b * per + r) as f32);
                        }
                    }
                    blk.n_rows()
                })
                .collect();
            assert_eq!(rows.iter().sum::<usize>(), n_out);
            for t in 0..n_tokens {
                for r in 0..n_out {
                    assert_eq!(out[t * n_out + r], (t * 1000 + r) as f32);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside the block")]
    fn a_write_past_the_block_panics() {
        let mut out = vec![0f32; 8];
        par_row_blocks(&mut out, 4, 2).for_each(|mut b| b.set(2, 0, 1.0));
    }
}
