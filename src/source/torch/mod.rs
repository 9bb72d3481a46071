//! `torch.save` checkpoints: a zip archive whose `data.pkl` describes the
//! object and whose `data/<key>` entries hold raw storages, or the legacy
//! stream of pickles followed by the storages ([`legacy`]).
//!
//! The object is interpreted by [`pickle`] (allowlist, no code runs); the
//! tensors become views into the memory-mapped storages, so nothing is
//! copied until a tensor is converted. nanoGPT's `{model, optimizer,
//! model_args, iter_num, best_val_loss, config}` layout is understood: the
//! weights come from `model`, the optimizer's storages are never touched.

mod legacy;
mod nesting;
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

pub use legacy::{is_legacy, open as open_legacy};
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
    let root = pickle::unpickle(&map[pkl.offset..pkl.offset + pkl.size], &lookup)
        .map_err(|e| pickle_error(path, "data.pkl", e))?;
    let data_prefix = format!("{prefix}data/");
    let storages: Storages = entries
        .iter()
        .filter_map(|e| Some((e.name.strip_prefix(&data_prefix)?.to_owned(), e.offset)))
        .collect();
    checkpoint(path, &map, &root, &storages, SourceFormat::TorchZip)
}

/// Where each storage's data starts in the file, by key. The pickle
/// interpreter has checked every tensor view against its storage's size.
type Storages = HashMap<String, usize>;

/// A pickle error as the source error naming `path` (`part`: which pickle).
fn pickle_error(path: &Path, part: &str, e: PickleError) -> SourceError {
    match e {
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
            reason: format!("{part}: {reason}"),
        },
    }
}

/// The checkpoint an unpickled `root` describes, its tensors viewing the
/// storages in `map`: a state dict, or nanoGPT's or Lightning's wrapper.
fn checkpoint(
    path: &Path,
    map: &Arc<Mmap>,
    root: &Value,
    storages: &Storages,
    format: SourceFormat,
) -> Result<Checkpoint, SourceError> {
    let make_tensor = |name: String, t: &TensorRef| -> Result<SourceTensor, SourceError> {
        let start = storages
            .get(&t.storage.key)
            .ok_or_else(|| SourceError::Malformed {
                path: path.to_owned(),
                reason: format!("storage {} is missing", t.storage.key),
            })?;
        let esize = t.storage.dtype.size();
        SourceTensor::mapped(
            name,
            t.storage.dtype,
            t.size.clone(),
            map.clone(),
            start + (t.storage.offset + t.offset) * esize,
            Some(t.stride.clone()),
        )
    };

    let Value::Dict(top) = root else {
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
        let json = JsonBudget {
            map,
            storages,
            nodes_left: std::cell::Cell::new(MAX_JSON_NODES),
        };
        for (k, v) in top.iter() {
            let Some(key) = k.as_str() else { continue };
            match key {
                "model" | "state_dict" | "optimizer" | "optimizer_states" => {}
                "model_args" => config = Some(json.convert(v, 0)),
                _ => {
                    extra.insert(key.to_owned(), json.convert(v, 0));
                }
            }
        }
    }
    Ok(Checkpoint {
        path: path.to_owned(),
        format,
        tensors,
        config,
        extra,
    })
}

/// Most values turned into JSON for one checkpoint's metadata: memoized
/// values are shared, so a small pickle can describe a tuple of two copies
/// of a tuple of two copies of … whose expansion never ends.
const MAX_JSON_NODES: usize = 100_000;

/// Deepest metadata turned into JSON (deeper values become `null`).
const MAX_JSON_DEPTH: usize = 64;

/// Converts plain pickled values to JSON within [`MAX_JSON_NODES`].
struct JsonBudget<'a> {
    map: &'a Mmap,
    storages: &'a Storages,
    nodes_left: std::cell::Cell<usize>,
}

impl JsonBudget<'_> {
    /// Plain values as JSON; a one-element tensor (nanoGPT's 0-d
    /// `best_val_loss`) as its number; other tensors as a description.
    /// Past the depth or node budget, `null`.
    fn convert(&self, v: &Value, depth: usize) -> Json {
        let left = self.nodes_left.get();
        if depth > MAX_JSON_DEPTH || left == 0 {
            return Json::Null;
        }
        self.nodes_left.set(left - 1);
        match v {
            Value::None | Value::Opaque | Value::Global(_) | Value::Storage(_) => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => number(*f),
            Value::Str(s) => Json::String(s.to_string()),
            Value::Bytes(b) => Json::String(format!("<{} bytes>", b.len())),
            Value::Tuple(items) => self.array(items, depth),
            Value::List(items) => self.array(&items.borrow(), depth),
            Value::Dict(d) => {
                let mut m = Map::new();
                for (k, v) in d.borrow().iter() {
                    let key = match k {
                        Value::Str(s) => s.to_string(),
                        Value::Int(i) => i.to_string(),
                        _ => continue,
                    };
                    m.insert(key, self.convert(v, depth + 1));
                }
                Json::Object(m)
            }
            Value::Tensor(t) => self.tensor(t),
        }
    }

    fn array(&self, items: &[Value], depth: usize) -> Json {
        Json::Array(items.iter().map(|x| self.convert(x, depth + 1)).collect())
    }

    fn tensor(&self, t: &TensorRef) -> Json {
        let dt = t.storage.dtype;
        let scalar = t.size.iter().product::<usize>() == 1;
        match (scalar, self.storages.get(&t.storage.key)) {
            (true, Some(&start)) if dt.is_float() => {
                let at = start + (t.storage.offset + t.offset) * dt.size();
                let b = &self.map[at..at + dt.size()];
                number(match dt {
                    super::DType::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    super::DType::F16 => f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                    super::DType::BF16 => {
                        f64::from(half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    }
                    _ => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        f64::from_le_bytes(a)
                    }
                })
            }
            _ => Json::String(format!("<tensor {:?} {:?}>", dt, t.size)),
        }
    }
}

/// The pickle fuzz target: the interpreter with storages unchecked (as
/// for the legacy format), then the metadata walk of every top-level value.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz_pickle(data: &[u8]) -> Result<(), String> {
    let u = pickle::unpickle_prefix(data, None).map_err(|e| format!("{e:?}"))?;
    let map = memmap2::MmapMut::map_anon(1)
        .and_then(|m| m.make_read_only())
        .map_err(|e| e.to_string())?;
    let storages = Storages::new();
    let json = JsonBudget {
        map: &map,
        storages: &storages,
        nodes_left: std::cell::Cell::new(MAX_JSON_NODES),
    };
    drop(json.convert(&u.value, 0));
    Ok(())
}

/// The object pickles of a torch file (a zip's `data.pkl`, a legacy
/// file's object), as fuzz seeds.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz_pickles(file: &[u8]) -> Vec<Vec<u8>> {
    if is_zip(file) {
        let entries = zip::entries(file, Path::new("seed")).unwrap_or_default();
        return entries
            .iter()
            .filter(|e| e.name.ends_with("/data.pkl"))
            .map(|e| file[e.offset..e.offset + e.size].to_vec())
            .collect();
    }
    legacy::object_pickle(file).into_iter().collect()
}

fn number(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}
