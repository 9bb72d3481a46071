//! Entry points for the fuzzing campaign (`fuzz/`, `scripts/fuzz.sh`),
//! compiled only with the `fuzz` feature so they never join the public API.
//!
//! One [`Target`] per reader of hostile input. Each takes the input bytes,
//! feeds them to the real reader exactly as kvant does (from a file where
//! kvant reads a file), and returns the reader's error text, which the
//! runner uses as cheap feedback: an input that reaches a new error is kept
//! for further mutation. A panic, abort or stack overflow is a crash; the
//! runner bounds each input's time and measures its heap.
//!
//! [`Target::seeds`] makes the starting corpus from the real fixtures. The
//! fixtures hold no GGUF, imatrix or Modelfile, so those seeds are written
//! by kvant's own writers from the fixtures (a conversion of a real
//! model, its tensor names as an imatrix, its template in a Modelfile).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

use crate::source::torch;

mod seeds;

/// A reader under fuzzing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The pickle interpreter alone, on a `data.pkl`.
    Pickle,
    /// A whole torch zip checkpoint (zip directory, pickle, tensor views).
    Zip,
    /// A whole legacy (non-zip) torch checkpoint.
    LegacyTorch,
    /// A safetensors file (header JSON, offsets).
    Safetensors,
    /// The GGUF reader.
    Gguf,
    /// `tokenizer.json` → the GGUF vocabulary.
    TokenizerJson,
    /// A Jinja chat template → its proven Ollama translation.
    ChatTemplate,
    /// The Modelfile parser.
    Modelfile,
    /// Importance-matrix files (GGUF and legacy `.dat`).
    Imatrix,
}

impl Target {
    /// Every target, in the order the script runs them.
    pub const ALL: [Target; 9] = [
        Target::Pickle,
        Target::Zip,
        Target::LegacyTorch,
        Target::Safetensors,
        Target::Gguf,
        Target::TokenizerJson,
        Target::ChatTemplate,
        Target::Modelfile,
        Target::Imatrix,
    ];

    /// The name used on the command line and for output folders.
    pub fn name(self) -> &'static str {
        match self {
            Target::Pickle => "pickle",
            Target::Zip => "zip",
            Target::LegacyTorch => "legacy-torch",
            Target::Safetensors => "safetensors",
            Target::Gguf => "gguf",
            Target::TokenizerJson => "tokenizer-json",
            Target::ChatTemplate => "chat-template",
            Target::Modelfile => "modelfile",
            Target::Imatrix => "imatrix",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Byte strings the mutator splices in (and repeats, for nesting).
    pub fn dictionary(self) -> &'static [&'static [u8]] {
        match self {
            Target::Pickle | Target::Zip | Target::LegacyTorch => &[
                b")",
                b"\x85",
                b"]",
                b"}",
                b"(",
                b"t",
                b"l",
                b"e",
                b"u",
                b"a",
                b"s",
                b"q\x01",
                b"h\x01",
                b"0",
                b"2",
                b"R",
                b"b",
                b"Q",
                b"N",
                b".",
                b"\x8a\x08",
                b"ctorch._utils\n_rebuild_tensor_v2\n",
                b"ccollections\nOrderedDict\n",
                b"PK\x01\x02",
                b"PK\x05\x06",
                b"PK\x06\x06",
                b"\xff\xff\xff\xff",
            ],
            Target::Safetensors | Target::TokenizerJson => &[
                b"[",
                b"{",
                b"]",
                b"}",
                b"\"a\":",
                b",",
                b"null",
                b"\"dtype\":\"F32\"",
                b"\"shape\":[1]",
                b"\"data_offsets\":[0,4]",
                b"1e400",
                b"\"\\ud800\"",
            ],
            Target::Gguf | Target::Imatrix => &[
                b"\x09\x00\x00\x00",
                b"\x08\x00\x00\x00",
                b"\xff\xff\xff\xff\xff\xff\xff\x7f",
                b"\x00\x00\x00\x00\x00\x00\x00\x00",
                b"GGUF",
                b"\x03\x00\x00\x00",
            ],
            Target::ChatTemplate => &[
                b"{% if true %}",
                b"{% endif %}",
                b"{% for m in messages %}",
                b"{% endfor %}",
                b"{{ ",
                b" }}",
                b"(",
                b")",
                b"[",
                b"]",
                b"{% set ns = namespace(a=1) %}",
                b"{{ messages[0]['content'] }}",
                b"{% macro f() %}{{ f() }}{% endmacro %}",
                b"range(100000)",
                b"* 99999",
            ],
            Target::Modelfile => &[
                b"FROM ",
                b"TEMPLATE ",
                b"PARAMETER stop ",
                b"\"\"\"",
                b"\"",
                b"\n",
                b"# ",
                b"SYSTEM ",
            ],
        }
    }

