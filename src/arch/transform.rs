//! Element reorderings recipes need, on plain f32 buffers.

/// Transposes a row-major `rows × cols` matrix.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// llama.cpp's converter `permute` for Q/K projections: within each head
/// of `rows / n_head` rows, row `i*half + j` moves to `2*j + i`
/// (rotate-half layout to interleaved pairs). `cols` is the row length.
pub fn permute_rope(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let src = h * hd + i * half + j;
                let dst = h * hd + 2 * j + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }

    #[test]
    fn permute_interleaves_halves() {
        // One head of 4 rows, 1 column: [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        assert_eq!(
            permute_rope(&[0., 1., 2., 3.], 4, 1, 1),
            vec![0., 2., 1., 3.]
        );
    }
}
