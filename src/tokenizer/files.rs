//! Finding and reading tokenizer files, with size caps: a tokenizer file is
//! hostile input like any other.

use std::path::{Path, PathBuf};

use super::{TokenizerError, TokenizerFiles};

/// Largest tokenizer file we read (real ones are under 20 MiB).
pub(crate) const MAX_FILE_BYTES: u64 = 256 << 20;
/// Largest `config.json` we read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads a whole file, refusing files over `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, TokenizerError> {
    let io = |source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > cap {
        return Err(TokenizerError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is over the {cap}-byte limit for tokenizer files"),
        });
    }
    std::fs::read(path).map_err(io)
}

/// Reads and parses a JSON tokenizer file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, TokenizerError> {
    let bytes = read_capped(path, MAX_FILE_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn is_file(p: &Path) -> Option<PathBuf> {
    p.is_file().then(|| p.to_path_buf())
}

pub(crate) fn discover(dir: &Path) -> TokenizerFiles {
    let mut tokenizer_json = is_file(&dir.join("tokenizer.json"));
    if tokenizer_json.is_none() {
        // A single `*tokenizer*.json` (e.g. `az_bpe_tokenizer.json`, as
        // tutorials save it); more than one is ambiguous, so none is chosen.
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.ends_with(".json")
                            && n.contains("tokenizer")
                            && n != "tokenizer_config.json"
                    })
            })
            .collect();
        if found.len() == 1 {
            tokenizer_json = found.pop();
        }
    }
    let config_json = is_file(&dir.join("config.json"))
        .and_then(|p| read_capped(&p, MAX_CONFIG_BYTES).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    TokenizerFiles {
        tokenizer_json,
        tokenizer_config: is_file(&dir.join("tokenizer_config.json")),
        spm_model: is_file(&dir.join("tokenizer.model")),
        config_json,
    }
}
