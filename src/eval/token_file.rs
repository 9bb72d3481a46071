//! nanoGPT's token files (`train.bin`, `val.bin` from its `prepare.py`):
//! a bare stream of uint16 little-endian token ids, no header.

use std::path::Path;

use super::MeasureError;

/// Largest token file read whole (2 GiB = 1 G tokens).
const MAX_BYTES: u64 = 2 << 30;

/// Reads `path` and checks every id against a vocabulary of `n_vocab`.
/// An id outside it is an error naming its byte offset (a file made for
/// another tokenizer).
pub fn read_token_file(path: &Path, n_vocab: usize) -> Result<Vec<u32>, MeasureError> {
    let size = std::fs::metadata(path)
        .map_err(|e| MeasureError::io(path, e))?
        .len();
    if size > MAX_BYTES {
        return Err(MeasureError::Malformed {
            path: path.to_owned(),
            reason: format!("token file of {size} bytes is larger than the 2 GiB read whole"),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| MeasureError::io(path, e))?;
    parse_token_bytes(path, &bytes, n_vocab)
}

/// The ids in `bytes` (see [`read_token_file`]).
pub fn parse_token_bytes(
    path: &Path,
    bytes: &[u8],
    n_vocab: usize,
) -> Result<Vec<u32>, MeasureError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(MeasureError::Malformed {
            path: path.to_owned(),
            reason: format!(
                "{} bytes is not a whole number of uint16 token ids",
                bytes.len()
            ),
        });
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(i, c)| {
            let token = u32::from(u16::from_le_bytes([c[0], c[1]]));
            if (token as usize) < n_vocab {
                Ok(token)
            } else {
                Err(MeasureError::TokenOutOfRange {
                    path: path.to_owned(),
                    token,
                    offset: 2 * i as u64,
                    n_vocab,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_little_endian_u16() {
        let ids = parse_token_bytes(Path::new("v.bin"), &[1, 0, 0, 1, 255, 7], 2048).unwrap();
        assert_eq!(ids, vec![1, 256, 2047]);
    }

    #[test]
    fn an_id_outside_the_vocabulary_names_its_offset() {
        let e = parse_token_bytes(Path::new("v.bin"), &[1, 0, 0, 8], 2048).unwrap_err();
        assert_eq!(
            e.to_string(),
            "v.bin: token id 2048 at byte offset 2 is outside the vocabulary of 2048 tokens"
        );
        let e = parse_token_bytes(Path::new("v.bin"), &[1, 0, 0], 2048).unwrap_err();
        assert!(e.to_string().contains("3 bytes"), "{e}");
    }
}
