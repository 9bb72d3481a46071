//! `torch.save` checkpoints: a zip archive whose `data.pkl` describes the
//! object and whose `data/<key>` entries hold raw storages.
//!
//! The object is interpreted by [`pickle`] (allowlist, no code runs); the
//! tensors become views into the memory-mapped storages, so nothing is
//! copied until a tensor is converted. nanoGPT's `{model, optimizer,
//! model_args, iter_num, best_val_loss, config}` layout is understood: the
//! weights come from `model`, the optimizer's storages are never touched.

mod pickle;
mod zip;

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::{Map, Value as Json};

use super::{Checkpoint, SourceError, SourceFormat, SourceTensor};
use pickle::{PickleError, TensorRef, Value};

pub use zip::is_zip;

/// The largest `data.pkl` accepted (nanoGPT's is kilobytes; its optimizer
/// state adds little, since tensors are references).
const MAX_PICKLE: usize = 256 << 20;

/// Prefixes wrappers add to every key: torch.compile, DDP.
const PREFIXES: [&str; 2] = ["_orig_mod.", "module."];

/// Opens a torch zip checkpoint already mapped in `map`.
pub fn open(path: &Path, map: Arc<Mmap>) -> Result<Checkpoint, SourceError> {
    let entries = zip::entries(&map, path)?;
    let first = entries.first().ok_or_else(|| SourceError::Malformed {
        path: path.to_owned(),
        reason: "the archive is empty".into(),
    })?;
    let prefix = match first.name.split_once('/') {
        Some((p, _)) => format!("{p}/"),
        None => {
            return Err(SourceError::Malformed {
                path: path.to_owned(),
                reason: "archive entries are not in a folder: not a torch.save file".into(),
            })
        }
    };
    let by_name: HashMap<&str, &zip::Entry> =
        entries.iter().map(|e| (e.name.as_str(), e)).collect();
    if by_name.contains_key(format!("{prefix}constants.pkl").as_str()) {
        return Err(SourceError::Unsupported {
            path: path.to_owned(),
            reason: "this is a TorchScript archive (torch.jit.save); save the state_dict with torch.save instead".into(),
        });
    }
    if let Some(bo) = by_name.get(format!("{prefix}byteorder").as_str()) {
        if &map[bo.offset..bo.offset + bo.size] != b"little" {
            return Err(SourceError::Unsupported {
                path: path.to_owned(),
                reason: "big-endian checkpoints are not supported".into(),
            });
        }
    }
    let pkl = by_name
        .get(format!("{prefix}data.pkl").as_str())
        .ok_or_else(|| SourceError::Malformed {
            path: path.to_owned(),
            reason: format!("no {prefix}data.pkl in the archive: not a torch.save file"),
        })?;
    if pkl.size > MAX_PICKLE {
        return Err(SourceError::Malformed {
            path: path.to_owned(),
            reason: format!(
                "data.pkl is {} bytes, over the {MAX_PICKLE}-byte limit",
                pkl.size
            ),
        });
    }
    let storage = |key: &str| -> Option<&zip::Entry> {
        by_name.get(format!("{prefix}data/{key}").as_str()).copied()
    };
    let lookup = |key: &str| storage(key).map(|e| e.size);
    let root =
        pickle::unpickle(&map[pkl.offset..pkl.offset + pkl.size], &lookup).map_err(
            |e| match e {
                PickleError::Forbidden(global) => SourceError::ForbiddenGlobal {
                    path: path.to_owned(),
                    global,
                },
                PickleError::UnsupportedDtype(reason) => SourceError::Unsupported {
                    path: path.to_owned(),
                    reason,
                },
                PickleError::Bad(reason) => SourceError::Malformed {
                    path: path.to_owned(),
                    reason: format!("data.pkl: {reason}"),
                },
            },
        )?;

    let make_tensor = |name: String, t: &TensorRef| -> Result<SourceTensor, SourceError> {
        let e = storage(&t.storage.key).ok_or_else(|| SourceError::Malformed {
            path: path.to_owned(),
            reason: format!("storage data/{} is missing", t.storage.key),
        })?;
        let esize = t.storage.dtype.size();
        SourceTensor::mapped(
            name,
            t.storage.dtype,
            t.size.clone(),
            map.clone(),
            e.offset + t.offset * esize,
            Some(t.stride.clone()),
        )
    };

    let Value::Dict(top) = &root else {
        return Err(SourceError::Unsupported {
            path: path.to_owned(),
            reason: "the checkpoint is not a dict of tensors (save model.state_dict())".into(),
        });
    };
    let top = top.borrow();
    let get = |k: &str| {
        top.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    // nanoGPT/Lightning put the weights one level down.
    let (weights, is_wrapper) = match get("model").or_else(|| get("state_dict")) {
        Some(Value::Dict(d)) => (d, true),
        _ => (Rc::new(std::cell::RefCell::new(top.clone())), false),
    };
    let mut tensors = Vec::new();
    for (k, v) in weights.borrow().iter() {
        let (Some(name), Value::Tensor(t)) = (k.as_str(), v) else {
            continue;
        };
        let mut name = name;
        while let Some(rest) = PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
            name = rest;
        }
        tensors.push(make_tensor(name.to_owned(), t)?);
    }
    if tensors.is_empty() {
        return Err(SourceError::Unsupported {
            path: path.to_owned(),
            reason:
                "no tensors found (expected a state_dict, or a dict with the weights under 'model')"
                    .into(),
        });
    }
    let mut config = None;
    let mut extra = Map::new();
    if is_wrapper {
        for (k, v) in top.iter() {
            let Some(key) = k.as_str() else { continue };
            match key {
                "model" | "state_dict" | "optimizer" | "optimizer_states" => {}
                "model_args" => config = Some(to_json(v, &map, &storage, 0)),
                _ => {
                    extra.insert(key.to_owned(), to_json(v, &map, &storage, 0));
                }
            }
        }
    }
    Ok(Checkpoint {
        path: path.to_owned(),
        format: SourceFormat::TorchZip,
        tensors,
        config,
        extra,
    })
}