    /// The starting corpus, made from the fixtures in `fixtures` (scratch
    /// files go to `scratch`).
    pub fn seeds(self, fixtures: &Path, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
        seeds::seeds(self, fixtures, scratch)
    }

    /// Feeds `input` to the reader; `scratch` is a private folder for the
    /// file a reader must be given. `Err` is the reader's refusal.
    pub fn run(self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let text = || String::from_utf8_lossy(input);
        match self {
            Target::Pickle => pickle(input),
            Target::Zip => {
                let (path, map) = mapped(input, scratch, "ckpt.pt")?;
                torch::open(&path, map).map(drop).map_err(|e| e.to_string())
            }
            Target::LegacyTorch => {
                let (path, map) = mapped(input, scratch, "ckpt.pt")?;
                torch::open_legacy(&path, map)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::Safetensors => {
                let path = file(input, scratch, "model.safetensors")?;
                crate::source::open(&path)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::Gguf => {
                let path = file(input, scratch, "model.gguf")?;
                let f = crate::gguf::GgufFile::open(&path).map_err(|e| e.to_string())?;
                // What `kvant inspect` shows of every key.
                f.metadata.iter().for_each(|(_, v)| drop(v.display_short()));
                Ok(())
            }
            Target::TokenizerJson => {
                let path = file(input, scratch, "tokenizer.json")?;
                let files = crate::tokenizer::TokenizerFiles {
                    dir: scratch.to_owned(),
                    tokenizer_json: Some(path),
                    ..Default::default()
                };
                crate::tokenizer::gguf_vocab(&files, 4096)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::ChatTemplate => {
                let specials = crate::tokenizer::chat_template::Specials {
                    bos: Some("<s>".into()),
                    eos: Some("</s>".into()),
                    add_bos_token: false,
                };
                crate::tokenizer::chat_template::translate(&text(), &specials)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::Modelfile => crate::modelfile::parse(&text())
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Imatrix => {
                let path = file(input, scratch, "imatrix.dat")?;
                crate::quant::Imatrix::load(&path)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The interpreter on `input`, storages unchecked (as for the legacy
/// format), then the metadata walk a checkpoint's values get.
fn pickle(input: &[u8]) -> Result<(), String> {
    torch::fuzz_pickle(input)
}

fn file(input: &[u8], scratch: &Path, name: &str) -> Result<PathBuf, String> {
    let path = scratch.join(name);
    std::fs::write(&path, input).map_err(|e| format!("scratch file: {e}"))?;
    Ok(path)
}

/// `input` in a read-only anonymous map, as the torch readers take it.
fn mapped(input: &[u8], scratch: &Path, name: &str) -> Result<(PathBuf, Arc<Mmap>), String> {
    if input.is_empty() {
        return Err("empty".into());
    }
    let mut m = MmapMut::map_anon(input.len()).map_err(|e| format!("map: {e}"))?;
    m.copy_from_slice(input);
    let m = m.make_read_only().map_err(|e| format!("map: {e}"))?;
    Ok((scratch.join(name), Arc::new(m)))
}

/// Converts `src` to one GGUF of type `ft` at `out` (a seed maker).
pub(crate) fn convert_seed(
    src: &Path,
    ft: crate::quant::FileType,
    out: &Path,
    n_head: Option<usize>,
) -> Result<(), String> {
    let req = crate::convert::ConvertRequest {
        source: src.to_owned(),
        outputs: vec![crate::convert::OutputSpec {
            file_type: ft,
            path: out.to_owned(),
        }],
        n_head,
        ..Default::default()
    };
    crate::convert::convert(&req, &crate::convert::NoProgress, &AtomicBool::new(false))
        .map(drop)
        .map_err(|e| format!("{}: {e}", src.display()))
}
