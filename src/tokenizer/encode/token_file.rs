//! Pre-tokenized text as nanoGPT's `prepare.py` writes it (`train.bin`,
//! `val.bin`): the token ids as raw uint16, little-endian, no header
//! (`np.memmap(..., dtype=np.uint16)` on the machines it runs on).

use std::path::Path;

use super::EncodeError;

/// Reads a nanoGPT token file; every id must be below `n_vocab`.
pub fn read_token_file(path: &Path, n_vocab: usize) -> Result<Vec<u32>, EncodeError> {
    let bad = |reason: String| EncodeError::TokenFile {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // SAFETY: the map is only read, and the file is the user's input that
    // kvant never writes; a concurrent truncation is the usual mmap caveat.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
    let bytes: &[u8] = &map;
    if bytes.is_empty() {
        return Err(bad("the token file is empty".into()));
    }
    if bytes.len() % 2 == 1 {
        return Err(EncodeError::TokenFileAt {
            path: path.to_owned(),
            offset: bytes.len() as u64 - 1,
            reason: format!(
                "{} bytes is an odd length: not a file of uint16 token ids (nanoGPT's train.bin/val.bin)",
                bytes.len()
            ),
        });
    }
    let ids: Vec<u32> = bytes
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    if let Some(i) = ids.iter().position(|&id| id as usize >= n_vocab) {
        return Err(EncodeError::TokenFileAt {
            path: path.to_owned(),
            offset: 2 * i as u64,
            reason: format!(
                "token id {} is not below the vocabulary size {n_vocab}",
                ids[i]
            ),
        });
    }
    Ok(ids)
}
