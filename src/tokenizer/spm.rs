//! SentencePiece `tokenizer.model` files (a protobuf `ModelProto`) as
//! llama.cpp's `llama` (SPM) vocabulary: pieces, scores, token types, the
//! normalizer flags llama.cpp honours, and the special ids.
//!
//! The protobuf reader is a small bounded one: only the fields used here
//! are decoded, every length is checked against the bytes left, unknown
//! fields are skipped by wire type.

use std::path::Path;

use serde_json::Value;

use super::specials::{self, END_TOKENS};
use super::{TokenType, TokenizerError, Vocab};
use crate::gguf::{GgufArray, GgufValue, Metadata};

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len())?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn fixed32(&mut self) -> Option<[u8; 4]> {
        let s = self.b.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some([s[0], s[1], s[2], s[3]])
    }

    /// Next (field number, wire type).
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                self.pos = self.pos.checked_add(8).filter(|&e| e <= self.b.len())?;
            }
            2 => {
                self.bytes()?;
            }
            5 => {
                self.fixed32()?;
            }
            _ => return None,
        }
        Some(())
    }
}

struct Piece {
    text: String,
    score: f32,
    kind: u64,
}

struct Model {
    pieces: Vec<Piece>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    unk_id: Option<u32>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
}

fn parse(b: &[u8]) -> Option<Model> {
    let mut r = Reader { b, pos: 0 };
    let mut m = Model {
        pieces: Vec::new(),
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        unk_id: Some(0),
        bos_id: Some(1),
        eos_id: Some(2),
        pad_id: None,
    };
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => {
                let mut p = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                let mut piece = Piece {
                    text: String::new(),
                    score: 0.0,
                    kind: 1,
                };
                while !p.done() {
                    match p.key()? {
                        (1, 2) => piece.text = String::from_utf8(p.bytes()?.to_vec()).ok()?,
                        (2, 5) => piece.score = f32::from_le_bytes(p.fixed32()?),
                        (3, 0) => piece.kind = p.varint()?,
                        (_, w) => p.skip(w)?,
                    }
                }
                m.pieces.push(piece);
            }
            (2, 2) => {
                // TrainerSpec: the special ids (-1 = none).
                let mut t = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                while !t.done() {
                    let (f, w) = t.key()?;
                    let id = |v: u64| u32::try_from(v as i64).ok();
                    match (f, w) {
                        (40, 0) => m.unk_id = id(t.varint()?),
                        (41, 0) => m.bos_id = id(t.varint()?),
                        (42, 0) => m.eos_id = id(t.varint()?),
                        (43, 0) => m.pad_id = id(t.varint()?),
                        (_, w) => t.skip(w)?,
                    }
                }
            }
            (3, 2) => {
                let mut n = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                while !n.done() {
                    match n.key()? {
                        (3, 0) => m.add_dummy_prefix = n.varint()? != 0,
                        (4, 0) => m.remove_extra_whitespaces = n.varint()? != 0,
                        (_, w) => n.skip(w)?,
                    }
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Some(m)
}

/// Builds the vocabulary keys from a SentencePiece model. `tokenizer` is
/// the matching `tokenizer.json`, if any (for its post-processor).
pub fn from_model(
    path: &Path,
    tokenizer: Option<&Value>,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
    n_vocab_rows: usize,
) -> Result<Vocab, TokenizerError> {
    let malformed = |reason: String| TokenizerError::Malformed {
        path: path.to_owned(),
        reason,
    };
    // Real SentencePiece models are a few MiB; refuse before allocating.
    const MAX_MODEL_BYTES: u64 = 64 << 20;
    let len = std::fs::metadata(path)
        .map_err(|e| malformed(e.to_string()))?
        .len();
    if len > MAX_MODEL_BYTES {
        return Err(malformed(format!(
            "{len} bytes is too large for a SentencePiece model"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| malformed(e.to_string()))?;
    let m = parse(&bytes).ok_or_else(|| TokenizerError::Malformed {
        path: path.to_owned(),
        reason: "not a valid SentencePiece model (protobuf)".into(),
    })?;
    if m.pieces.len() > n_vocab_rows {
        return Err(TokenizerError::Mismatch {
            path: path.to_owned(),
            reason: format!(
                "the tokenizer has {} pieces but the model's embedding has {n_vocab_rows} rows",
                m.pieces.len()
            ),
        });
    }
    let mut tokens = Vec::with_capacity(n_vocab_rows);
    let mut scores = Vec::with_capacity(n_vocab_rows);
    let mut types = Vec::with_capacity(n_vocab_rows);
    for p in &m.pieces {
        tokens.push(p.text.clone());
        scores.push(p.score);
        let t = match p.kind {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        };
        types.push(t as i32);
    }
    for i in m.pieces.len()..n_vocab_rows {
        tokens.push(format!("[PAD{i}]"));
        scores.push(-1000.0);
        types.push(TokenType::Unused as i32);
    }
    let id_of = |t: &str| tokens.iter().position(|x| x == t).map(|i| i as u32);
    let empty = Value::Null;
    let sp = specials::resolve(
        tokenizer.unwrap_or(&empty),
        tokenizer_config,
        model_config,
        &id_of,
    );

    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", "llama");
    md.set("tokenizer.ggml.pre", "default");
    md.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens.clone())),
    );
    md.set(
        "tokenizer.ggml.scores",
        GgufValue::Array(GgufArray::F32(scores)),
    );
    md.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(types)),
    );
    let bos = sp.bos.or(m.bos_id);
    let eos = sp.eos.or(m.eos_id);
    specials::set_special_ids(
        &mut md,
        [bos, eos, sp.unk.or(m.unk_id), sp.pad.or(m.pad_id)],
        n_vocab_rows,
    );
    let add_bos = sp.add_bos.unwrap_or(true);
    md.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos));
    md.set(
        "tokenizer.ggml.add_eos_token",
        GgufValue::Bool(sp.add_eos.unwrap_or(false)),
    );
    md.set(
        "tokenizer.ggml.add_space_prefix",
        GgufValue::Bool(m.add_dummy_prefix),
    );
    md.set(
        "tokenizer.ggml.remove_extra_whitespaces",
        GgufValue::Bool(m.remove_extra_whitespaces),
    );
    let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let eos_token = name(eos);
    let mut stop_tokens: Vec<String> = eos_token.iter().cloned().collect();
    for t in END_TOKENS {
        if id_of(t).is_some() && !stop_tokens.iter().any(|s| s == t) {
            stop_tokens.push(t.to_owned());
        }
    }
    Ok(Vocab {
        metadata: md,
        n_tokens: n_vocab_rows,
        bos_token: name(bos),
        eos_token,
        stop_tokens,
        add_bos,
    })
}