/// Plain values as JSON; a one-element tensor (nanoGPT's 0-d
/// `best_val_loss`) as its number; other tensors as a description.
fn to_json<'a>(
    v: &Value,
    map: &Mmap,
    storage: &dyn Fn(&str) -> Option<&'a zip::Entry>,
    depth: usize,
) -> Json {
    if depth > 64 {
        return Json::Null;
    }
    match v {
        Value::None | Value::Opaque | Value::Global(_) | Value::Storage(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Str(s) => Json::String(s.to_string()),
        Value::Bytes(b) => Json::String(format!("<{} bytes>", b.len())),
        Value::Tuple(items) => Json::Array(
            items
                .iter()
                .map(|x| to_json(x, map, storage, depth + 1))
                .collect(),
        ),
        Value::List(items) => Json::Array(
            items
                .borrow()
                .iter()
                .map(|x| to_json(x, map, storage, depth + 1))
                .collect(),
        ),
        Value::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.borrow().iter() {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                m.insert(key, to_json(v, map, storage, depth + 1));
            }
            Json::Object(m)
        }
        Value::Tensor(t) => {
            let scalar = t.size.iter().product::<usize>() == 1;
            let e = storage(&t.storage.key);
            match (scalar, e, t.storage.dtype) {
                (true, Some(e), dt) if dt.is_float() => {
                    let at = e.offset + t.offset * dt.size();
                    let b = &map[at..at + dt.size()];
                    let f = match dt {
                        super::DType::F32 => {
                            f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        }
                        super::DType::F16 => {
                            f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        }
                        super::DType::BF16 => {
                            f64::from(half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        }
                        _ => {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(b);
                            f64::from_le_bytes(a)
                        }
                    };
                    serde_json::Number::from_f64(f)
                        .map(Json::Number)
                        .unwrap_or(Json::Null)
                }
                _ => Json::String(format!("<tensor {:?} {:?}>", t.storage.dtype, t.size)),
            }
        }
    }
}
