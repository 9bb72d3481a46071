//! The benchmarks' model: a ~124M-parameter nanoGPT-shaped `ckpt.pt`
//! (n_layer 12, or 4 with `quick`; n_embd 768, vocab 50304, block 1024;
//! tied embeddings) with deterministic weights, beside the fixture BPE
//! tokenizer, written by `torch_zip` (no PyTorch on the machine).

use std::path::{Path, PathBuf};

use super::torch_zip;

/// The shared fixtures (`KVANT_FIXTURES`, else `../shared/fixtures`).
pub fn fixtures() -> PathBuf {
    std::env::var_os("KVANT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

/// The model's shape: `(n_layer, n_embd, vocab, block)`.
pub fn shape(quick: bool) -> (usize, usize, usize, usize) {
    if quick {
        (4, 768, 50304, 1024)
    } else {
        (12, 768, 50304, 1024)
    }
}

/// Writes `work/ckpt.pt` and `work/tokenizer.json`; returns the
/// checkpoint's path.
pub fn write_checkpoint(work: &Path, quick: bool) -> PathBuf {
    let (n_layer, n_embd, vocab, block) = shape(quick);
    let ckpt = work.join("ckpt.pt");
    let specs = torch_zip::nanogpt_specs(n_layer, n_embd, vocab, block);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    torch_zip::write(
        &ckpt,
        &specs,
        &[
            ("n_layer", n_layer as i64),
            ("n_head", 12),
            ("n_embd", n_embd as i64),
            ("block_size", block as i64),
            ("bias", 1),
            ("vocab_size", vocab as i64),
        ],
        |_, buf| {
            for x in buf.iter_mut() {
                // xorshift: fast, deterministic weights around N(0, 0.02)-ish.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *x = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.08;
            }
        },
    )
    .expect("writing the checkpoint");
    std::fs::copy(
        fixtures().join("tokenizers/az_bpe_tokenizer.json"),
        work.join("tokenizer.json"),
    )
    .expect("copying the fixture tokenizer (set KVANT_FIXTURES)");
    ckpt
}
