//! The hook through which a forward pass shows each matrix product's input
//! (what ggml's `cb_eval` shows llama-imatrix).

/// Sees the f32 input of every matrix multiplication of a forward pass.
pub trait MatmulObserver {
    /// `input` holds `n_tokens` rows of `n_in` values, the input of the
    /// product with the weight named `weight_name` (its GGUF name).
    fn observe(&mut self, weight_name: &str, input: &[f32], n_tokens: usize, n_in: usize);
}
