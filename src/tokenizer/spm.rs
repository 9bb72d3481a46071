//! SentencePiece `tokenizer.model` → llama.cpp's `llama` vocabulary: a small
//! bounded protobuf reader for the `ModelProto` fields llama.cpp needs
//! (pieces with score and type, `add_dummy_prefix`,
//! `remove_extra_whitespaces`), plus token classes from
//! `tokenizer_config.json` as llama.cpp's converter applies them.
//!
//! Must not know about BPE `tokenizer.json` internals or GGUF files. Every
//! length is checked against the bytes left before it is used.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::{files, specials, token_type, Built, TokenizerError};

/// Largest `tokenizer.model` accepted.
const MAX_MODEL_BYTES: u64 = 64 << 20;
/// Most pieces accepted.
const MAX_PIECES: usize = 4 << 20;

/// One `SentencePiece` message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub piece: String,
    pub score: f32,
    /// sentencepiece's type: 1 NORMAL, 2 UNKNOWN, 3 CONTROL,
    /// 4 USER_DEFINED, 5 UNUSED, 6 BYTE.
    pub kind: u64,
}

/// The parts of `ModelProto` llama.cpp uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpmModel {
    pub pieces: Vec<Piece>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub byte_fallback: bool,
}

/// A protobuf cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Next field: (number, wire type value). Length-delimited fields come
    /// back as `Field::Bytes`.
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

enum Field<'a> {
    Varint(u64),
    #[allow(dead_code)]
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn parse_piece(buf: &[u8]) -> Option<Piece> {
    let mut r = Reader { buf, pos: 0 };
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: 1,
    };
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => p.piece = String::from_utf8(b.to_vec()).ok()?,
            (2, Field::Fixed32(f)) => p.score = f32::from_bits(f),
            (3, Field::Varint(t)) => p.kind = t,
            _ => {}
        }
    }
    Some(p)
}

/// Parses a serialized `ModelProto`. `None` when the bytes are not one.
pub(crate) fn parse(buf: &[u8]) -> Option<SpmModel> {
    let mut r = Reader { buf, pos: 0 };
    let mut m = SpmModel {
        pieces: Vec::new(),
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        byte_fallback: false,
    };
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => {
                if m.pieces.len() >= MAX_PIECES {
                    return None;
                }
                m.pieces.push(parse_piece(b)?);
            }
            (2, Field::Bytes(b)) => {
                let mut t = Reader { buf: b, pos: 0 };
                while !t.done() {
                    if let (35, Field::Varint(v)) = t.field()? {
                        m.byte_fallback = v != 0;
                    }
                }
            }
            (3, Field::Bytes(b)) => {
                let mut n = Reader { buf: b, pos: 0 };
                while !n.done() {
                    match n.field()? {
                        (3, Field::Varint(v)) => m.add_dummy_prefix = v != 0,
                        (4, Field::Varint(v)) => m.remove_extra_whitespaces = v != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(m)
}

/// Builds the vocabulary of a SentencePiece model.
pub(crate) fn build(
    path: &Path,
    tokenizer_json: Option<&Value>,
    tokenizer_config: Option<&Value>,
    model_config: Option<&Value>,
) -> Result<Built, TokenizerError> {
    let bytes = files::read_capped(path, MAX_MODEL_BYTES)?;
    let model = parse(&bytes).ok_or_else(|| TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: "not a SentencePiece ModelProto (protobuf parse failed)".into(),
    })?;
    if model.pieces.is_empty() {
        return Err(TokenizerError::Invalid {
            path: path.to_path_buf(),
            reason: "the SentencePiece model has no pieces".into(),
        });
    }
    let mut tokens = Vec::with_capacity(model.pieces.len());
    let mut scores = Vec::with_capacity(model.pieces.len());
    let mut types = Vec::with_capacity(model.pieces.len());
    for p in &model.pieces {
        tokens.push(p.piece.clone());
        scores.push(p.score);
        types.push(match p.kind {
            2 => token_type::UNKNOWN,
            3 => token_type::CONTROL,
            4 => token_type::USER_DEFINED,
            5 => token_type::UNUSED,
            6 => token_type::BYTE,
            _ => token_type::NORMAL,
        });
    }
    // Added tokens named in tokenizer_config.json override the class, as
    // llama.cpp's converter does (the unknown token keeps its class).
    if let Some(dec) = tokenizer_config
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Value::as_object)
    {
        for (id, data) in dec.iter().take(MAX_PIECES) {
            let (Ok(id), Some(content)) = (
                id.parse::<usize>(),
                data.get("content").and_then(Value::as_str),
            ) else {
                continue;
            };
            if id >= tokens.len() || types[id] == token_type::UNKNOWN {
                continue;
            }
            let special = data
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if special || super::bpe::looks_special(content) {
                types[id] = token_type::CONTROL;
                tokens[id] = content.to_string();
            } else {
                types[id] = token_type::USER_DEFINED;
                tokens[id] = content.replace('\u{2581}', " ");
            }
            scores[id] = -1000.0;
        }
    }
    let index: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    if index.len() != tokens.len() {
        return Err(TokenizerError::Invalid {
            path: path.to_path_buf(),
            reason: "two pieces have the same text".into(),
        });
    }
    let lookup = |t: &str| index.get(t).copied();
    let mut specials = specials::resolve(tokenizer_config, model_config, tokens.len(), &lookup);
    // sentencepiece's own defaults when nothing names them.
    for (slot, name) in [
        (&mut specials.unk, "<unk>"),
        (&mut specials.bos, "<s>"),
        (&mut specials.eos, "</s>"),
    ] {
        if slot.is_none() {
            *slot = lookup(name);
        }
    }
    let (add_bos, add_eos) = specials::add_flags(tokenizer_json, tokenizer_config, (true, false));
    drop(index);
    Ok(Built {
        source: path.to_path_buf(),
        model: "llama",
        pre: "default",
        tokens,
        scores: Some(scores),
        types,
        merges: None,
        specials,
        add_bos,
        add_eos,
        add_space_prefix: Some(model.add_dummy_prefix),
        remove_extra_whitespaces: Some(model.remove_extra_whitespaces),
    })
}
